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

Connection lifecycle (:meth:`DanceServer.listen`): the listener accepts plain TCP, records the
peer and local addresses at once, applies the connection limits (total, per source address),
then runs the TLS handshake (``loop.start_tls``, bounded by ``handshake_timeout``) in a task the
server keeps a strong reference to. A client that leaves at any moment ends its task at once:
the cold lookup and the handler's waits are raced against the connection's loss, and every
transport is closed gracefully within ``close_timeout`` or aborted. A client that leaves is
routine: one debug line, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509

from dance.auth import Authenticator
from dance.credentials import CertificateChain, CredentialError
from dance.identity import Identity, Rejection
from dance.service.memory import Trimmer
from dance.service.observe import Observer
from dance.service.ratelimit import RateLimiter
from dance.tls.bridge import (
    CONNECTION_PEER,
    DEFAULT_CODEPOINT,
    ConnectionState,
    DanceSSLObject,
    TLSStats,
    announce_client_cas,
    check_codepoint,
    configure_server,
)

__all__ = [
    "ROUTINE_ERRORS",
    "ClientGone",
    "DanceServer",
    "DanceStreamWriter",
    "Handler",
    "make_server_context",
    "serve",
    "until_client_leaves",
]

log = logging.getLogger(__name__)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Identity], Awaitable[None]]
T = TypeVar("T")
_LINGER_0 = struct.pack("ii", 1, 0)

# What a client that goes away (or misbehaves at the transport level) makes a handler raise:
# routine, logged at debug level, never a traceback.
ROUTINE_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    ssl.SSLError,
    TimeoutError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    OSError,
)


class ClientGone(ConnectionError):
    """The client closed or reset its connection while the server was still working for it."""


class _Connection(asyncio.StreamReaderProtocol):
    """The application protocol of one accepted connection: a StreamReaderProtocol that knows
    its addresses (captured at accept), when the connection was lost (``gone``, never an
    exception), and when data last moved (for the idle timeout)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        loop: asyncio.AbstractEventLoop,
        peer: Any,
        local: Any,
        stats: TLSStats,
    ) -> None:
        super().__init__(reader, loop=loop)
        self.loop = loop
        self.peer = peer
        self.local = local
        self.stats = stats
        self.gone: asyncio.Future[None] = loop.create_future()
        self.last = loop.time()
        self.idle_timeout: float | None = None
        self.tls: asyncio.Transport | None = None
        self.raw: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        self.last = self.loop.time()
        super().data_received(data)

    def note_activity(self) -> None:
        """Bytes moved (for the idle timeout). Relays that copy from transport callbacks, past
        this protocol and its stream, call it (found by this name on the client's protocol)."""
        self.last = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.gone.done():
            self.gone.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def arm_idle(self, timeout: float | None) -> None:
        """Abort the connection once no byte has moved either way for ``timeout`` seconds."""
        self.idle_timeout = timeout
        self.last = self.loop.time()
        if timeout is not None and not self.gone.done():
            self._timer = self.loop.call_later(timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        if self.gone.done() or self.idle_timeout is None:
            return
        quiet = self.loop.time() - self.last
        if quiet < self.idle_timeout:
            self._timer = self.loop.call_later(self.idle_timeout - quiet, self._check_idle)
            return
        self.stats.count("limit_idle-timeout")
        log.debug("closing %s: idle for %.0f s", _addr(self.peer), quiet)
        self.reset()

    def reset(self) -> None:
        """Abort with a TCP RST: nothing queued is kept for a peer that does not read (a plain
        close would leave the kernel holding the unsent data, and the peer connected)."""
        if self.raw is not None:
            sock = self.raw.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
        if self.tls is not None:
            self.tls.abort()
        elif self.raw is not None:
            self.raw.abort()


class DanceStreamWriter(asyncio.StreamWriter):
    """The writer handed to handlers: ``get_extra_info("peername"/"sockname")`` returns the
    addresses captured at accept (still valid after the client has gone), and every write
    counts as activity for the idle timeout."""

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: _Connection,
        reader: asyncio.StreamReader,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(transport, protocol, reader, loop)
        self.connection = protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.connection.last = self.connection.loop.time()
        super().write(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.connection.peer
        if name == "sockname":
            return self.connection.local
        return super().get_extra_info(name, default)

    @property
    def gone(self) -> asyncio.Future[None]:
        """Done once the connection is lost."""
        return self.connection.gone


def forget(exc: BaseException | None) -> None:
    """Drop what an exception caught at the end of a connection refers to (its traceback holds
    the frames of asyncio's start_tls, whose waiter future holds the exception: a reference
    cycle keeping the connection's 256 KiB TLS buffer until a full garbage collection)."""
    seen: set[int] = set()
    current = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__context__ or current.__cause__


_forget = forget


def _addr(peer: Any) -> str:
    try:
        return f"{peer[0]}:{peer[1]}"
    except (TypeError, IndexError):
        return "?"


async def _wait_closed_quietly(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):  # ended with an error: it ended all the same
        await writer.wait_closed()


async def until_client_leaves(writer: asyncio.StreamWriter, aw: Awaitable[T]) -> T:
    """Await ``aw`` unless the client's connection is lost first: then ``aw`` is cancelled (its
    resources released at once) and :class:`ClientGone` is raised."""
    gone: asyncio.Future[Any]
    if isinstance(writer, DanceStreamWriter):
        gone = writer.gone
    else:
        gone = asyncio.ensure_future(_wait_closed_quietly(writer))
    task = asyncio.ensure_future(aw)
    try:
        if not gone.done():
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
        if gone is not getattr(writer, "gone", None):
            gone.cancel()
    if task.done() and not task.cancelled():  # finished first (or at the same time): its
        return task.result()  # outcome stands; the caller meets the closed client next
    await asyncio.wait({task})  # let it finish cancelling (its outcome is moot)
    raise ClientGone("the client left")


def _san_dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The SAN dNSNames of a certificate (for ``san_fallback``)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return ()
    return tuple(ext.value.get_values_for_type(x509.DNSName))


def make_server_context(
    cert: str | Path,
    key: str | Path,
    *,
    codepoint: int,
    decide: Callable[[ConnectionState], bool],
    stats: TLSStats,
    chain: str | Path | None = None,
    client_ca_names: Sequence[bytes] = (),
) -> ssl.SSLContext:
    """A TLS 1.3-only server context, without tickets or session cache, requiring a client
    certificate and handing it to ``decide`` (see :func:`dance.tls.bridge.configure_server`);
    ``client_ca_names`` (DER subject names) are announced in the CertificateRequest."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.num_tickets = 0
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(str(cert), str(key))
    if chain is not None:
        ctx.load_verify_locations(cafile=str(chain))
    if client_ca_names:
        announce_client_cas(ctx, client_ca_names)
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
        max_connections: int = 512,
        max_per_address: int = 64,
        handshake_timeout: float = 10.0,
        idle_timeout: float | None = 300.0,
        close_timeout: float = 5.0,
        observer: Observer | None = None,
        handshake_rate: float = 0.0,
        handshake_burst: float = 0.0,
        client_ca_names: Sequence[bytes] = (),
    ) -> None:
        for label, count in (
            ("max_pending", max_pending),
            ("max_lookups", max_lookups),
            ("max_connections", max_connections),
            ("max_per_address", max_per_address),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{label} must be a positive integer, not {count!r}")
        for label, seconds in (
            ("lookup_timeout", lookup_timeout),
            ("handshake_timeout", handshake_timeout),
            ("idle_timeout", 1.0 if idle_timeout is None else idle_timeout),
            ("close_timeout", close_timeout),
        ):
            if not seconds > 0:
                raise ValueError(f"{label} must be positive, not {seconds!r}")
        self.authenticator = authenticator
        self.observer = observer  # access log and metrics (dance.service), when run as a service
        # new connections per source address and second (0: no limit): a flood of handshakes
        # from one address is refused at accept, before any TLS work
        self._rate = RateLimiter(
            handshake_rate, handshake_burst or 2 * handshake_rate, max_clients=65536
        )
        self.codepoint = check_codepoint(codepoint)
        self.san_fallback = san_fallback
        self.stats = stats if stats is not None else TLSStats()
        self.lookup_timeout = lookup_timeout
        self.max_pending = max_pending
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.close_timeout = close_timeout
        self.pending = 0  # connections waiting for a DNS answer (bounded by max_pending)
        self._lookups = asyncio.Semaphore(max_lookups)
        self._chains: dict[tuple[bytes, ...], CertificateChain] = {}
        self.server: asyncio.Server | None = None
        self._address: Any = None
        self.accepting = True
        self._handler: Handler | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # one per connection, strongly held
        self._per_address: dict[str, int] = {}
        # freed memory back to the system after a burst (docs/reliability.md)
        self._trimmer = Trimmer()
        self.cert, self.key = cert, key
        # CA names announced in the CertificateRequest: hints from configuration, never derived
        # from the client's name (which arrives after the request: dance-specs D7)
        self.client_ca_names = tuple(client_ca_names)
        self.context = make_server_context(
            cert,
            key,
            codepoint=self.codepoint,
            decide=self._decide,
            stats=self.stats,
            client_ca_names=self.client_ca_names,
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

    def _san_names(self, ders: list[bytes]) -> tuple[str, ...]:
        """The end entity's SAN dNSNames, from the parsed-chain cache (a chain it refuses: the
        end entity parsed alone, as the chain's own refusal comes after the name)."""
        if not ders:
            return ()
        try:
            leaf = self._chain(ders).end_entity.certificate
        except (CredentialError, ValueError):
            try:
                leaf = x509.load_der_x509_certificate(ders[0])
            except ValueError:
                return ()
        return _san_dns_names(leaf)

    def _reject(self, state: ConnectionState, reason: str, result: Rejection | None = None) -> bool:
        state.rejection = reason
        state.pending = False
        if not state.counted:
            state.counted = True
            self.stats.count(f"rejected_{reason}")
            self._observe(state, "rejected", reason, result)
        log.info("client refused: %s", reason)
        return False

    def _observe(
        self, state: ConnectionState, outcome: str, reason: str, result: Rejection | None
    ) -> None:
        """One access-log line and the metrics for a final decision (once per connection)."""
        if self.observer is None:
            return
        name = state.client_name.decode("ascii", "replace") if state.client_name else "-"
        if isinstance(state.identity, Identity):
            name = state.identity.client_name
        dns = "secure" if outcome == "accepted" else "-"
        if result is not None and result.dns_outcome:
            dns = result.dns_outcome
        started = state.started or time.monotonic()
        self.observer.record(state.peer, name, outcome, reason, dns, started)

    def _decide(self, state: ConnectionState) -> bool:
        name = state.client_name
        if name is None:
            if not self.san_fallback:
                return self._reject(state, "extension-absent")
            names = self._san_names(state.chain)
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
                self._observe(state, "accepted", "-", None)
            return True
        return self._reject(state, result.reason.value, result)

    # -- after the handshake ---------------------------------------------------------------------

    async def identity_of(self, writer: asyncio.StreamWriter) -> Identity | None:
        """The identity of an established connection, completing a pending lookup first.

        The lookup is raced against the client's departure: a client that leaves frees its
        pending slot and its lookup slot at once (counted ``rejected_client-gone``)."""
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
        name = state.client_name
        authenticator = self.authenticator

        async def lookup() -> Identity | Rejection:
            async with self._lookups:
                presented = self._chain(state.chain)
                return await asyncio.wait_for(
                    authenticator.authenticate(name, presented), self.lookup_timeout
                )

        self.pending += 1
        try:
            result = await until_client_leaves(writer, lookup())
        except TimeoutError:
            self._reject(state, "lookup-timeout")
            return None
        except ClientGone:
            log.debug(
                "client %s left during its DNS lookup", _addr(writer.get_extra_info("peername"))
            )
            self._reject(state, "client-gone")
            return None
        finally:
            self.pending -= 1
        self._settle(state, result, "accepted_after_lookup")
        return state.identity if isinstance(state.identity, Identity) else None

    def wrap(self, handler: Handler) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
        """An ``asyncio.start_server`` callback running ``handler`` for authenticated clients
        (kept for callers that run their own listener; :meth:`listen` adds the limits)."""

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:  # asyncio keeps only a weak hold on it once the client is gone
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            try:
                identity = await self.identity_of(writer)
                if identity is not None:
                    await handler(reader, writer, identity)
            except asyncio.CancelledError:
                writer.transport.abort()
                raise
            except ROUTINE_ERRORS as exc:
                log.debug("connection ended: %r", exc)  # the client went away: routine
            except Exception:
                log.exception("connection handler failed")
            finally:
                writer.close()  # no wait_closed(): the transport finishes closing by itself

        return on_client

    # -- accepting ---------------------------------------------------------------------------------

    async def listen(
        self,
        handler: Handler,
        host: str | None,
        port: int,
        *,
        backlog: int = 512,
        reuse_port: bool = False,
    ) -> None:
        """Listen on ``host``:``port`` and run ``handler`` for each authenticated client
        (``reuse_port``: several processes share the port, ``--workers``)."""
        self._handler = handler
        self._check_descriptors()
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Accept(self), host, port, backlog=backlog, reuse_port=reuse_port or None
        )
        self._address = self.server.sockets[0].getsockname()

    def _check_descriptors(self) -> None:
        needed = 2 * self.max_connections + 64
        try:
            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        except (OSError, ValueError):  # pragma: no cover - no such limit here
            return
        if soft != resource.RLIM_INFINITY and soft < needed:
            log.warning(
                "max_connections %d needs about %d file descriptors; the limit is %d",
                self.max_connections,
                needed,
                soft,
            )

    @property
    def connections(self) -> int:
        """Connections being served (from accept to the end of their closing)."""
        return len(self._tasks)

    def _refuse(self, raw: asyncio.Transport, reason: str, peer: Any) -> None:
        self.stats.count(f"limit_{reason}")
        if self.observer is not None:
            self.observer.refused(reason)
        log.debug("connection from %s refused: %s", _addr(peer), reason)
        raw.abort()

    def _accepted(self, raw: asyncio.Transport) -> None:
        """A TCP connection was accepted: capture its addresses, apply the limits, start its
        task (the ClientHello waits: reading is paused until the handshake starts)."""
        peer = raw.get_extra_info("peername")
        local = raw.get_extra_info("sockname")
        if not peer or not local:  # reset before we even saw it
            self.stats.count("client_gone_accept")
            raw.abort()
            return
        if not self.accepting or self._handler is None:
            self._refuse(raw, "shutting-down", peer)
            return
        if len(self._tasks) >= self.max_connections:
            self._refuse(raw, "max-connections", peer)
            return
        address = str(peer[0])
        if self._per_address.get(address, 0) >= self.max_per_address:
            self._refuse(raw, "per-address", peer)
            return
        if not self._rate.allow(address):
            self._refuse(raw, "handshake-rate", peer)
            return
        raw.pause_reading()
        self._per_address[address] = self._per_address.get(address, 0) + 1
        task = asyncio.get_running_loop().create_task(
            self._serve_connection(raw, peer, local, self._handler)
        )
        self._tasks.add(task)
        self._trimmer.opened(len(self._tasks))
        observer = self.observer
        if observer is not None:
            observer.opened()

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if self._trimmer.closed(len(self._tasks)):
                self.stats.count("memory_trims")
            if observer is not None:
                observer.closed()
            left = self._per_address.get(address, 1) - 1
            if left > 0:
                self._per_address[address] = left
            else:
                self._per_address.pop(address, None)
            raw.abort()  # a no-op once closed; frees the socket of a task ended early

        task.add_done_callback(done)

    async def _serve_connection(
        self, raw: asyncio.Transport, peer: Any, local: Any, handler: Handler
    ) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        conn = _Connection(reader, loop, peer, local, self.stats)
        conn.raw = raw
        writer: DanceStreamWriter | None = None
        graceful = False
        try:
            if raw.is_closing():
                self.stats.count("client_gone_handshake")
                return
            started = loop.time()
            # the SSL object made for this connection (in this task's context) records the
            # client's address and the time, for the access log
            CONNECTION_PEER.set((_addr(peer), time.monotonic()))
            try:
                async with asyncio.timeout(self.handshake_timeout + self.close_timeout):
                    tls = await loop.start_tls(
                        raw,
                        conn,
                        self.context,
                        server_side=True,
                        ssl_handshake_timeout=self.handshake_timeout,
                        ssl_shutdown_timeout=self.close_timeout,
                    )
            except ROUTINE_ERRORS as exc:  # refused (counted by the bridge), reset, timed out
                if loop.time() - started >= self.handshake_timeout:
                    self.stats.count("limit_handshake-timeout")
                log.debug("handshake with %s ended: %r", _addr(peer), exc)
                _forget(exc)
                return
            if tls is None or conn.gone.done():
                self.stats.count("client_gone_handshake")
                log.debug("client %s left right after its handshake", _addr(peer))
                return
            conn.tls = tls
            conn.connection_made(tls)
            writer = DanceStreamWriter(tls, conn, reader, loop)
            graceful = True
            identity = await self.identity_of(writer)
            if identity is None:
                return
            conn.arm_idle(self.idle_timeout)
            await handler(reader, writer, identity)
        except asyncio.CancelledError:
            graceful = False
            conn.reset()
            raise
        except ROUTINE_ERRORS as exc:
            log.debug("connection from %s ended: %r", _addr(peer), exc)
            _forget(exc)
        except Exception as exc:
            log.exception("connection handler failed (client %s)", _addr(peer))
            _forget(exc)
        finally:
            if writer is not None and graceful:
                await self._close(writer, conn)
            stored = reader.exception()  # a reset is kept there with frames that refer back
            if stored is not None:
                _forget(stored)

    async def _close(self, writer: DanceStreamWriter, conn: _Connection) -> None:
        """Close gracefully (flush, close_notify) within ``close_timeout``, else abort."""
        try:
            if not writer.transport.is_closing():
                writer.close()
            if not conn.gone.done():
                await asyncio.wait({conn.gone}, timeout=self.close_timeout)
        finally:
            if not conn.gone.done():
                conn.reset()

    # -- lifecycle ---------------------------------------------------------------------------------

    def reload(
        self,
        *,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        authenticator: Authenticator | None = None,
        client_ca_names: Sequence[bytes] | None = None,
    ) -> None:
        """Use a new certificate/key, CA hints and/or Authenticator for connections accepted from
        now on; established connections keep theirs. Raises (ssl.SSLError, OSError, ValueError)
        and changes nothing when the new certificate, key or names cannot be loaded."""
        context = self.context
        if cert is not None or key is not None or client_ca_names is not None:
            new_cert = cert if cert is not None else self.cert
            new_key = key if key is not None else self.key
            names = self.client_ca_names if client_ca_names is None else tuple(client_ca_names)
            context = make_server_context(
                new_cert,
                new_key,
                codepoint=self.codepoint,
                decide=self._decide,
                stats=self.stats,
                client_ca_names=names,
            )
            self.cert, self.key, self.client_ca_names = new_cert, new_key, names
        self.context = context
        if authenticator is not None:
            self.authenticator = authenticator
        self._chains.clear()

    async def shutdown(self, drain_timeout: float = 0.0) -> int:
        """Stop accepting; let established connections end by themselves for up to
        ``drain_timeout`` seconds, then close the rest. Returns how many were cut."""
        self.accepting = False
        if self.server is not None:
            self.server.close()
        remaining = set(self._tasks)
        if remaining and drain_timeout > 0:
            _, remaining = await asyncio.wait(remaining, timeout=drain_timeout)
        for task in remaining:
            task.cancel()
        if remaining:
            await asyncio.wait(remaining, timeout=self.close_timeout)
        return len(remaining)

    # -- listening --------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port (still known once the server has stopped listening)."""
        if self._address is None:
            assert self.server is not None and self.server.sockets
            self._address = self.server.sockets[0].getsockname()
        return int(self._address[1])

    @property
    def host(self) -> str:
        if self._address is None:
            assert self.server is not None and self.server.sockets
            self._address = self.server.sockets[0].getsockname()
        return str(self._address[0])

    def close(self) -> None:
        """Stop listening (established connections go on; see :meth:`shutdown`)."""
        self.accepting = False
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
        await self.shutdown(0.0)
        await self.wait_closed()


class _Accept(asyncio.Protocol):
    """The protocol of an accepted TCP connection until its TLS handshake starts."""

    def __init__(self, core: DanceServer) -> None:
        self.core = core

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.core._accepted(transport)


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
    max_connections: int = 512,
    max_per_address: int = 64,
    idle_timeout: float | None = 300.0,
    close_timeout: float = 5.0,
    observer: Observer | None = None,
    reuse_port: bool = False,
    handshake_rate: float = 0.0,
    handshake_burst: float = 0.0,
    client_ca_names: Sequence[bytes] = (),
) -> DanceServer:
    """Start a DANCE TLS 1.3 server; ``handler(reader, writer, identity)`` runs only for
    authenticated clients, and only after authentication completed.

    Limits (each refusal or cut is counted in ``stats``): ``max_pending`` bounds the connections
    waiting for a DNS answer (more are refused as ``overloaded``), ``max_lookups`` the lookups
    running at once, ``lookup_timeout`` each wait; ``max_connections`` the connections served at
    once and ``max_per_address`` those from one source address (more are closed at accept:
    ``limit_max-connections``, ``limit_per-address``); ``handshake_timeout`` the TLS handshake;
    ``idle_timeout`` (None: none) the time without a byte either way once authenticated;
    ``close_timeout`` a graceful close (flush and close_notify) before the connection is aborted.
    ``handshake_rate`` (0: off) bounds new connections per source address and second, in bursts
    of ``handshake_burst`` (default twice the rate): more are closed at accept
    (``limit_handshake-rate``), before any TLS work.
    ``observer`` (`dance.service.Observer`) gets one access-log line per decision, with the
    client's address, and the metrics; ``reuse_port`` binds with ``SO_REUSEPORT`` (``--workers``).
    ``client_ca_names`` (DER subject names) are announced in the CertificateRequest.
    Raises BridgeError when this Python cannot be bridged to its OpenSSL, ValueError for a bad
    codepoint or limit."""
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
        max_connections=max_connections,
        max_per_address=max_per_address,
        handshake_timeout=handshake_timeout,
        idle_timeout=idle_timeout,
        close_timeout=close_timeout,
        observer=observer,
        handshake_rate=handshake_rate,
        handshake_burst=handshake_burst,
        client_ca_names=client_ca_names,
    )
    await core.listen(handler, host, port, backlog=backlog, reuse_port=reuse_port)
    return core
