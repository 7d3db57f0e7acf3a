"""DNS transports: UDP (with TCP fallback on truncation), TCP and DNS-over-TLS.

A transport sends one query message and returns the matching response. It raises
``TimeoutError`` when no answer arrives in time, ``OSError`` for network problems and
:class:`MalformedResponse` for answers that cannot be parsed. The resolver checks the ID and the
question of every response again, so custom transports (for example an in-memory responder in
tests) need only implement :class:`Transport`.

The resolver's own UDP path does not build :class:`dns.message.Message` queries: it renders the
query wire from a cached template (:func:`query_wire`, byte for byte what dnspython renders, which
a test checks) and sends the queries of one lookup over one connected socket
(:class:`UdpExchange`), matching each answer by ID, question and flags like
:func:`response_matches`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import ipaddress
import logging
import random
import socket
import ssl
import struct
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdataclass
import dns.rdatatype

__all__ = [
    "EDNS_PAYLOAD",
    "MalformedResponse",
    "StreamTransport",
    "Transport",
    "UdpExchange",
    "UdpTransport",
    "answers",
    "clear_templates",
    "is_loopback",
    "make_query",
    "query_wire",
    "response_matches",
    "spki_pin",
]

log = logging.getLogger(__name__)

MAX_UDP = 65535
#: The EDNS0 UDP payload size the resolver advertises.
EDNS_PAYLOAD = 1232
#: Datagrams read from one socket per event-loop wake-up (a flood cannot starve the loop).
_READ_BATCH = 64

_OPT = 41
_IN = 1
_DO = 0x8000
_TEMPLATES: dict[tuple[tuple[bytes, ...], int, int, int], bytes] = {}
_TEMPLATES_MAX = 4096
_random = random.SystemRandom()


def clear_templates() -> None:
    """Forget the cached query templates."""
    _TEMPLATES.clear()


def make_query(qname: dns.name.Name, rdtype: int, flags: int, qid: int) -> dns.message.Message:
    """The query the resolver sends: EDNS0 with DO, ``payload`` :data:`EDNS_PAYLOAD`, ``flags``
    (RD, CD or AD as configured) and ID ``qid``."""
    query = dns.message.make_query(
        qname,
        dns.rdatatype.RdataType.make(rdtype),
        use_edns=0,
        want_dnssec=True,
        payload=EDNS_PAYLOAD,
    )
    query.id = qid
    query.flags = flags
    return query


def query_wire(qname: dns.name.Name, rdtype: int, flags: int, qid: int) -> bytes:
    """The wire form of :func:`make_query` (the same octets as its ``to_wire()``), from a cached
    template per (name as written, type, flags) with the ID patched in.

    ``qname`` must be absolute; ``rdtype`` and ``flags`` are 16-bit values.
    """
    key = (qname.labels, rdtype, flags, EDNS_PAYLOAD)
    tail = _TEMPLATES.get(key)
    if tail is None:
        if not qname.is_absolute():
            raise ValueError("query names must be absolute")
        name = qname.to_wire()
        assert name is not None
        # header after the ID (flags, QD=1, AN=0, NS=0, AR=1), question, OPT RR with DO set
        tail = (
            struct.pack("!HHHHH", flags, 1, 0, 0, 1)
            + name
            + struct.pack("!HH", rdtype, _IN)
            + b"\x00"
            + struct.pack("!HHIH", _OPT, EDNS_PAYLOAD, _DO, 0)
        )
        if len(_TEMPLATES) >= _TEMPLATES_MAX:
            _TEMPLATES.clear()
        _TEMPLATES[key] = tail
    return qid.to_bytes(2, "big") + tail


class MalformedResponse(Exception):
    """A response could not be parsed or did not match the query."""


@runtime_checkable
class Transport(Protocol):
    """Something that can send a DNS query and return the response."""

    async def query(self, msg: dns.message.Message) -> dns.message.Message: ...


def is_loopback(host: str) -> bool:
    """True for IPv4/IPv6 loopback literals (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def response_matches(query: dns.message.Message, response: dns.message.Message) -> bool:
    """ID, QR flag, opcode and the single question must match the query."""
    if response.id != query.id or not response.flags & dns.flags.QR:
        return False
    if response.opcode() != dns.opcode.QUERY:
        return False
    if len(response.question) != 1 or len(query.question) != 1:
        return False
    q, r = query.question[0], response.question[0]
    return bool(q.name == r.name and q.rdtype == r.rdtype and q.rdclass == r.rdclass)


def answers(qid: int, qname: dns.name.Name, rdtype: int, response: dns.message.Message) -> bool:
    """Whether ``response`` answers the query (``qid``, ``qname``, ``rdtype``, class IN): ID, QR
    flag, opcode and the single question must match."""
    if response.id != qid or not response.flags & dns.flags.QR:
        return False
    if response.opcode() != dns.opcode.QUERY:
        return False
    if len(response.question) != 1:
        return False
    r = response.question[0]
    return bool(r.name == qname and r.rdtype == rdtype and r.rdclass == dns.rdataclass.IN)


def _parse(wire: bytes) -> dns.message.Message:
    try:
        return dns.message.from_wire(wire)
    except Exception as exc:  # untrusted input: dnspython may raise many kinds of errors
        raise MalformedResponse(f"unparsable response: {type(exc).__name__}") from exc


def spki_pin(cert_der: bytes) -> str:
    """The RFC 7858 SPKI pin (base64 of SHA-256 of the SubjectPublicKeyInfo) of a certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_der_x509_certificate(cert_der)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


class UdpTransport:
    """One connected UDP socket per query (random source port; the kernel drops datagrams
    from any other address or port), with a retry over TCP when the answer is truncated."""

    def __init__(
        self,
        server: tuple[str, int],
        timeout: float = 2.0,
        *,
        tcp_fallback: bool = True,
    ) -> None:
        self.server = server
        self.timeout = timeout
        self.tcp_fallback = tcp_fallback
        self._tcp: StreamTransport | None = None

    async def query(self, msg: dns.message.Message) -> dns.message.Message:
        response = await self._udp(msg)
        if response.flags & dns.flags.TC and self.tcp_fallback:
            if self._tcp is None:
                self._tcp = StreamTransport(self.server, self.timeout)
            return await self._tcp.query(msg)
        return response

    async def _udp(self, msg: dns.message.Message) -> dns.message.Message:
        loop = asyncio.get_running_loop()
        wire = msg.to_wire()
        family = socket.AF_INET6 if ":" in self.server[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        malformed: MalformedResponse | None = None
        try:
            sock.setblocking(False)
            sock.connect(self.server)
            await loop.sock_sendall(sock, wire)
            async with asyncio.timeout(self.timeout):
                while True:
                    data = await loop.sock_recv(sock, MAX_UDP)
                    try:
                        response = _parse(data)
                    except MalformedResponse as exc:
                        malformed = exc  # keep listening: it may be spoofed garbage
                        continue
                    if response_matches(msg, response):
                        return response
                    log.debug("ignoring mismatched UDP response from %s", self.server)
        except TimeoutError:
            if malformed is not None:
                raise malformed from None
            raise
        finally:
            sock.close()

    def exchange(self) -> UdpExchange:
        """A socket for the queries of one lookup (see :meth:`query_name`)."""
        return UdpExchange(self.server, self.timeout)

    async def query_name(
        self, exchange: UdpExchange, qname: dns.name.Name, rdtype: int, flags: int
    ) -> tuple[int, dns.message.Message]:
        """Send the query for (``qname``, ``rdtype``) with ``flags`` over ``exchange``; return
        its ID and the matching response (over TCP when the UDP answer was truncated)."""
        qid, fut = exchange.send(qname, rdtype, flags)
        try:
            response = await fut
        except asyncio.CancelledError:
            exchange.cancel(qid)
            raise
        if response.flags & dns.flags.TC and self.tcp_fallback:
            if self._tcp is None:
                self._tcp = StreamTransport(self.server, self.timeout)
            msg = make_query(qname, rdtype, flags, qid)
            response = await self._tcp.query(msg)
            return msg.id, response
        return qid, response

    async def aclose(self) -> None:
        if self._tcp is not None:
            await self._tcp.aclose()


class _Pending:
    __slots__ = ("fut", "malformed", "qname", "rdtype", "timer")

    def __init__(
        self,
        qname: dns.name.Name,
        rdtype: int,
        fut: asyncio.Future[dns.message.Message],
        timer: asyncio.TimerHandle,
    ) -> None:
        self.qname = qname
        self.rdtype = rdtype
        self.fut = fut
        self.timer = timer
        self.malformed: MalformedResponse | None = None


class UdpExchange:
    """One connected UDP socket (random source port, opened on the first query) carrying the
    queries of one lookup, each with its own random ID; the kernel drops datagrams from any
    other address or port.

    Every datagram is parsed and must match a pending query's ID, question and flags
    (:func:`answers`); anything else is ignored, and a query that then times out after an
    unparsable datagram reports :class:`MalformedResponse` (as :class:`UdpTransport` does). A
    network error on the socket (e.g. ICMP port unreachable) fails every pending query.
    :meth:`release` ends the lookup's use: the socket is closed once no query is pending.
    """

    def __init__(self, server: tuple[str, int], timeout: float) -> None:
        self.server = server
        self.timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = None
        self._pending: dict[int, _Pending] = {}
        self._released = False
        self.queries = 0

    def _open(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.server[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(self.server)
            self._loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        return sock

    def send(
        self, qname: dns.name.Name, rdtype: int, flags: int
    ) -> tuple[int, asyncio.Future[dns.message.Message]]:
        """Send a query; return its ID and a future for the matching response."""
        fut: asyncio.Future[dns.message.Message] = self._loop.create_future()
        qid = _random.randrange(65536)
        while qid in self._pending:
            qid = _random.randrange(65536)
        try:
            wire = query_wire(qname, rdtype, flags, qid)
            sock = self._sock if self._sock is not None else self._open()
        except (OSError, ValueError) as exc:
            fut.set_exception(exc)
            return qid, fut
        timer = self._loop.call_later(self.timeout, self._expire, qid)
        self._pending[qid] = _Pending(qname, rdtype, fut, timer)
        self.queries += 1
        try:
            sock.send(wire)
        except (BlockingIOError, InterruptedError):  # send buffer full: wait for room
            task = self._loop.create_task(self._loop.sock_sendall(sock, wire))
            task.add_done_callback(functools.partial(self._sent, qid=qid))
        except OSError as exc:  # may report an earlier datagram's ICMP error: fail them all
            self._fail_all(exc)
        return qid, fut

    def _fail_all(self, exc: OSError) -> None:
        for qid in list(self._pending):
            self._finish(qid, OSError(exc.errno, exc.strerror))

    def _sent(self, task: asyncio.Task[None], *, qid: int) -> None:
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, OSError):
            self._fail_all(exc)
        elif exc is not None:
            self._finish(qid, exc)

    def _finish(self, qid: int, outcome: dns.message.Message | BaseException) -> None:
        entry = self._pending.pop(qid, None)
        if entry is None:
            return
        entry.timer.cancel()
        if not entry.fut.done():
            if isinstance(outcome, asyncio.CancelledError):
                entry.fut.cancel()
            elif isinstance(outcome, BaseException):
                entry.fut.set_exception(outcome)
            else:
                entry.fut.set_result(outcome)
        if self._released and not self._pending:
            self._close()

    def _expire(self, qid: int) -> None:
        entry = self._pending.get(qid)
        if entry is not None:
            self._finish(qid, entry.malformed if entry.malformed is not None else TimeoutError())

    def _readable(self) -> None:
        sock = self._sock
        for _ in range(_READ_BATCH):
            if sock is None or self._sock is not sock:
                return
            try:
                data = sock.recv(MAX_UDP)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP port unreachable on the connected socket
                self._fail_all(exc)
                return
            self._datagram(data)

    def _datagram(self, data: bytes) -> None:
        try:
            response = _parse(data)
        except MalformedResponse as exc:
            for waiting in self._pending.values():  # keep listening: it may be spoofed garbage
                waiting.malformed = exc
            return
        entry = self._pending.get(response.id)
        if entry is None or not answers(response.id, entry.qname, entry.rdtype, response):
            log.debug("ignoring mismatched UDP response from %s", self.server)
            return
        self._finish(response.id, response)

    def cancel(self, qid: int) -> None:
        """Stop waiting for the answer to query ``qid``."""
        self._finish(qid, asyncio.CancelledError())

    def release(self) -> None:
        """The lookup is over: queries nobody waits for are dropped, and the socket is closed
        once nothing is pending."""
        self._released = True
        for qid, entry in list(self._pending.items()):
            if entry.fut.done():  # its waiter was cancelled
                self._pending.pop(qid)
                entry.timer.cancel()
        if not self._pending:
            self._close()

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    @property
    def closed(self) -> bool:
        """True when no socket is open (none yet, or closed after :meth:`release`)."""
        return self._sock is None


class StreamTransport:
    """A kept-open TCP or TLS connection carrying pipelined queries (RFC 7766, RFC 7858).

    Responses are matched to queries by ID and question. The connection is re-opened on demand;
    a query that fails because the server closed an idle connection is retried once.

    For DNS-over-TLS pass ``tls=True`` and either ``server_name`` (certificate verified against
    the system CAs or ``ssl_context``) or ``spki_pins`` (base64 SHA-256 of the server's SPKI), or
    both.
    """

    def __init__(
        self,
        server: tuple[str, int],
        timeout: float = 2.0,
        *,
        tls: bool = False,
        server_name: str | None = None,
        spki_pins: Iterable[str] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.server = server
        self.timeout = timeout
        self.tls = tls
        self.server_name = server_name
        self.spki_pins = frozenset(spki_pins)
        self._ssl: ssl.SSLContext | None = None
        if tls:
            if ssl_context is None:
                if server_name is None and not self.spki_pins:
                    raise ValueError("DNS-over-TLS needs server_name or spki_pins")
                ssl_context = ssl.create_default_context()
                ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
                if server_name is None:
                    ssl_context.check_hostname = False
                    ssl_context.verify_mode = ssl.CERT_NONE  # authenticated by the SPKI pin
            self._ssl = ssl_context
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._pending: dict[int, tuple[dns.message.Message, asyncio.Future[dns.message.Message]]]
        self._pending = {}
        self._connect_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connections = 0  # how many connections were opened (for tests and metrics)

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop: the old connection is unusable
            self._loop = loop
            self._reader = self._writer = None
            self._read_task = None
            self._pending = {}
            self._connect_lock = asyncio.Lock()

    async def _connect(self) -> asyncio.StreamWriter:
        self._bind_loop()
        async with self._connect_lock:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            host, port = self.server
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=self._ssl,
                    server_hostname=(self.server_name or host) if self._ssl else None,
                )
            if self._ssl is not None and self.spki_pins:
                ssl_object = writer.get_extra_info("ssl_object")
                der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
                if not der or spki_pin(der) not in self.spki_pins:
                    writer.close()
                    raise ssl.SSLError("DNS-over-TLS server key does not match the SPKI pin")
            self.connections += 1
            self._reader, self._writer = reader, writer
            self._read_task = asyncio.create_task(self._read_loop(reader, writer))
            return writer

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        error: BaseException = ConnectionResetError("connection closed by server")
        try:
            while True:
                header = await reader.readexactly(2)
                (length,) = struct.unpack("!H", header)
                data = await reader.readexactly(length)
                try:
                    response = _parse(data)
                except MalformedResponse:
                    log.debug("malformed response on stream from %s", self.server)
                    continue
                entry = self._pending.get(response.id)
                if entry is None or not response_matches(entry[0], response):
                    continue
                if not entry[1].done():
                    entry[1].set_result(response)
        except (asyncio.IncompleteReadError, OSError) as exc:
            error = ConnectionResetError(f"stream closed: {exc}")
        except asyncio.CancelledError:
            error = ConnectionResetError("transport closed")
        finally:
            if self._writer is writer:
                self._writer = None
                self._reader = None
            writer.close()
            for _query, fut in list(self._pending.values()):
                if not fut.done():
                    fut.set_exception(error)

    async def query(self, msg: dns.message.Message) -> dns.message.Message:
        for attempt in range(2):
            try:
                return await self._query_once(msg)
            except ConnectionResetError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _query_once(self, msg: dns.message.Message) -> dns.message.Message:
        writer = await self._connect()
        loop = asyncio.get_running_loop()
        while msg.id in self._pending:
            msg.id = random.SystemRandom().randrange(65536)
        fut: asyncio.Future[dns.message.Message] = loop.create_future()
        self._pending[msg.id] = (msg, fut)
        try:
            wire = msg.to_wire()
            writer.write(struct.pack("!H", len(wire)) + wire)
            async with asyncio.timeout(self.timeout):
                await writer.drain()
                return await fut
        finally:
            self._pending.pop(msg.id, None)

    async def aclose(self) -> None:
        writer, task = self._writer, self._read_task
        self._writer = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
