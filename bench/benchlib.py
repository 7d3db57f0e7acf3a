"""Results every benchmark script writes: ``bench/results/<script>.json``, one file a script.

Each figure is a row: metric, value, unit, and where there is one the peer measured in the same
run (name and value), their ratio, and the target. ``bench/report.py`` turns the files into
docs/performance.md, with the date and the machine of each run. Standard library only. Also
the small timing and child-process helpers the scripts share (``wall``, ``alternating``,
``serve_until_sigterm``).

    from benchlib import Results
    results = Results("bench_match", quick=args.quick)
    results.add("3 1 1 match", 10.8, "us", target="<= 15")
    results.add("handshakes", 900, "/CPU-s", peer="nginx", peer_value=1100, target=">= 1.0x")
    results.write()
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import platform
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    metric: str
    value: float
    unit: str
    peer: str | None = None
    peer_value: float | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None


def _machine() -> dict[str, object]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = -1.0
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "openssl": ssl.OPENSSL_VERSION,
        "load_average_1min_at_end": round(load, 2),
    }


def _met(value: float, ratio: float | None, target: str | None) -> bool | None:
    """Whether ``target`` (``<= N``, ``>= N``, ``>= Nx`` for a ratio to the peer) is met."""
    if not target:
        return None
    op, _, number = target.strip().partition(" ")
    try:
        if number.endswith("x"):
            if ratio is None:
                return None
            bound, subject = float(number[:-1]), ratio
        else:
            bound, subject = float(number.split()[0]), value
    except ValueError:
        return None
    if op == "<=":
        return subject <= bound
    if op == ">=":
        return subject >= bound
    return None


@dataclass
class Results:
    script: str
    quick: bool = False
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        metric: str,
        value: float,
        unit: str,
        *,
        peer: str | None = None,
        peer_value: float | None = None,
        target: str | None = None,
    ) -> Row:
        ratio = value / peer_value if peer_value else None
        row = Row(metric, value, unit, peer, peer_value, ratio, target, _met(value, ratio, target))
        self.rows.append(row)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)

    def write(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.script}.json"
        doc = {
            "script": self.script,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "quick": self.quick,
            "machine": _machine(),
            "rows": [asdict(r) for r in self.rows],
            "notes": self.notes,
        }
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"(results written to {path.relative_to(RESULTS.parent.parent)})")
        return path


def wall(fn: Callable[[], object], n: int) -> list[float]:
    """The wall time of ``n`` calls of ``fn``, one figure (seconds) a call."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def alternating(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """``rounds`` rounds of one call of each of ``calls`` in turn, so that load changes on a
    shared machine hit them all alike: the wall times of each, by label."""
    times: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(rounds):
        for label, fn in calls.items():
            times[label] += wall(fn, 1)
    return times


def serve_until_sigterm(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    port: int = 0,
    *,
    backlog: int = 100,
    announce: bool = False,
) -> None:
    """A child process's TCP server on 127.0.0.1:``port`` until SIGTERM; with ``announce``, the
    port it listens on printed first (one line on stdout)."""

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        server = await asyncio.start_server(handler, "127.0.0.1", port, backlog=backlog)
        if announce:
            print(server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await stop.wait()

    asyncio.run(main())
