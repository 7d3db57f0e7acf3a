"""`dance connect` and `dance proxy` through dance.cli.main (and a `dance proxy` process)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from dance.auth import Authenticator
from dance.cli import main
from dance.identity import Identity
from tests.tls.common import ALLOW, DEVICE, OTHER, OUTSIDE, World, make_world, resolver


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("tls-cli"))


class LoopThread:
    """A DANCE echo server in a background event loop (dance.cli.main runs its own loop).
    ``record=True``: the handler first reads what the client sends (up to an empty line, or one
    line, within 2 s), keeps it in ``.received`` and replies with its length."""

    def __init__(self, world: World, *, record: bool = False, silent: bool = False) -> None:
        self.world = world
        self.record = record
        self.silent = silent
        self.received: list[bytes] = []
        self.ready = threading.Event()
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        from dance.tls import serve

        self.stop_event = asyncio.Event()

        async def handler(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, identity: Identity
        ) -> None:
            if self.silent:
                return  # authenticated, then closed without a byte
            if self.record:
                data = b""
                with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError):
                    while not data.endswith(b"\r\n\r\n") and not data.startswith(b"line"):
                        data += await asyncio.wait_for(reader.readuntil(b"\n"), 2)
                self.received.append(data)
                writer.write(f"got {len(data)}\n".encode())
            else:
                writer.write(f"hello {identity.identity}\n".encode())
            await writer.drain()

        async with resolver(self.world) as res:
            server = await serve(
                handler,
                "127.0.0.1",
                0,
                cert=self.world.server.cert,
                key=self.world.server.key,
                authenticator=Authenticator(res, allow=ALLOW),
            )
            async with server:
                self.port = server.port
                self.ready.set()
                await self.stop_event.wait()

    def __enter__(self) -> LoopThread:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)


@pytest.fixture(scope="module")
def echo(world: World) -> Iterator[LoopThread]:
    with LoopThread(world) as srv:
        yield srv


def connect_args(world: World, port: int, files: Any, name: str, *extra: str) -> list[str]:
    return [
        "connect",
        f"127.0.0.1:{port}",
        "--name",
        name,
        "--cert",
        files.cert,
        "--key",
        files.key,
        "--cafile",
        world.ca,
        "--server-name",
        "localhost",
        "--server-auth",
        "pkix",  # the test CA; the default (dane-or-pkix) is tested in test_server_dane.py
        *extra,
    ]


def test_connect_accepted_json(
    world: World, echo: LoopThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(connect_args(world, echo.port, world.device, DEVICE, "--json"))
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["accepted"] is True
    assert out["reply"] == f"hello {DEVICE}\n"
    assert out["negotiated"]["tls_version"] == "TLSv1.3"
    assert out["negotiated"]["clientid_requested"] is True
    assert out["negotiated"]["client_name_sent"] == DEVICE
    assert out["clientid_codepoint"] == "0xffdc"


def test_connect_refused_human(
    world: World, echo: LoopThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(connect_args(world, echo.port, world.impostor, DEVICE))
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("refused")
    code = main(connect_args(world, echo.port, world.device, OUTSIDE))
    assert code == 1


def test_connect_usage_errors(
    world: World, echo: LoopThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(connect_args(world, echo.port, world.device, "bad..name")) == 2
    assert main(connect_args(world, echo.port, world.device, DEVICE, "--clientid-codepoint",
                             "0xff01")) == 2  # fmt: skip
    assert main(["connect", "nohostport", "--name", DEVICE, "--cert", "x", "--key", "y"]) == 2
    bad = world.dir / "missing.pem"
    assert main(["connect", "127.0.0.1:1", "--name", DEVICE, "--cert", str(bad), "--key",
                 str(bad)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error:" in err


def test_proxy_usage_errors(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["proxy", "--cert", world.server.cert, "--key", world.server.key, "--allow", DEVICE]
    assert main([*base, "--listen", "127.0.0.1", "--backend", "127.0.0.1:1"]) == 2
    assert main([*base, "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:1",
                 "--tlv-type", "0xD0"]) == 2  # fmt: skip
    assert main([*base, "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:1",
                 "--clientid-codepoint", "0xff01"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_proxy_process_tcp_mode(world: World) -> None:
    """`dance proxy` as a process: authenticated clients reach the backend with PROXY v2."""

    async def scenario() -> None:
        from dance.tls import client_context, probe
        from tests.tls.test_proxy import parse_proxy_v2, tcp_backend

        backend = await tcp_backend()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; from dance.cli import main; sys.exit(main())",
            "proxy", "--listen", "127.0.0.1:0", "--backend", f"127.0.0.1:{backend.port}",
            "--cert", world.server.cert, "--key", world.server.key,
            "--allow", "._device.example.test", "--mode", "tcp",
            "--server", f"{world.dns[0]}:{world.dns[1]}", "--trust-anchor", world.anchor_file,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert "listening on 127.0.0.1:" in line, line
            port = int(line.split("listening on 127.0.0.1:")[1].split(",")[0])

            def ctx(files: Any, name: str) -> Any:
                return client_context(name=name, cert=files.cert, key=files.key, cafile=world.ca)

            for files, name in ((world.impostor, DEVICE), (world.device, OTHER)):
                r = await probe("127.0.0.1", port, context=ctx(files, name),
                                server_hostname="localhost", send=b"x\n")  # fmt: skip
                assert not r.accepted
            assert backend.connections == 0
            r = await probe("127.0.0.1", port, context=ctx(world.device, DEVICE),
                            server_hostname="localhost", send=b"x\n")  # fmt: skip
            assert r.accepted and r.reply == b"backend got it\n"
            _, tlvs, rest = parse_proxy_v2(backend.received[0])
            assert tlvs[0xE0] == DEVICE.encode() and rest == b"x\n"
        finally:
            proc.terminate()
            await proc.wait()
            backend.server.close()

    asyncio.run(scenario())


def test_connect_send_ends_with_crlf_and_http_sends_a_request(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    with LoopThread(world, record=True) as srv:
        assert main(connect_args(world, srv.port, world.device, DEVICE, "--send", "line one")) == 0
        assert main(connect_args(world, srv.port, world.device, DEVICE, "--http", "/a?b=c")) == 0
    assert srv.received == [
        b"line one\r\n",
        b"GET /a?b=c HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    ]
    out = capsys.readouterr().out
    assert out.count("accepted: server sent data") == 2
    assert "reply: got 10" in out


@pytest.mark.parametrize(
    "extra",
    [
        ("--http", "no-slash"),
        ("--http", "/a b"),
        ("--http", "/\x01"),
        ("--send", "two\nlines"),
        ("--send", "x", "--http", "/"),
        ("--wait", "0"),
        ("--timeout", "-1"),
    ],
)
def test_connect_unusable_options(
    world: World, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...]
) -> None:
    try:
        code = main(connect_args(world, 1, world.device, DEVICE, *extra))
    except SystemExit as exc:  # argparse: --send and --http together
        code = int(str(exc.code))
    assert code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_connect_could_not_connect_exit_3(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(connect_args(world, port, world.device, DEVICE)) == 3
    out = capsys.readouterr().out
    assert out.startswith(f"could not connect: 127.0.0.1:{port}: connection refused"), out
    assert main(connect_args(world, port, world.device, DEVICE, "--json")) == 3
    result = json.loads(capsys.readouterr().out)
    assert result["outcome"] == "could-not-connect" and result["accepted"] is False
    with socket.socket() as listener:  # accepts TCP, never speaks TLS
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        silent = listener.getsockname()[1]
        code = main(connect_args(world, silent, world.device, DEVICE, "--timeout", "1"))
    assert code == 3
    assert capsys.readouterr().out.startswith(
        f"could not connect: 127.0.0.1:{silent}: no connection within 1 s"
    )


def test_connect_refused_and_accepted_outcomes(
    world: World, echo: LoopThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """'accepted' only when the server accepted: an alert is 'refused' (exit 1), a connection
    closed before any data is 'refused' too (a DANCE server refusing after its DNS lookup
    looks like that), never 'accepted'."""
    assert main(connect_args(world, echo.port, world.impostor, DEVICE, "--json")) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["outcome"] == "refused" and out["detail"].startswith("alert:")
    with LoopThread(world, silent=True) as srv:
        assert main(connect_args(world, srv.port, world.device, DEVICE)) == 1
    out2 = capsys.readouterr().out
    assert out2.startswith("refused: server closed the connection before sending data"), out2
