"""DNS transports: UDP (with TCP fallback on truncation), TCP and DNS-over-TLS.

A transport sends one query message and returns the matching response. It raises
``TimeoutError`` when no answer arrives in time, ``OSError`` for network problems and
:class:`MalformedResponse` for answers that cannot be parsed. The resolver checks the ID and the
question of every response again, so custom transports (for example an in-memory responder in
tests) need only implement :class:`Transport`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
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
import dns.opcode

__all__ = [
    "MalformedResponse",
    "StreamTransport",
    "Transport",
    "UdpTransport",
    "is_loopback",
    "response_matches",
    "spki_pin",
]

log = logging.getLogger(__name__)

MAX_UDP = 65535


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

    async def aclose(self) -> None:
        if self._tcp is not None:
            await self._tcp.aclose()


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
