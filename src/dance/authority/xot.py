"""DNS over TLS for the embedded authority, clients authenticated by DANCE (architecture Example 9).

The primary's access list names secondaries by their DANCE ClientName instead of by TSIG key: a
secondary presents its certificate and the ``dane_clientid`` ClientName in the TLS 1.3 handshake,
:class:`dance.tls.DanceServer` (with its :class:`dance.auth.Authenticator`) decides, and the
authenticated identity is then matched against ``xfr_allow`` (an :class:`dance.auth.AllowList`)
to allow AXFR over TLS (RFC 9103 XoT) without TSIG. Framing is DNS over TCP (RFC 7858).

- refused or unauthenticated clients: the connection is closed before any DNS message is read;
- authenticated, in ``query_allow`` (default: every authenticated client): queries answered as TCP;
- authenticated and in ``xfr_allow``: AXFR (and IXFR answered by AXFR) of every served zone;
  other authenticated clients asking for a transfer: REFUSED (a TSIG-signed transfer request is
  still honoured under the usual TSIG rules);
- dynamic updates: TSIG rules unchanged (unsigned updates are REFUSED).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dance.auth import AllowList, Authenticator
from dance.authority.errors import AuthorityError
from dance.authority.limits import Limits, is_loopback
from dance.identity import Identity
from dance.names import InvalidName, parse_client_name
from dance.tls.bridge import DEFAULT_CODEPOINT
from dance.tls.server import DanceServer

#: How the authority takes a connection: ``on_connection(reader, writer, tls=listener)``.
OnConnection = Callable[..., Awaitable[None]]

__all__ = ["TLSAccess", "XoTConfig", "XoTListener"]

log = logging.getLogger(__name__)


def _allow(entries: AllowList | Iterable[str] | None) -> AllowList | None:
    if entries is None or isinstance(entries, AllowList):
        return entries
    return AllowList.parse(entries)


@dataclass(frozen=True)
class XoTConfig:
    """Options of the DNS-over-TLS listener (``Authority(..., tls=XoTConfig(...))``).

    ``xfr_allow`` and ``query_allow`` take AllowList entries (``name`` exactly, ``.suffix`` for
    every name strictly below); ``query_allow=None`` answers queries from every authenticated
    client. ``san_fallback`` accepts stock clients (kdig) without ``dane_clientid`` by the single
    SAN dNSName of their certificate."""

    cert: str | Path
    key: str | Path
    authenticator: Authenticator
    xfr_allow: AllowList | Iterable[str] = ()
    query_allow: AllowList | Iterable[str] | None = None
    san_fallback: bool = False
    codepoint: int = DEFAULT_CODEPOINT
    host: str | None = None  # default: the authority's UDP/TCP host
    port: int = 0
    handshake_timeout: float = 10.0
    lookup_timeout: float = 10.0


@dataclass(frozen=True)
class TLSAccess:
    """What one authenticated TLS connection may do."""

    identity: Identity
    query: bool
    transfer: bool


class XoTListener:
    """The TLS listener of an `Authority` (made and run by the authority itself, which hands it
    its limits and the function that serves a connection: no import of the server here)."""

    def __init__(
        self,
        config: XoTConfig,
        *,
        limits: Limits,
        allow_non_loopback: bool,
        on_connection: OnConnection,
    ) -> None:
        self.limits = limits
        self.allow_non_loopback = allow_non_loopback
        self._on_connection = on_connection
        self.config = config
        self.xfr_allow = _allow(config.xfr_allow) or AllowList.parse(())
        self.query_allow = _allow(config.query_allow)
        self.core = DanceServer(
            config.authenticator,
            cert=config.cert,
            key=config.key,
            codepoint=config.codepoint,
            san_fallback=config.san_fallback,
            max_pending=limits.max_tcp_connections,
            lookup_timeout=config.lookup_timeout,
        )
        self.server: asyncio.Server | None = None
        self.host = ""
        self.port = 0

    async def start(self, host: str) -> None:
        bind = self.config.host or host
        if not is_loopback(bind) and not self.allow_non_loopback:
            raise AuthorityError(
                "non-loopback",
                f"refusing to listen on non-loopback address {bind} "
                "(pass allow_non_loopback / --allow-non-loopback to do so)",
            )
        self.server = await asyncio.start_server(
            self._on_client,
            bind,
            self.config.port,
            ssl=self.core.context,
            ssl_handshake_timeout=self.config.handshake_timeout,
            limit=self.limits.max_message_size + 2,
        )
        sockname = self.server.sockets[0].getsockname()
        self.host, self.port = str(sockname[0]), int(sockname[1])
        log.info("authority listening on %s port %d (DNS over TLS, DANCE)", self.host, self.port)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._on_connection(reader, writer, tls=self)

    def _allowed(self, allow: AllowList, identity: Identity) -> bool:
        try:
            return allow.allows(parse_client_name(identity.client_name))
        except InvalidName:
            return False

    async def access(self, writer: asyncio.StreamWriter) -> TLSAccess | None:
        """Authenticate the connection (the Authenticator decides); None = close it silently."""
        identity = await self.core.identity_of(writer)
        if identity is None:
            return None
        query = self.query_allow is None or self._allowed(self.query_allow, identity)
        transfer = self._allowed(self.xfr_allow, identity)
        log.info(
            "DNS over TLS client %s authenticated (queries %s, transfers %s)",
            identity.client_name,
            "allowed" if query else "refused",
            "allowed" if transfer else "refused",
        )
        return TLSAccess(identity, query, transfer)
