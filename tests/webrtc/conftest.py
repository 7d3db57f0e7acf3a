"""WebRTC peers need the optional extra "webrtc" (aiortc). Without it the directory's peer tests
are left out, except under DANCE_REQUIRE_INTEGRATION=1, where a missing extra must fail the run.
The SDP checks (test_sdp.py) need nothing optional and always run."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

if importlib.util.find_spec("aiortc") is None:
    if os.environ.get("DANCE_REQUIRE_INTEGRATION") == "1":
        raise RuntimeError("the 'webrtc' extra (aiortc) is not installed")
    collect_ignore_glob = ["test_peers.py"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tests.webrtc.common import make_world

    yield from make_world(tmp_path_factory.mktemp("webrtc"))
