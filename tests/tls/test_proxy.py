"""The DANCE proxy (library level): tcp mode with PROXY v2, http mode with the identity header;
refused clients never reach the backend."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from dance.auth import Authenticator
from dance.tls import DanceServer, probe, serve
from dance.tls.proxy import Proxy, ProxyConfig, ProxyStats
from dance.tls.proxyv2 import SIGNATURE
from tests.tls.common import ALLOW, DEVICE, OUTSIDE, World, ctx_for, make_world, resolver


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("tls-proxy"))


def parse_proxy_v2(data: bytes) -> tuple[tuple[str, int], dict[int, bytes], bytes]:
    """(source address, TLVs, rest) of a PROXY v2 TCP/IPv4 header."""
    assert data[:12] == SIGNATURE
    assert data[12] == 0x21 and data[13] == 0x11
    (length,) = struct.unpack("!H", data[14:16])
    body = data[16 : 16 + length]
    src = ".".join(str(b) for b in body[0:4])
    (sport,) = struct.unpack("!H", body[8:10])
    tlvs: dict[int, bytes] = {}
    rest = body[12:]
    while rest:
        t, n = rest[0], struct.unpack("!H", rest[1:3])[0]
        tlvs[t] = rest[3 : 3 + n]
        rest = rest[3 + n :]
    return (src, sport), tlvs, data[16 + length :]


@dataclass
class Backend:
    connections: int = 0
    received: list[bytes] = field(default_factory=list)
    requests: list[dict[str, list[str]]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    server: Any = None

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])


async def tcp_backend() -> Backend:
    b = Backend()

    async def on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b.connections += 1
        data = await reader.readexactly(16)  # the PROXY v2 header, then its addresses and TLVs
        data += await reader.readexactly(struct.unpack("!H", data[14:16])[0])
        start = len(data)
        while b"\n" not in data[start:]:
            chunk = await reader.read(4096)
            if not chunk:
                break
            data += chunk
        b.received.append(data)
        writer.write(b"backend got it\n")
        await writer.drain()
        writer.close()

    b.server = await asyncio.start_server(on, "127.0.0.1", 0)
    return b


async def http_backend() -> Backend:
    b = Backend()

    async def on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers: dict[str, list[str]] = {}
                for line in head.decode().split("\r\n")[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers.setdefault(k.strip().lower(), []).append(v.strip())
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"][0]))
                elif headers.get("transfer-encoding") == ["chunked"]:
                    body = await reader.readuntil(b"0\r\n\r\n")
                else:
                    body = b""
                b.requests.append(headers)
                b.bodies.append(body)
                ident = ",".join(headers.get("x-dance-client-id", []))
                writer.write(
                    f"HTTP/1.1 200 OK\r\nContent-Length: {len(ident)}\r\n\r\n{ident}".encode()
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    b.server = await asyncio.start_server(on, "127.0.0.1", 0)
    return b


async def echo_backend() -> Backend:
    """tcp mode: after the PROXY header, every line is echoed until the client ends."""
    b = Backend()

    async def on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b.connections += 1
        head = await reader.readexactly(16)
        await reader.readexactly(struct.unpack("!H", head[14:16])[0])
        while line := await reader.readline():
            b.received.append(line)
            writer.write(line)
            await writer.drain()
        writer.close()

    b.server = await asyncio.start_server(on, "127.0.0.1", 0)
    return b


def run_proxy(
    world: World, mode: str, scenario: Any, serve_kw: dict[str, Any] | None = None, **cfg: Any
) -> None:
    async def main() -> None:
        if mode == "echo":
            backend = await echo_backend()
        else:
            backend = await (tcp_backend() if mode == "tcp" else http_backend())
        async with resolver(world) as res:
            auth = Authenticator(res, allow=ALLOW)
            config = ProxyConfig(
                ("127.0.0.1", backend.port), mode="tcp" if mode == "echo" else mode, **cfg
            )
            proxy = Proxy(config)
            server = await serve(
                proxy.handle,
                "127.0.0.1",
                0,
                cert=world.server.cert,
                key=world.server.key,
                authenticator=auth,
                **(serve_kw or {}),
            )
            async with server:
                await scenario(server, backend, proxy.stats)
        backend.server.close()

    asyncio.run(main())


async def refused_never_reach_backend(world: World, server: DanceServer, backend: Backend) -> None:
    before = backend.connections
    for files, name in ((world.impostor, DEVICE), (world.device, OUTSIDE), (world.device, None)):
        r = await probe(
            "127.0.0.1",
            server.port,
            context=ctx_for(world, files, name),
            server_hostname="localhost",
            send=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        assert not r.accepted
    await asyncio.sleep(0.05)
    assert backend.connections == before
    assert server.stats.get("rejected") == 3


def test_tcp_mode_proxy_v2_identity(world: World) -> None:
    async def scenario(server: DanceServer, backend: Backend, stats: ProxyStats) -> None:
        await refused_never_reach_backend(world, server, backend)
        assert backend.connections == 0
        ctx = ctx_for(world, world.device, DEVICE)
        r = await probe(
            "127.0.0.1", server.port, context=ctx, server_hostname="localhost", send=b"hi\n"
        )
        assert r.accepted and r.reply == b"backend got it\n"
        assert backend.connections == 1
        (src, tlvs, rest) = parse_proxy_v2(backend.received[0])
        assert src[0] == "127.0.0.1"
        assert tlvs == {0xE7: DEVICE.encode()}
        assert rest == b"hi\n"

    run_proxy(world, "tcp", scenario, tlv_type=0xE7)


def test_http_mode_header_set_and_spoofed_copies_stripped(world: World) -> None:
    async def scenario(server: DanceServer, backend: Backend, stats: ProxyStats) -> None:
        await refused_never_reach_backend(world, server, backend)
        assert backend.connections == 0
        ctx = ctx_for(world, world.device, DEVICE)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=ctx, server_hostname="localhost"
        )
        writer.write(
            b"POST /a HTTP/1.1\r\nHost: x\r\nX-DANCE-Client-ID: admin.example.test\r\n"
            b"x-dance-client-id: root\r\nContent-Length: 5\r\n\r\nhello"
            b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        await writer.drain()
        replies = b""
        while replies.count(b"HTTP/1.1 200") < 2:
            chunk = await asyncio.wait_for(reader.read(4096), 5)
            assert chunk
            replies += chunk
        writer.close()
        assert replies.count(DEVICE.encode()) == 2
        assert [h["x-dance-client-id"] for h in backend.requests] == [[DEVICE], [DEVICE]]
        assert backend.bodies == [b"hello", b"3\r\nabc\r\n0\r\n\r\n"]
        assert stats.stripped_headers == 2

    run_proxy(world, "http", scenario)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Dance-Client-ID : spoof\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
    ],
)
def test_http_mode_ambiguous_requests_refused(world: World, request_bytes: bytes) -> None:
    async def scenario(server: DanceServer, backend: Backend, stats: ProxyStats) -> None:
        ctx = ctx_for(world, world.device, DEVICE)
        r = await probe(
            "127.0.0.1", server.port, context=ctx, server_hostname="localhost", send=request_bytes
        )
        assert r.reply.startswith(b"HTTP/1.1 400 ")  # the proxy's refusal, not the backend's
        await asyncio.sleep(0.05)
        assert backend.requests == []
        assert stats.requests == 0

    run_proxy(world, "http", scenario)


def test_tcp_mode_relays_bulk_both_ways_with_flow_control(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """4 MiB through the tcp relay and back: more than every buffer on the way, so reading
    pauses and resumes on both sides; every byte arrives, in order, and the relay then ends
    with the client (counted)."""
    line = bytes(range(97, 123)) * 39 + b"\n"  # 1,015 bytes
    count = 4 * 1024 * 1024 // len(line)

    async def scenario(server: DanceServer, backend: Backend, stats: ProxyStats) -> None:
        ctx = ctx_for(world, world.device, DEVICE)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=ctx, server_hostname="localhost"
        )

        async def send() -> None:
            for _ in range(count):
                writer.write(line)
                await writer.drain()

        sending = asyncio.ensure_future(send())
        got = 0
        while got < count:
            assert await asyncio.wait_for(reader.readline(), 10) == line
            got += 1
        await sending
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        for _ in range(100):
            if stats.closed_by_client:
                break
            await asyncio.sleep(0.05)
        assert stats.closed_by_client == 1 and stats.closed_by_backend == 0
        assert len(backend.received) == count

    run_proxy(world, "echo", scenario)
    # the client's end of stream closed its TLS transport without asyncio's complaint about a
    # protocol asking to keep a TLS transport half-open
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


@pytest.mark.parametrize("mode", ["tcp", "http"])
def test_clients_leaving_during_the_backend_connect_leave_no_open_backend(
    world: World, mode: str
) -> None:
    """Clients that close right after their handshake (as ``openssl s_time -new`` does) leave
    while the proxy connects to the backend: each connect is cancelled or closed at once; none
    is left open for the garbage collector to find (asyncio then warns "unclosed
    StreamWriter": ``wait_for`` of Python 3.11 drops a connect that completes as it is
    cancelled)."""

    async def scenario(server: DanceServer, backend: Backend, stats: ProxyStats) -> None:
        ctx = ctx_for(world, world.device, DEVICE)
        loop = asyncio.get_running_loop()
        for _ in range(40):
            _, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=ctx, server_hostname="localhost"
            )
            writer.transport.abort()  # gone at once, no close_notify
            await asyncio.sleep(0.002)
        for _ in range(200):
            if server.connections == 0:
                break
            await asyncio.sleep(0.02)
        assert server.connections == 0
        await asyncio.sleep(0.1)
        assert loop is asyncio.get_running_loop()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        run_proxy(world, mode, scenario)
        gc.collect()
    unclosed = [str(w.message) for w in caught if "unclosed" in str(w.message)]
    assert unclosed == []


@pytest.mark.parametrize("mode", ["echo", "http"])
def test_relayed_traffic_keeps_the_connection_from_idling(world: World, mode: str) -> None:
    """The idle timeout counts bytes moving either way through the relay: a connection busy for
    several idle periods stays open (the relays copy from transport callbacks, past the stream
    that used to note the activity)."""

    async def scenario(server: DanceServer, backend: Backend, stats: ProxyStats) -> None:
        ctx = ctx_for(world, world.device, DEVICE)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=ctx, server_hostname="localhost"
        )
        for i in range(12):  # 12 x 0.15 s: three times the idle timeout
            if mode == "echo":
                writer.write(b"line %d\n" % i)
                assert await asyncio.wait_for(reader.readline(), 5) == b"line %d\n" % i
            else:
                writer.write(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200")
                await asyncio.wait_for(reader.readexactly(len(DEVICE)), 5)
            await asyncio.sleep(0.15)
        assert server.stats.get("limit_idle-timeout") == 0
        writer.close()
        # and a silent one is still closed (reset: nothing queued is kept for it)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=ctx, server_hostname="localhost"
        )
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), 5) == b""
        assert server.stats.get("limit_idle-timeout") == 1
        writer.close()

    run_proxy(world, mode, scenario, serve_kw={"idle_timeout": 0.5})


def test_proxy_config_validation() -> None:
    with pytest.raises(ValueError):
        ProxyConfig(("127.0.0.1", 1), tlv_type=0xD0)
    with pytest.raises(ValueError):
        ProxyConfig(("127.0.0.1", 1), mode="udp")
    with pytest.raises(ValueError):
        ProxyConfig(("127.0.0.1", 1), header="Bad Header")
