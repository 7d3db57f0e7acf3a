"""Giving memory back to the system after a burst of connections.

CPython returns freed objects to its own arenas and glibc keeps freed heap pages for reuse, so a
server's resident size stays near its peak after a burst of connections has gone. `Trimmer`
calls glibc's ``malloc_trim(0)`` (through ctypes; a no-op elsewhere) once the connections have
fallen back to a small fraction of their peak after many have closed, at most every
``min_interval`` seconds. Measured on `dance proxy` in docs/reliability.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

__all__ = ["Trimmer", "malloc_trim"]

log = logging.getLogger(__name__)


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_TRIM = _load_trim()


def malloc_trim() -> bool:
    """Ask glibc to give free heap memory back to the system; False where unavailable."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class Trimmer:
    """Decides when to call :func:`malloc_trim`: told of every closed connection with the count
    still open, it trims once at least ``min_closed`` have closed since the last trim and the
    open ones are at most ``fraction`` of the peak seen since then (or none), and not more often
    than every ``min_interval`` seconds."""

    def __init__(
        self,
        *,
        min_closed: int = 256,
        fraction: float = 0.125,
        min_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        trim: Callable[[], bool] = malloc_trim,
    ) -> None:
        self.min_closed = min_closed
        self.fraction = fraction
        self.min_interval = min_interval
        self._clock = clock
        self._trim = trim
        self._closed = 0
        self._peak = 0
        self._last = float("-inf")
        self.trims = 0

    def opened(self, count: int) -> None:
        self._peak = max(self._peak, count)

    def closed(self, remaining: int) -> bool:
        """Count one closed connection; True if memory was trimmed now."""
        self._closed += 1
        if self._closed < self.min_closed or remaining > self._peak * self.fraction:
            return False
        now = self._clock()
        if now - self._last < self.min_interval:
            return False
        self._last = now
        self._closed = 0
        self._peak = remaining
        if not self._trim():
            return False
        self.trims += 1
        log.debug("memory trimmed after a burst (%d connections open)", remaining)
        return True
