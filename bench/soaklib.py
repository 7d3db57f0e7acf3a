"""What the two soak scripts share (bench/soak_tls.py for `dance proxy`, bench/soak_servers.py
for the other servers): a server process's descriptors, memory and log, the legitimate clients'
samples and their summary, waiting for the descriptors to come back, and the pass rules over
the rounds. Standard library only (the scripts import the test kit, never the tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class Measured:
    """Descriptors and RSS of a process (``pid``, given by the class that uses this), from
    /proc."""

    @property
    def pid(self) -> int:
        raise NotImplementedError

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


class HasFds(Protocol):
    def fds(self) -> int: ...

    def rss_kib(self) -> int: ...


def log_lines_matching(log: Path, patterns: Iterable[str]) -> list[str]:
    """The lines of the file ``log`` that hold any of ``patterns`` (none if it cannot be read)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    patterns = tuple(patterns)
    return [line for line in text.splitlines() if any(p in line for p in patterns)]


@dataclass
class Sample:
    at: float
    ok: bool
    latency: float
    detail: str = ""
    # ok; refused (TLS established, then closed or alerted before any data: the proxy's refusal);
    # hang (no answer within the client's timeout); error (no TLS connection). soak_tls only.
    outcome: str = "ok"


class SampleLog:
    """The samples of a legitimate client (the class that uses this has ``samples`` and
    ``once``): a stream of them, and the ones taken in a time window."""

    samples: list[Sample]

    async def once(self, record: bool = True) -> Sample:
        raise NotImplementedError

    async def stream(self, stop: asyncio.Event, workers: int = 2, pause: float = 0.02) -> None:
        """``workers`` clients one after the other (``pause`` seconds between) until ``stop``."""

        async def worker() -> None:
            while not stop.is_set():
                await self.once()
                await asyncio.sleep(pause)

        await asyncio.gather(*(worker() for _ in range(workers)))

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.at < end]


def latency_summary(samples: Sequence[Sample]) -> dict[str, Any]:
    """Attempts, successes, success rate, and the median and p99 latency of the successes (ms)."""
    lat = sorted(s.latency for s in samples if s.ok)
    ok = sum(s.ok for s in samples)

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else 0.0

    return {
        "attempts": len(samples),
        "ok": ok,
        "success": round(ok / len(samples), 4) if samples else 1.0,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
    }


async def wait_for_baseline(server: HasFds, baseline: int, limit: float) -> tuple[bool, float]:
    """Wait until the server's descriptors are back to ``baseline``: (reached, seconds)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if server.fds() <= baseline:
            return True, round(time.monotonic() - start, 2)
        await asyncio.sleep(0.1)
    return False, round(time.monotonic() - start, 2)


async def watch_peaks(server: HasFds, peak: dict[str, int], stop: asyncio.Event) -> None:
    """Until ``stop``: the highest descriptor count and RSS of the server, into ``peak``
    (``fds``, ``rss_kib``), every 0.1 s."""
    while not stop.is_set():
        with contextlib.suppress(OSError):
            peak["fds"] = max(peak["fds"], server.fds())
            peak["rss_kib"] = max(peak["rss_kib"], server.rss_kib())
        await asyncio.sleep(0.1)


def leak_check(rounds: list[dict[str, Any]], tolerance: float = 0.10) -> dict[str, Any]:
    """After repeated rounds, RSS must not keep growing: the last round's end within
    ``tolerance`` of the first round's end (needs 2 rounds at least)."""
    if len(rounds) < 2:
        return {"rounds": len(rounds), "passed": None}
    first, last = rounds[0]["rss_end_kib"], rounds[-1]["rss_end_kib"]
    return {
        "rounds": len(rounds),
        "first_end_kib": first,
        "last_end_kib": last,
        "growth": round(last / first - 1, 4),
        "passed": last <= first * (1 + tolerance),
    }


def passed(report: dict[str, Any]) -> bool:
    """Every phase's checks passed, exit status 0, no bad log line, no leak."""
    return (
        all(not p["checks_failed"] for p in report["phases"])
        and report["exit_status"] == 0
        and not report["bad_log_lines"]
        and report["leak_check"]["passed"] is not False
    )


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST (a TCP socket; other sockets are just closed)."""
    if sock.family == socket.AF_INET:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
