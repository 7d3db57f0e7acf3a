"""Fixtures for the dance.testkit tests: one standard hierarchy per denial flavour."""

from __future__ import annotations

import pytest
from _testkit_support import build_hierarchy

from dance.testkit import ZoneSet

FLAVOURS = {
    "nsec": {"denial": "nsec"},
    "nsec3": {"denial": "nsec3"},
    "nsec3-optout": {"denial": "nsec3", "optout": True},
    "nsec3-salted": {"denial": "nsec3", "iterations": 5, "salt": b"\xaa\xbb"},
}


@pytest.fixture(scope="session", params=list(FLAVOURS))
def zs(request: pytest.FixtureRequest) -> ZoneSet:
    return build_hierarchy(**FLAVOURS[request.param])  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def nsec_zs() -> ZoneSet:
    return build_hierarchy("nsec")


@pytest.fixture(scope="session")
def nsec3_zs() -> ZoneSet:
    return build_hierarchy("nsec3")


@pytest.fixture(scope="session")
def optout_zs() -> ZoneSet:
    return build_hierarchy("nsec3", optout=True)


@pytest.fixture
def fresh_zs() -> ZoneSet:
    """A private hierarchy for tests that inject faults."""
    return build_hierarchy("nsec")
