"""A one-line request/reply daemon on a Unix socket, with a warm DNS cache: the shape shared by the
SSH key daemon (`dance.ssh.server`) and the EAP-TLS verify daemon (`dance.eap.server`).

A hook process (run by sshd or FreeRADIUS for every key or certificate) connects, sends one line,
reads one reply and leaves. The daemon keeps one `TLSAResolver` for all requests. Subclasses
implement :meth:`LineDaemon.answer` (never raises; each decision goes to the access log through
:meth:`LineDaemon._record`), count in a `LineDaemonStats`, and may extend
:meth:`LineDaemon._started` and :meth:`LineDaemon.flush`. The protocols' shared framing and the
hooks' client are in `dance.service.lineproto`.

Limits, each refusal counted in ``stats.errors`` by reason:

* ``max_connections`` open requests. When they are all taken, the connection that has waited
  longest without sending its whole line is closed to make room (``evicted-stale``): a hook sends
  its line at once, so the connections still reading are the idle and slowloris ones, and a local
  user holding every slot cannot starve sshd or FreeRADIUS. Only when every open connection is
  being answered is the newcomer refused (``too-many-connections``).
* ``line_timeout`` seconds to send the line (``line-timeout``), ``request_timeout`` for the whole
  exchange, DNS included (``timeout``); a line longer than ``max_request`` bytes or without its
  newline is ``malformed-request``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Self

from dance.dns import TLSAResolver

if TYPE_CHECKING:
    from dance.service.observe import Observer

__all__ = ["LineDaemon", "LineDaemonStats", "peer_credentials"]


class _Stats(Protocol):
    def error(self, reason: str) -> None: ...


@dataclass
class LineDaemonStats:
    """A line daemon's counters: requests, their decisions, and the requests it could not decide
    (``errors``, by reason: the limits above, a malformed request, an internal error)."""

    requests: int = 0
    accepted: int = 0
    refused: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1


class _Conn:
    __slots__ = ("evicted", "reading", "since", "task", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.task = asyncio.current_task()
        self.since = time.monotonic()
        self.reading = True  # until the whole line is in
        self.evicted = False


class LineDaemon:
    """Serve one-line requests on a Unix socket; ``async with`` or ``start()``/``close()``."""

    #: logger and the name used in its lines (set by subclasses)
    log = logging.getLogger("dance.service")
    label = "line daemon"

    def __init__(
        self,
        *,
        socket_path: str,
        socket_mode: int,
        max_connections: int,
        request_timeout: float,
        line_timeout: float,
        max_request: int,
        resolver_factory: Callable[[], TLSAResolver],
        stats: _Stats,
        observer: Observer | None = None,
    ) -> None:
        if max_connections < 1 or not request_timeout > 0 or not line_timeout > 0:
            raise ValueError("limits must be positive")
        self.socket_path = socket_path
        self.socket_mode = socket_mode
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.line_timeout = min(line_timeout, request_timeout)
        self.max_request = max_request
        self.stats = stats
        self.observer = observer
        self._resolver_factory = resolver_factory
        self._resolver: TLSAResolver | None = None
        self._server: asyncio.AbstractServer | None = None
        self._conns: dict[int, _Conn] = {}
        self._ids = itertools.count()

    @property
    def resolver(self) -> TLSAResolver | None:
        """The shared resolver (its validated cache), while the daemon runs."""
        return self._resolver

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    async def start(self) -> None:
        path = Path(self.socket_path)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise OSError(f"{path} exists and is not a socket")
            path.unlink()  # a stale socket of an earlier run
        self._resolver = self._resolver_factory()
        await self._resolver.__aenter__()
        self._started(self._resolver)
        self._server = await asyncio.start_unix_server(
            self._handle, path=str(path), limit=self.max_request
        )
        os.chmod(path, self.socket_mode)
        self.log.info("%s listening on %s", self.label, path)

    def _started(self, resolver: TLSAResolver) -> None:
        """Called once the resolver is open, before the socket accepts (subclasses)."""

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            # the requests still open end now (their hooks see a closed socket and refuse)
            tasks = [c.task for c in self._conns.values() if c.task is not None]
            for conn in list(self._conns.values()):
                conn.evicted = True  # not the client's doing: not counted
                conn.writer.transport.abort()
            if tasks:
                await asyncio.wait(tasks, timeout=5)
        if self._resolver is not None:
            await self._resolver.__aexit__(None, None, None)
            self._resolver = None
        with contextlib.suppress(OSError):
            Path(self.socket_path).unlink()

    def flush(self) -> None:
        """Forget every cached DNS answer (SIGHUP): a revocation then applies at once."""
        if self._resolver is not None:
            self._resolver.flush()
            self.log.info("%s: DNS cache flushed", self.label)

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def answer(self, line: bytes, peer: str = "-") -> bytes:
        """The reply to one request line (never raises)."""
        raise NotImplementedError

    def _record(
        self, peer: str, name: str, outcome: str, reason: str, dns: str, started: float
    ) -> None:
        """One decision in the access log (when there is one)."""
        if self.observer is not None:
            self.observer.record(peer, name, outcome, reason, dns, started)

    def _make_room(self) -> bool:
        """At the limit: close the connection that has waited longest for its line."""
        stalest = min(
            (c for c in self._conns.values() if c.reading), key=lambda c: c.since, default=None
        )
        if stalest is None:
            return False
        stalest.reading = False
        stalest.evicted = True  # counted once, whatever its handler sees next
        self.stats.error("evicted-stale")
        stalest.writer.transport.abort()
        return True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self.max_connections and not self._make_room():
            self.stats.error("too-many-connections")
            writer.transport.abort()
            return
        key = next(self._ids)
        conn = self._conns[key] = _Conn(writer)
        try:
            async with asyncio.timeout(self.request_timeout):
                try:
                    async with asyncio.timeout(self.line_timeout):
                        line = await reader.readuntil(b"\n")
                except TimeoutError:
                    self.stats.error("line-timeout")
                    return
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    if not conn.evicted:
                        self.stats.error("malformed-request")
                    return
                conn.reading = False
                reply = await self.answer(line, peer_credentials(writer))
                writer.write(reply)
                await writer.drain()
        except TimeoutError:
            self.stats.error("timeout")
        except (ConnectionError, OSError):
            if not conn.evicted:
                self.stats.error("client-gone")
        finally:
            del self._conns[key]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def peer_credentials(writer: asyncio.StreamWriter) -> str:
    """Who asked: the connecting process's uid and pid (SO_PEERCRED), for the access log."""
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
    except (OSError, AttributeError, struct.error):
        return "unix"
    return f"uid={uid},pid={pid}"
