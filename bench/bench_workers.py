"""`dance proxy --workers`: handshakes per second with one process against two, same load.

The proxy runs in tcp mode with --san-fallback (so `openssl s_time -new`, a C client that
presents a certificate, can drive it), in front of a backend that accepts and closes; the client
name is published as 3 1 1 in a signed zone served on loopback. Several `s_time` processes run in
parallel for the same time against 1 and then 2 workers; the figure is completed handshakes per
second of wall time (both cores are shared by the load generator and the proxy: the ratio shows
how much of the second core the second worker can use here).

    .venv/bin/python bench/bench_workers.py [--seconds S] [--clients N] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchlib import Results
from dance import certs
from dance.testkit import Hierarchy, ServerThread
from dance.tlsa import make_record

NAME = "bench1._device.example.test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _backend() -> int:
    """A backend that accepts and closes (s_time hangs up right after its handshake)."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(512)

    def loop() -> None:
        while True:
            conn, _ = server.accept()
            conn.close()

    threading.Thread(target=loop, daemon=True).start()
    return int(server.getsockname()[1])


def _stime(port: int, seconds: int, cert: Path, key: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(seconds),
         "-cert", str(cert), "-key", str(key)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _count(proc: subprocess.Popen[bytes]) -> int:
    out, _ = proc.communicate()
    match = re.search(rb"(\d+) connections in [\d.]+s", out)
    return int(match.group(1)) if match else 0


def run(workers: int, d: Path, dns: tuple[str, int], backend: int, seconds: int, clients: int
        ) -> float:  # fmt: skip
    port = _free_port()
    proxy = subprocess.Popen(
        [sys.executable, "-m", "dance.cli", "proxy", "--listen", f"127.0.0.1:{port}",
         "--backend", f"127.0.0.1:{backend}", "--cert", str(d / "srv.pem"),
         "--key", str(d / "srv.key"), "--allow", "._device.example.test", "--san-fallback",
         "--server", f"{dns[0]}:{dns[1]}", "--trust-anchor", str(d / "anchor"),
         "--workers", str(workers), "--max-per-address", "100000", "--max-connections", "4096",
         "--log-format", "json", "--handshake-rate", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proxy.stdout is not None
        proxy.stdout.readline()
        time.sleep(1.0)
        # warm every worker's cache (the kernel spreads connections over them)
        _count(_stime(port, 2, d / "dev.pem", d / "dev.key"))
        start = time.perf_counter()
        procs = [_stime(port, seconds, d / "dev.pem", d / "dev.key") for _ in range(clients)]
        total = sum(_count(p) for p in procs)
        wall = time.perf_counter() - start
        return total / wall
    finally:
        proxy.terminate()
        proxy.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="4 s runs (make bench-quick)")
    args = parser.parse_args()
    seconds = 4 if args.quick else args.seconds
    now = datetime.datetime.now(datetime.UTC)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        dev_key = certs.generate_key()
        dev = certs.self_signed(dev_key, NAME, now=now)
        srv_key = certs.generate_key()
        srv = certs.self_signed(srv_key, "proxy.example.test", now=now)
        for label, cert, key in (("dev", dev, dev_key), ("srv", srv, srv_key)):
            (d / f"{label}.pem").write_bytes(certs.certificate_pem(cert))
            certs.write_private_key(d / f"{label}.key", key)
        zones = Hierarchy("test.", ttl=3600)
        zones.child("example.test.")
        device = zones.child("_device.example.test.")
        device.add(NAME + ".", "TLSA", make_record(dev).to_text())
        zones.sign(algorithm=13, denial="nsec3")
        (d / "anchor").write_text(zones.export_trust_anchor())
        backend = _backend()
        with ServerThread(zones) as server:
            rates: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(1 if args.quick else 2):  # alternate, so drift hits both alike
                for workers in (1, 2):
                    rates[workers].append(
                        run(workers, d, server.address, backend, seconds, args.clients)
                    )
    one, two = max(rates[1]), max(rates[2])
    print(f"dance proxy, tcp mode, {args.clients} parallel `openssl s_time -new` clients")
    print(f"  1 worker : {one:8.0f} handshakes/s   {[round(r) for r in rates[1]]}")
    print(f"  2 workers: {two:8.0f} handshakes/s   {[round(r) for r in rates[2]]}")
    print(f"  ratio    : {two / one:8.2f}x (target >= 1.8x)")
    out = Results("bench_workers", quick=args.quick)
    out.add("dance proxy --workers 2, handshakes/s", two, "/s", peer="--workers 1",
            peer_value=one, target=">= 1.8x")  # fmt: skip
    out.note(
        f"{args.clients} `openssl s_time -new` processes share the same 2 cores as the proxy; "
        "best of the alternating rounds."
    )
    out.write()


if __name__ == "__main__":
    main()
