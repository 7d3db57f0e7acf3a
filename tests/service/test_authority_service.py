"""`dance authority --metrics`: queries, responses by rcode, zone serials and signing time."""

from __future__ import annotations

import http.client
import signal
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.update

from dance.testkit.servers import free_port

DANCE = str(Path(sys.executable).with_name("dance"))


def test_authority_metrics(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    init = [DANCE, "authority", "init", "--zone-dir", str(zones), "--zone", "example.test"]
    assert subprocess.run(init, capture_output=True).returncode == 0
    port, metrics = free_port(), free_port()
    proc = subprocess.Popen(
        [DANCE, "authority", "--zone-dir", str(zones), "--listen", f"127.0.0.1:{port}",
         "--metrics", f"127.0.0.1:{metrics}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "serving example.test." in proc.stdout.readline()
        soa = None
        for _ in range(3):
            answer = dns.query.udp(
                dns.message.make_query("example.test.", "SOA"), "127.0.0.1", port=port, timeout=5
            )
            soa = answer.answer[0][0].serial
        update = dns.update.UpdateMessage("example.test.")
        update.add("x.example.test.", 300, "TXT", '"unsigned"')
        reply = dns.query.udp(update, "127.0.0.1", port=port, timeout=5)
        assert reply.rcode() == dns.rcode.REFUSED  # no TSIG
        deadline = time.monotonic() + 10
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", metrics, timeout=5)
                conn.request("GET", "/metrics")
                page = conn.getresponse().read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        values = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in page.splitlines()
            if line and not line.startswith("#")
        }
        assert values['dance_zone_serial{zone="example.test."}'] == soa, page
        assert values['dance_zone_sign_seconds{zone="example.test."}'] > 0
        assert values.get('dance_authority_updates_by_rcode{rcode="REFUSED"}') == 1, page
        assert values["dance_authority_queries"] == 3
        assert values["dance_authority_updates_refused"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
