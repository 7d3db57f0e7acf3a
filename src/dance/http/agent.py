"""`dance agent`: an HTTP authorization service for nginx ``auth_request`` and HAProxy.

The front end terminates TLS (any client certificate, proof of possession only) and asks the
agent, per request, ``GET /auth`` with the certificate in a header (``Client-Cert`` by default:
nginx ``$ssl_client_escaped_cert``, RFC 9440 or HAProxy base64 DER) and optionally the claimed
ClientName (``X-DANCE-Client-Name``). The agent answers

- ``200`` with ``X-DANCE-Client-ID`` (the identity), ``X-DANCE-Client-Name`` and, for ``_user``
  identities, ``X-DANCE-User``; or
- ``403`` with ``X-DANCE-Error: <public code>``. Never anything else for bad input.

Every answer carries ``Cache-Control: no-store``. A refusal that reports a failure rather than a
decision (the DNS did not answer or did not validate, an internal error) also carries
``X-Accel-Expires: 0``: a front end configured to keep the agent's answers for a few seconds
(nginx ``proxy_cache`` with ``proxy_ignore_headers Cache-Control``, docs/http.md) still never
keeps those, so the next request is decided afresh.

``GET /healthz`` answers 200, ``GET /stats`` the counters as JSON. Connections from addresses
outside ``trusted_proxies`` (loopback by default) are closed at accept, before anything is read.

A small asyncio protocol (HTTP/1.1 keep-alive and pipelining, no framework): requests are read
by `dance.http.h1.RequestReader` (h11 plus strict checks); header names are compared lower-cased
with ``_`` read as ``-``, so ``Client_Cert`` next to ``Client-Cert`` is two certificate headers.
Cached decisions are answered synchronously in ``data_received``; only a DNS lookup suspends the
connection.

Limits (each refusal counted as ``refused_<reason>`` in ``/stats``): at most ``max_connections``
connections and ``max_per_address`` per source address (when full, the stalest connection that
is not waiting for a decision is closed to make room: ``evicted``; when none can be, the new one
is closed: ``connection-limit`` / ``address-limit``); a request must be complete
``head_timeout`` seconds after its first byte (``head-timeout``, not restarted by each byte); an
idle connection is closed after ``idle_timeout`` (``idle-timeout``); reading and answering stop
while the answers the client has not taken exceed ``write_limit`` bytes (4 KiB), so a client that
pipelines without reading holds a bounded amount of memory and gets a bounded number of
decisions; such a connection is closed after ``idle_timeout`` (``write-timeout``).

"Not taken" counts the kernel's send queue too (``TIOCOUTQ``: bytes the client's TCP has not
acknowledged), not only asyncio's buffer: on loopback the kernel autotunes a socket's send buffer
to megabytes, and a client that pipelined 2,000 requests without reading had all 2,000 answered
(100 such clients took a legitimate request's p99 to 2.6-5.1 s). While over the limit the
connection is checked again after 10 ms, then less and less often (at most every 0.25 s). What
is left is the client's own receive buffer, which it alone can fill: a few hundred answers of
about 110 bytes at most for a default Linux socket, and nothing in the agent's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import socket
import time
from collections.abc import Iterable
from typing import Final, cast

try:  # the kernel's send queue (Linux, BSDs); without it only asyncio's buffer is counted
    import fcntl
    import termios

    _TIOCOUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover
    _TIOCOUTQ = None

import h11

from dance.http.core import (
    BAD_CERTIFICATE,
    LOOPBACK,
    Denied,
    HttpAuth,
    TrustedProxies,
    identity_headers,
)
from dance.http.h1 import EndOfRequest, HttpError, RequestHead, RequestReader, normalize_name
from dance.identity import Identity
from dance.service.observe import Observer

__all__ = ["Agent"]

log = logging.getLogger("dance.http.agent")

MAX_HEAD: Final = 64 * 1024
MAX_BODY: Final = 64 * 1024
IDLE_TIMEOUT: Final = 75.0
HEAD_TIMEOUT: Final = 10.0
WRITE_LIMIT: Final = 4 * 1024
_POLL_MIN: Final = 0.01  # a connection over its write limit: first check
_POLL_MAX: Final = 0.25  # then less and less often, down to this
_SLICE: Final = 8 * 1024  # bytes parsed at a time (stops at once when writing is paused)
# Requests answered in one turn of the event loop before the other connections get theirs: a
# client pipelining hundreds of requests (answered from the cache, synchronously) must not hold
# the loop while the others wait (measured: 20 such clients took a legitimate request's p99 from
# 35 ms to 5.6 s; bench/soak_servers.py --server agent, never-read phase).
_BATCH: Final = 8

_REASONS = {200: b"OK", 403: b"Forbidden", 404: b"Not Found"}
# Refusals that report a failure, not a decision about the inputs: never to be kept by a cache
# in front (the Authenticator does not keep them either).
UNCACHEABLE_REASONS: Final = frozenset(
    {"dns-indeterminate", "dns-bogus", "internal-error", "timeout"}
)


def default_max_connections() -> int:
    """Below the descriptor limit (accept must never fail with EMFILE): soft limit - 64."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        soft = 1024
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 65536
    return max(16, min(4096, soft - 64))


def _response(status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error"))]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in headers]
    lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Cache-Control: no-store")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Agent:
    """The authorization service; `serve()` starts it on the running loop."""

    def __init__(
        self,
        http_auth: HttpAuth,
        *,
        cert_header: str = "Client-Cert",
        chain_header: str = "Client-Cert-Chain",
        name_header: str = "X-DANCE-Client-Name",
        trusted_proxies: Iterable[str] = LOOPBACK,
        auth_path: str = "/auth",
        max_connections: int | None = None,
        max_per_address: int | None = None,
        head_timeout: float | None = None,
        idle_timeout: float | None = None,
        write_limit: int = WRITE_LIMIT,
        observer: Observer | None = None,
    ) -> None:
        self.http_auth = http_auth
        self.observer = observer  # access log and metrics (dance.service), when run as a service
        self.cert_header = normalize_name(cert_header)
        self.chain_header = normalize_name(chain_header)
        self.name_header = normalize_name(name_header)
        self.trusted = TrustedProxies(trusted_proxies)
        self.auth_path = auth_path
        self.max_connections = max_connections or default_max_connections()
        self.max_per_address = max_per_address or self.max_connections
        self._head_timeout = head_timeout
        self._idle_timeout = idle_timeout
        self.write_limit = write_limit
        self.connections: set[_Connection] = set()
        self.per_address: dict[str, int] = {}
        self.connections_total = 0
        self.refused: dict[str, int] = {}
        self.server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        # The header names looked for, as `_request` compares them (bytes, lower case, "-").
        self._inputs = frozenset(
            n.encode("latin-1") for n in (self.cert_header, self.chain_header, self.name_header)
        )
        self._accepted: dict[tuple[str, str | None], bytes] = {}  # 200 answers by identity

    @property
    def head_timeout(self) -> float:
        return self._head_timeout if self._head_timeout is not None else HEAD_TIMEOUT

    @property
    def idle_timeout(self) -> float:
        return self._idle_timeout if self._idle_timeout is not None else IDLE_TIMEOUT

    async def serve(self, host: str, port: int, *, reuse_port: bool = False) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_port=reuse_port or None
        )
        self._sweeper = asyncio.create_task(self._sweep())
        return self.server

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def drain(self, timeout: float) -> int:
        """Stop accepting, let decisions in progress be answered for ``timeout`` seconds, then
        close every connection (idle keep-alive ones at once); returns how many were cut."""
        if self.server is not None:
            self.server.close()
        deadline = time.monotonic() + timeout
        while any(c.busy for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        cut = sum(1 for c in self.connections if c.busy)
        await self.close()
        return cut

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.close()
        if self.server is not None:
            await self.server.wait_closed()

    def count(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        if self.observer is not None:
            self.observer.refused(reason)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.head_timeout / 4, self.idle_timeout / 4))
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        for conn in list(self.connections):
            if conn.busy:
                continue
            if conn.write_paused or conn.held_back:  # answers not taken: idle_timeout at most
                if now - conn.paused_since > self.idle_timeout:
                    self.count("write-timeout")
                    conn.close(abort=True)  # a close would wait for the client to read
            elif conn.started is not None:
                if now - conn.started > self.head_timeout:
                    self.count("head-timeout")
                    log.info("agent: %s: request not complete in time, closed", conn.peer)
                    conn.close()
            elif now - conn.idle_since > self.idle_timeout:
                self.count("idle-timeout")
                conn.close()

    # -- admission ------------------------------------------------------------------------------

    def admit(self, conn: _Connection) -> bool:
        """Room for a new connection (evicting the stalest evictable one if needed)."""
        addr = conn.peer
        if len(self.connections) >= self.max_connections and not self._evict(None):
            self.count("connection-limit")
            log.info("agent: %s: connection limit (%d), refused", addr, self.max_connections)
            return False
        if self.per_address.get(addr, 0) >= self.max_per_address and not self._evict(addr):
            self.count("address-limit")
            log.info("agent: %s: per-address limit (%d), refused", addr, self.max_per_address)
            return False
        self.connections.add(conn)
        self.per_address[addr] = self.per_address.get(addr, 0) + 1
        self.connections_total += 1
        if self.observer is not None:
            self.observer.opened()
        return True

    def _evict(self, addr: str | None) -> bool:
        """Close the stalest connection not waiting for a decision: a partial request first
        (oldest first byte), else the longest idle. False when every one is busy."""
        best: _Connection | None = None
        best_key: tuple[int, float] | None = None
        for conn in self.connections:
            if conn.busy or conn.transport is None or (addr is not None and conn.peer != addr):
                continue
            key = (0, conn.started) if conn.started is not None else (1, conn.idle_since)
            if best_key is None or key < best_key:
                best, best_key = conn, key
        if best is None:
            return False
        self.count("evicted")
        log.info("agent: %s: closed to make room for a new connection", best.peer)
        best.close()
        self.forget(best)
        return True

    def forget(self, conn: _Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            if self.observer is not None:
                self.observer.closed()
            left = self.per_address.get(conn.peer, 1) - 1
            if left > 0:
                self.per_address[conn.peer] = left
            else:
                self.per_address.pop(conn.peer, None)

    # -- requests ------------------------------------------------------------------------------

    def answer(
        self, ident: Identity | Denied, peer: str = "", started: float | None = None
    ) -> bytes:
        observer = self.observer
        if observer is not None and started is not None:
            if isinstance(ident, Identity):
                observer.record(peer, ident.client_name, "accepted", "-", "secure", started)
            else:
                observer.record(peer, ident.client_name, "rejected", ident.reason,
                                ident.dns_outcome or "-", started)  # fmt: skip
        if isinstance(ident, Identity):
            log.info("agent: %s: accepted %s", peer, ident.identity)
            key = (ident.identity, ident.user_id)
            answer = self._accepted.get(key)
            if answer is None:
                answer = _response(200, identity_headers(ident))
                if len(self._accepted) >= 4096:
                    self._accepted.clear()
                self._accepted[key] = answer
            return answer
        if ident.reason in UNCACHEABLE_REASONS:
            return _response(403, [("X-DANCE-Error", ident.code), ("X-Accel-Expires", "0")])
        return _response(403, [("X-DANCE-Error", ident.code)])

    def refuse(self, reason: str, code: str = BAD_CERTIFICATE) -> bytes:
        return self.answer(self.http_auth.refuse(code, reason))

    def other(self, method: str, path: str) -> bytes:
        if path == "/healthz":
            return _response(200, body=b"ok\n")
        if path == "/stats" and method == "GET":
            stats = self.http_auth.stats()
            stats["connections"] = len(self.connections)
            stats["connections_total"] = self.connections_total
            stats.update({f"refused_{k}": v for k, v in self.refused.items()})
            return _response(
                200, [("Content-Type", "application/json")], json.dumps(stats).encode()
            )
        return _response(404)


class _Connection(asyncio.Protocol):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.reader = RequestReader(max_head=MAX_HEAD)
        self.inbox = bytearray()  # received, not yet parsed
        self.pending: list[RequestHead | h11.Data | EndOfRequest] = []
        self.head: RequestHead | None = None
        self.error: HttpError | None = None  # refusal pending behind earlier requests
        self.body = 0
        self.answers = 0  # responses written
        self.busy = False  # a decision is being made (DNS lookup)
        self.deferred = False  # a batch answered; the rest waits for the next loop turn
        self.closing = False
        self.write_paused = False  # asyncio's buffer over write_limit (pause_writing)
        self.held_back = False  # the answers not taken (kernel queue too) over write_limit
        self.paused_since = 0.0
        self._fd = -1  # the socket, for its send queue
        self._poll = _POLL_MIN
        self._recheck: asyncio.TimerHandle | None = None
        self.started: float | None = None  # first byte of the current request
        self.idle_since = time.monotonic()

    # -- transport callbacks --------------------------------------------------------------------

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses: same methods, no check)
        self.transport = transport = cast(asyncio.Transport, base)
        peername = transport.get_extra_info("peername")
        self.peer = str(peername[0]) if peername else ""
        agent = self.agent
        if not agent.trusted.trusts(self.peer or None):
            agent.count("untrusted-source")
            log.info("agent: %s: untrusted source, closed at accept", self.peer)
            self.closing = True
            transport.abort()
            return
        if not agent.admit(self):
            self.closing = True
            transport.abort()
            return
        transport.set_write_buffer_limits(high=agent.write_limit)
        sock = transport.get_extra_info("socket")
        if sock is not None and _TIOCOUTQ is not None:
            self._fd = sock.fileno()

    def connection_lost(self, exc: Exception | None) -> None:
        self.agent.forget(self)
        self.transport = None
        self._fd = -1  # closed by asyncio after this
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        self.inbox.clear()
        self.pending.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        if not self.held_back:
            self.paused_since = time.monotonic()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.busy and not self.closing:
            if self._may_read():
                self.transport.resume_reading()
            if not self.held_back:
                self._process()

    def _may_read(self) -> bool:
        return not (
            self.deferred or self.busy or self.write_paused or self.held_back or self.closing
        )

    # -- the answers the client has not taken ---------------------------------------------------

    def unsent(self) -> int:
        """Bytes of answers the client has not taken: asyncio's buffer and, where the kernel
        tells, the socket's send queue (not acknowledged by the client's TCP)."""
        transport = self.transport
        if transport is None:
            return 0
        size = transport.get_write_buffer_size()
        if self._fd >= 0 and _TIOCOUTQ is not None:
            try:
                queued = fcntl.ioctl(self._fd, _TIOCOUTQ, b"\0\0\0\0")
                size += int.from_bytes(queued, "little", signed=True)
            except OSError:
                self._fd = -1  # not a socket that tells: asyncio's buffer only
        return size

    def _reset(self) -> bool:
        """The client reset the connection (a non-reader that closes with answers unread)."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return False
        try:
            return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        except OSError:
            return True

    def _check_unsent(self) -> None:
        """After an answer: stop reading and answering while too much is not taken."""
        if self.held_back or self.closing or self.unsent() <= self.agent.write_limit:
            return
        self.held_back = True
        if not self.write_paused:
            self.paused_since = time.monotonic()
        if self.transport is not None:
            self.transport.pause_reading()
        self._poll = _POLL_MIN
        self._recheck = asyncio.get_running_loop().call_later(self._poll, self._recheck_unsent)

    def _recheck_unsent(self) -> None:
        self._recheck = None
        if self.transport is None or self.closing:
            return
        if self.unsent() > self.agent.write_limit:
            if self._reset():
                self.closing = True
                self.transport.abort()  # asyncio would not notice: it is not reading or writing
                return
            self._poll = min(self._poll * 2, _POLL_MAX)
            loop = asyncio.get_running_loop()
            self._recheck = loop.call_later(self._poll, self._recheck_unsent)
            return
        self.held_back = False
        if self.write_paused or self.busy or self.deferred:
            return  # whichever ends last goes on
        self._process()
        if self._may_read() and self.transport is not None:
            self.transport.resume_reading()

    def close(self, *, abort: bool = False) -> None:
        self.closing = True
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.started is None:
            self.started = time.monotonic()
        self.inbox += data
        self._process()

    def eof_received(self) -> bool | None:
        return None  # close; answers already written are flushed first

    # -- processing -----------------------------------------------------------------------------

    def _process(self) -> None:
        try:
            self._run()
        except HttpError as exc:
            self.agent.count(exc.reason)
            log.info("agent: %s: bad request (%s): %s", self.peer, exc.reason, exc)
            code = "request-too-large" if exc.reason == "head-too-large" else "bad-request"
            self._send(self.agent.refuse(code), close=True)
        except Exception:  # never a traceback to the peer; fail closed
            log.exception("agent: internal error")
            self._send(self.agent.refuse("internal-error", "not-authenticated"), close=True)

    def _defer(self) -> None:
        """Stop for this turn of the event loop (reading paused) and go on at the next one."""
        self.deferred = True
        if self.transport is not None:
            self.transport.pause_reading()
        asyncio.get_running_loop().call_soon(self._continue)

    def _continue(self) -> None:
        self.deferred = False
        if self.transport is None or self.closing:
            return
        if self.held_back:
            return  # _recheck_unsent goes on
        self._process()
        if self._may_read() and self.transport is not None:
            self.transport.resume_reading()

    def _run(self) -> None:
        answered = 0
        while not (
            self.busy or self.closing or self.write_paused or self.deferred or self.held_back
        ):
            if answered >= _BATCH and (self.pending or self.inbox or self.reader.buffered):
                self._defer()
                break
            if not self.pending:
                if self.error is not None:
                    raise self.error  # after the answers to the requests before it
                if not self.inbox:
                    break
                piece = bytes(self.inbox[:_SLICE])
                del self.inbox[:_SLICE]
                try:
                    self.pending = self.reader.feed(piece)
                except HttpError as exc:
                    self.pending, self.error = exc.events, exc
                self.pending.reverse()
                if self.reader.closed:
                    self.inbox.clear()
                continue
            event = self.pending.pop()
            if isinstance(event, RequestHead):
                self.head, self.body = event, 0
                if self.started is None:
                    self.started = time.monotonic()
                if event.chunked:
                    raise HttpError("chunked", "the agent takes no request body")
                if event.length > MAX_BODY:
                    raise HttpError("body-too-large", f"Content-Length {event.length}")
            elif isinstance(event, EndOfRequest):
                head, self.head = self.head, None
                assert head is not None
                now = time.monotonic()
                more = bool(self.inbox or self.pending or self.reader.buffered)
                self.started = now if more else None  # the next request's deadline starts now
                self.idle_since = now
                self._request(head, close=not event.keep_alive)
                answered += 1
            # h11.Data: a body, discarded (length checked above)

    def _send(self, payload: bytes, *, close: bool = False) -> None:
        if self.transport is None:
            return
        if self.transport.is_closing():
            # the client is gone (a write failed: asyncio closes the transport and calls
            # connection_lost soon): answer no more of what it pipelined (asyncio would log
            # "socket.send() raised exception." for each answer)
            self.closing = True
            return
        self.transport.write(payload)
        self.answers += 1
        if close:
            self.closing = True
            self.inbox.clear()
            self.pending.clear()
            self.transport.close()
        else:
            self._check_unsent()

    def _request(self, head: RequestHead, *, close: bool) -> None:
        agent = self.agent
        t0 = time.monotonic()
        request = head.request
        inputs = agent._inputs
        headers: dict[str, str] = {}  # the inputs (names as normalize_name gives them)
        duplicated: set[str] = set()
        for raw, value in request.headers:
            name = raw.lower().replace(b"_", b"-")  # normalize_name, in bytes
            if name in inputs:
                key = name.decode("latin-1")
                if key in headers:
                    duplicated.add(key)
                headers[key] = value.decode("latin-1")
        method = request.method.decode("ascii")
        path = request.target.decode("ascii").split("?", 1)[0]
        if path != agent.auth_path:
            self._send(agent.other(method, path), close=close)
            return
        if duplicated & {agent.cert_header, agent.chain_header}:
            self._send(agent.refuse("cert-several-headers"), close=close)
            return
        if agent.name_header in duplicated:
            self._send(agent.refuse("name-several-headers", "bad-client-name"), close=close)
            return
        http_auth = agent.http_auth
        prepared = http_auth.prepare(
            headers.get(agent.cert_header),
            headers.get(agent.chain_header),
            headers.get(agent.name_header),
        )
        if isinstance(prepared, Denied):
            self._send(agent.answer(prepared, self.peer, t0), close=close)
            return
        result = http_auth.decide_cached(*prepared)
        if result is not None:
            self._send(agent.answer(result, self.peer, t0), close=close)
            return
        self.busy = True
        if self.transport is not None:
            self.transport.pause_reading()
        task = asyncio.ensure_future(http_auth.decide(*prepared))
        task.add_done_callback(lambda t: self._resume(t, close, t0))

    def _resume(self, task: asyncio.Future[Identity | Denied], close: bool, t0: float) -> None:
        self.busy = False
        if task.cancelled():
            self.close()
            return
        exc = task.exception()
        if exc is not None:
            log.error("agent: authentication raised", exc_info=exc)
            self._send(self.agent.refuse("internal-error", "not-authenticated"), close=True)
            return
        self._send(self.agent.answer(task.result(), self.peer, t0), close=close)
        if self.transport is not None and not self.closing and not self.held_back:
            if self._may_read():
                self.transport.resume_reading()
            self._process()
