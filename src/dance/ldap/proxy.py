"""The DANCE front for OpenLDAP's slapd (seed architecture Example 3, LDAP with SASL EXTERNAL).

Two listeners share one :class:`dance.tls.DanceServer` (TLS 1.3, ``dane_clientid``, the pending
DNS lookup): LDAPS (TLS from the first byte) and plain LDAP where the only request accepted is
StartTLS (RFC 4511 4.14, ``1.3.6.1.4.1.1466.20037``); a bind before TLS is answered
``confidentialityRequired`` and any other request ends the session with a Notice of
Disconnection. Bytes pipelined after the StartTLS request are refused (``starttls-pipelined``).

Once a user is authenticated (``_user.D`` ClientName; identity ``uid@domain``), its first
request must be a SASL EXTERNAL bind; the optional authzid in its credentials is the identity it
asks to act as. The proxy then opens ``ldapi://`` to slapd and binds with SASL EXTERNAL and the
authzid ``u:uid@domain``; slapd maps it (``authz-regexp``) and checks the proxy's ``authzTo``
(``authz-policy to``), so slapd alone decides which identities the proxy may assume. A different
authzid asked by the client is checked by slapd too: a Who Am I? request with an RFC 4370 proxied
authorization control, under the user's own identity (the user's ``authzTo``); only when slapd
accepts it does the proxy bind again with that authzid. Then requests are relayed byte for byte.

Every client PDU is framed and shape-checked (:mod:`dance.ldap.ber`), decoded by pyasn1 and
refused unless its canonical encoding is the input (:mod:`dance.ldap.messages`); a refusal ends
the session with a Notice of Disconnection and is counted by reason. A second bind, a
StartTLS inside TLS, and a non-SASL or non-EXTERNAL bind are answered by the proxy and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dance.auth import Authenticator
from dance.identity import Identity
from dance.ldap import messages as m
from dance.ldap.ber import DEFAULT_MAX_DEPTH, DEFAULT_MAX_PDU, BERError, PDUReader
from dance.service.observe import Observer
from dance.service.relay import RefusalStats, SessionSlots, host_port, peer_host
from dance.tls.bridge import CONNECTION_PEER, DEFAULT_CODEPOINT, TLSStats
from dance.tls.server import ClientGone, DanceServer, DanceStreamWriter, until_client_leaves

__all__ = ["LDAPProxy", "LDAPProxyConfig", "LDAPProxyStats", "start_ldap_proxy"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_CHUNK = 64 * 1024
_UPSTREAM_MAX_PDU = 64 * 1024 * 1024  # slapd's responses (trusted) are only cut at envelopes


@dataclass(frozen=True)
class LDAPProxyConfig:
    ldapi: str  # path of slapd's ldapi socket
    max_pdu: int = DEFAULT_MAX_PDU
    max_depth: int = DEFAULT_MAX_DEPTH
    bind_timeout: float = 10.0  # from TLS to the client's bind (and StartTLS before TLS)
    upstream_timeout: float = 10.0  # slapd connection and each setup exchange
    tls_timeout: float = 10.0  # the StartTLS handshake
    max_connections: int = 256  # StartTLS listener: sessions at once
    max_per_address: int = 32
    close_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.ldapi:
            raise ValueError("the ldapi socket path is empty")
        for name in ("bind_timeout", "upstream_timeout", "tls_timeout", "close_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.max_connections < 1 or self.max_per_address < 1:
            raise ValueError("connection limits must be at least 1")
        if not 64 <= self.max_pdu <= 16 * 1024 * 1024:
            raise ValueError("max_pdu must be 64 to 16777216")
        if not 8 <= self.max_depth <= 256:
            raise ValueError("max_depth must be 8 to 256")


@dataclass
class LDAPProxyStats(RefusalStats):
    """``refused`` counts refusals by reason: the BER reasons of :mod:`dance.ldap.ber`,
    ``undecodable``, ``non-canonical``, ``not-a-request``, ``message-id-zero``,
    ``before-tls``, ``bind-before-tls``, ``starttls-pipelined``, ``not-bind``, ``not-sasl``,
    ``not-external``, ``bind-version``, ``bind-name``, ``second-bind``, ``starttls-in-tls``,
    ``not-user``, ``authz-refused``, ``upstream-refused``, ``upstream-unavailable``,
    ``timeout-bind``, ``timeout-tls``, ``max-connections``, ``per-address``."""

    sessions: int = 0
    starttls: int = 0
    binds: int = 0  # SASL EXTERNAL binds accepted
    authz_changes: int = 0  # binds as another identity, allowed by slapd
    relayed: int = 0  # client PDUs relayed to slapd
    upstream_connections: int = 0
    refused: dict[str, int] = field(default_factory=dict)


class _End(Exception):
    """The session is over (its last PDU, if any, was sent)."""


class _Client:
    """Reading whole PDUs from the client."""

    def __init__(self, reader: asyncio.StreamReader, config: LDAPProxyConfig) -> None:
        self.reader = reader
        self.framer = PDUReader(config.max_pdu, config.max_depth)
        self.queue: list[bytes] = []

    async def next(self) -> bytes | None:
        while not self.queue:
            data = await self.reader.read(_CHUNK)
            if not data:
                self.framer.eof()
                return None
            self.queue.extend(self.framer.feed(data))
        return self.queue.pop(0)


class LDAPProxy:
    """The handler of both listeners; ``core`` is the DANCE TLS decision."""

    def __init__(self, config: LDAPProxyConfig, core: DanceServer) -> None:
        self.config = config
        self.core = core
        self.stats = LDAPProxyStats()
        self.plain: asyncio.Server | None = None
        self.slots = SessionSlots(config.max_connections, config.max_per_address)  # StartTLS

    # -- refusals ---------------------------------------------------------------------------------

    async def _end(
        self, writer: asyncio.StreamWriter, reason: str, code: int, text: str, pdu: bytes | None
    ) -> None:
        """Count ``reason``, send ``pdu`` (or a Notice of Disconnection), end the session."""
        self.stats.refuse(reason)
        log.info("LDAP session ended: %s", reason)
        with contextlib.suppress(OSError, RuntimeError, TimeoutError, ssl.SSLError):
            writer.write(pdu if pdu is not None else m.notice_of_disconnection(code, text))
            async with asyncio.timeout(self.config.close_timeout):
                await writer.drain()
        raise _End(reason)

    async def _read(
        self, client: _Client, writer: asyncio.StreamWriter, timeout: float, what: str
    ) -> m.Request:
        try:
            async with asyncio.timeout(timeout):
                pdu = await _watch(writer, client.next())
        except TimeoutError:
            await self._end(writer, f"timeout-{what}", m.UNAVAILABLE, "timeout", None)
            raise
        except BERError as exc:
            await self._end(writer, exc.reason, m.PROTOCOL_ERROR, "malformed PDU", None)
            raise
        if pdu is None:
            raise _End("client-closed")
        try:
            return m.decode_request(pdu)
        except m.LDAPProtocolError as exc:
            await self._end(writer, exc.reason, m.PROTOCOL_ERROR, "malformed PDU", None)
            raise

    # -- StartTLS listener ------------------------------------------------------------------------

    async def handle_plain(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peername = writer.get_extra_info("peername")
        peer = peer_host(peername)
        refusal = self.slots.admit(peer)
        if refusal is not None:
            self.stats.refuse(refusal)
            writer.transport.abort()
            return
        observer = self.core.observer
        if observer is not None:
            observer.opened()
        try:
            await self._plain_session(reader, writer, peername)
        except (_End, ClientGone, asyncio.CancelledError):
            pass
        except (ConnectionError, ssl.SSLError, OSError, asyncio.IncompleteReadError) as exc:
            log.debug("LDAP session from %s ended: %r", peer, exc)
        except Exception:
            log.exception("LDAP session failed")
        finally:
            writer.transport.abort()
            if observer is not None:
                observer.closed()
            self.slots.release(peer)

    async def _plain_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peername: Any
    ) -> None:
        cfg = self.config
        self.stats.sessions += 1
        client = _Client(reader, cfg)
        request = await self._read(client, writer, cfg.bind_timeout, "bind")
        if request.op == "bindRequest":
            await self._end(
                writer,
                "bind-before-tls",
                m.CONFIDENTIALITY_REQUIRED,
                "",
                m.bind_response(request.message_id, m.CONFIDENTIALITY_REQUIRED, "StartTLS first"),
            )
        if request.extended_name() != m.START_TLS or request.has_value():
            await self._end(
                writer, "before-tls", m.CONFIDENTIALITY_REQUIRED, "StartTLS first", None
            )
        writer.write(m.extended_response(request.message_id, m.SUCCESS, "", m.START_TLS))
        await writer.drain()
        # Nothing may follow the StartTLS request in plaintext (it would be read as if it had
        # come through TLS): from here to start_tls nothing awaits.
        if client.queue or client.framer.pending or len(getattr(reader, "_buffer", b"")):
            await self._end(writer, "starttls-pipelined", m.PROTOCOL_ERROR, "pipelined", None)
        CONNECTION_PEER.set((host_port(peername), time.monotonic()))
        try:
            async with asyncio.timeout(cfg.tls_timeout):
                await writer.start_tls(self.core.context, ssl_handshake_timeout=cfg.tls_timeout + 5)
        except TimeoutError:
            self.stats.refuse("timeout-tls")
            raise _End("timeout-tls") from None
        except (ssl.SSLError, OSError, ConnectionError) as exc:
            log.info("StartTLS handshake failed: %r", exc)
            raise _End("tls") from None
        self.stats.starttls += 1
        identity = await _watch(writer, self.core.identity_of(writer))
        if identity is None:
            raise _End("refused")
        await self._session(reader, writer, identity, counted=True)

    # -- an authenticated session (both listeners) ------------------------------------------------

    async def handle_tls(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, identity: Identity
    ) -> None:
        with contextlib.suppress(_End, ClientGone):
            await self._session(reader, writer, identity)

    async def _session(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        identity: Identity,
        *,
        counted: bool = False,
    ) -> None:
        cfg = self.config
        if not counted:
            self.stats.sessions += 1
        client = _Client(reader, cfg)
        request = await self._read(client, writer, cfg.bind_timeout, "bind")
        mid = request.message_id
        if request.op != "bindRequest":
            await self._end(writer, "not-bind", m.OPERATIONS_ERROR, "bind first", None)
        bind = m.sasl_bind(request)
        refusal: tuple[str, int, str] | None = None
        if bind.version != 3:
            refusal = ("bind-version", m.PROTOCOL_ERROR, "LDAPv3 only")
        elif bind.method != "sasl":
            refusal = ("not-sasl", m.AUTH_METHOD_NOT_SUPPORTED, "SASL EXTERNAL only")
        elif bind.mechanism != m.EXTERNAL:
            refusal = ("not-external", m.AUTH_METHOD_NOT_SUPPORTED, "SASL EXTERNAL only")
        elif bind.name:
            refusal = ("bind-name", m.PROTOCOL_ERROR, "the bind name must be empty")
        elif identity.user_id is None or identity.domain is None:
            refusal = ("not-user", m.INAPPROPRIATE_AUTHENTICATION, "not a _user identity")
        if refusal is not None:
            reason, code, text = refusal
            await self._end(writer, reason, code, text, m.bind_response(mid, code, text))
        own = f"u:{identity.identity}"
        wanted: str | None = None
        if bind.credentials:
            try:
                wanted = bind.credentials.decode("utf-8")
            except UnicodeDecodeError:
                wanted = None
                await self._end(
                    writer, "authzid", m.INVALID_CREDENTIALS, "", m.bind_response(mid, 49, "")
                )
            if wanted == own:
                wanted = None
        upstream = await self._upstream(writer, mid, own, wanted)
        self.stats.binds += 1
        if wanted is not None:
            self.stats.authz_changes += 1
        log.info("LDAP %s bound as %s", identity.identity, wanted or own)
        writer.write(m.bind_response(mid, m.SUCCESS))
        await writer.drain()
        u_reader, u_writer = upstream
        try:
            up = asyncio.ensure_future(self._up(client, writer, u_writer))
            down = asyncio.ensure_future(self._down(u_reader, writer))
            try:
                await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (up, down):
                    task.cancel()
                await asyncio.wait({up, down})
        finally:
            u_writer.transport.abort()

    async def _upstream(
        self, writer: asyncio.StreamWriter, mid: int, own: str, wanted: str | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.upstream_timeout):
                u_reader, u_writer = await _watch(
                    writer, asyncio.open_unix_connection(cfg.ldapi, limit=_CHUNK)
                )
        except (OSError, TimeoutError) as exc:
            log.warning("slapd at %s unreachable: %r", cfg.ldapi, exc)
            await self._end(
                writer, "upstream-unavailable", m.UNAVAILABLE, "", m.bind_response(mid, 52, "")
            )
            raise
        self.stats.upstream_connections += 1
        framer = PDUReader(_UPSTREAM_MAX_PDU, check=False)
        queue: list[bytes] = []

        async def exchange(pdu: bytes) -> m.Result:
            u_writer.write(pdu)
            await u_writer.drain()
            while not queue:
                data = await u_reader.read(_CHUNK)
                if not data:
                    raise ConnectionError("slapd closed")
                queue.extend(framer.feed(data))
            return m.decode_result(queue.pop(0))

        async def setup() -> str | None:
            """None when bound as wanted, else the refusal reason."""
            result = await exchange(m.bind_request(1, own))
            if result.op != "bindResponse" or result.code != m.SUCCESS:
                log.info("slapd refused the bind as %s: %s", own, result.diagnostic)
                return "upstream-refused"
            if wanted is None:
                return None
            check = await exchange(m.extended_request(2, m.WHO_AM_I, proxied_authzid=wanted))
            if check.code != m.SUCCESS:
                log.info("slapd refused %s acting as %s: %s", own, wanted, check.diagnostic)
                return "authz-refused"
            result = await exchange(m.bind_request(3, wanted))
            if result.op != "bindResponse" or result.code != m.SUCCESS:
                return "authz-refused"
            return None

        try:
            async with asyncio.timeout(cfg.upstream_timeout):
                reason = await _watch(writer, setup())
        except (OSError, TimeoutError, ConnectionError, BERError, m.LDAPProtocolError) as exc:
            u_writer.transport.abort()
            log.warning("slapd setup failed: %r", exc)
            await self._end(
                writer, "upstream-unavailable", m.UNAVAILABLE, "", m.bind_response(mid, 52, "")
            )
            raise
        except BaseException:
            u_writer.transport.abort()
            raise
        if reason is not None:
            u_writer.transport.abort()
            code = m.INSUFFICIENT_ACCESS if reason == "authz-refused" else m.INVALID_CREDENTIALS
            await self._end(writer, reason, code, "", m.bind_response(mid, code, "not authorized"))
        if queue or framer.pending:  # slapd sent more than the replies: not a slapd we know
            u_writer.transport.abort()
            await self._end(
                writer, "upstream-unavailable", m.UNAVAILABLE, "", m.bind_response(mid, 52, "")
            )
        return u_reader, u_writer

    async def _up(
        self, client: _Client, writer: asyncio.StreamWriter, u_writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                try:
                    pdu = await client.next()
                except BERError as exc:
                    await self._end(writer, exc.reason, m.PROTOCOL_ERROR, "malformed PDU", None)
                    return
                if pdu is None:
                    return
                try:
                    request = m.decode_request(pdu)
                except m.LDAPProtocolError as exc:
                    await self._end(writer, exc.reason, m.PROTOCOL_ERROR, "malformed PDU", None)
                    return
                if request.op == "bindRequest":
                    self.stats.refuse("second-bind")
                    writer.write(
                        m.bind_response(request.message_id, m.UNWILLING_TO_PERFORM, "already bound")
                    )
                    await writer.drain()
                    continue
                if request.extended_name() == m.START_TLS:
                    self.stats.refuse("starttls-in-tls")
                    writer.write(
                        m.extended_response(
                            request.message_id, m.OPERATIONS_ERROR, "TLS already established"
                        )
                    )
                    await writer.drain()
                    continue
                u_writer.write(request.raw)
                self.stats.relayed += 1
                await u_writer.drain()
                if request.op == "unbindRequest":
                    return
        except (_End, OSError, ConnectionError, ssl.SSLError):
            return

    @staticmethod
    async def _down(u_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # cut at envelopes, so that the proxy's own replies never land inside one of slapd's
        framer = PDUReader(_UPSTREAM_MAX_PDU, check=False)
        try:
            while data := await u_reader.read(_CHUNK):
                pdus = framer.feed(data)
                if pdus:
                    writer.write(b"".join(pdus))
                    await writer.drain()
        except (OSError, ConnectionError, BERError, ssl.SSLError):
            pass

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def starttls_port(self) -> int:
        assert self.plain is not None
        return int(self.plain.sockets[0].getsockname()[1])

    async def shutdown(self, drain_timeout: float = 0.0) -> int:
        """Stop both listeners, let sessions finish for ``drain_timeout``, cut the rest."""
        if self.plain is not None:
            self.plain.close()
        cut = await self.core.shutdown(drain_timeout)
        return cut + await self.slots.drain(drain_timeout)


async def _watch(writer: asyncio.StreamWriter, aw: Awaitable[T]) -> T:
    """``aw``, cancelled at once if the client leaves (LDAPS connections, whose writer knows
    when the connection is lost); after StartTLS the stream's own close waiter is not usable
    for that, and the timeouts around each wait bound it instead."""
    if isinstance(writer, DanceStreamWriter):
        return await until_client_leaves(writer, aw)
    return await aw


async def start_ldap_proxy(
    host: str | None,
    *,
    ldaps_port: int | None,
    starttls_port: int | None,
    config: LDAPProxyConfig,
    cert: str | Path,
    key: str | Path,
    authenticator: Authenticator,
    codepoint: int = DEFAULT_CODEPOINT,
    stats: TLSStats | None = None,
    observer: Observer | None = None,
    **limits: Any,
) -> LDAPProxy:
    """Start the front: LDAPS on ``ldaps_port`` and/or StartTLS on ``starttls_port`` (None: that
    listener is off; 0: a free port). ``limits``: the keyword arguments of DanceServer (the
    LDAPS listener's connection limits, the DNS wait)."""
    if ldaps_port is None and starttls_port is None:
        raise ValueError("enable LDAPS, StartTLS or both")
    core = DanceServer(
        authenticator,
        cert=cert,
        key=key,
        codepoint=codepoint,
        stats=stats,
        observer=observer,
        **limits,
    )
    proxy = LDAPProxy(config, core)
    if ldaps_port is not None:
        await core.listen(proxy.handle_tls, host, ldaps_port)
    if starttls_port is not None:
        proxy.plain = await asyncio.start_server(proxy.handle_plain, host, starttls_port)
    return proxy
