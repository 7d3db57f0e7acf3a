"""The cost of one EAP-TLS certificate check through DANCE, as FreeRADIUS runs it.

FreeRADIUS's EAP-TLS ``verify { client = ... }`` runs a command per client certificate, as a
new process. The figure that matters is the wall time of one ``dance-eap-verify`` invocation
asking the verify daemon (warm DNS and decision caches) about a certificate file, against the
floor of any Python command (``python -c pass``) in the same run. With FreeRADIUS and eapol_test
installed it also times whole EAP-TLS authentications (eapol_test, loopback) with the hook and
without any verify hook.

    .venv/bin/python bench/bench_eap.py [--quick]
"""

from __future__ import annotations

import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dance.certs import certificate_pem, generate_key, issue_certificate, new_ca, private_key_pem
from dance.testkit import Hierarchy, ServerThread
from dance.testkit.eapol import FreeRadius, eapol_test
from dance.tlsa import make_record

NAME = "sensor1._device.example.test"
SRC = Path(__file__).resolve().parents[1] / "src"


def wall(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def row(label: str, times: list[float]) -> None:
    med = statistics.median(times)
    print(f"{label:<62} median {med * 1000:8.2f} ms   min {min(times) * 1000:8.2f} ms")


def main() -> None:
    import argparse

    from benchlib import Results

    parser = argparse.ArgumentParser(description="dance EAP-TLS verify hook benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (make bench-quick)")
    args = parser.parse_args()
    k = 3 if args.quick else 1
    now = datetime.datetime.now(datetime.UTC)
    ca_key = generate_key()
    ca = new_ca(ca_key, "bench EAP device CA", now=now)
    dev_key = generate_key()
    dev = issue_certificate(ca, ca_key, dev_key.public_key(), dns_names=[NAME], now=now)
    srv_key = generate_key()
    srv = issue_certificate(
        ca, ca_key, srv_key.public_key(), dns_names=["radius.example.test"], now=now,
        client_auth=False, server_auth=True,
    )  # fmt: skip
    zones = Hierarchy("test.", ttl=300)
    zones.child("example.test.")
    devices = zones.child("_device.example.test.")
    devices.add("sensor1", "TLSA", make_record(dev).to_text())
    zones.sign(algorithm=13, denial="nsec3")
    anchor_text = zones.export_trust_anchor()

    with tempfile.TemporaryDirectory() as tmp, ServerThread(zones) as server:
        d = Path(tmp)
        (d / "anchor").write_text(anchor_text)
        (d / "dev.pem").write_bytes(certificate_pem(dev))
        (d / "dev.key").write_bytes(private_key_pem(dev_key))
        (d / "dev.key").chmod(0o600)
        (d / "ca.pem").write_bytes(certificate_pem(ca))
        sock = d / "eap.sock"
        env = dict(os.environ, PYTHONPATH=str(SRC))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "dance.cli", "eap-verify-daemon", "--socket", str(sock),
             "--allow", "._device.example.test", "--server",
             f"{server.address[0]}:{server.address[1]}", "--trust-anchor", str(d / "anchor")],
            env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        import dance.cli.eap_hook

        fast_hook = [sys.executable, "-I", "-S", dance.cli.eap_hook.__file__]
        script = [str(Path(sys.executable).with_name("dance-eap-verify"))]
        tail = ["--socket", str(sock), "--identity", NAME, str(d / "dev.pem")]

        def hook_call(hook: list[str] = fast_hook) -> None:
            done = subprocess.run([*hook, *tail], capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stderr

        def script_call() -> None:
            hook_call(script)

        def python_floor() -> None:
            subprocess.run([sys.executable, "-c", "pass"], check=True)

        try:
            deadline = time.monotonic() + 30
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            hook_call()  # the first call fills the daemon's caches
            print(
                "one EAP-TLS certificate check (P-256 leaf, TLSA 3 1 1, NSEC3 zone on loopback)\n"
            )
            floor = wall(python_floor, 40 // k)
            row("floor: `python -c pass` process", floor)
            fast = wall(hook_call, 40 // k)
            row("python -I -S eap_hook.py --socket (recommended), warm daemon", fast)
            slow = wall(script_call, 40 // k)
            row("dance-eap-verify console script --socket, warm daemon", slow)
            med, base = statistics.median(fast), statistics.median(floor)
            print(
                f"\nhook with daemon: {med * 1000:.1f} ms median (target <= 30 ms), "
                f"{(med - base) * 1000:.1f} ms above `python -c pass` in the same run"
            )
            out = Results("bench_eap", quick=args.quick)
            out.add("python -I -S eap_hook.py --socket, warm daemon, one check", med * 1000, "ms",
                    peer="python -c pass", peer_value=base * 1000, target="<= 30")  # fmt: skip
            out.add("dance-eap-verify console script, warm daemon, one check",
                    statistics.median(slow) * 1000, "ms", peer="python -c pass",
                    peer_value=base * 1000)  # fmt: skip
            if shutil.which("freeradius", path="/usr/sbin:/usr/bin") and shutil.which("eapol_test"):
                full = {}
                for label, command in (
                    ("no verify hook", None),
                    ("dance-eap-verify hook", [*fast_hook, "--socket", str(sock), "--identity",
                                               "%{User-Name}", "%{TLS-Client-Cert-Filename}"]),
                ):  # fmt: skip
                    radius = FreeRadius(
                        d / f"raddb-{len(full)}", certificate_pem(srv), private_key_pem(srv_key),
                        certificate_pem(ca), verify_command=command,
                    )  # fmt: skip
                    with radius:

                        def authenticate(r: FreeRadius = radius) -> None:
                            res = eapol_test(
                                r, identity=NAME, client_cert=d / "dev.pem",
                                client_key=d / "dev.key", ca_cert=d / "ca.pem", workdir=d,
                            )  # fmt: skip
                            assert res.accepted, res.output[-2000:]

                        authenticate()
                        full[label] = wall(authenticate, 20 // k)
                    row(f"eapol_test EAP-TLS authentication, {label}", full[label])
                out.add("EAP-TLS authentication (eapol_test, loopback) with dance-eap-verify",
                        statistics.median(full["dance-eap-verify hook"]) * 1000, "ms",
                        peer="FreeRADIUS without verify hook",
                        peer_value=statistics.median(full["no verify hook"]) * 1000)  # fmt: skip
            out.write()
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)


if __name__ == "__main__":
    main()
