"""A copy-on-write map for zone snapshots: copying it copies a list of shard references, and a
write copies only the shard it touches.

The embedded authority answers from an immutable snapshot and replaces it after each dynamic
update (one attribute assignment, atomic for readers). Copying 20,000-entry dicts for a
one-record update, and freeing the old ones, cost O(zone size) per update; with this map an
update costs O(shard size) for each shard it writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import TypeVar

__all__ = ["CowMap"]

K = TypeVar("K")
V = TypeVar("V")

_SHARDS = 256  # a power of two: 20,000 names make shards of about 80 entries


class CowMap(MutableMapping[K, V]):
    """A mutable mapping whose :meth:`copy` shares every shard until one side writes to it.

    Build a snapshot's maps, copy them for the next snapshot, change the copy: the original is
    never modified (each shard is copied by the first write of the copy that does not own it)."""

    __slots__ = ("_len", "_owned", "_shards")

    def __init__(self, items: Mapping[K, V] | None = None) -> None:
        self._shards: list[dict[K, V]] = [{} for _ in range(_SHARDS)]
        self._owned: list[bool] = [True] * _SHARDS
        self._len = 0
        if items is not None:
            for key, value in items.items():
                self._shards[hash(key) & (_SHARDS - 1)][key] = value
            self._len = len(items)

    @classmethod
    def of(cls, items: Mapping[K, V]) -> CowMap[K, V]:
        """A copy of ``items``: shared shards for a CowMap, a new map for anything else."""
        if isinstance(items, CowMap):
            return items.copy()
        return cls(items)

    def copy(self) -> CowMap[K, V]:
        new: CowMap[K, V] = CowMap.__new__(CowMap)
        new._shards = list(self._shards)
        new._owned = [False] * _SHARDS
        new._len = self._len
        # the original must not write into shards it now shares either
        self._owned = [False] * _SHARDS
        return new

    def _writable(self, key: K) -> dict[K, V]:
        index = hash(key) & (_SHARDS - 1)
        if not self._owned[index]:
            self._shards[index] = dict(self._shards[index])
            self._owned[index] = True
        return self._shards[index]

    def __getitem__(self, key: K) -> V:
        return self._shards[hash(key) & (_SHARDS - 1)][key]

    def get(self, key: K, default: V | None = None) -> V | None:  # type: ignore[override]
        return self._shards[hash(key) & (_SHARDS - 1)].get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._shards[hash(key) & (_SHARDS - 1)]

    def __setitem__(self, key: K, value: V) -> None:
        shard = self._writable(key)
        if key not in shard:
            self._len += 1
        shard[key] = value

    def __delitem__(self, key: K) -> None:
        shard = self._shards[hash(key) & (_SHARDS - 1)]
        if key not in shard:
            raise KeyError(key)
        del self._writable(key)[key]
        self._len -= 1

    def __iter__(self) -> Iterator[K]:
        for shard in self._shards:
            yield from shard

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"CowMap({self._len} entries)"
