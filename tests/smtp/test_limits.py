"""``dance smtp-proxy`` limits and abrupt clients (issue 13 for this server), against the in-test
sink: slowloris lines are cut at their deadline, connection caps refuse the excess while a
legitimate client still relays, a client that vanishes at any moment (mid-DATA, while the
backend is silent, during the DNS wait) releases its backend connection and task at once, and
nothing a client pipelines before the proxy's reply is carried over."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from dance.auth import Authenticator
from dance.smtp import SmtpProxy, SmtpProxyConfig, SmtpProxyError, start_smtp_proxy
from tests.integration.servers import free_port
from tests.smtp.common import RELAY_RCPT, Sink, SmtpClient, start_sink
from tests.smtp.world import ALLOW, MTA1, World, make_world

T = TypeVar("T")
SYNC = 554  # SMTP protocol synchronization: the client did not wait for a reply


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("smtp-limits"))


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Abrupt clients are routine: never an error record, never a traceback."""
    caplog.set_level(logging.DEBUG)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]
    assert "Traceback" not in caplog.text


class SlowAuth(Authenticator):
    """Every decision needs a (never ending) DNS lookup after the handshake."""

    started: asyncio.Event

    def authenticate_cached(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def authenticate(self, *args: Any, **kwargs: Any) -> Any:
        self.started.set()
        await asyncio.sleep(3600)


def run(
    world: World,
    scenario: Callable[[SmtpProxy, Sink], Awaitable[T]],
    *,
    auth_class: type[Authenticator] = Authenticator,
    backend: tuple[str, int] | None = None,
    **config: Any,
) -> T:
    async def main() -> T:
        sink = await start_sink()
        async with world.resolver() as res:
            auth = auth_class(res, allow=ALLOW)
            if isinstance(auth, SlowAuth):
                auth.started = asyncio.Event()
            proxy = await start_smtp_proxy(
                "127.0.0.1",
                0,
                config=SmtpProxyConfig(backend or ("127.0.0.1", sink.port), **config),
                cert=world.server.cert,
                key=world.server.key,
                authenticator=auth,
            )
            async with proxy:
                try:
                    return await scenario(proxy, sink)
                finally:
                    sink.server.close()
            assert not proxy.slots.tasks  # every session task ended with the proxy

    return asyncio.run(main())


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``check()`` (generous: the machine is loaded; not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def authenticated(world: World, proxy: SmtpProxy) -> SmtpClient:
    client, _ = await SmtpClient.open(proxy.port)
    await client.cmd("EHLO mta1.example.test")
    await client.starttls(world.context(world.mta1, MTA1))
    assert (await client.cmd("EHLO mta1.example.test"))[0] == 250
    return client


async def relays(world: World, proxy: SmtpProxy) -> bool:
    client = await authenticated(world, proxy)
    try:
        return await client.send_mail("ok@mta1.example.test", RELAY_RCPT) == (250, 250, 250)
    finally:
        client.close()


async def closed(client: SmtpClient) -> bool:
    try:
        return await asyncio.wait_for(client.reader.read(), 10) == b""
    except ConnectionError:
        return True


def test_slowloris_command_line_cut_at_timeout(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client, _ = await SmtpClient.open(proxy.port)
        ended = asyncio.ensure_future(client.read_reply())
        for byte in b"EHLO slow.example":  # a byte at a time, never the CRLF
            if ended.done():
                break
            client.writer.write(bytes([byte]))
            await asyncio.sleep(0.1)
        code, text = await ended
        assert code == 421 and "timeout" in text
        assert await closed(client)
        assert proxy.stats.refused["timeout-command"] == 1
        assert sink.connections == 0
        assert await relays(world, proxy)  # others are served meanwhile and after

    run(world, scenario, command_timeout=0.8)


def test_client_that_never_reads_is_cut_and_counted(world: World) -> None:
    """A client sends one EHLO at a time (never before the proxy has answered the last one, so
    never pipelining) and reads no reply. Once the replies it has not taken fill the buffers,
    the proxy's write waits at most the command deadline; then the session ends, counted
    (``timeout-write``: before, uncounted), and the connection is dropped at once (before, a
    plain close waited for the client to take the unsent replies: the connection and its
    descriptor stayed as long as the client kept it). Others are served meanwhile."""

    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        # each line its own segment: with Nagle, once the replies fill the client's window the
        # proxy's ACKs are delayed and the client's next lines leave together (pipelining)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", proxy.port))
        sent = 0
        deadline = loop.time() + 60
        with sock:
            # One line per turn of the loop the proxy runs on: it has read and answered each
            # line before the next is written (asyncio runs the proxy's reader first).
            while "timeout-write" not in proxy.stats.refused and loop.time() < deadline:
                try:
                    sock.send(b"EHLO never-reads.example\r\n")
                    sent += 1
                except BlockingIOError:
                    pass
                except OSError:
                    break
                await asyncio.sleep(0.002)
            assert proxy.stats.refused.get("timeout-write") == 1, (sent, proxy.stats.refused)
            assert "pipelining" not in proxy.stats.refused
            # it took many replies to fill the buffers, but kilobytes of them, not megabytes
            # (the proxy fixes the client socket's send buffer; autotuned, it took up to 49 s)
            assert 100 < sent < 5000, sent
            await eventually(lambda: proxy.stats.active == 0)
            # the client still holds its socket: the proxy's side is gone all the same
            with contextlib.suppress(ConnectionResetError):  # a reset, or the end
                while await asyncio.wait_for(loop.sock_recv(sock, 65536), 10):
                    pass
        assert sink.connections == 0
        assert await relays(world, proxy)

    run(world, scenario, command_timeout=1.0)


def test_slowloris_message_line_cut_and_backend_released(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client = await authenticated(world, proxy)
        await client.cmd("MAIL FROM:<a@x.test>")
        await client.cmd(f"RCPT TO:<{RELAY_RCPT}>")
        assert (await client.cmd("DATA"))[0] == 354
        client.writer.write(b"Subject: slow\r\n\r\npartial line without its end")
        code, _ = await client.read_reply()
        assert code == 421
        await eventually(lambda: sink.closed == 1)
        assert sink.messages == [] and proxy.stats.backend_open == 0
        assert proxy.stats.refused["timeout-data"] == 1

    run(world, scenario, data_timeout=0.8)


def test_session_deadline(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client, _ = await SmtpClient.open(proxy.port)
        while True:  # busy but never finishing: each command in time, the session too long
            try:
                code, text = await client.cmd("NOOP")
            except ConnectionError:
                break
            if code != 250:
                assert code == 421 and "session" in text
                break
            await asyncio.sleep(0.1)
        assert proxy.stats.refused["timeout-session"] == 1

    run(world, scenario, session_timeout=1.0)


def test_tls_handshake_deadline(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client, _ = await SmtpClient.open(proxy.port)
        await client.cmd("EHLO x.example")
        assert (await client.cmd("STARTTLS"))[0] == 220
        client.writer.write(b"\x16\x03\x01\x00")  # a ClientHello that never comes
        assert await closed(client)
        assert proxy.stats.refused["timeout-tls"] == 1 and proxy.stats.tls_refused == 1

    run(world, scenario, tls_timeout=0.5)


def test_backend_down_or_stuck(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        # down: nothing listens on the backend port
        client = await authenticated(world, proxy)
        code, text = await client.cmd("MAIL FROM:<a@x.test>")
        assert code == 451 and "backend unavailable" in text
        assert await closed(client)
        assert proxy.stats.refused["backend-unavailable"] == 1

    run(world, scenario, backend=("127.0.0.1", free_port()))

    async def stuck(proxy: SmtpProxy, sink: Sink) -> None:
        # stuck: the backend takes MAIL and never answers RCPT
        sink.hang_on = "RCPT"
        client = await authenticated(world, proxy)
        assert (await client.cmd("MAIL FROM:<a@x.test>"))[0] == 250
        code, text = await client.cmd(f"RCPT TO:<{RELAY_RCPT}>")
        assert code == 421 and "backend timeout" in text
        assert await closed(client)
        await eventually(lambda: proxy.stats.backend_open == 0 and sink.closed == 1)
        assert proxy.stats.refused["timeout-backend"] == 1

    run(world, stuck, backend_timeout=0.5)


def test_client_vanishing_mid_data_frees_backend(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        clients = []
        for _ in range(3):
            client = await authenticated(world, proxy)
            await client.cmd("MAIL FROM:<a@x.test>")
            await client.cmd(f"RCPT TO:<{RELAY_RCPT}>")
            assert (await client.cmd("DATA"))[0] == 354
            client.writer.write(b"Subject: half\r\n\r\nhalf a mess")
            await client.writer.drain()
            clients.append(client)
        await eventually(lambda: proxy.stats.backend_open == 3)
        for client in clients:
            client.writer.transport.abort()  # gone, no QUIT, no FIN handshake
        await eventually(lambda: proxy.stats.backend_open == 0 and sink.closed == 3)
        await eventually(lambda: proxy.stats.active == 0)
        assert sink.messages == []
        assert proxy.stats.client_closed == 3

    run(world, scenario)


def test_client_vanishing_while_backend_is_silent(world: World) -> None:
    """The backend accepts and never greets; the client leaves: the backend socket is closed
    at once, long before the backend timeout."""
    accepted: list[asyncio.StreamWriter] = []
    lost = asyncio.Event

    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        gone = lost()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)
            await reader.read()  # until the proxy closes its side
            gone.set()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        proxy.config.__dict__["backend"] = ("127.0.0.1", server.sockets[0].getsockname()[1])
        client = await authenticated(world, proxy)
        client.writer.write(b"MAIL FROM:<a@x.test>\r\n")
        await client.writer.drain()
        await eventually(lambda: proxy.stats.backend_open == 1)
        client.writer.transport.abort()
        await asyncio.wait_for(gone.wait(), 10)
        await eventually(lambda: proxy.stats.backend_open == 0 and proxy.stats.active == 0)
        server.close()

    run(world, scenario, backend_timeout=600)
    assert len(accepted) == 1


def test_client_vanishing_during_dns_wait(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        auth = proxy.core.authenticator
        assert isinstance(auth, SlowAuth)
        client, _ = await SmtpClient.open(proxy.port)
        await client.cmd("EHLO mta1.example.test")
        await client.starttls(world.context(world.mta1, MTA1))
        client.writer.write(b"EHLO mta1.example.test\r\n")  # allowed: it does not know yet
        await asyncio.wait_for(auth.started.wait(), 10)
        assert proxy.core.pending == 1
        client.writer.transport.abort()
        await eventually(lambda: proxy.core.pending == 0 and proxy.stats.active == 0)
        assert sink.connections == 0

    run(world, scenario, auth_class=SlowAuth)


def test_per_address_cap_spares_other_clients(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        hogs = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", proxy.port, local_addr=("127.0.0.2", 0)
            )
            assert (await reader.readline()).startswith(b"220 ")
            hogs.append(writer)
        for _ in range(4):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", proxy.port, local_addr=("127.0.0.2", 0)
            )
            assert (await reader.readline()).startswith(b"421 4.7.0")
            assert await reader.read() == b""
            writer.close()
        assert await relays(world, proxy)  # 127.0.0.1 is another address
        assert proxy.stats.refused["per-address"] == 4
        for writer in hogs:
            writer.close()

    run(world, scenario, max_per_address=3)


def test_connection_cap(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        idle = [(await SmtpClient.open(proxy.port))[0] for _ in range(4)]
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert (await reader.readline()).startswith(b"421 4.7.0")
        writer.close()
        assert proxy.stats.refused["max-connections"] == 1
        idle.pop().close()
        await eventually(lambda: proxy.stats.active == 3)
        assert await relays(world, proxy)
        for client in idle:
            client.close()

    run(world, scenario, max_connections=4)


@pytest.mark.parametrize(
    ("before", "burst"),
    [
        ([], b"EHLO x.example\r\nMAIL FROM:<a@x.test>\r\n"),
        (["MAIL FROM:<a@x.test>"], b"RCPT TO:<b@relay.test>\r\nDATA\r\n"),
        (["MAIL FROM:<a@x.test>", f"RCPT TO:<{RELAY_RCPT}>"], b"DATA\r\nSubject: x\r\n\r\n.\r\n"),
        (
            ["MAIL FROM:<a@x.test>", f"RCPT TO:<{RELAY_RCPT}>", "DATA"],
            b"Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<smuggled@x.test>\r\n",
        ),
        (
            ["MAIL FROM:<a@x.test>", f"RCPT TO:<{RELAY_RCPT}>", "DATA"],
            b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n",
        ),
    ],
)
def test_pipelining_refused_nothing_carried_over(
    world: World, before: list[str], burst: bytes
) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client = await authenticated(world, proxy)
        for line in before:
            assert (await client.cmd(line))[0] in (250, 354)
        client.writer.write(burst)
        await client.writer.drain()
        code, _ = await client.read_reply()
        assert code == SYNC
        assert await closed(client)
        await eventually(lambda: proxy.stats.backend_open == 0 and sink.closed == sink.connections)
        assert sink.messages == []  # a message whose end was followed by more is dropped
        assert not any("smuggled" in line for line in sink.lines)
        assert sink.lines.count("DATA") == before.count("DATA")  # only what was answered
        assert [line for line in sink.lines if line.startswith(("MAIL", "RCPT"))] == before[:2]
        assert proxy.stats.refused["pipelining"] == 1

    run(world, scenario)


def test_mail_and_rcpt_parameters(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client = await authenticated(world, proxy)
        assert (await client.cmd("MAIL FROM:<a@x.test> AUTH=<postmaster@x.test>"))[0] == 555
        assert (await client.cmd("MAIL FROM:<a@x.test> auth=postmaster"))[0] == 555
        assert (await client.cmd('MAIL FROM:<"a>b AUTH=x"@x.test>'))[0] == 555
        assert (await client.cmd("MAIL FROM:<a@x.test> XFOO=1"))[0] == 555
        assert (await client.cmd("MAIL FROM:a@x.test"))[0] == 501
        assert (await client.cmd("MAIL FROM:<a@x.test> SIZE=99999999999"))[0] == 552
        assert (await client.cmd("MAIL FROM:<a@x.test> SIZE=10 BODY=8BITMIME"))[0] == 250
        assert (await client.cmd(f"RCPT TO:<{RELAY_RCPT}> NOTIFY=NEVER"))[0] == 555
        assert (await client.cmd(f"RCPT TO:<{RELAY_RCPT}>"))[0] == 250
        assert (await client.cmd("VRFY postmaster"))[0] == 502
        client.close()
        await eventually(lambda: sink.closed == sink.connections == 1)
        mails = [line for line in sink.lines if line.startswith(("MAIL", "RCPT"))]
        assert mails == ["MAIL FROM:<a@x.test> SIZE=10 BODY=8BITMIME", f"RCPT TO:<{RELAY_RCPT}>"]
        assert proxy.stats.refused["mail-parameter"] == 6

    run(world, scenario)


def test_overlong_command_refused(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client, _ = await SmtpClient.open(proxy.port)
        client.writer.write(b"NOOP " + b"x" * 600)
        code, text = await client.read_reply()
        assert code == 500 and "too long" in text
        assert await closed(client)
        assert proxy.stats.refused["command-too-long"] == 1

    run(world, scenario)


def test_abrupt_clients_at_every_step_leave_nothing(world: World) -> None:
    """Connect-and-close, close after the greeting, in the TLS handshake, right after it: no
    task, no backend, no pending lookup, no error logged (the autouse fixture)."""

    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        for step in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            if step >= 1:
                await asyncio.wait_for(reader.readline(), 10)
            if step == 2:
                writer.write(b"EHLO x.exa")  # in the middle of a command line
            if step >= 3:
                client = SmtpClient(reader, writer)
                await client.cmd("EHLO x.example")
                writer.write(b"STARTTLS\r\n")
                await writer.drain()
                assert (await client.read_reply())[0] == 220
            if step == 3:
                writer.write(b"\x16\x03\x01\x00")  # in the middle of a ClientHello
            if step == 4:
                context = world.context(world.mta1, MTA1)
                await writer.start_tls(context, server_hostname="localhost")
            await writer.drain()
            writer.transport.abort()
        await eventually(lambda: proxy.stats.active == 0 and proxy.core.pending == 0)
        assert sink.connections == 0 and proxy.stats.backend_open == 0
        assert await relays(world, proxy)

    run(world, scenario)


def test_config_limits_validated() -> None:
    backend = ("127.0.0.1", 25)
    for bad in (
        {"command_timeout": 0},
        {"session_timeout": -1},
        {"max_connections": 0},
        {"max_per_address": 0},
        {"max_command_length": 100},
        {"max_line_length": 999},
    ):
        with pytest.raises(SmtpProxyError):
            SmtpProxyConfig(backend, **bad)  # type: ignore[arg-type]


def test_watch_disposes_of_a_result_that_comes_as_the_client_leaves() -> None:
    """A backend connection made in the same moment the client closes is handed to
    ``discard`` (closed), not dropped for the garbage collector; one that is used is not."""
    from types import SimpleNamespace

    from dance.smtp.proxy import SmtpStats, _ClientGone, _Session

    async def main() -> None:
        proxy = SimpleNamespace(stats=SmtpStats(), config=SmtpProxyConfig(("127.0.0.1", 1)))
        discarded: list[object] = []
        result = object()

        async def op() -> object:
            return result

        gone = asyncio.StreamReader()
        gone.feed_eof()  # the client has closed
        session = _Session(proxy, gone, None, "peer")  # type: ignore[arg-type]
        with pytest.raises(_ClientGone):
            await session.watch(op(), 5, allow_input=True, discard=discarded.append)
        assert discarded == [result]

        present = asyncio.StreamReader()  # the client stays: the result is returned, kept
        session = _Session(proxy, present, None, "peer")  # type: ignore[arg-type]
        assert await session.watch(op(), 5, allow_input=True, discard=discarded.append) is result
        assert discarded == [result]

    asyncio.run(main())
