"""The two services as two processes: ``python -m dance.lorawan join-server`` and
``python -m dance.lorawan join-request``, talking over loopback, each authenticating the other
only through the signed test zones (no CA file is given to either)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import dance
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

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("lorawan-process"))


def _env() -> dict[str, str]:
    src = str(Path(dance.__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def _dns(world: World) -> list[str]:
    return ["--dns", f"{world.dns[0]}:{world.dns[1]}", "--trust-anchor", world.anchor_file]


@contextlib.contextmanager
def _join_server(world: World, files: Files) -> Iterator[int]:
    cmd = [
        sys.executable, "-m", "dance.lorawan", "join-server", "--listen", "127.0.0.1:0",
        "--cert", files.cert, "--key", files.key, "--join-eui", JOIN_EUI,
        "--device", f"{DEV_EUI}={APP_KEY.hex()}", "--network-server", f"{NS1}={NETID1}",
        *_dns(world),
    ]  # fmt: skip
    log = open(world.dir / "js.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening "), (line, (world.dir / "js.log").read_text())
        yield int(line.split()[2])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()


@pytest.fixture(scope="module")
def join_server(world: World) -> Iterator[int]:
    with _join_server(world, world.js) as port:
        yield port


def _network_server(
    world: World, port: int, files: Files, tmp: Path, nonce: int
) -> tuple[int, str]:
    request = tmp / "joinreq.json"
    request.write_text(json.dumps(join_req(dev_nonce=nonce)))
    cmd = [
        sys.executable, "-m", "dance.lorawan", "join-request", "--connect", f"127.0.0.1:{port}",
        "--service-port", "443", "--server-name", JS, "--client-name", NS1,
        "--cert", files.cert, "--key", files.key, "--request", str(request), *_dns(world),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=60)
    return done.returncode, done.stdout.strip()


def test_two_processes_exchange_join_request_and_answer(
    world: World, join_server: int, tmp_path: Path
) -> None:
    code, out = _network_server(world, join_server, world.ns1, tmp_path, 21)
    assert code == 0, out
    answer = json.loads(out)
    assert answer["MessageType"] == "JoinAns"
    assert answer["Result"] == {"ResultCode": "Success"}
    assert (answer["SenderID"], answer["ReceiverID"]) == (JOIN_EUI, NETID1)


def test_process_refuses_network_server_with_another_key(
    world: World, join_server: int, tmp_path: Path
) -> None:
    code, out = _network_server(world, join_server, world.ns1_impostor, tmp_path, 22)
    assert code == 1
    assert out.startswith("refused: refused-by-server")
    # the join server still serves the genuine network server afterwards
    code, out = _network_server(world, join_server, world.ns1, tmp_path, 23)
    assert code == 0 and json.loads(out)["Result"]["ResultCode"] == "Success"


def test_network_server_process_refuses_a_join_server_with_another_key(
    world: World, tmp_path: Path
) -> None:
    with _join_server(world, world.js_impostor) as port:
        code, out = _network_server(world, port, world.ns1, tmp_path, 24)
    assert code == 1
    assert out.startswith("refused: server-key-mismatch: _443._tcp.js.example.test")
