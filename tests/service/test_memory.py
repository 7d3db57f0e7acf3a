"""When servers give freed memory back (dance.service.memory.Trimmer)."""

from __future__ import annotations

import ctypes.util

from dance.service.memory import Trimmer, malloc_trim


class Recorder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_trims_after_a_burst_once_connections_fall_back() -> None:
    clock, rec = Clock(), Recorder()
    t = Trimmer(
        min_closed=10,
        fraction=0.25,
        min_interval=5.0,
        clock=clock,
        trim=rec,
    )
    for n in range(1, 41):  # a burst of 40 connections
        t.opened(n)
    # closing: nothing while more than a quarter of the peak (10) is still open
    assert not any(t.closed(remaining) for remaining in range(39, 10, -1))
    assert t.closed(10) and rec.calls == 1 and t.trims == 1
    # not again at once, however many close
    for n in range(10):
        t.opened(n + 1)
    assert not any(t.closed(0) for _ in range(20))
    clock.now += 5.0
    assert t.closed(0) and t.trims == 2


def test_no_trim_without_enough_closed_connections() -> None:
    rec = Recorder()
    t = Trimmer(min_closed=256, clock=Clock(), trim=rec)
    t.opened(3)
    assert not any(t.closed(0) for _ in range(255))
    assert rec.calls == 0
    assert t.closed(0) and rec.calls == 1


def test_unavailable_trim_is_not_counted() -> None:
    t = Trimmer(min_closed=1, clock=Clock(), trim=lambda: False)
    t.opened(1)
    assert not t.closed(0) and t.trims == 0


def test_malloc_trim_on_glibc() -> None:
    assert malloc_trim() is (ctypes.util.find_library("c") is not None)
