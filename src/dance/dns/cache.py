"""Bounded LRU caches with absolute expiry times (never serve stale)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Generic, TypeVar

__all__ = ["CacheStats", "DecisionCache", "TTLCache"]

K = TypeVar("K")
V = TypeVar("V")


@dataclass
class CacheStats:
    """Counters of one cache."""

    hits: int = 0
    misses: int = 0
    expired: int = 0
    inserts: int = 0
    evictions: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class TTLCache(Generic[K, V]):
    """A bounded LRU map whose entries expire at an absolute time.

    ``get`` never returns an entry whose expiry time is at or before ``now``; such an entry is
    dropped. Times are whatever clock the caller uses consistently (seconds).
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._data: OrderedDict[K, tuple[V, float]] = OrderedDict()
        self.stats = CacheStats()

    def get(self, key: K, now: float) -> tuple[V, float] | None:
        """Return (value, expiry) if fresh, else None."""
        item = self._data.get(key)
        if item is None:
            self.stats.misses += 1
            return None
        if item[1] <= now:
            del self._data[key]
            self.stats.expired += 1
            self.stats.misses += 1
            return None
        self._data.move_to_end(key)
        self.stats.hits += 1
        return item

    def put(self, key: K, value: V, expires: float, now: float) -> None:
        """Store ``value`` until ``expires``; entries already expired are not stored."""
        if expires <= now:
            self._data.pop(key, None)
            return
        self._data[key] = (value, expires)
        self._data.move_to_end(key)
        self.stats.inserts += 1
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
            self.stats.evictions += 1

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


@dataclass(frozen=True, slots=True)
class DecisionCache:
    """Configuration and storage of the per-name decision cache.

    Secure answers live at most min(TTL, earliest RRSIG expiration in the chain, ``max_ttl``);
    secure-absent and insecure outcomes at most ``negative_ttl`` (and never past the expiry of
    their proof); bogus and indeterminate outcomes ``failure_ttl``. Zero disables the
    corresponding caching. Validated DNSKEY/DS knowledge per zone is kept in a separate cache of
    ``max_zones`` entries under the same expiry rules.
    """

    max_entries: int = 10_000
    max_ttl: float = 3600.0
    negative_ttl: float = 5.0
    failure_ttl: float = 5.0
    max_zones: int = 1_000
