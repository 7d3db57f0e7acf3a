"""Shared test configuration.

Integration tests start real servers (Knot, Unbound, ...) from Debian packages on loopback.
When a binary is missing they skip, unless DANCE_REQUIRE_INTEGRATION=1 (set by .ci/run), in
which case they fail: CI must never pass by skipping the real parts.
"""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import settings

from dance.testkit import servers

# Property tests: CI (DANCE_REQUIRE_INTEGRATION=1) draws the same examples every run, so a landing
# is decided by the code and not by the day's luck; a developer's `make test` and `make fuzz` draw
# new ones (random seeds) to find what the fixed draw misses, and print how to reproduce a failure.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("fuzz", print_blob=True)
settings.load_profile(
    os.environ.get(
        "HYPOTHESIS_PROFILE",
        "ci" if os.environ.get("DANCE_REQUIRE_INTEGRATION") == "1" else "default",
    )
)


def require_binary(*names: str) -> str:
    """Return the path of the first of ``names`` found on PATH or in /usr/sbin; skip or fail."""
    for name in names:
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
        if path:
            return path
    message = f"integration binary not found: {' or '.join(names)}"
    if os.environ.get("DANCE_REQUIRE_INTEGRATION") == "1":
        pytest.fail(message + " (DANCE_REQUIRE_INTEGRATION=1)")
    pytest.skip(message)


# The test kit's real-server helpers find their binaries the suite's way (skip, or fail in CI).
servers.BINARY_FINDER = require_binary
