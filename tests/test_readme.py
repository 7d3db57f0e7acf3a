"""The README's walk-through, run as written (only its ports are swapped for free ones), so the
first thing a newcomer tries keeps working."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PORTS = ("8053", "8080", "8443")


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- walkthrough:start -->\n```sh\n(.*?)```\n<!-- walkthrough:end -->",
                      text, re.S)  # fmt: skip
    assert match, "README.md lost its walk-through markers"
    return match.group(1)


def _free_tcp_udp_port() -> int:
    while True:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@pytest.mark.integration
def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    script = walkthrough()
    for port in PORTS:
        assert f"127.0.0.1:{port}" in script or f" {port} " in script, port
        # every mention, the _PORT._tcp owner of a TLSA record included
        script = re.sub(rf"(?<![0-9]){port}(?![0-9])", str(_free_tcp_udp_port()), script)
    # a loaded CI machine may need longer than a laptop for a server to come up
    script = script.replace("sleep 1", "sleep 3")
    guarded = "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\nset -euo pipefail\n" + script
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env.pop("DANCE_TSIG_KEY", None)
    run = subprocess.run(
        ["bash", "-c", guarded], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=240, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    assert "visible (secure)" in out
    assert "sensor7._device.example.com: secure (ok)" in out
    assert "authenticated: sensor7._device.example.com" in out
    assert re.search(r"^accepted", out, re.M), out
    assert "HTTP/1.0 200" in out  # the backend's answer came through the proxy
    assert "refused as it should be (exit 1)" in out
    assert "verified: signed by sensor7._device.example.com" in run.stderr
    assert "rejected now (exit 1)" in out
    assert "Traceback" not in run.stderr


def test_lookup_without_anchor_at_the_authority_says_what_to_do(tmp_path: Path) -> None:
    """The first mistake a newcomer makes: no --trust-anchor against the embedded authority."""
    dance = str(Path(sys.executable).with_name("dance"))
    zones = tmp_path / "zones"
    init = subprocess.run(
        [dance, "authority", "init", "--zone-dir", str(zones), "--zone", "example.com"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    port = _free_tcp_udp_port()
    server = subprocess.Popen(
        [dance, "authority", "--zone-dir", str(zones), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        args = [dance, "lookup", "a._device.example.com", "--server", f"127.0.0.1:{port}"]
        for _ in range(50):  # until the server answers at all
            out = subprocess.run(args, capture_output=True, text=True, timeout=30)
            if "network-error" not in out.stdout and "timeout" not in out.stdout:
                break
        assert "indeterminate (refused)" in out.stdout, out.stdout
        assert "hint:" in out.stdout and "--trust-anchor" in out.stdout
        assert out.returncode == 2 and out.stderr == ""
    finally:
        server.terminate()
        server.wait(timeout=10)
    down = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert "network-error" in down.stdout or "timeout" in down.stdout
    assert f"127.0.0.1:{port}" in down.stdout.split("hint:")[1]
