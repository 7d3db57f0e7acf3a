from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.eap.common import World, make_world


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    d: Path = tmp_path_factory.mktemp("eap-world")
    yield from make_world(d)
