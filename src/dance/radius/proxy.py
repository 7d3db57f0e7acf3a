"""The RadSec front (RFC 6614): RADIUS/TLS clients authenticated by DANCE, relayed to a RADIUS
server over UDP on loopback with their identity.

TLS 1.3 with ``dane_clientid`` (or, for stock RadSec clients, the single SAN dNSName) is
terminated by :func:`dance.tls.serve`; the handler runs only for an authenticated client. Each
connection gets its own UDP socket to the server, so the client's Identifiers stay unique
without renumbering; Accounting-Requests go to the accounting port (by default the server's
port + 1), the others to the authentication port. Every packet is framed by its Length field
(`StreamFramer`), parsed strictly and checked with the RadSec secret ``radsec``
(`check_request`); a request carrying the identity attribute is refused (``spoofed-identity``).
The proxy then appends the identity attribute and signs the request again with the loopback
secret (`resign_request`). Responses are checked with the loopback secret against the request
they answer, and signed again for the client (`resign_response`).

Any refused request closes the connection (RFC 6613 section 2.6.4: a "silently discard" on a
stream closes it), after it is counted by reason in ``RadsecProxy.stats.refused``; other
connections go on. A response that fails its checks is dropped and counted (``backend-*``); a
request with no answer within ``backend_timeout`` is forgotten and counted. At most
``max_in_flight`` requests per connection wait for the server: past that the proxy stops reading
from the client, and it stops reading while the client does not read its responses.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dance.auth import Authenticator
from dance.identity import Identity
from dance.radius.identity import DEFAULT_IDENTITY_ATTRIBUTE, IdentityAttribute
from dance.radius.packet import (
    ACCOUNTING_REQUEST,
    RADSEC_SECRET,
    Packet,
    RadiusError,
    StreamFramer,
    check_request,
    check_response,
    parse_packet,
    resign_request,
    resign_response,
)
from dance.service.observe import Observer
from dance.service.relay import RefusalStats
from dance.tls.bridge import DEFAULT_CODEPOINT, TLSStats
from dance.tls.server import ClientGone, DanceServer, forget, serve, until_client_leaves

__all__ = ["RadsecProxy", "RadsecProxyConfig", "RadsecProxyStats", "start_radsec_proxy"]

log = logging.getLogger(__name__)
_CHUNK = 16 * 1024
DEFAULT_PORT = 2083  # RFC 6614 section 2.1


@dataclass(frozen=True)
class RadsecProxyConfig:
    backend: tuple[str, int]
    backend_secret: bytes = field(repr=False)
    accounting_backend: tuple[str, int] | None = None  # None: the backend's port + 1
    identity: IdentityAttribute = DEFAULT_IDENTITY_ATTRIBUTE
    client_secret: bytes = field(default=RADSEC_SECRET, repr=False)
    max_in_flight: int = 32
    backend_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.backend_secret:
            raise ValueError("the backend shared secret is empty")
        if not 1 <= self.max_in_flight <= 256:
            raise ValueError(f"max_in_flight must be 1 to 256, not {self.max_in_flight!r}")
        if not self.backend_timeout > 0:
            raise ValueError(f"backend_timeout must be positive, not {self.backend_timeout!r}")
        if self.accounting_backend is None and not 0 < self.backend[1] < 65535:
            raise ValueError(f"no accounting port after {self.backend[1]}")

    @property
    def accounting(self) -> tuple[str, int]:
        if self.accounting_backend is not None:
            return self.accounting_backend
        return (self.backend[0], self.backend[1] + 1)


class RadsecProxyStats(RefusalStats):
    def __init__(self) -> None:
        self.sessions = 0  # authenticated connections served
        self.requests = 0  # forwarded to the server
        self.responses = 0  # relayed to clients
        self.backend_timeouts = 0
        self.in_flight = 0  # now, all connections
        self.refused: dict[str, int] = {}  # client packets, by reason (each closed a connection)
        self.backend_refused: dict[str, int] = {}  # server packets dropped, by reason

    def backend_refuse(self, reason: str) -> None:
        self.backend_refused[reason] = self.backend_refused.get(reason, 0) + 1


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, session: _Session) -> None:
        self.session = session

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.session.response(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self.session.proxy.stats.backend_refuse("unreachable")
        log.debug("backend error: %r", exc)


class _Session:
    """One authenticated client connection and its UDP socket to the server."""

    def __init__(
        self, proxy: RadsecProxy, writer: asyncio.StreamWriter, identity: Identity
    ) -> None:
        self.proxy = proxy
        self.config = proxy.config
        self.writer = writer
        self.name = identity.identity
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        # identifier -> (the client's request, the request sent, where, its timeout)
        self.pending: dict[int, tuple[Packet, Packet, tuple[str, int], asyncio.TimerHandle]] = {}
        self.room = asyncio.Event()
        self.room.set()
        self.idle = asyncio.Event()
        self.idle.set()
        self.extra = self.config.identity.encode(self.name)

    def forward(self, raw: bytes) -> None:
        cfg, stats = self.config, self.proxy.stats
        packet = parse_packet(raw)
        check_request(packet, cfg.client_secret)
        if cfg.identity.present(packet):
            raise RadiusError("spoofed-identity", f"attribute {cfg.identity} from the client")
        if packet.identifier in self.pending:
            raise RadiusError("duplicate-identifier", f"{packet.identifier} is in flight")
        out = resign_request(packet, cfg.client_secret, cfg.backend_secret, add=[self.extra])
        sent = parse_packet(out)
        assert self.transport is not None
        where = cfg.accounting if packet.code == ACCOUNTING_REQUEST else cfg.backend
        self.transport.sendto(out, where)
        timer = self.loop.call_later(cfg.backend_timeout, self._expire, packet.identifier)
        self.pending[packet.identifier] = (packet, sent, where, timer)
        stats.requests += 1
        stats.in_flight += 1
        self._update()
        log.debug("%s: request %d id %d forwarded", self.name, packet.code, packet.identifier)

    def _update(self) -> None:
        if len(self.pending) >= self.config.max_in_flight:
            self.room.clear()
        else:
            self.room.set()
        if self.pending:
            self.idle.clear()
        else:
            self.idle.set()

    def _forget(self, identifier: int) -> None:
        _, _, _, timer = self.pending.pop(identifier)
        timer.cancel()
        self.proxy.stats.in_flight -= 1
        self._update()

    def _expire(self, identifier: int) -> None:
        if identifier in self.pending:
            self._forget(identifier)
            self.proxy.stats.backend_timeouts += 1
            self.proxy.backend_error("timeout")
            log.info("%s: no answer from the server to id %d", self.name, identifier)

    def response(self, data: bytes, source: tuple[str, int]) -> None:
        cfg, stats = self.config, self.proxy.stats
        try:
            packet = parse_packet(data)
            entry = self.pending.get(packet.identifier)
            if entry is None:
                raise RadiusError("unknown-identifier", str(packet.identifier))
            original, sent, where, _ = entry
            if source != where:
                raise RadiusError("unknown-source", f"{source[0]}:{source[1]}")
            check_response(packet, sent, cfg.backend_secret)
            out = resign_response(packet, sent, original, cfg.backend_secret, cfg.client_secret)
        except RadiusError as exc:
            stats.backend_refuse(exc.reason)
            self.proxy.backend_error(exc.reason)
            log.warning("%s: response from the server dropped: %s", self.name, exc)
            return
        self._forget(packet.identifier)
        if self.writer.is_closing():
            return
        self.writer.write(out)
        stats.responses += 1
        log.debug("%s: response %d id %d relayed", self.name, packet.code, packet.identifier)

    def close(self) -> None:
        for identifier in list(self.pending):
            self._forget(identifier)
        if self.transport is not None:
            self.transport.close()


class RadsecProxy:
    """The connection handler for :func:`dance.tls.serve`."""

    def __init__(self, config: RadsecProxyConfig, observer: Observer | None = None) -> None:
        self.config = config
        self.observer = observer
        self.stats = RadsecProxyStats()

    def backend_error(self, kind: str) -> None:
        if self.observer is not None:
            self.observer.backend_error(kind)

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, identity: Identity
    ) -> None:
        cfg = self.config
        try:
            session = _Session(self, writer, identity)
        except RadiusError as exc:
            self.stats.refuse(exc.reason)
            log.info("refused %s: %s", identity.identity, exc)
            return
        try:
            async with asyncio.timeout(cfg.backend_timeout):  # (not wait_for: see
                # dance.service.relay.open_connection_within, the same race)
                session.transport, _ = await session.loop.create_datagram_endpoint(
                    lambda: _Datagrams(session), local_addr=(cfg.backend[0], 0)
                )
        except (OSError, TimeoutError) as exc:
            self.backend_error("connect")
            log.warning("server %s:%d unusable: %r", *cfg.backend, exc)
            return
        self.stats.sessions += 1
        framer = StreamFramer()
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    framer.eof()
                    # the client is done sending: its answers still come, within the timeout
                    await until_client_leaves(
                        writer, asyncio.wait_for(session.idle.wait(), cfg.backend_timeout)
                    )
                    break
                for raw in framer.feed(data):
                    if not session.room.is_set():
                        await until_client_leaves(writer, session.room.wait())
                    session.forward(raw)
                await writer.drain()  # a client that does not read its answers is not read
        except RadiusError as exc:
            self.stats.refuse(exc.reason)
            log.info("closing %s: %s", identity.identity, exc)
        except (ClientGone, TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            log.debug("%s: connection ended: %r", identity.identity, exc)
        finally:
            session.close()
            forget(reader.exception())


async def start_radsec_proxy(
    host: str | None,
    port: int,
    *,
    config: RadsecProxyConfig,
    cert: str | Path,
    key: str | Path,
    authenticator: Authenticator,
    codepoint: int = DEFAULT_CODEPOINT,
    stats: TLSStats | None = None,
    observer: Observer | None = None,
    **limits: Any,
) -> tuple[DanceServer, RadsecProxy]:
    """Start the front; returns the DANCE server (``.stats``, ``.port``) and the RADIUS relay.
    ``limits``: the other keyword arguments of :func:`dance.tls.serve` (``san_fallback``,
    ``max_connections``, ``max_per_address``, timeouts)."""
    proxy = RadsecProxy(config, observer)
    server = await serve(
        proxy.handle,
        host,
        port,
        cert=cert,
        key=key,
        authenticator=authenticator,
        codepoint=codepoint,
        stats=stats,
        observer=observer,
        **limits,
    )
    return server, proxy
