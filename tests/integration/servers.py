"""Real DNS servers for the tests: the test kit's (dance.testkit.servers), re-exported so test
modules keep one import path. A missing binary skips, or fails under DANCE_REQUIRE_INTEGRATION=1
(tests/conftest.py sets the kit's BINARY_FINDER)."""

from __future__ import annotations

from dance.testkit.servers import (
    KnotZone,
    Proc,
    Server,
    child_ds,
    dnskey_anchor,
    free_port,
    knotc,
    require_binary,
    start_knot,
    start_unbound,
)

__all__ = [
    "KnotZone",
    "Proc",
    "Server",
    "child_ds",
    "dnskey_anchor",
    "free_port",
    "knotc",
    "require_binary",
    "start_knot",
    "start_unbound",
]
