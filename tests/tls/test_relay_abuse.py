"""The proxy's relays under attack (library level: `dance.tls.serve` + `dance.tls.proxy.Proxy`):
peers that never read, resets in the middle of a transfer, silence, half-close, and a server
shutdown while relays are busy. Each test checks what the proxy holds (bytes buffered in its
transports, connections, tasks, descriptors), not only what the peers see."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from dance.auth import Authenticator
from dance.http.relay import _Downstream, _Upstream
from dance.tls import DanceServer, serve
from dance.tls.proxy import Proxy, ProxyConfig, ProxyStats, _Splice
from tests.tls.common import ALLOW, DEVICE, World, ctx_for, make_world, resolver

MiB = 1024 * 1024
SMALL_BUFFER = 64 * 1024  # the peers' socket buffers (the proxy's own stay at the defaults)
WAIT = 15.0  # generous: the machine is shared


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("tls-relay-abuse"))


def pattern(offset: int, size: int) -> bytes:
    """``size`` bytes of a stream whose byte ``i`` is ``i * 7 % 251``: any loss, duplicate or
    reordering shows."""
    start = offset % 251
    period = bytes(i * 7 % 251 for i in range(251))
    data = period[start:] + period * (size // 251 + 2)
    return data[:size]


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def proxy_held() -> int:
    """Bytes held in user space by the proxy's relays: the write buffers of the client's TLS
    transport (and of its TCP transport under it), the TLS transport's decrypted-but-unread
    input, and the backend transport's write buffer."""
    tls: set[Any] = set()
    raw: set[Any] = set()
    plain: set[Any] = set()
    for o in gc.get_objects():
        if isinstance(o, _Splice):
            (tls if o.client_side else plain).add(o.transport)
            if o.client_side and (under := getattr(o.stream, "raw", None)) is not None:
                raw.add(under)
        elif isinstance(o, _Downstream):
            tls.add(o.client)
            plain.add(o.backend)
        elif isinstance(o, _Upstream):
            tls.add(o.client)
            plain.add(o.backend)
            if (under := getattr(o.stream, "raw", None)) is not None:
                raw.add(under)
    total = 0
    for t in tls:
        with contextlib.suppress(AttributeError):  # a closed TLS transport has no protocol
            total += t.get_write_buffer_size() + t.get_read_buffer_size()
    for t in raw | plain:
        total += t.get_write_buffer_size()
    return total


@dataclass
class Rig:
    world: World
    server: DanceServer
    proxy: Proxy
    backends: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    mode: str
    opened: list[asyncio.StreamWriter] = field(default_factory=list)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A DANCE client with small socket buffers (so that a client that does not read is
        felt at once; the proxy's sockets keep the defaults)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", self.server.port))
        reader, writer = await asyncio.open_connection(
            sock=sock,
            ssl=ctx_for(self.world, self.world.device, DEVICE),
            server_hostname="localhost",
        )
        self.opened.append(writer)
        return reader, writer

    async def backend(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The next backend connection (its PROXY v2 header read, in tcp mode)."""
        reader, writer = await asyncio.wait_for(self.backends.get(), WAIT)
        self.opened.append(writer)
        if self.mode == "tcp":
            head = await asyncio.wait_for(reader.readexactly(16), WAIT)
            await reader.readexactly(struct.unpack("!H", head[14:16])[0])
        return reader, writer

    async def settled(self, baseline_fds: int, baseline_tasks: int) -> None:
        """Wait until the proxy serves no connection, and the descriptors and tasks are back
        to what they were (the test's own sockets closed first)."""
        for writer in self.opened:
            writer.transport.abort()
        for _ in range(int(WAIT / 0.05)):
            gc.collect()
            if (
                self.server.connections == 0
                and fds() <= baseline_fds
                and len(asyncio.all_tasks()) <= baseline_tasks
            ):
                break
            await asyncio.sleep(0.05)
        assert self.server.connections == 0
        assert fds() <= baseline_fds, sorted(os.listdir("/proc/self/fd"))
        assert len(asyncio.all_tasks()) <= baseline_tasks, asyncio.all_tasks()


def run_rig(
    world: World,
    scenario: Callable[[Rig], Awaitable[None]],
    *,
    mode: str = "tcp",
    serve_kw: dict[str, Any] | None = None,
    **cfg: Any,
) -> None:
    """Start a backend listener (its connections handed to the scenario, small socket
    buffers), the proxy in front of it, run ``scenario``, then check that everything the
    relays used was released."""

    async def main() -> None:
        backends: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        backends = asyncio.Queue()

        async def on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await backends.put((reader, writer))

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        listener.bind(("127.0.0.1", 0))
        b_server = await asyncio.start_server(on, sock=listener)
        async with resolver(world) as res:
            config = ProxyConfig(("127.0.0.1", listener.getsockname()[1]), mode=mode, **cfg)
            proxy = Proxy(config)
            server = await serve(
                proxy.handle,
                "127.0.0.1",
                0,
                cert=world.server.cert,
                key=world.server.key,
                authenticator=Authenticator(res, allow=ALLOW),
                **(serve_kw or {}),
            )
            # the cold DNS lookup, the resolver's sockets and first-use allocations happen
            # before the baselines are taken
            rig = Rig(world, server, proxy, backends, mode)
            _reader, _writer = await rig.connect()
            await rig.backend()
            await rig.settled(10**6, 10**6)
            rig.opened.clear()
            proxy.stats = ProxyStats()
            baseline_fds, baseline_tasks = fds(), len(asyncio.all_tasks())
            async with server:
                await scenario(rig)
                await rig.settled(baseline_fds, baseline_tasks)
        b_server.close()

    asyncio.run(main())


async def stalled(progress: Callable[[], int], quiet: float = 0.5) -> int:
    """Wait until ``progress()`` has not moved for ``quiet`` seconds; its value then."""
    last, since = progress(), asyncio.get_running_loop().time()
    loop = asyncio.get_running_loop()
    while loop.time() - since < quiet:
        await asyncio.sleep(0.05)
        now = progress()
        if now != last:
            last, since = now, loop.time()
    return last


async def read_exactly_pattern(reader: asyncio.StreamReader, offset: int, size: int) -> None:
    got = 0
    while got < size:
        chunk = await asyncio.wait_for(reader.read(min(256 * 1024, size - got)), WAIT)
        assert chunk, f"end of stream after {got} of {size} bytes"
        assert chunk == pattern(offset + got, len(chunk)), f"corrupt at {offset + got}"
        got += len(chunk)


async def stream_pattern(writer: asyncio.StreamWriter, size: int, sent: list[int]) -> None:
    while sent[0] < size:
        n = min(64 * 1024, size - sent[0])
        writer.write(pattern(sent[0], n))
        sent[0] += n
        await writer.drain()


# -- 1, 2: a side that never reads ------------------------------------------------------------


TOTAL = 48 * MiB  # more than every socket buffer on the way (a few MiB each)
HELD_MAX = 2 * MiB  # what the proxy may hold in its transports


@pytest.mark.parametrize("mode", ["tcp", "http"])
def test_client_that_never_reads_stops_the_backend(world: World, mode: str) -> None:
    """The backend streams 48 MiB to a client that does not read: the proxy stops reading the
    backend (whose drain stalls well before the end), holds at most a couple of MiB, and the
    process does not grow by the stream; when the client reads again, every byte arrives, in
    order."""

    async def scenario(rig: Rig) -> None:
        reader, writer = await rig.connect()
        if mode == "http":
            writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        b_reader, b_writer = await rig.backend()
        head = b""
        if mode == "http":
            await asyncio.wait_for(b_reader.readuntil(b"\r\n\r\n"), WAIT)
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % TOTAL
            b_writer.write(head)
        before = rss()
        sent = [0]
        streaming = asyncio.ensure_future(stream_pattern(b_writer, TOTAL, sent))
        stuck_at = await stalled(lambda: sent[0])
        held = proxy_held()
        grown = rss() - before
        assert not streaming.done() and stuck_at < TOTAL // 2, stuck_at
        assert held <= HELD_MAX, held
        assert grown <= 16 * MiB, grown
        if head:
            assert await asyncio.wait_for(reader.readexactly(len(head)), WAIT) == head
        await read_exactly_pattern(reader, 0, TOTAL)
        await asyncio.wait_for(streaming, WAIT)

    run_rig(world, scenario, mode=mode)


@pytest.mark.parametrize("mode", ["tcp", "http"])
def test_backend_that_never_reads_stops_the_client(world: World, mode: str) -> None:
    """The client streams 48 MiB to a backend that does not read: the proxy stops reading the
    client (whose drain stalls), holds at most a couple of MiB; once the backend reads, every
    byte arrives, in order."""

    async def scenario(rig: Rig) -> None:
        _reader, writer = await rig.connect()
        head = b""
        if mode == "http":
            head = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % TOTAL
            writer.write(head)
        b_reader, _b_writer = await rig.backend()
        before = rss()
        sent = [0]
        streaming = asyncio.ensure_future(stream_pattern(writer, TOTAL, sent))
        stuck_at = await stalled(lambda: sent[0])
        held = proxy_held()
        grown = rss() - before
        assert not streaming.done() and stuck_at < TOTAL // 2, stuck_at
        assert held <= HELD_MAX, held
        assert grown <= 16 * MiB, grown
        if head:
            got = await asyncio.wait_for(b_reader.readuntil(b"\r\n\r\n"), WAIT)
            assert got.startswith(b"POST /up HTTP/1.1\r\n")
            assert b"\r\nContent-Length: %d\r\n" % TOTAL in got
        await read_exactly_pattern(b_reader, 0, TOTAL)
        await asyncio.wait_for(streaming, WAIT)

    run_rig(world, scenario, mode=mode)


# -- 3, 4: a reset in the middle of a transfer ------------------------------------------------

LONG = 60.0  # the proxy's close/drain timeouts in these tests: promptness must not come from them


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: a TCP RST, whatever is queued (under TLS: no close_notify)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def until_end(reader: asyncio.StreamReader) -> int:
    """Read until the end of the stream (or a reset, or a TLS error); the bytes read."""
    got = 0
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while chunk := await reader.read(256 * 1024):
            got += len(chunk)
    return got


def long_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    """The http relay waits at most 60 s (not 10) for the backend after the client stopped."""
    import dance.http.relay as http_relay
    import dance.tls.proxy as proxy_module

    def relay(*args: Any, **kw: Any) -> Awaitable[None]:
        return http_relay.relay_http(*args, drain_timeout=LONG, **kw)

    monkeypatch.setattr(proxy_module, "relay_http", relay)


async def busy_both_ways(
    rig: Rig,
) -> tuple[
    tuple[asyncio.StreamReader, asyncio.StreamWriter],
    tuple[asyncio.StreamReader, asyncio.StreamWriter],
    list[asyncio.Future[Any]],
]:
    """A relay moving bytes both ways (tcp: raw streams; http: a large upload while the
    backend streams a large answer), a few hundred KiB already through each way."""
    reader, writer = await rig.connect()
    if rig.mode == "http":
        writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % TOTAL)
    b_reader, b_writer = await rig.backend()
    if rig.mode == "http":
        await asyncio.wait_for(b_reader.readuntil(b"\r\n\r\n"), WAIT)
        b_writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % TOTAL)
    up, down = [0], [0]
    moving: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(stream_pattern(writer, TOTAL, up)),
        asyncio.ensure_future(stream_pattern(b_writer, TOTAL, down)),
    ]
    got = 0
    while got < 512 * 1024:  # the client reads some of the answer
        chunk = await asyncio.wait_for(reader.read(65536), WAIT)
        assert chunk
        got += len(chunk)
    while up[0] < 512 * 1024:
        await asyncio.sleep(0.01)
    return (reader, writer), (b_reader, b_writer), moving


async def finish(moving: list[asyncio.Future[Any]]) -> None:
    for task in moving:
        task.cancel()
    await asyncio.wait(moving, timeout=WAIT)
    for task in moving:  # the peers' own writes may have met the reset
        if not task.cancelled():
            assert task.exception() is None or isinstance(task.exception(), ConnectionError)


async def until_proxy_idle(rig: Rig) -> None:
    for _ in range(int(WAIT / 0.05)):
        if rig.server.connections == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{rig.server.connections} connection(s) still served")


@pytest.mark.parametrize("mode", ["tcp", "http"])
def test_client_reset_mid_transfer_releases_the_backend(
    world: World, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client resets while bytes move both ways: the backend sees its end of stream and
    the proxy closes it and ends the connection within seconds, with close and drain timeouts
    of 60 s (a backend that keeps its side open after the end of stream is not waited for:
    there is no client to give its answer to)."""
    long_drain(monkeypatch)

    async def scenario(rig: Rig) -> None:
        (_reader, writer), (b_reader, _b_writer), moving = await busy_both_ways(rig)
        reset(writer)
        await asyncio.wait_for(until_end(b_reader), WAIT)
        await until_proxy_idle(rig)
        await finish(moving)
        if mode == "tcp":
            assert rig.proxy.stats.closed_by_client == 1
            assert rig.proxy.stats.closed_by_backend == 0

    run_rig(world, scenario, mode=mode, close_timeout=LONG, serve_kw={"close_timeout": LONG})


@pytest.mark.parametrize(
    ("mode", "sent"),
    [
        ("tcp", b"a request\n"),
        # http: a body half sent; a whole request asking to close after its answer
        ("http", b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"b" * 50),
        ("http", b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ],
    ids=["tcp", "http-mid-body", "http-connection-close"],
)
def test_client_reset_while_the_backend_is_silent(
    world: World, mode: str, sent: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client resets while the backend, which got its bytes, is thinking (silent, its
    side kept open): the proxy closes the backend's connection and ends within seconds, not
    after the drain or close timeout (60 s here): there is no client for an answer."""
    long_drain(monkeypatch)

    async def scenario(rig: Rig) -> None:
        _reader, writer = await rig.connect()
        writer.write(sent)
        b_reader, _b_writer = await rig.backend()
        expected = len(sent) + (
            len(DEVICE) + len("X-DANCE-Client-ID: \r\n") if mode == "http" else 0
        )
        got = b""
        while len(got) < expected:
            chunk = await asyncio.wait_for(b_reader.read(65536), WAIT)
            assert chunk, got
            got += chunk
        reset(writer)
        await until_proxy_idle(rig)
        assert await asyncio.wait_for(until_end(b_reader), WAIT) == 0

    run_rig(world, scenario, mode=mode, close_timeout=LONG, serve_kw={"close_timeout": LONG})


@pytest.mark.parametrize("mode", ["tcp", "http"])
def test_backend_reset_mid_transfer_ends_the_client(
    world: World, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend resets while bytes move both ways: the client's connection ends (what the
    backend sent before is still delivered first) within seconds, with close and drain
    timeouts of 60 s."""
    long_drain(monkeypatch)

    async def scenario(rig: Rig) -> None:
        (reader, _writer), (_b_reader, b_writer), moving = await busy_both_ways(rig)
        reset(b_writer)
        await asyncio.wait_for(until_end(reader), WAIT)
        await until_proxy_idle(rig)
        await finish(moving)
        if mode == "tcp":
            assert rig.proxy.stats.closed_by_backend == 1
            assert rig.proxy.stats.closed_by_client == 0

    run_rig(world, scenario, mode=mode, close_timeout=LONG, serve_kw={"close_timeout": LONG})


# -- 5: silence ---------------------------------------------------------------------------------

IDLE = 0.5


@pytest.mark.parametrize("mode", ["tcp", "http"])
def test_idle_timeout_closes_both_sides_and_a_trickle_keeps_them(
    world: World, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte every 0.15 s from the client alone, then from the backend alone, for four idle
    periods each: the connection stays. Then both are silent: the idle timeout closes the
    client's connection and the backend's (within seconds, the drain timeout at 60 s)."""
    long_drain(monkeypatch)
    trickle = 14  # x 0.15 s: 2.1 s, four idle periods

    async def scenario(rig: Rig) -> None:
        reader, writer = await rig.connect()
        if mode == "http":
            writer.write(b"POST /t HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % trickle)
        b_reader, b_writer = await rig.backend()
        if mode == "http":
            await asyncio.wait_for(b_reader.readuntil(b"\r\n\r\n"), WAIT)
        for i in range(trickle):  # client -> backend
            writer.write(b"%c" % (65 + i))
            assert await asyncio.wait_for(b_reader.readexactly(1), WAIT) == b"%c" % (65 + i)
            await asyncio.sleep(0.15)
        if mode == "http":
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % trickle
            b_writer.write(head)
            assert await asyncio.wait_for(reader.readexactly(len(head)), WAIT) == head
        for i in range(trickle):  # backend -> client
            b_writer.write(b"%c" % (97 + i))
            assert await asyncio.wait_for(reader.readexactly(1), WAIT) == b"%c" % (97 + i)
            await asyncio.sleep(0.15)
        assert rig.server.stats.get("limit_idle-timeout") == 0
        # both silent now
        await asyncio.wait_for(until_end(reader), WAIT)
        await asyncio.wait_for(until_end(b_reader), WAIT)
        await until_proxy_idle(rig)
        assert rig.server.stats.get("limit_idle-timeout") == 1

    run_rig(world, scenario, mode=mode, serve_kw={"idle_timeout": IDLE})


# -- 6: half-close (close_notify after the client's data) ---------------------------------------


@dataclass
class HalfClosed:
    received: bytes  # application data the client read after its close_notify
    ending: str  # "close_notify", "eof" (TCP FIN without close_notify) or "reset"


async def send_then_close_notify(rig: Rig, data: bytes, delay: float) -> HalfClosed:
    """A TLS client (an SSLObject over a plain socket, which asyncio's TLS transport cannot
    do): handshake, ``data``, ``delay`` seconds, its close_notify, then it goes on reading
    until the server ends the connection."""
    ctx = ctx_for(rig.world, rig.world.device, DEVICE)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.server.port)
    rig.opened.append(writer)

    def flush() -> None:
        if outgoing.pending:
            writer.write(outgoing.read())

    async def pump() -> None:
        chunk = await asyncio.wait_for(reader.read(65536), WAIT)  # (a reset raises)
        if chunk:
            incoming.write(chunk)
        else:
            incoming.write_eof()

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            flush()
            await pump()
    tls.write(data)
    flush()
    await asyncio.sleep(delay)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.unwrap()  # sends close_notify; the peer's is still to come
    flush()
    received = b""
    while True:
        try:
            chunk = tls.read(65536)
        except ssl.SSLWantReadError:
            try:
                await pump()
            except ConnectionResetError:
                return HalfClosed(received, "reset")
            continue
        except ssl.SSLZeroReturnError:
            return HalfClosed(received, "close_notify")
        except ssl.SSLEOFError:
            return HalfClosed(received, "eof")
        if not chunk:
            return HalfClosed(received, "close_notify")
        received += chunk


@pytest.mark.parametrize("delay", [0.0, 0.3], ids=["during-connect", "during-relay"])
def test_tcp_close_notify_after_data_delivers_it_all(
    world: World, delay: float, caplog: pytest.LogCaptureFixture
) -> None:
    """A client sends 100 kB then its close_notify, at once (it arrives while the proxy is
    still connecting to the backend) or later (the relay is running): the backend gets every
    byte, then its end of stream. What dance does next: asyncio's TLS transport answers a
    close_notify with its own and closes the connection, so the backend's answer, written
    after it saw the end, does not reach the client (TLS 1.3 allows a half-closed connection;
    this transport cannot keep one). The client sees a clean close_notify, not a reset, and
    nothing is logged above debug level."""
    data = pattern(0, 100_000)

    async def scenario(rig: Rig) -> None:
        client = asyncio.ensure_future(send_then_close_notify(rig, data, delay))
        b_reader, b_writer = await rig.backend()
        got = b""
        while chunk := await asyncio.wait_for(b_reader.read(65536), WAIT):
            got += chunk
        assert got == data
        b_writer.write(b"the answer\n")
        with contextlib.suppress(ConnectionError):
            await b_writer.drain()
        b_writer.close()
        ended = await asyncio.wait_for(client, WAIT)
        assert ended == HalfClosed(b"", "close_notify")
        await until_proxy_idle(rig)
        assert rig.proxy.stats.closed_by_client == 1
        assert rig.proxy.stats.client_gone_connecting == 0

    caplog.set_level("INFO")
    run_rig(world, scenario)
    assert [r.getMessage() for r in caplog.records if r.levelno >= 20] == []


def test_http_request_then_close_notify_reaches_the_backend(world: World) -> None:
    """http mode: a request, then close_notify while the relay runs: the request reaches the
    backend, which is then closed without being waited for (no client for its answer). A
    request whose close_notify arrives before the backend connection is made is dropped, as
    a client that leaves (there would be no one to answer)."""
    request = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"

    async def scenario(rig: Rig) -> None:
        client = asyncio.ensure_future(send_then_close_notify(rig, request, 0.3))
        b_reader, _b_writer = await rig.backend()
        head = await asyncio.wait_for(b_reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"POST /x HTTP/1.1\r\n")
        assert b"\r\nX-DANCE-Client-ID: %s\r\n" % DEVICE.encode() in head
        assert await asyncio.wait_for(b_reader.readexactly(5), WAIT) == b"hello"
        assert await asyncio.wait_for(client, WAIT) == HalfClosed(b"", "close_notify")
        await until_proxy_idle(rig)  # the backend, silent and open, is not waited for
        assert await asyncio.wait_for(until_end(b_reader), WAIT) == 0

    run_rig(world, scenario, mode="http", close_timeout=LONG, serve_kw={"close_timeout": LONG})


# -- 7: server shutdown while relays are busy ---------------------------------------------------


@pytest.mark.parametrize("mode", ["tcp", "http"])
def test_shutdown_while_relays_are_busy_releases_everything(world: World, mode: str) -> None:
    """Three relays moving bytes both ways when the server shuts down (0.2 s of drain): all
    three are cut, every client and backend connection ends (within seconds, the close
    timeouts at 60 s), and no connection, task or descriptor is left."""

    async def scenario(rig: Rig) -> None:
        busy = [await busy_both_ways(rig) for _ in range(3)]
        assert rig.server.connections == 3
        ends = [
            asyncio.ensure_future(until_end(reader))
            for (reader, _), (b_reader, _), _ in busy
            for reader in (reader, b_reader)
        ]
        cut = await asyncio.wait_for(rig.server.shutdown(0.2), WAIT)
        assert cut == 3
        await asyncio.wait_for(asyncio.gather(*ends), WAIT)
        assert rig.server.connections == 0
        for _, _, moving in busy:
            await finish(moving)

    run_rig(world, scenario, mode=mode, close_timeout=LONG, serve_kw={"close_timeout": LONG})
