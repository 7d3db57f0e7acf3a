"""A client that leaves at any moment releases everything at once; the server's limits; drain
and reload (library level, in one event loop). Every test also checks that nothing was logged
at ERROR level and that no task was destroyed while pending."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from dance import certs
from dance.auth import Authenticator
from dance.identity import Identity
from dance.testkit import Fault
from dance.tls import DanceServer, probe, serve
from dance.tls.proxy import Proxy, ProxyConfig
from dance.tls.server import DanceStreamWriter
from tests.pki import key
from tests.tls.common import ALLOW, DEVICE, NOW, World, ctx_for, make_world, resolver

LINGER_0 = struct.pack("ii", 1, 0)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("tls-lifecycle"))


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG, logger="dance")
    caplog.set_level(logging.DEBUG, logger="asyncio")
    yield
    gc.collect()
    bad = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR
        or r.exc_info
        or "Task was destroyed" in r.getMessage()
        or "never retrieved" in r.getMessage()
    ]
    assert bad == []


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def eventually(check: Callable[[], bool], limit: float = 10.0) -> bool:
    """Poll ``check`` (generous limit: the machine is shared)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while loop.time() < end:
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


@dataclass
class Backend:
    """Waits for the client to speak first (as HTTP servers do), then echoes; b"flood" makes it
    stream until the connection breaks."""

    connections: int = 0
    open: int = 0
    ended: list[str] = field(default_factory=list)
    headers: list[bytes] = field(default_factory=list)
    server: Any = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> Backend:
        def on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.get_running_loop().create_task(self.serve(reader, writer))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        self.server = await asyncio.start_server(on, "127.0.0.1", 0)
        return self

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        how = "eof"
        try:
            head = await reader.readexactly(16)
            self.headers.append(head + await reader.readexactly(struct.unpack("!H", head[14:])[0]))
            while data := await reader.read(65536):
                if data.startswith(b"flood"):
                    while True:
                        writer.write(b"x" * 65536)
                        await writer.drain()
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError) as exc:
            how = type(exc).__name__
        finally:
            self.ended.append(how)
            self.open -= 1
            writer.transport.abort()

    async def stop(self) -> None:
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks)


def stalled_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A port whose accept queue is full: further connects hang (SYNs are dropped)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    fillers: list[socket.socket] = []
    for _ in range(2):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(lsock.getsockname())
        fillers.append(s)
    return lsock, fillers


async def dance_connect(
    world: World, port: int, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1",
        port,
        ssl=ctx_for(world, world.device, DEVICE),
        server_hostname="localhost",
        local_addr=(source, 0),
    )


def reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
    writer.transport.abort()


def run_proxy(
    world: World,
    scenario: Callable[[DanceServer, Proxy, Any], Awaitable[None]],
    *,
    backend_port: int | None = None,
    config: dict[str, Any] | None = None,
    **limits: Any,
) -> None:
    async def main() -> None:
        backend = await Backend().start()
        async with resolver(world) as res:
            auth = Authenticator(res, allow=ALLOW)
            port = backend.port if backend_port is None else backend_port
            proxy = Proxy(ProxyConfig(("127.0.0.1", port), **(config or {})))
            server = await serve(
                proxy.handle,
                "127.0.0.1",
                0,
                cert=world.server.cert,
                key=world.server.key,
                authenticator=auth,
                **limits,
            )
            try:
                async with server:
                    await scenario(server, proxy, backend)
            finally:
                await backend.stop()

    asyncio.run(main())


# -- a client that leaves ---------------------------------------------------------------------


def test_client_leaving_during_the_lookup_frees_its_slot(world: World) -> None:
    async def scenario(server: DanceServer, proxy: Proxy, backend: Backend) -> None:
        with world.zones.inject(Fault("slow", DEVICE, delay=8.0)):
            _, writer = await dance_connect(world, server.port)
            assert await eventually(lambda: server.pending == 1)
            reset(writer)
            # released at once, long before the DNS answer (8 s) or the lookup timeout (20 s)
            assert await eventually(lambda: server.pending == 0 and server.connections == 0, 6)
        assert server.stats.get("rejected_client-gone") == 1
        assert backend.connections == 0

    run_proxy(world, scenario, lookup_timeout=20.0)


def test_client_leaving_during_the_backend_connect(world: World) -> None:
    lsock, fillers = stalled_listener()
    try:

        async def scenario(server: DanceServer, proxy: Proxy, backend: Backend) -> None:
            await server.authenticator.source.lookup_tlsa(DEVICE)  # decided in the handshake
            base = fds()
            _, writer = await dance_connect(world, server.port)
            assert await eventually(lambda: server.stats.get("accepted") == 1)
            await asyncio.sleep(0.3)  # the proxy is connecting to the stalled backend
            reset(writer)
            assert await eventually(lambda: proxy.stats.client_gone_connecting == 1, 6)
            assert await eventually(lambda: server.connections == 0 and fds() <= base)
            assert proxy.stats.backend_timeouts == 0  # left long before connect_timeout

        run_proxy(
            world,
            scenario,
            backend_port=lsock.getsockname()[1],
            config={"connect_timeout": 30.0},
        )
    finally:
        for s in (lsock, *fillers):
            s.close()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_leaving_mid_relay_closes_the_backend(world: World, how: str) -> None:
    async def scenario(server: DanceServer, proxy: Proxy, backend: Backend) -> None:
        base = fds()
        reader, writer = await dance_connect(world, server.port)
        writer.write(b"hi\n")
        assert await asyncio.wait_for(reader.readexactly(3), 10) == b"hi\n"
        assert backend.open == 1
        if how == "reset":
            reset(writer)
        else:
            writer.close()
        # the backend, which waits for the client to speak, is closed by the proxy
        assert await eventually(lambda: backend.open == 0)
        assert await eventually(lambda: server.connections == 0 and fds() <= base)
        assert proxy.stats.closed_by_client == 1

    run_proxy(world, scenario)


def test_proxy_header_and_peername_are_the_accept_time_addresses(world: World) -> None:
    seen: list[Any] = []

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, identity: Identity
    ) -> None:
        assert isinstance(writer, DanceStreamWriter)
        await asyncio.wait({writer.gone}, timeout=10)
        assert writer.gone.done()
        seen.append((writer.get_extra_info("peername"), writer.get_extra_info("sockname")))

    async def main() -> None:
        async with resolver(world) as res:
            auth = Authenticator(res, allow=ALLOW)
            server = await serve(
                handler,
                "127.0.0.1",
                0,
                cert=world.server.cert,
                key=world.server.key,
                authenticator=auth,
            )
            async with server:
                await res.lookup_tlsa(DEVICE)  # decided in the handshake: the handler runs
                _, writer = await dance_connect(world, server.port)
                mine = writer.get_extra_info("sockname")
                assert await eventually(lambda: server.stats.get("accepted") == 1)
                reset(writer)
                assert await eventually(lambda: bool(seen))
                assert seen == [(mine, ("127.0.0.1", server.port))]

    asyncio.run(main())


# -- limits -------------------------------------------------------------------------------------


def test_handshake_timeout_cuts_a_slowloris(world: World) -> None:
    async def scenario(server: DanceServer, proxy: Proxy, backend: Backend) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setblocking(False)
        await loop.sock_sendall(sock, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 100), 10)
        except ConnectionResetError:
            data = b""
        sock.close()
        assert data == b""  # closed by the server
        assert server.stats.get("limit_handshake-timeout") == 1
        assert await eventually(lambda: server.connections == 0)

    run_proxy(world, scenario, handshake_timeout=0.5)


def test_idle_timeout_and_a_client_that_never_reads(world: World) -> None:
    async def scenario(server: DanceServer, proxy: Proxy, backend: Backend) -> None:
        base = fds()
        # idle: authenticated, relayed, then silent on both sides
        reader, writer = await dance_connect(world, server.port)
        writer.write(b"hi\n")
        assert await asyncio.wait_for(reader.readexactly(3), 10) == b"hi\n"
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 10)
        writer.close()
        # never reads: the backend streams, the client's buffers fill, the proxy cuts it
        deaf = await dance_connect(world, server.port)  # the reader is kept, never read
        writer2 = deaf[1]
        writer2.write(b"flood\n")
        assert await eventually(lambda: server.stats.get("limit_idle-timeout") == 2)
        assert await eventually(lambda: backend.open == 0 and server.connections == 0)
        writer2.transport.abort()
        assert await eventually(lambda: fds() <= base)
        # an active client is not idle
        reader3, writer3 = await dance_connect(world, server.port)
        for _ in range(6):
            writer3.write(b"x\n")
            assert await asyncio.wait_for(reader3.readexactly(2), 10) == b"x\n"
            await asyncio.sleep(0.2)
        assert server.stats.get("limit_idle-timeout") == 2
        writer3.close()

    run_proxy(world, scenario, idle_timeout=0.6)


def test_connection_limits(world: World) -> None:
    async def scenario(server: DanceServer, proxy: Proxy, backend: Backend) -> None:
        loop = asyncio.get_running_loop()

        async def raw(source: str) -> socket.socket:
            s = socket.socket()
            s.setblocking(False)
            s.bind((source, 0))
            await loop.sock_connect(s, ("127.0.0.1", server.port))
            return s

        async def closed_by_server(s: socket.socket) -> bool:
            try:
                return await asyncio.wait_for(loop.sock_recv(s, 10), 10) == b""
            except ConnectionResetError:
                return True

        held = [await raw("127.0.0.1"), await raw("127.0.0.1")]
        assert await eventually(lambda: server.connections == 2)
        third = await raw("127.0.0.1")  # a third from the same address
        assert await closed_by_server(third)
        assert server.stats.get("limit_per-address") == 1
        held.append(await raw("127.0.0.2"))  # another address: served
        assert await eventually(lambda: server.connections == 3)
        fourth = await raw("127.0.0.3")  # over max_connections
        assert await closed_by_server(fourth)
        assert server.stats.get("limit_max-connections") == 1
        for s in (third, fourth, *held):
            s.close()
        assert await eventually(lambda: server.connections == 0)
        r = await probe(
            "127.0.0.1",
            server.port,
            context=ctx_for(world, world.device, DEVICE),
            server_hostname="localhost",
            send=b"back\n",
        )
        assert r.accepted and r.reply == b"back\n"

    run_proxy(world, scenario, max_connections=3, max_per_address=2, handshake_timeout=30.0)


def test_limits_are_validated(world: World) -> None:
    async def main() -> None:
        async with resolver(world) as res:
            auth = Authenticator(res, allow=ALLOW)
            for bad in (
                {"max_connections": 0},
                {"max_per_address": -1},
                {"handshake_timeout": 0},
                {"idle_timeout": -1.0},
                {"close_timeout": 0},
            ):
                with pytest.raises(ValueError):
                    await serve(
                        Proxy(ProxyConfig(("127.0.0.1", 1))).handle,
                        "127.0.0.1",
                        0,
                        cert=world.server.cert,
                        key=world.server.key,
                        authenticator=auth,
                        **bad,
                    )

    asyncio.run(main())
    with pytest.raises(ValueError):
        ProxyConfig(("127.0.0.1", 1), connect_timeout=0)


# -- backend faults -----------------------------------------------------------------------------


def test_backend_down_and_silent_close_the_client_and_are_counted(world: World) -> None:
    down = socket.socket()
    down.bind(("127.0.0.1", 0))
    down_port = down.getsockname()[1]
    down.close()  # nothing listens there
    lsock, fillers = stalled_listener()
    try:
        for port, counter in (
            (down_port, "backend_refused"),
            (lsock.getsockname()[1], "backend_timeouts"),
        ):

            async def scenario(
                server: DanceServer, proxy: Proxy, backend: Backend, counter: str = counter
            ) -> None:
                r = await probe(
                    "127.0.0.1",
                    server.port,
                    context=ctx_for(world, world.device, DEVICE),
                    server_hostname="localhost",
                    send=b"x\n",
                    read_timeout=10,
                )
                assert not r.accepted and r.connected  # closed, not hung
                assert proxy.stats.backend_failures == 1
                assert getattr(proxy.stats, counter) == 1
                assert await eventually(lambda: server.connections == 0)

            run_proxy(
                world, scenario, backend_port=port, config={"connect_timeout": 0.5}
            )  # fmt: skip
    finally:
        for s in (lsock, *fillers):
            s.close()


# -- lifecycle ------------------------------------------------------------------------------------


def test_shutdown_drains_then_cuts(world: World) -> None:
    async def scenario(server: DanceServer, proxy: Proxy, backend: Backend) -> None:
        reader, writer = await dance_connect(world, server.port)
        writer.write(b"one\n")
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"one\n"
        stopping = asyncio.ensure_future(server.shutdown(drain_timeout=10))
        await asyncio.sleep(0.2)
        with pytest.raises(OSError):  # no longer accepting
            await dance_connect(world, server.port)
        writer.write(b"two\n")  # the established connection goes on
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"two\n"
        writer.close()
        assert await asyncio.wait_for(stopping, 10) == 0  # it ended by itself: nothing cut

    run_proxy(world, scenario)

    async def held(server: DanceServer, proxy: Proxy, backend: Backend) -> None:
        reader, writer = await dance_connect(world, server.port)
        writer.write(b"one\n")
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"one\n"
        assert await server.shutdown(drain_timeout=0.3) == 1  # still open at the deadline
        with pytest.raises(ConnectionResetError):  # cut with a reset
            await asyncio.wait_for(reader.read(10), 10)
        assert await eventually(lambda: backend.open == 0)
        writer.close()

    run_proxy(world, held)


def test_reload_certificate_keeps_established_connections(world: World) -> None:
    other_key = key(7)
    ca_key = key(0)
    ca = certs.new_ca(ca_key, "TLS test server CA", now=NOW)
    new_cert = certs.issue_certificate(
        ca, ca_key, other_key.public_key(), dns_names=["localhost"], now=NOW, client_auth=False
    )
    d = world.dir
    (d / "server2.pem").write_bytes(certs.certificate_pem(new_cert))
    certs.write_private_key(d / "server2.key", other_key)

    async def scenario(server: DanceServer, proxy: Proxy, backend: Backend) -> None:
        reader, writer = await dance_connect(world, server.port)
        writer.write(b"one\n")
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"one\n"
        old_context = server.context
        with pytest.raises((ssl.SSLError, OSError)):  # the new certificate with the old key
            server.reload(cert=d / "server2.pem", key=world.server.key)
        assert server.context is old_context
        server.reload(cert=d / "server2.pem", key=d / "server2.key")
        assert server.context is not old_context
        _, w2 = await dance_connect(world, server.port)
        der = w2.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert der == new_cert.public_bytes(serialization.Encoding.DER)
        w2.close()
        writer.write(b"two\n")  # the connection made before the reload goes on
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"two\n"
        writer.close()

    run_proxy(world, scenario)


def test_handshake_rate_per_address(world: World) -> None:
    """A burst of new connections from one address past its rate is closed at accept, before
    any TLS work; once the bucket refills, the address is served again."""

    async def scenario(server: DanceServer, proxy: Proxy, backend: Backend) -> None:
        loop = asyncio.get_running_loop()

        async def raw() -> socket.socket:
            s = socket.socket()
            s.setblocking(False)
            await loop.sock_connect(s, ("127.0.0.1", server.port))
            return s

        burst = [await raw() for _ in range(8)]  # rate 1/s, burst 4: about 4 refused
        assert await eventually(lambda: server.stats.get("limit_handshake-rate") >= 3)
        await asyncio.sleep(0.3)  # every one of the 8 has been accepted or refused by now
        refused = server.stats.get("limit_handshake-rate")
        assert 3 <= refused <= 4
        for s in burst:
            s.close()
        await asyncio.sleep(1.5)  # the bucket refills
        r = await probe(
            "127.0.0.1",
            server.port,
            context=ctx_for(world, world.device, DEVICE),
            server_hostname="localhost",
            send=b"later\n",
        )
        assert r.accepted and r.reply == b"later\n"
        assert server.stats.get("limit_handshake-rate") == refused

    run_proxy(world, scenario, handshake_rate=1.0, handshake_burst=4.0)
