"""The cost of one EAP-TLS certificate check through DANCE, as FreeRADIUS runs it.

FreeRADIUS 3.2's EAP-TLS ``verify { client = ... }`` runs a command per client certificate, as a
new process (rlm_python3 never sees the certificate: docs/eap.md). The figures: the wall time of
one hook invocation asking the verify daemon (warm DNS and decision caches) about a certificate
file, for the C hook (``dance eap-build-hook``) against ``/bin/true`` and for the Python hook
against ``python -c pass``, alternating in the same run. With FreeRADIUS and eapol_test installed
it also times whole EAP-TLS authentications (eapol_test, loopback) against three FreeRADIUS
servers (no verify hook, the C hook, the Python hook), alternating: the difference of medians is
the per-check cost inside FreeRADIUS.

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


def row(label: str, times: list[float]) -> None:
    med = statistics.median(times)
    print(f"{label:<62} median {med * 1000:8.2f} ms   min {min(times) * 1000:8.2f} ms")


def main() -> None:
    import argparse

    from benchlib import Results, alternating

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
        from dance.eap.native import build_hook

        fast_hook = [sys.executable, "-I", "-S", dance.cli.eap_hook.__file__]
        script = [str(Path(sys.executable).with_name("dance-eap-verify"))]
        c_hook = [str(build_hook(d / "dance-eap-verify-c"))]
        tail = ["--socket", str(sock), "--identity", NAME, str(d / "dev.pem")]

        def hook_call(hook: list[str] = fast_hook) -> None:
            done = subprocess.run([*hook, *tail], capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stderr

        def script_call() -> None:
            hook_call(script)

        def c_call() -> None:
            hook_call(c_hook)

        def python_floor() -> None:
            subprocess.run([sys.executable, "-c", "pass"], check=True)

        def exec_floor() -> None:
            subprocess.run(["/bin/true"], check=True)

        try:
            deadline = time.monotonic() + 30
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            hook_call()  # the first call fills the daemon's caches
            print(
                "one EAP-TLS certificate check (P-256 leaf, TLSA 3 1 1, NSEC3 zone on loopback)\n"
            )
            n = 40 // k
            # alternate the rows, one call of each per round, so load changes hit them all alike
            calls = {
                "floor: `/bin/true` process (fork + exec)": exec_floor,
                "floor: `python -c pass` process": python_floor,
                "C hook (dance eap-build-hook), warm daemon": c_call,
                "python -I -S eap_hook.py --socket, warm daemon": hook_call,
                "dance-eap-verify console script --socket, warm daemon": script_call,
            }
            rows = alternating(calls, n)
            for label, times in rows.items():
                row(label, times)
            labels = list(calls)
            true_floor = statistics.median(rows[labels[0]])
            base = statistics.median(rows[labels[1]])
            c_med = statistics.median(rows[labels[2]])
            med = statistics.median(rows[labels[3]])
            print(
                f"\nC hook: {c_med * 1000:.1f} ms median (target <= 30 ms), "
                f"{(c_med - true_floor) * 1000:.1f} ms above `/bin/true`; Python hook: "
                f"{med * 1000:.1f} ms, {(med - base) * 1000:.1f} ms above `python -c pass`"
            )
            out = Results("bench_eap", quick=args.quick)
            out.add("C hook (dance eap-build-hook), warm daemon, one check", c_med * 1000, "ms",
                    peer="/bin/true", peer_value=true_floor * 1000, target="<= 30")  # fmt: skip
            out.add("python -I -S eap_hook.py --socket, warm daemon, one check", med * 1000, "ms",
                    peer="python -c pass", peer_value=base * 1000, target="<= 30")  # fmt: skip
            out.add("dance-eap-verify console script, warm daemon, one check",
                    statistics.median(rows[labels[4]]) * 1000, "ms", peer="python -c pass",
                    peer_value=base * 1000)  # fmt: skip
            if shutil.which("freeradius", path="/usr/sbin:/usr/bin") and shutil.which("eapol_test"):
                servers: dict[str, FreeRadius] = {}
                for label, command in (
                    ("no verify hook", None),
                    ("C hook", c_hook),
                    ("Python hook", fast_hook),
                ):
                    verify = None if command is None else [
                        *command, "--socket", str(sock), "--identity", "%{User-Name}",
                        "%{TLS-Client-Cert-Filename}"]  # fmt: skip
                    servers[label] = FreeRadius(
                        d / f"raddb-{len(servers)}", certificate_pem(srv), private_key_pem(srv_key),
                        certificate_pem(ca), verify_command=verify,
                    )  # fmt: skip
                for radius in servers.values():
                    radius.start()
                try:

                    def authenticate(r: FreeRadius) -> None:
                        res = eapol_test(
                            r, identity=NAME, client_cert=d / "dev.pem",
                            client_key=d / "dev.key", ca_cert=d / "ca.pem", workdir=d,
                        )  # fmt: skip
                        assert res.accepted, res.output[-2000:]

                    for r in servers.values():
                        authenticate(r)
                    full = alternating(  # as above
                        {label: lambda r=r: authenticate(r) for label, r in servers.items()},
                        30 // k,
                    )
                finally:
                    for radius in servers.values():
                        radius.stop()
                print()
                for label, times in full.items():
                    row(f"eapol_test EAP-TLS authentication, {label}", times)
                none = statistics.median(full["no verify hook"])
                for label in ("C hook", "Python hook"):
                    m = statistics.median(full[label])
                    print(f"  {label}: +{(m - none) * 1000:.1f} ms per authentication")
                    out.add(f"EAP-TLS authentication (eapol_test, loopback) with the {label}",
                            m * 1000, "ms", peer="FreeRADIUS without verify hook",
                            peer_value=none * 1000)  # fmt: skip
                    out.add(f"per-check cost in FreeRADIUS, {label} (with - without, medians)",
                            (m - none) * 1000, "ms", target="<= 30")  # fmt: skip
            out.write()
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)


if __name__ == "__main__":
    main()
