from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ssh.common import World, make_world


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    yield from make_world()
