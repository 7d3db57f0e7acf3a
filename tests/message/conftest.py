from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

from tests.message.kit import World, build_world

# The formats need the optional extra "messages" (joserfc, cbor2); without it the whole
# directory is left out (the package itself still imports: see test_negative), except under
# DANCE_REQUIRE_INTEGRATION=1 (CI), where a missing extra must fail the run.
if importlib.util.find_spec("joserfc") is None or importlib.util.find_spec("cbor2") is None:
    if os.environ.get("DANCE_REQUIRE_INTEGRATION") == "1":
        raise RuntimeError("the 'messages' extra (joserfc, cbor2) is not installed")
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    yield from build_world()
