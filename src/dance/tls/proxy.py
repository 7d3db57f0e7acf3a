"""The DANCE terminating proxy (seed Example 1): TLS 1.3 with ``dane_clientid`` in front, plain TCP
or HTTP to a backend, with the authenticated identity passed along.

No backend connection is opened before the client is authenticated (the handler of
:func:`dance.tls.serve` only runs then). ``tcp`` mode: a PROXY protocol v2 header first, with the
identity in a custom TLV (0xE0-0xEF, default 0xE0). ``http`` mode: each request head gets the
identity in a header (``X-DANCE-Client-ID`` by default); copies sent by the client are removed.
Requests are parsed strictly and re-serialized (`dance.http.relay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from dance.auth import Authenticator
from dance.http.relay import relay_http
from dance.identity import Identity
from dance.tls.bridge import DEFAULT_CODEPOINT, TLSStats
from dance.tls.proxyv2 import DEFAULT_TLV_TYPE, ProxyV2Error, encode_header
from dance.tls.server import DanceServer, serve

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

    def __post_init__(self) -> None:
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
        self.backend_failures = 0
        self.requests = 0
        self.stripped_headers = 0
        self.refused: dict[str, int] = {}  # http mode: refused requests by reason


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, asyncio.IncompleteReadError):
        pass


class Proxy:
    """The connection handler: connect to the backend, announce the identity, relay."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.stats = ProxyStats()

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, identity: Identity
    ) -> None:
        cfg = self.config
        header = b""
        if cfg.mode == "tcp":
            try:
                src = writer.get_extra_info("peername")
                dst = writer.get_extra_info("sockname")
                header = encode_header(
                    (src[0], src[1]), (dst[0], dst[1]), identity.identity, tlv_type=cfg.tlv_type
                )
            except (ProxyV2Error, TypeError, IndexError) as exc:
                log.warning("cannot build the PROXY header: %s", exc)
                return
        try:
            b_reader, b_writer = await asyncio.wait_for(
                asyncio.open_connection(*cfg.backend), cfg.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            self.stats.backend_failures += 1
            log.warning("backend %s:%d unreachable: %s", *cfg.backend, exc)
            return
        self.stats.backend_connections += 1
        try:
            if cfg.mode == "tcp":
                b_writer.write(header)
                await asyncio.gather(_pipe(reader, b_writer), _pipe(b_reader, writer))
            else:  # strict parsing and re-serialization: dance.http.relay
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
            b_writer.close()
            with contextlib.suppress(OSError):
                await b_writer.wait_closed()


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
) -> tuple[DanceServer, Proxy]:
    """Start the proxy; returns the DANCE server (``.stats``, ``.port``) and the relay."""
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
    )
    return server, proxy
