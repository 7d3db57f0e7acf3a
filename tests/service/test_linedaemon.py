"""dance.service.linedaemon: the one-line Unix-socket daemon shared by the SSH key daemon and the
EAP-TLS verify daemon: stale connections evicted when full, deadlines, counted refusals."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from dance.service.linedaemon import LineDaemon


class _Resolver:
    flushed = 0

    async def __aenter__(self) -> _Resolver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def flush(self) -> None:
        self.flushed += 1


class _Stats:
    def __init__(self) -> None:
        self.errors: Counter[str] = Counter()

    def error(self, reason: str) -> None:
        self.errors[reason] += 1


class Echo(LineDaemon):
    def __init__(self, path: Path, **limits: Any) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        options: dict[str, Any] = {
            "socket_mode": 0o600, "max_connections": 3, "request_timeout": 5.0,
            "line_timeout": 5.0, "max_request": 64, **limits,
        }  # fmt: skip
        super().__init__(
            socket_path=str(path),
            resolver_factory=_Resolver,  # type: ignore[arg-type]
            stats=_Stats(),
            **options,
        )

    async def answer(self, line: bytes, peer: str = "-") -> bytes:
        await self.gate.wait()
        return line.upper()


async def _read(reader: asyncio.StreamReader) -> bytes:
    """What the daemon sent before closing (a close with our bytes unread is a reset)."""
    try:
        return await asyncio.wait_for(reader.read(100), 5)
    except ConnectionResetError:
        return b""


async def _ask(path: Path, line: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(line)
    reply = await _read(reader)
    writer.close()
    return reply


def test_full_daemon_evicts_the_stalest_reader(tmp_path: Path) -> None:
    async def main() -> None:
        path = tmp_path / "d.sock"
        async with Echo(path) as daemon:
            holders = []
            for i in range(3):
                holders.append(await asyncio.open_unix_connection(str(path)))
                if i == 1:
                    holders[-1][1].write(b"half a li")  # slowloris
                await asyncio.sleep(0.05)
            assert daemon.open_connections == 3
            assert await _ask(path, b"hello\n") == b"HELLO\n"
            assert await _read(holders[0][0]) == b""  # the oldest was closed for it
            holders.append(await asyncio.open_unix_connection(str(path)))  # full again
            await asyncio.sleep(0.05)
            assert await _ask(path, b"again\n") == b"AGAIN\n"
            assert await _read(holders[1][0]) == b""  # then the next oldest
            assert daemon.stats.errors["evicted-stale"] == 2  # type: ignore[attr-defined]
            assert "malformed-request" not in daemon.stats.errors  # type: ignore[attr-defined]
            for _, writer in holders:
                writer.close()
        assert not path.exists()

    asyncio.run(main())


def test_busy_daemon_refuses_the_newcomer(tmp_path: Path) -> None:
    async def main() -> None:
        path = tmp_path / "d.sock"
        async with Echo(path) as daemon:
            daemon.gate.clear()  # every request waits for its answer (as on a slow DNS)
            waiting = [asyncio.create_task(_ask(path, b"w%d\n" % i)) for i in range(3)]
            await asyncio.sleep(0.2)
            assert await _ask(path, b"late\n") == b""  # nothing to evict: refused
            assert daemon.stats.errors["too-many-connections"] == 1  # type: ignore[attr-defined]
            daemon.gate.set()
            assert sorted(await asyncio.gather(*waiting)) == [b"W0\n", b"W1\n", b"W2\n"]

    asyncio.run(main())


def test_line_deadline_and_oversized_line(tmp_path: Path) -> None:
    async def main() -> None:
        path = tmp_path / "d.sock"
        async with Echo(path, line_timeout=0.2) as daemon:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b"no newline yet")
            assert await _read(reader) == b""
            assert await _ask(path, b"x" * 200 + b"\n") == b""
            errors = daemon.stats.errors  # type: ignore[attr-defined]
            assert errors["line-timeout"] == 1 and errors["malformed-request"] == 1
            daemon.flush()
            assert daemon.resolver.flushed == 1  # type: ignore[union-attr]
            writer.close()

    asyncio.run(main())
