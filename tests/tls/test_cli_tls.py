"""`dance connect` and `dance proxy` through dance.cli.main (and a `dance proxy` process)."""

from __future__ import annotations

import asyncio
import json
import os
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
    """A DANCE echo server in a background event loop (dance.cli.main runs its own loop)."""

    def __init__(self, world: World) -> None:
        self.world = world
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
