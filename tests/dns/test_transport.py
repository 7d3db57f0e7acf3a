"""Real sockets on loopback: UDP (spoofed datagrams, TC fallback), TCP reuse, DNS-over-TLS."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import dns.flags
import dns.message
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dance.dns import (
    LookupResult,
    Outcome,
    Reason,
    StreamTransport,
    TLSAResolver,
    UdpTransport,
    spki_pin,
)
from tests.dns.conftest import World
from tests.dns.kit import NOW, Server

Msg = dns.message.Message


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: NetServer) -> None:
        self.owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        o = self.owner
        o.udp_queries += 1
        query = dns.message.from_wire(data)
        if o.spoof:
            # garbage, then a wrong ID, then a wrong question, then the real answer
            self.transport.sendto(b"\x00\x01garbage", addr)  # type: ignore[attr-defined]
            wrong = o.server.respond(query)
            wrong.id ^= 0x5555
            self.transport.sendto(wrong.to_wire(max_size=65535), addr)  # type: ignore[attr-defined]
        if o.silent_udp:
            return
        resp = o.server.respond(query)
        wire = resp.to_wire(max_size=65535)
        if len(wire) > o.udp_limit:
            resp.answer, resp.authority, resp.additional = [], [], []
            resp.flags |= dns.flags.TC
            wire = resp.to_wire()
        self.transport.sendto(wire, addr)  # type: ignore[attr-defined]


class NetServer:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.udp_queries = 0
        self.tcp_queries = 0
        self.tcp_connections = 0
        self.udp_limit = 65535
        self.spoof = False
        self.silent_udp = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tcp_connections += 1
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                query = dns.message.from_wire(await reader.readexactly(length))
                self.tcp_queries += 1
                wire = self.server.respond(query).to_wire(max_size=65535)
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @asynccontextmanager
    async def run(self, ssl_ctx: ssl.SSLContext | None = None) -> AsyncIterator[int]:
        loop = asyncio.get_running_loop()
        tcp = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_ctx)
        port = tcp.sockets[0].getsockname()[1]
        udp, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=("127.0.0.1", port)
        )
        try:
            yield port
        finally:
            udp.close()
            tcp.close()
            await tcp.wait_closed()


def _resolver(world: World, port: int, **kw: object) -> TLSAResolver:
    kw.setdefault("timeout", 1.0)
    kw.setdefault("deadline", 3.0)
    return TLSAResolver(
        ("127.0.0.1", port),
        anchors=world.anchors,
        clock=lambda: NOW,
        **kw,  # type: ignore[arg-type]
    )


def _run(fn: Callable[[], object]) -> object:
    return asyncio.run(fn())  # type: ignore[arg-type]


def test_udp_lookup_and_spoofed_datagrams_ignored(world: World) -> None:
    net = NetServer(world.server)
    net.spoof = True

    async def go() -> LookupResult:
        async with net.run() as port:
            return await _resolver(world, port).lookup_tlsa("sensor7._device.example.test")

    r = asyncio.run(go())
    assert r.outcome is Outcome.SECURE
    assert net.udp_queries == 4


def test_udp_truncation_falls_back_to_tcp(world: World) -> None:
    net = NetServer(world.server)
    net.udp_limit = 250

    async def go() -> LookupResult:
        async with net.run() as port:
            resolver = _resolver(world, port)
            try:
                return await resolver.lookup_tlsa("sensor7._device.example.test")
            finally:
                await resolver.aclose()

    r = asyncio.run(go())
    assert r.outcome is Outcome.SECURE
    assert net.tcp_queries >= 1
    assert net.tcp_connections == 1  # the fallback connection is reused


def test_udp_timeout(world: World) -> None:
    net = NetServer(world.server)
    net.silent_udp = True

    async def go() -> LookupResult:
        async with net.run() as port:
            resolver = _resolver(world, port, timeout=0.2, deadline=2)
            return await resolver.lookup_tlsa("sensor7._device.example.test")

    r = asyncio.run(go())
    assert r.outcome is Outcome.INDETERMINATE
    assert r.reason == Reason.TIMEOUT


def test_tcp_connection_reused_and_pipelined(world: World) -> None:
    net = NetServer(world.server)

    async def go() -> list[LookupResult]:
        async with net.run() as port:
            resolver = _resolver(world, port, transport="tcp")
            try:
                names = [f"n{i}._device.example.test" for i in range(10)]
                return await asyncio.gather(*[resolver.lookup_tlsa(x) for x in names])
            finally:
                await resolver.aclose()

    results = asyncio.run(go())
    assert all(r.outcome is Outcome.SECURE for r in results)
    assert net.tcp_connections == 1
    assert net.udp_queries == 0


def test_tcp_reconnects_after_server_closes(world: World) -> None:
    net = NetServer(world.server)

    async def go() -> tuple[LookupResult, LookupResult]:
        async with net.run() as port:
            transport = StreamTransport(("127.0.0.1", port), 1.0)
            resolver = _resolver(world, port, transport=transport)
            a = await resolver.lookup_tlsa("sensor7._device.example.test")
            assert transport._writer is not None
            transport._writer.close()  # simulate an idle-timeout close
            await asyncio.sleep(0.05)
            b = await resolver.lookup_tlsa("other._device.example.test")
            await resolver.aclose()
            return a, b

    a, b = asyncio.run(go())
    assert a.outcome is Outcome.SECURE
    assert b.outcome is Outcome.SECURE
    assert net.tcp_connections == 2


# -- DNS-over-TLS ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dns.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("dns.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


def _server_ctx(tls_files: tuple[Path, Path, bytes]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_files[0], tls_files[1])
    return ctx


def _tls_lookup(world: World, tls_files: tuple[Path, Path, bytes], **kw: object) -> LookupResult:
    net = NetServer(world.server)

    async def go() -> LookupResult:
        async with net.run(_server_ctx(tls_files)) as port:
            resolver = _resolver(world, port, transport="tls", **kw)
            try:
                r1 = await resolver.lookup_tlsa("sensor7._device.example.test")
                await resolver.lookup_tlsa("x2._device.example.test")
                return r1
            finally:
                await resolver.aclose()

    r = asyncio.run(go())
    if r.outcome is Outcome.SECURE:
        assert net.tcp_connections == 1  # one TLS connection for all queries
    return r


def test_dot_with_spki_pin(world: World, tls_files: tuple[Path, Path, bytes]) -> None:
    pin = spki_pin(tls_files[2])
    assert _tls_lookup(world, tls_files, spki_pins=[pin]).outcome is Outcome.SECURE


def test_dot_with_wrong_pin(world: World, tls_files: tuple[Path, Path, bytes]) -> None:
    r = _tls_lookup(world, tls_files, spki_pins=["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="])
    assert r.outcome is Outcome.INDETERMINATE
    assert r.reason == Reason.NETWORK


def test_dot_with_server_name(world: World, tls_files: tuple[Path, Path, bytes]) -> None:
    ctx = ssl.create_default_context(cafile=str(tls_files[0]))
    r = _tls_lookup(world, tls_files, server_name="dns.test", ssl_context=ctx)
    assert r.outcome is Outcome.SECURE
    r = _tls_lookup(world, tls_files, server_name="wrong.test", ssl_context=ctx)
    assert r.outcome is Outcome.INDETERMINATE


def test_dot_untrusted_certificate(world: World, tls_files: tuple[Path, Path, bytes]) -> None:
    r = _tls_lookup(world, tls_files, server_name="dns.test")  # system CAs do not know it
    assert r.outcome is Outcome.INDETERMINATE


def test_dot_trusted_ad_mode(world: World, tls_files: tuple[Path, Path, bytes]) -> None:
    # the in-memory server never sets AD: trusted mode must then refuse to call it secure
    pin = spki_pin(tls_files[2])
    r = _tls_lookup(world, tls_files, spki_pins=[pin], trust_ad=True)
    assert r.outcome is Outcome.INSECURE
    assert r.reason == Reason.AD_CLEAR


def test_udp_transport_direct_mismatch_only(world: World) -> None:
    """A server answering only with mismatched IDs causes a timeout, not a wrong answer."""

    class Liar(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            q = dns.message.from_wire(data)
            r = world.server.respond(q)
            r.id ^= 1
            self.t.sendto(r.to_wire(), addr)  # type: ignore[attr-defined]

    async def go() -> None:
        loop = asyncio.get_running_loop()
        t, _ = await loop.create_datagram_endpoint(Liar, local_addr=("127.0.0.1", 0))
        port = t.get_extra_info("sockname")[1]
        try:
            udp = UdpTransport(("127.0.0.1", port), timeout=0.2)
            with pytest.raises(TimeoutError):
                await udp.query(dns.message.make_query("host.example.test.", "TLSA"))
        finally:
            t.close()

    asyncio.run(go())


def test_resolver_reused_across_event_loops(world: World) -> None:
    net = NetServer(world.server)
    ready: dict[str, int] = {}

    import threading

    stop = threading.Event()

    def serve() -> None:
        async def main() -> None:
            async with net.run() as port:
                ready["port"] = port
                while not stop.is_set():
                    await asyncio.sleep(0.01)

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if "port" in ready:
                break
            time.sleep(0.01)
        resolver = _resolver(world, ready["port"], transport="tcp", max_concurrency=1)
        for name in ("sensor7._device.example.test", "x1._device.example.test"):

            async def go(name: str = name) -> list[LookupResult]:
                return await asyncio.gather(
                    resolver.lookup_tlsa(name), resolver.lookup_tlsa("y" + name)
                )

            results = asyncio.run(go())
            assert all(r.outcome is Outcome.SECURE for r in results), results
    finally:
        stop.set()
        thread.join(5)
