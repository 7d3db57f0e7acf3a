"""The two services as two processes: ``dance lorawan-join-server`` and
``dance lorawan-join-request``, talking over loopback, each authenticating the other only through
the signed test zones (no CA file is given to either). The join server reads its devices from
``--config`` (AppKeys stay out of the process's argv) and serves ``--metrics``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import dance
from dance.testkit.servers import free_port
from tests.lorawan.common import (
    APP_KEY,
    DEV_EUI,
    JOIN_EUI,
    JS,
    NETID1,
    NS1,
    Files,
    World,
    join_req,
    make_world,
)
from tests.processes import metrics_page

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("lorawan-process"))


def _env() -> dict[str, str]:
    src = str(Path(dance.__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def _dns(world: World) -> list[str]:
    # --dns: the name these commands had as ``python -m dance.lorawan`` (same as --server)
    return ["--dns", f"{world.dns[0]}:{world.dns[1]}", "--trust-anchor", world.anchor_file]


@dataclass
class JoinServerProcess:
    port: int
    metrics: int
    proc: subprocess.Popen[str]


@contextlib.contextmanager
def _join_server(
    world: World, files: Files, *, json_output: bool = False
) -> Iterator[JoinServerProcess]:
    label = Path(files.cert).stem
    config = world.dir / f"{label}.toml"
    keys = world.dir / f"{label}.keys"
    keys.write_text(f"# DevEUI=AppKey\n{DEV_EUI}={APP_KEY.hex()}\n")
    keys.chmod(0o600)
    config.write_text(
        f'join-eui = "{JOIN_EUI}"\ndevice-keys = "{keys}"\nnetwork-server = ["{NS1}={NETID1}"]\n'
    )
    config.chmod(0o600)
    metrics = free_port()
    cmd = [
        sys.executable, "-m", "dance.cli", "lorawan-join-server", "--listen", "127.0.0.1:0",
        "--cert", files.cert, "--key", files.key, "--config", str(config),
        "--metrics", f"127.0.0.1:{metrics}", *_dns(world), *(["--json"] if json_output else []),
    ]  # fmt: skip
    log_path = world.dir / f"{label}.log"
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if json_output:
            where = json.loads(line)["listening"]
            assert where.startswith("127.0.0.1:"), line
            port = int(where.rsplit(":", 1)[1])
        else:
            assert line.startswith("listening "), (line, log_path.read_text())
            port = int(line.split()[2])
        yield JoinServerProcess(port, metrics, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0
            assert proc.stdout is not None
            last = proc.stdout.read()
            if json_output:
                assert isinstance(json.loads(last)["stopped"], dict), last
            else:
                assert last.startswith("stopped ["), last
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    assert "Traceback" not in log_path.read_text()


@pytest.fixture(scope="module")
def join_server(world: World) -> Iterator[JoinServerProcess]:
    with _join_server(world, world.js) as running:
        yield running


def _network_server(
    world: World, port: int, files: Files, tmp: Path, nonce: int
) -> tuple[int, str]:
    request = tmp / "joinreq.json"
    request.write_text(json.dumps(join_req(dev_nonce=nonce)))
    cmd = [
        sys.executable, "-m", "dance.cli", "lorawan-join-request",
        "--connect", f"127.0.0.1:{port}",
        "--service-port", "443", "--server-name", JS, "--client-name", NS1,
        "--cert", files.cert, "--key", files.key, "--request", str(request), *_dns(world),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=60)
    return done.returncode, done.stdout.strip()


def test_two_processes_exchange_join_request_and_answer(
    world: World, join_server: JoinServerProcess, tmp_path: Path
) -> None:
    code, out = _network_server(world, join_server.port, world.ns1, tmp_path, 21)
    assert code == 0, out
    answer = json.loads(out)
    assert answer["MessageType"] == "JoinAns"
    assert answer["Result"] == {"ResultCode": "Success"}
    assert (answer["SenderID"], answer["ReceiverID"]) == (JOIN_EUI, NETID1)
    page = metrics_page(join_server.metrics)
    assert 'dance_lorawan{event="joinans_Success"} 1.0' in page, page
    assert 'dance_decisions_total{outcome="accepted",reason="-"} 1.0' in page, page
    access = (world.dir / "js.log").read_text()  # the access log, on by default
    assert "lorawan-join-server 127.0.0.1:" in access, access
    assert f"{NS1} accepted reason=- dns=secure" in access, access


def test_process_refuses_network_server_with_another_key(
    world: World, join_server: JoinServerProcess, tmp_path: Path
) -> None:
    code, out = _network_server(world, join_server.port, world.ns1_impostor, tmp_path, 22)
    assert code == 1
    assert out.startswith("refused: refused-by-server")
    assert 'dance_decisions_total{outcome="rejected",reason="no-match"} 1.0' in metrics_page(
        join_server.metrics
    )
    # the join server still serves the genuine network server afterwards
    code, out = _network_server(world, join_server.port, world.ns1, tmp_path, 23)
    assert code == 0 and json.loads(out)["Result"]["ResultCode"] == "Success"


def test_network_server_process_refuses_a_join_server_with_another_key(
    world: World, tmp_path: Path
) -> None:
    with _join_server(world, world.js_impostor, json_output=True) as running:
        code, out = _network_server(world, running.port, world.ns1, tmp_path, 24)
    assert code == 1
    assert out.startswith("refused: server-key-mismatch: _443._tcp.js.example.test")


def test_sighup_reloads_the_certificate_and_key_or_keeps_the_old_ones(
    world: World, tmp_path: Path
) -> None:
    """The join server starts with the impostor's key (the NS refuses it), the genuine key is
    put in place and SIGHUP makes it serve with it; an unusable certificate is refused by a
    reload and the key in use stays."""
    live = Files(str(tmp_path / "live.pem"), str(tmp_path / "live.key"))
    shutil.copy(world.js_impostor.cert, live.cert)
    shutil.copy(world.js_impostor.key, live.key)
    with _join_server(world, live) as running:
        assert running.proc.stdout is not None
        code, out = _network_server(world, running.port, world.ns1, tmp_path, 31)
        assert code == 1 and out.startswith("refused: server-key-mismatch"), out
        shutil.copy(world.js.cert, live.cert)
        shutil.copy(world.js.key, live.key)
        running.proc.send_signal(signal.SIGHUP)
        line = running.proc.stdout.readline()
        assert line == "dance lorawan-join-server: configuration reloaded\n", line
        code, out = _network_server(world, running.port, world.ns1, tmp_path, 32)
        assert code == 0 and json.loads(out)["Result"]["ResultCode"] == "Success", out
        Path(live.cert).write_text("not a certificate\n")
        running.proc.send_signal(signal.SIGHUP)
        line = running.proc.stdout.readline()
        assert line.startswith("dance lorawan-join-server: reload refused"), line
        code, out = _network_server(world, running.port, world.ns1, tmp_path, 33)
        assert code == 0 and json.loads(out)["Result"]["ResultCode"] == "Success", out
