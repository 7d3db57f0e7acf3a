from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.eap.common import World, make_world


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    d: Path = tmp_path_factory.mktemp("eap-world")
    yield from make_world(d)


@pytest.fixture(scope="package")
def c_hook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dance's C verify hook (src/dance/eap/hook.c), built with the system's C compiler."""
    from dance.eap.native import build_hook
    from tests.conftest import require_binary

    cc = require_binary("cc", "gcc")
    return build_hook(tmp_path_factory.mktemp("c-hook") / "dance-eap-verify-c", cc=cc)
