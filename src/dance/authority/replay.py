"""A replay cache for TSIG-signed dynamic updates.

TSIG (RFC 8945) authenticates a message and bounds its age by the fudge (300 s), but an
identical copy of a signed update stays valid for that whole window: replaying the bytes of a
``publish`` after a ``revoke`` would bring the revoked record back. The authority therefore
remembers every authenticated update it processed, by (key name, time signed, MAC), until the
fudge window of that message has passed, and refuses an identical one.

Memory is bounded: at most ``max_entries`` are kept. When the table is full, the oldest entry is
forgotten and its key's *floor* is raised to that entry's time signed: from then on, messages
of that key signed at or before the floor are refused too (they can no longer be told apart
from replays). A fresh start has no memory of earlier processes, so the floor of every key
starts at the second before the authority started: an update signed before the start is
refused, which makes replays across a restart impossible.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["ReplayCache"]

_Entry = tuple[str, int, bytes]


class ReplayCache:
    """``check(key, time_signed, fudge, mac)`` is None for a new message (now remembered) or
    a reason (``replay``, ``signed-before-floor``) for one that must be refused."""

    def __init__(
        self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_entries = max(1, max_entries)
        self._clock = clock
        self._entries: OrderedDict[_Entry, float] = OrderedDict()  # -> time it may be dropped
        self._floor: dict[str, int] = {}
        self.start_floor = int(clock()) - 1
        self._lock = threading.Lock()
        self.replays = 0
        self.floor_refusals = 0

    def __len__(self) -> int:
        return len(self._entries)

    def floor(self, key: str) -> int:
        return max(self.start_floor, self._floor.get(key, self.start_floor))

    def check(self, key: str, time_signed: int, fudge: int, mac: bytes) -> str | None:
        now = self._clock()
        entry = (key.lower(), int(time_signed), bytes(mac))
        with self._lock:
            self._purge(now)
            if entry in self._entries:
                self.replays += 1
                return "replay"
            if entry[1] <= self.floor(entry[0]):
                self.floor_refusals += 1
                return "signed-before-floor"
            self._entries[entry] = entry[1] + int(fudge) + 1
            while len(self._entries) > self.max_entries:
                (old_key, old_time, _), _ = self._entries.popitem(last=False)
                self._floor[old_key] = max(self._floor.get(old_key, old_time), old_time)
        return None

    def _purge(self, now: float) -> None:
        entries = self._entries
        while entries:
            first = next(iter(entries))
            if entries[first] > now:
                break
            del entries[first]
