"""dance.service.relay: the refusal counters and session slots the relays share."""

from __future__ import annotations

import asyncio

from dance.service.relay import RefusalStats, SessionSlots, host_port, peer_host


class _Stats(RefusalStats):
    def __init__(self) -> None:
        self.sessions = 0
        self.refused: dict[str, int] = {}
        self.other: dict[str, int] = {}


def test_refusals_counted_and_snapshot_is_a_copy() -> None:
    stats = _Stats()
    stats.refuse("a")
    stats.refuse("a")
    stats.refuse("b")
    snap = stats.snapshot()
    assert snap == {"sessions": 0, "refused": {"a": 2, "b": 1}, "other": {}}
    snap["refused"]["a"] = 99
    snap["other"]["x"] = 1
    assert stats.refused == {"a": 2, "b": 1} and stats.other == {}


def test_peer_formatting() -> None:
    assert peer_host(("192.0.2.1", 25)) == "192.0.2.1"
    assert host_port(("2001:db8::1", 389, 0, 0)) == "2001:db8::1:389"
    for missing in (None, (), "x"):
        assert peer_host(missing) == "unknown" and host_port(missing) == "unknown"


def test_slots_limits_and_release() -> None:
    async def main() -> None:
        slots = SessionSlots(max_connections=3, max_per_address=2)
        release = asyncio.Event()
        verdicts: list[str | None] = []

        async def session(peer: str) -> None:
            verdict = slots.admit(peer)
            verdicts.append(verdict)
            if verdict is None:
                try:
                    await release.wait()
                finally:
                    slots.release(peer)

        tasks = []
        for peer in ("a", "a", "a", "b", "c"):
            tasks.append(asyncio.create_task(session(peer)))
            await asyncio.sleep(0)  # each admitted (or refused) before the next starts
        while len(verdicts) < 5:
            await asyncio.sleep(0)
        assert verdicts == [None, None, "per-address", None, "max-connections"]
        assert slots.active == 3 and len(slots.tasks) == 3
        release.set()
        await asyncio.gather(*tasks)
        assert slots.active == 0 and not slots.tasks
        verdicts.clear()
        task = asyncio.create_task(session("a"))  # the slots freed are usable again
        while not verdicts:
            await asyncio.sleep(0)
        assert verdicts == [None]
        await task

    asyncio.run(main())


def test_drain_waits_then_cuts() -> None:
    async def main() -> None:
        slots = SessionSlots(max_connections=10, max_per_address=10)
        cancelled: list[str] = []

        async def session(peer: str, seconds: float) -> None:
            assert slots.admit(peer) is None
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                cancelled.append(peer)
                raise
            finally:
                slots.release(peer)

        tasks = [
            asyncio.create_task(session("quick", 0.01)),
            asyncio.create_task(session("stuck", 3600)),
        ]
        await asyncio.sleep(0)
        assert slots.active == 2
        assert await slots.drain(5.0) == 1  # the quick one ended by itself within the time
        assert cancelled == ["stuck"] and slots.active == 0 and not slots.tasks
        assert all(t.done() for t in tasks)
        assert await slots.drain(1.0) == 0

    asyncio.run(main())
