"""Budget, counting and hang guard shared by the fuzz tests.

``DANCE_FUZZ_EXAMPLES`` multiplies every test's ``max_examples`` (default 1: the short run of
``make test``; ``make fuzz`` sets a large factor). Every example calls :func:`hit` with its
front door, so the long run can report how many inputs each door received; with
``DANCE_FUZZ_REPORT=<path>`` the counts are written there as JSON at the end of the session
(see tests/fuzz/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, settings

COUNTS: Counter[str] = Counter()
SECONDS: Counter[str] = Counter()
STARTED = time.monotonic()


def scale() -> float:
    try:
        return max(float(os.environ.get("DANCE_FUZZ_EXAMPLES", "1")), 0.01)
    except ValueError:
        return 1.0


def fuzz_settings(examples: int, **extra: Any) -> settings:
    """Hypothesis settings for a fuzz test: ``examples`` in the short run, scaled for the long
    one; no deadline (the machine is loaded), hangs are caught by :func:`time_limit`."""
    return settings(
        max_examples=max(1, int(examples * scale())),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        **extra,
    )


def hit(door: str, n: int = 1) -> None:
    COUNTS[door] += n


class Hang(Exception):
    """A single input took longer than the per-input limit: a parser that loops."""


@contextlib.contextmanager
def time_limit(seconds: float = 20.0) -> Iterator[None]:
    """Fail an input that runs longer than ``seconds`` (SIGALRM; main thread only, else a
    no-op). The limit is generous: the machine is shared, and a real loop never ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: object) -> None:
        raise Hang(f"input still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
