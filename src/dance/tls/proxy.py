"""The DANCE terminating proxy (seed Example 1): TLS 1.3 with ``dane_clientid`` in front, plain TCP
or HTTP to a backend, with the authenticated identity passed along.

No backend connection is opened before the client is authenticated (the handler of
:func:`dance.tls.serve` only runs then). ``tcp`` mode: a PROXY protocol v2 header first, with the
identity in a custom TLV (0xE0-0xEF, default 0xE0). ``http`` mode: each request head gets the
identity in a header (``X-DANCE-Client-ID`` by default); copies sent by the client are removed.
Requests are parsed strictly and re-serialized (`dance.http.relay`).

The relay ends as soon as either direction ends and both connections are closed (gracefully
within ``close_timeout``, else aborted). A client that leaves while the backend connection is
being made cancels that connection at once; in tcp mode, one that ended cleanly (close_notify)
with bytes not yet relayed has them delivered all the same. A client's close_notify is passed
on as an end of stream (TCP FIN); asyncio's TLS transport closes the client's connection at
once when it gets one, so the backend's answer to it is not delivered. The PROXY header
carries the addresses captured when the client was accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from dance.auth import Authenticator
from dance.http.relay import relay_http
from dance.identity import Identity
from dance.service.relay import open_connection_within
from dance.tls.bridge import DEFAULT_CODEPOINT, TLSStats
from dance.tls.proxyv2 import DEFAULT_TLV_TYPE, ProxyV2Error, encode_header
from dance.tls.server import ClientGone, DanceServer, forget, serve, until_client_leaves

__all__ = ["DEFAULT_HEADER", "ProxyConfig", "ProxyError", "start_proxy"]

log = logging.getLogger(__name__)

DEFAULT_HEADER = "X-DANCE-Client-ID"
_CHUNK = 64 * 1024


class ProxyError(ValueError):
    """Invalid proxy configuration or a malformed HTTP request from the client."""


@dataclass(frozen=True)
class ProxyConfig:
    backend: tuple[str, int]
    mode: str = "tcp"  # "tcp" (PROXY v2) or "http" (request header)
    tlv_type: int = DEFAULT_TLV_TYPE
    header: str = DEFAULT_HEADER
    connect_timeout: float = 5.0
    close_timeout: float = 5.0

    def __post_init__(self) -> None:
        for label, seconds in (
            ("connect_timeout", self.connect_timeout),
            ("close_timeout", self.close_timeout),
        ):
            if not seconds > 0:
                raise ProxyError(f"{label} must be positive, not {seconds!r}")
        if self.mode not in ("tcp", "http"):
            raise ProxyError(f"mode {self.mode!r}: use tcp or http")
        if not 0xE0 <= self.tlv_type <= 0xEF:
            raise ProxyError(f"TLV type {self.tlv_type:#x} outside the custom range 0xE0-0xEF")
        token = self.header
        if not token or any(c in token for c in " \t\r\n:") or not token.isascii():
            raise ProxyError(f"bad header name {self.header!r}")


class ProxyStats:
    def __init__(self) -> None:
        self.backend_connections = 0
        self.backend_failures = 0  # backend_refused + backend_timeouts
        self.backend_refused = 0  # connection refused, reset or unreachable
        self.backend_timeouts = 0  # no connection within connect_timeout
        self.client_gone_connecting = 0  # the client left while the backend connection was made
        self.closed_by_client = 0  # relays ended by the client side
        self.closed_by_backend = 0  # relays ended by the backend side
        self.requests = 0
        self.stripped_headers = 0
        self.refused: dict[str, int] = {}  # http mode: refused requests by reason

    def snapshot(self) -> dict[str, int]:
        return dict(vars(self))


async def _close_stream(writer: asyncio.StreamWriter, timeout: float) -> None:
    """Close a plain TCP stream, letting buffered data out for ``timeout`` seconds at most."""
    closed = False
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), timeout)
        closed = True
    except (OSError, TimeoutError):
        pass
    finally:
        if not closed:  # not flushed in time (or cancelled): reset, keep nothing queued
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # a no-op once closed


async def _relay(upstream: Awaitable[None], downstream: Awaitable[None]) -> bool:
    """Run both copies until one ends, then cancel the other; True if upstream ended first."""
    up = asyncio.ensure_future(upstream)
    down = asyncio.ensure_future(downstream)
    try:
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        up.cancel()
        down.cancel()
        await asyncio.wait({up, down})
        for task in (up, down):  # retrieve outcomes (never "exception was never retrieved")
            if not task.cancelled() and task.exception() is not None:
                log.debug("relay copy ended: %r", task.exception())
    return up.done() and not up.cancelled()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, asyncio.IncompleteReadError):
        pass


class _Splice(asyncio.Protocol):
    """One side of the tcp relay, in place of its stream's protocol: what this transport
    receives is written to the other side's transport from this callback, with no task in
    between. Flow control crosses over: while this transport's write buffer is full, the other
    side stops reading. The stream's protocol is still told of flow control and of the
    connection's end (its writer's ``wait_closed``); ``activity`` (the client's idle clock) of
    every byte. ``done`` ends with True if the client's side ended first."""

    def __init__(
        self,
        stream: asyncio.BaseProtocol,
        transport: asyncio.Transport,
        done: asyncio.Future[bool],
        client_side: bool,
        activity: Callable[[], None] | None,
    ) -> None:
        self.stream = stream
        self.transport = transport
        self.done = done
        self.client_side = client_side
        self.activity = activity
        self.other: _Splice | None = None

    def data_received(self, data: bytes) -> None:
        other = self.other
        if self.done.done() or other is None:
            return  # the relay is over: nothing more is copied
        other.transport.write(data)
        if self.activity is not None:
            self.activity()

    def eof_received(self) -> bool:
        other = self.other
        if not self.done.done() and other is not None:
            with contextlib.suppress(OSError, RuntimeError):
                if other.transport.can_write_eof():  # (TLS cannot half-close: not passed on)
                    other.transport.write_eof()
        self._end()
        # The backend's transport is closed by the relay's end (True: not by itself); the
        # client's TLS transport ignores the answer (True there only logs a warning: it has
        # already begun its own close).
        return not self.client_side

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        self.stream.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.other is not None:
            with contextlib.suppress(RuntimeError):
                self.other.transport.pause_reading()
        self.stream.pause_writing()

    def resume_writing(self) -> None:
        if self.other is not None and not self.done.done():
            with contextlib.suppress(RuntimeError):
                self.other.transport.resume_reading()
        self.stream.resume_writing()

    def _end(self) -> None:
        if not self.done.done():
            self.done.set_result(self.client_side)


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> bool | None:
    """The tcp relay from both transports' callbacks: True if the client ended first, False if
    the backend did; None (nothing switched) when a side cannot be spliced: already ending,
    or a transport without ``set_protocol``, for which the copying tasks do the work."""
    client = cast(asyncio.Transport, writer.transport)  # (uvloop: no subclass, same methods)
    backend = cast(asyncio.Transport, b_writer.transport)
    for transport, stream in ((client, reader), (backend, b_reader)):
        if not hasattr(transport, "set_protocol") or transport.is_closing():
            return None
        if stream.at_eof() or stream.exception() is not None:
            return None
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()
    activity: Callable[[], None] | None = getattr(client.get_protocol(), "note_activity", None)
    up = _Splice(client.get_protocol(), client, done, True, activity)
    down = _Splice(backend.get_protocol(), backend, done, False, activity)
    up.other, down.other = down, up
    client.set_protocol(up)
    backend.set_protocol(down)
    for stream, side in ((reader, up), (b_reader, down)):
        # What a stream read before the switch goes first (its end fed: read() returns it
        # without waiting).
        stream.feed_eof()
        if early := await stream.read():
            side.data_received(early)
    try:
        return await done
    finally:
        for transport in (client, backend):  # bytes after the end stay unread
            with contextlib.suppress(RuntimeError, AttributeError):
                transport.pause_reading()


class Proxy:
    """The connection handler: connect to the backend, announce the identity, relay."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.stats = ProxyStats()

    async def _connect(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The backend connection, unless the client leaves first (`ClientGone`: the connect
        is cancelled at once). In tcp mode, a client that ended cleanly (close_notify, which
        asyncio's TLS transport answers by closing the connection) with bytes not yet relayed
        has not left: the connection is made and they are delivered."""
        cfg = self.config
        connecting = asyncio.ensure_future(
            open_connection_within(*cfg.backend, cfg.connect_timeout)
        )
        used = False
        try:
            try:
                await until_client_leaves(writer, asyncio.shield(connecting))
            except ClientGone:
                if cfg.mode != "tcp" or reader.exception() is not None or reader.at_eof():
                    raise
                log.debug("client closed with bytes not yet relayed: delivering them")
            connection = await connecting
            used = True
            return connection
        finally:
            if not connecting.done():
                connecting.cancel()  # (the connect's socket is closed by its cancellation)
            elif not used and not connecting.cancelled() and connecting.exception() is None:
                connecting.result()[1].transport.abort()  # made as the client left: unused

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, identity: Identity
    ) -> None:
        cfg = self.config
        header = b""
        if cfg.mode == "tcp":
            src = writer.get_extra_info("peername")  # captured at accept by dance.tls.serve
            dst = writer.get_extra_info("sockname")
            if not src or not dst:
                log.debug("client left before its addresses were known")
                return
            try:
                header = encode_header(
                    (src[0], src[1]), (dst[0], dst[1]), identity.identity, tlv_type=cfg.tlv_type
                )
            except (ProxyV2Error, TypeError, IndexError) as exc:
                log.warning("cannot build the PROXY header: %s", exc)
                return
        try:
            b_reader, b_writer = await self._connect(reader, writer)
        except ClientGone:
            self.stats.client_gone_connecting += 1
            log.debug("client left while the backend connection was being made")
            return
        except TimeoutError:
            self.stats.backend_failures += 1
            self.stats.backend_timeouts += 1
            log.warning(
                "backend %s:%d: no connection within %.1f s", *cfg.backend, cfg.connect_timeout
            )
            return
        except OSError as exc:
            self.stats.backend_failures += 1
            self.stats.backend_refused += 1
            log.warning("backend %s:%d unreachable: %s", *cfg.backend, exc)
            return
        self.stats.backend_connections += 1
        try:
            if cfg.mode == "tcp":
                b_writer.write(header)
                client_first = await _splice(reader, writer, b_reader, b_writer)
                if client_first is None:
                    client_first = await _relay(_pipe(reader, b_writer), _pipe(b_reader, writer))
                if client_first:
                    self.stats.closed_by_client += 1
                else:
                    self.stats.closed_by_backend += 1
            else:  # strict parsing and re-serialization, both directions: dance.http.relay
                await relay_http(
                    reader,
                    writer,
                    b_reader,
                    b_writer,
                    header=cfg.header,
                    identity=identity.identity,
                    stats=self.stats,
                )
        finally:
            await _close_stream(b_writer, cfg.close_timeout)
            for stream in (reader, b_reader):  # a reset is kept with frames referring back
                forget(stream.exception())


async def start_proxy(
    host: str | None,
    port: int,
    *,
    config: ProxyConfig,
    cert: str | Path,
    key: str | Path,
    authenticator: Authenticator,
    codepoint: int = DEFAULT_CODEPOINT,
    san_fallback: bool = False,
    stats: TLSStats | None = None,
    **limits: Any,
) -> tuple[DanceServer, Proxy]:
    """Start the proxy; returns the DANCE server (``.stats``, ``.port``) and the relay.
    ``limits``: the keyword arguments of :func:`dance.tls.serve` (max_connections, ...)."""
    proxy = Proxy(config)
    server = await serve(
        proxy.handle,
        host,
        port,
        cert=cert,
        key=key,
        authenticator=authenticator,
        codepoint=codepoint,
        san_fallback=san_fallback,
        stats=stats,
        **limits,
    )
    return server, proxy
