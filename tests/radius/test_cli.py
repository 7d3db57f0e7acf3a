"""`dance radsec-proxy` as a process, configured by --config, with stock clients: radclient sends
UDP RADIUS to radsecproxy, which speaks RadSec to dance with a certificate whose single SAN
dNSName is the device's name (--san-fallback), and FreeRADIUS sees the DANCE identity. SIGHUP
re-reads the allow-list, the metrics count refusals, SIGTERM stops it; bad options exit 2."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from dance.testkit.servers import free_port
from tests.conftest import require_binary
from tests.processes import dance_process
from tests.radius.conftest import LOOPBACK_SECRET, FreeRadius
from tests.radius.test_proxy import refused_at_tls
from tests.tls.common import DEVICE, World

pytestmark = pytest.mark.integration


def _secret_file(d: Path) -> Path:
    path = d / "backend.secret"
    path.write_text(LOOPBACK_SECRET + "\n")
    path.chmod(0o600)
    return path


def _radsecproxy(d: Path, world: World, dance_port: int) -> tuple[subprocess.Popen[bytes], int]:
    binary = require_binary("radsecproxy")
    udp = free_port()
    conf = d / "radsecproxy.conf"
    conf.write_text(
        f"""ListenUDP 127.0.0.1:{udp}
LogLevel 4
LogDestination file://{d}/radsecproxy.log
PidFile {d}/radsecproxy.pid
tls dance {{
    CACertificateFile {world.ca}
    CertificateFile {world.san_device.cert}
    CertificateKeyFile {world.san_device.key}
}}
client local {{
    host 127.0.0.1
    type udp
    secret testing123
}}
server dance {{
    host 127.0.0.1
    port {dance_port}
    type tls
    tls dance
    secret radsec
    CertificateNameCheck off
    StatusServer off
}}
realm * {{
    server dance
    accountingServer dance
}}
"""
    )
    with (d / "radsecproxy.out").open("wb") as out:
        proc = subprocess.Popen([binary, "-f", "-c", str(conf)], stdout=out, stderr=out)
    time.sleep(0.5)
    assert proc.poll() is None, (d / "radsecproxy.out").read_text()
    return proc, udp


def _radclient(port: int, attrs: str) -> str:
    radclient = require_binary("radclient")
    done = subprocess.run(
        [radclient, "-x", "-r", "10", "-t", "2", f"127.0.0.1:{port}", "auth", "testing123"],
        input=attrs, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.stdout + done.stderr


def test_radsecproxy_through_the_command(
    world: World, freeradius: FreeRadius, tmp_path: Path
) -> None:
    metrics = free_port()
    allow = tmp_path / "allow.txt"
    allow.write_text(f"{DEVICE}\n")
    config = tmp_path / "radsec.toml"
    config.write_text(
        f"""listen = "127.0.0.1:0"
backend = "127.0.0.1:{freeradius.port}"
backend-secret-file = "{_secret_file(tmp_path)}"
cert = "{world.server.cert}"
key = "{world.server.key}"
allow-file = "{allow}"
san-fallback = true
server = "{world.dns[0]}:{world.dns[1]}"
trust-anchor = "{world.anchor_file}"
metrics = "127.0.0.1:{metrics}"
drain-timeout = 1
"""
    )
    proc = dance_process("radsec-proxy", "--config", str(config), "--json")
    rsp: subprocess.Popen[bytes] | None = None
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        port = int(json.loads(line)["listening"].rsplit(":", 1)[1])
        rsp, udp = _radsecproxy(tmp_path, world, port)
        out = _radclient(udp, 'User-Name = "bob", User-Password = "hunter2"\n')
        assert "Access-Accept" in out, out + (tmp_path / "radsecproxy.log").read_text()
        assert f"client {DEVICE}" in out
        out = _radclient(udp, 'User-Name = "bob", User-Password = "nope"\n')
        assert "Access-Reject" in out, out
        # SIGHUP: the allow-list no longer has DEVICE; new connections are refused
        allow.write_text("sensor8._device.example.test\n")
        proc.send_signal(signal.SIGHUP)
        assert proc.stdout.readline().strip() == "dance radsec-proxy: configuration reloaded"
        assert asyncio.run(refused_at_tls(port, world, world.device, DEVICE))
        url = f"http://127.0.0.1:{metrics}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        assert 'dance_decisions_total{outcome="rejected",reason="not-allowed"}' in text, text
        assert "dance_radsec_requests" in text
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        # radsecproxy keeps its connection open: cut at the drain deadline
        assert "stopped (1 connection(s) cut at the deadline)" in out, out
    finally:
        for p in (proc, rsp):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize(
    "extra",
    [
        ["--max-in-flight", "0"],
        ["--backend-timeout", "0"],
        ["--identity-attribute", "80"],
        ["--identity-attribute", "x:y"],
        ["--backend", "nowhere"],
    ],
    ids=["max-in-flight", "backend-timeout", "reserved-attribute", "bad-attribute", "backend"],
)
def test_bad_options_exit_2(world: World, tmp_path: Path, extra: list[str]) -> None:
    args = [
        "radsec-proxy", "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:1812",
        "--backend-secret-file", str(_secret_file(tmp_path)), "--cert", world.server.cert,
        "--key", world.server.key, "--allow", DEVICE,
        "--server", f"{world.dns[0]}:{world.dns[1]}", "--trust-anchor", world.anchor_file,
    ]  # fmt: skip
    proc = dance_process(*args, *extra)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    assert err.count("\n") == 1 and "error" in err, err


def test_secret_file_readable_by_others_refused(world: World, tmp_path: Path) -> None:
    secret = _secret_file(tmp_path)
    secret.chmod(0o644)
    proc = dance_process(
        "radsec-proxy", "--backend", "127.0.0.1:1812", "--backend-secret-file", str(secret),
        "--cert", world.server.cert, "--key", world.server.key, "--allow", DEVICE,
    )  # fmt: skip
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "chmod 600" in err, err
