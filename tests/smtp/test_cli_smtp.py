"""``dance smtp-proxy`` on the command line: unusable input exits 2 with one line; as a process it
authenticates an MTA and announces it to the backend with XCLIENT LOGIN."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from dance.cli import main
from tests.smtp.common import RELAY_RCPT, SmtpClient, start_sink
from tests.smtp.world import MTA1, World, make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("smtp-cli"))


@pytest.mark.parametrize(
    "extra",
    [
        ["--listen", "127.0.0.1", "--backend", "127.0.0.1:25"],  # no port
        ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:0"],  # backend port 0
        ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:25", "--clientid-codepoint", "0xff01"],
        ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:25", "--clientid-codepoint", "zz"],
        ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:25", "--allow-unauthenticated"],
        ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:25", "--max-size", "0"],
        ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:25", "--hostname", "a b"],
        ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:25", "--max-pending", "0"],
        ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:25", "--allow", "bad..name"],
        ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:25", "--max-connections", "0"],
        ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:25", "--max-per-address", "0"],
        ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:25", "--command-timeout", "0"],
        ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:25", "--session-timeout", "nan"],
        ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:25", "--max-command-length", "100"],
        ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:25", "--max-line-length", "70000"],
    ],
)
def test_usage_errors_exit_2_one_line(
    world: World, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    base = ["smtp-proxy", "--cert", world.server.cert, "--key", world.server.key]
    base += ["--allow", MTA1, "--server", f"{world.dns[0]}:{world.dns[1]}"]
    base += ["--trust-anchor", world.anchor_file]
    assert main([*base, *extra]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("dance smtp-proxy: error: ") and err.count("\n") == 1, err


def test_unreadable_key_exit_2(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["smtp-proxy", "--cert", world.server.cert, "--key", str(world.dir / "missing.key")]
    argv += ["--allow", MTA1, "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:25"]
    argv += ["--server", f"{world.dns[0]}:{world.dns[1]}", "--trust-anchor", world.anchor_file]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dance smtp-proxy: error: cannot start") and err.count("\n") == 1


def test_process_relays_with_login(world: World) -> None:
    async def scenario() -> None:
        sink = await start_sink()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; from dance.cli import main; sys.exit(main())",
            "smtp-proxy", "--listen", "127.0.0.1:0", "--backend", f"127.0.0.1:{sink.port}",
            "--cert", world.server.cert, "--key", world.server.key, "--allow", MTA1,
            "--server", f"{world.dns[0]}:{world.dns[1]}", "--trust-anchor", world.anchor_file,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert "listening on 127.0.0.1:" in line, line
            port = int(line.split("listening on 127.0.0.1:")[1].split(",")[0])
            client, _ = await SmtpClient.open(port)
            await client.cmd("EHLO mta1.example.test")
            assert (await client.cmd("MAIL FROM:<a@x.test>"))[0] == 530
            await client.starttls(world.context(world.mta1, MTA1))
            await client.cmd("EHLO mta1.example.test")
            assert await client.send_mail("a@x.test", RELAY_RCPT) == (250, 250, 250)
            client.close()
            assert sink.xclients and sink.xclients[0]["LOGIN"] == MTA1
        finally:
            proc.terminate()
            await proc.wait()
            sink.server.close()

    asyncio.run(scenario())


def test_process_as_a_service_logs_reloads_and_drains(world: World) -> None:
    """Access log lines (JSON) with the client's address, SIGHUP reload, SIGTERM: exit 0."""
    import json
    import signal

    async def scenario() -> None:
        sink = await start_sink()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; from dance.cli import main; sys.exit(main())",
            "smtp-proxy", "--listen", "127.0.0.1:0", "--backend", f"127.0.0.1:{sink.port}",
            "--cert", world.server.cert, "--key", world.server.key, "--allow", MTA1,
            "--server", f"{world.dns[0]}:{world.dns[1]}", "--trust-anchor", world.anchor_file,
            "--log-format", "json", "--drain-timeout", "5",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            port = int(line.split("listening on 127.0.0.1:")[1].split(",")[0])
            client, _ = await SmtpClient.open(port)
            await client.cmd("EHLO mta1.example.test")
            await client.starttls(world.context(world.mta1, MTA1))
            await client.cmd("EHLO mta1.example.test")
            assert await client.send_mail("a@x.test", RELAY_RCPT) == (250, 250, 250)
            client.close()
            proc.send_signal(signal.SIGHUP)
            reloaded = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert "configuration reloaded" in reloaded, reloaded
            client, _ = await SmtpClient.open(port)  # still serving after the reload
            await client.cmd("EHLO mta1.example.test")
            await client.starttls(world.context(world.mta1, MTA1))
            await client.cmd("EHLO mta1.example.test")
            assert await client.send_mail("a@x.test", RELAY_RCPT) == (250, 250, 250)
            client.close()
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            err = (await proc.stderr.read()).decode()
            assert "Traceback" not in err
            docs = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
            assert len(docs) == 2 and all(d["outcome"] == "accepted" for d in docs), err
            assert all(d["client_name"] == MTA1 and d["service"] == "smtp-proxy" for d in docs)
            assert all(d["client"].startswith("127.0.0.1:") for d in docs), docs
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            sink.server.close()

    asyncio.run(scenario())
