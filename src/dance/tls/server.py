"""The ``dance.tls`` asyncio API: a DANCE-authenticating TLS 1.3 server and a presenting client.

Server processing order (draft-ietf-dance-client-auth-13 section 8.2, digest section 1.5):

1. the CertificateRequest carries ``dane_clientid`` with a zero-length ClientName;
2. extension absent -> refused, unless ``san_fallback`` is on: then the single SAN dNSName of the
   end-entity certificate is the name (none or several -> refused);
3. zero-length or malformed name -> refused (a badly encoded extension: ``decode_error``);
4. the allow-list, before any DNS query; 5. the DNSSEC-validated TLSA lookup; 6. matching.

Every DANCE refusal inside the handshake uses the one generic alert ``handshake_failure``. Inside
the handshake only cached answers are used (``Authenticator.authenticate_cached``); when a lookup is
needed, the handshake completes but the connection is *pending*: the full ``authenticate`` runs
(bounded by a semaphore, a queue limit and a timeout) before any application byte reaches the
handler, and a refused connection is closed with nothing delivered. TLS 1.3 only, no session
tickets, no session cache: resumption cannot bypass authentication.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from dance.auth import Authenticator
from dance.credentials import CertificateChain, CredentialError
from dance.identity import Identity, Rejection
from dance.tls.bridge import (
    DEFAULT_CODEPOINT,
    ConnectionState,
    DanceSSLObject,
    TLSStats,
    check_codepoint,
    configure_server,
)

__all__ = ["DanceServer", "Handler", "make_server_context", "serve"]

log = logging.getLogger(__name__)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Identity], Awaitable[None]]


def _san_dns_names(der: bytes) -> list[str]:
    try:
        cert = x509.load_der_x509_certificate(der)
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return []
    return list(ext.value.get_values_for_type(x509.DNSName))


def make_server_context(
    cert: str | Path,
    key: str | Path,
    *,
    codepoint: int,
    decide: Callable[[ConnectionState], bool],
    stats: TLSStats,
    chain: str | Path | None = None,
) -> ssl.SSLContext:
    """A TLS 1.3-only server context, without tickets or session cache, requiring a client
    certificate and handing it to ``decide`` (see :func:`dance.tls.bridge.configure_server`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.num_tickets = 0
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(str(cert), str(key))
    if chain is not None:
        ctx.load_verify_locations(cafile=str(chain))
    return configure_server(ctx, codepoint=check_codepoint(codepoint), decide=decide, stats=stats)


class DanceServer:
    """A running DANCE TLS server: the decision logic shared by the handshake callbacks and the
    asyncio layer, and the listening sockets (``async with`` closes them)."""

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        cert: str | Path,
        key: str | Path,
        codepoint: int = DEFAULT_CODEPOINT,
        san_fallback: bool = False,
        max_pending: int = 256,
        max_lookups: int = 64,
        lookup_timeout: float = 10.0,
        stats: TLSStats | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.codepoint = check_codepoint(codepoint)
        self.san_fallback = san_fallback
        self.stats = stats if stats is not None else TLSStats()
        self.lookup_timeout = lookup_timeout
        self.max_pending = max_pending
        self.pending = 0  # connections waiting for a DNS answer (bounded by max_pending)
        self._lookups = asyncio.Semaphore(max_lookups)
        self._chains: dict[tuple[bytes, ...], CertificateChain] = {}
        self.server: asyncio.Server | None = None
        self.context = make_server_context(
            cert, key, codepoint=self.codepoint, decide=self._decide, stats=self.stats
        )

    # -- inside the handshake (called from the verify callback) ---------------------------------

    def _chain(self, ders: list[bytes]) -> CertificateChain:
        """The parsed chain, from a small cache keyed by the exact DER (parsing and the digests
        memoized on each certificate are then shared by repeated handshakes)."""
        key = tuple(ders)
        chain = self._chains.get(key)
        if chain is None:
            chain = CertificateChain.from_der(ders)
            if len(self._chains) >= 1024:
                self._chains.pop(next(iter(self._chains)))
            self._chains[key] = chain
        return chain

    def _reject(self, state: ConnectionState, reason: str) -> bool:
        state.rejection = reason
        state.pending = False
        if not state.counted:
            state.counted = True
            self.stats.count(f"rejected_{reason}")
        log.info("client refused: %s", reason)
        return False

    def _decide(self, state: ConnectionState) -> bool:
        name = state.client_name
        if name is None:
            if not self.san_fallback:
                return self._reject(state, "extension-absent")
            names = _san_dns_names(state.chain[0]) if state.chain else []
            if len(names) != 1:
                return self._reject(state, "no-single-san")
            name = names[0].encode("ascii", "replace")
            state.client_name = name
            state.from_san = True
        if not name:
            return self._reject(state, "empty-client-name")
        try:
            presented = self._chain(state.chain)
        except (CredentialError, ValueError):
            return self._reject(state, "malformed-input")
        # str goes through the name parser's cache; non-ASCII bytes stay bytes (and are refused)
        claimed: str | bytes = name.decode("ascii") if name.isascii() else name
        result = self.authenticator.authenticate_cached(claimed, presented)
        if result is None:
            state.pending = True
            return True
        return self._settle(state, result, "accepted_in_handshake")

    def _settle(self, state: ConnectionState, result: Identity | Rejection, how: str) -> bool:
        if isinstance(result, Identity):
            state.identity = result
            state.pending = False
            if not state.counted:
                state.counted = True
                self.stats.count("accepted")
                self.stats.count(how)
            return True
        return self._reject(state, result.reason.value)

    # -- after the handshake ---------------------------------------------------------------------

    async def identity_of(self, writer: asyncio.StreamWriter) -> Identity | None:
        """The identity of an established connection, completing a pending lookup first."""
        sslobj = writer.get_extra_info("ssl_object")
        if not isinstance(sslobj, DanceSSLObject):
            return None
        state = sslobj.dance_state
        state.handshake_done = True
        if isinstance(state.identity, Identity):
            return state.identity
        if not state.pending or state.client_name is None:
            if not state.counted:
                self._reject(state, "no-decision")
            return None
        if self.pending >= self.max_pending:
            self._reject(state, "overloaded")
            return None
        self.pending += 1
        try:
            async with self._lookups:
                presented = self._chain(state.chain)
                result = await asyncio.wait_for(
                    self.authenticator.authenticate(state.client_name, presented),
                    self.lookup_timeout,
                )
        except TimeoutError:
            self._reject(state, "lookup-timeout")
            return None
        finally:
            self.pending -= 1
        self._settle(state, result, "accepted_after_lookup")
        return state.identity if isinstance(state.identity, Identity) else None

    def wrap(self, handler: Handler) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
        """An ``asyncio.start_server`` callback running ``handler`` for authenticated clients."""

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                identity = await self.identity_of(writer)
                if identity is not None:
                    await handler(reader, writer, identity)
            except asyncio.CancelledError:
                pass  # the server is shutting down: end this connection's task quietly
            except (ConnectionError, ssl.SSLError, TimeoutError) as exc:
                log.debug("connection ended: %r", exc)  # the client went away: routine
            except Exception:
                log.exception("connection handler failed")
            finally:
                writer.close()  # no wait_closed(): the transport finishes closing by itself

        return on_client

    # -- listening --------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        assert self.server is not None
        return str(self.server.sockets[0].getsockname()[0])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()

    async def serve_forever(self) -> None:
        assert self.server is not None
        await self.server.serve_forever()

    async def __aenter__(self) -> DanceServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def serve(
    handler: Handler,
    host: str | None,
    port: int,
    *,
    cert: str | Path,
    key: str | Path,
    authenticator: Authenticator,
    codepoint: int = DEFAULT_CODEPOINT,
    san_fallback: bool = False,
    max_pending: int = 256,
    max_lookups: int = 64,
    lookup_timeout: float = 10.0,
    handshake_timeout: float = 10.0,
    stats: TLSStats | None = None,
    backlog: int = 512,
) -> DanceServer:
    """Start a DANCE TLS 1.3 server; ``handler(reader, writer, identity)`` runs only for
    authenticated clients, and only after authentication completed.

    ``max_pending`` bounds the connections waiting for a DNS answer (more are refused as
    ``overloaded``), ``max_lookups`` the lookups running at once, ``lookup_timeout`` each wait.
    Raises BridgeError when this Python cannot be bridged to its OpenSSL, ValueError for a bad
    codepoint."""
    core = DanceServer(
        authenticator,
        cert=cert,
        key=key,
        codepoint=codepoint,
        san_fallback=san_fallback,
        max_pending=max_pending,
        max_lookups=max_lookups,
        lookup_timeout=lookup_timeout,
        stats=stats,
    )
    core.server = await asyncio.start_server(
        core.wrap(handler),
        host,
        port,
        ssl=core.context,
        ssl_handshake_timeout=handshake_timeout,
        backlog=backlog,
    )
    return core
