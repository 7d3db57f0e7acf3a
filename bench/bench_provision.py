"""Provisioning benchmark (issue 5): provision and publish N identities to Knot DNS.

For N device names (default 10,000) under ``_device.example.test``:

1. create the identities with ``dance.provision.fleet.create_identities`` (process pool: EC P-256
   key, self-signed certificate, ``3 1 1`` record, key file 0600, certificate file),
2. publish every record to a Knot primary that signs online, in batched TSIG-signed RFC 2136
   updates (``publish_fleet``: it first asks the primary which records it already serves),
3. poll dance's DNSSEC-validated lookups (trust anchor: the zone's KSK) until every name is
   securely visible.

Reported: identities/s end to end (1 + 2), updates/s (messages and records), the time until all
are visible through a validating lookup (3, lookups spread over the same number of processes as
the identity workers). Target: >= 500 identities/s on 2 cores.

The peer in the same run: Knot's own update client ``knsupdate`` (Debian ``knot-dnsutils``),
sending the same kind of records (a separate set of names) in batches of the same size with the
same TSIG key; its records/s is printed next to dance's.

Run: .venv/bin/python bench/bench_provision.py [--count N] [--batch B] [--workers W]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dance.dns import TrustAnchors  # noqa: E402
from dance.provision.fleet import create_identities, parse_fleet, publish_fleet  # noqa: E402
from dance.provision.publish import Updater, wait_visible  # noqa: E402
from dance.testkit.servers import start_primary  # noqa: E402
from dance.tsig import TSIGKey  # noqa: E402

ZONE = "example.test"


def _peer_knsupdate(port: int, key: TSIGKey, workdir: Path, count: int, batch: int) -> float | None:
    """Records/s of knsupdate sending ``count`` TLSA records in batches of ``batch``."""
    binary = shutil.which("knsupdate")
    if binary is None:
        return None
    key_file = workdir / "knsupdate.key"  # knsupdate -k takes the -y form: ALG:NAME:SECRET
    key_file.write_text(f"{key.algorithm}:{key.name}:{key.secret_b64()}\n")
    key_file.chmod(0o600)
    lines = [f"server 127.0.0.1 {port}", f"zone {ZONE}.", "origin " + ZONE + "."]
    for i in range(count):
        digest = hashlib.sha256(f"peer{i}".encode()).hexdigest()
        lines.append(f"add peer{i}.f.f._device.{ZONE}. 300 TLSA 3 1 1 {digest}")
        if (i + 1) % batch == 0 or i == count - 1:
            lines.append("send")
    lines.append("quit")
    start = time.perf_counter()
    out = subprocess.run(
        [binary, "-k", str(key_file)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    took = time.perf_counter() - start
    if out.returncode != 0:
        print(f"  knsupdate failed: {out.stderr.strip()[:200]}")
        return None
    return count / took


def _visible(
    address: tuple[str, int], anchor_text: str, part: list[tuple[str, bytes]]
) -> tuple[bool, int]:
    """One process's share of the validated visibility check."""
    ok, last = wait_visible(
        address,
        TrustAnchors.from_text(anchor_text),
        {owner: {wire} for owner, wire in part},
        deadline=300,
        interval=0.2,
    )
    return ok, sum(1 for r in last.values() if r.authenticates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500, help="records per UPDATE")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--peer-count", type=int, default=2_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-provision-") as tmp:
        base = Path(tmp)
        primary = start_primary(base / "knot", ZONE)
        try:
            names = "\n".join(f"device{i:06d}" for i in range(args.count))
            entries = parse_fleet(names, ZONE)
            updater = Updater(primary.address, ZONE, primary.key, timeout=60)

            t0 = time.perf_counter()
            identities = create_identities(entries, base / "ids", workers=args.workers, chunk=250)
            t1 = time.perf_counter()
            stats = publish_fleet(
                identities, lambda zone: updater, single_zone=ZONE, batch=args.batch, ttl=300
            )
            t2 = time.perf_counter()
            expect = [(i.owner, i.record.to_wire()) for i in identities]
            parts = [expect[k :: args.workers] for k in range(args.workers)]
            anchor_text = primary.anchor_file.read_text()
            with concurrent.futures.ProcessPoolExecutor(args.workers) as pool:
                done = list(
                    pool.map(
                        _visible, [primary.address] * len(parts), [anchor_text] * len(parts), parts
                    )
                )
            t3 = time.perf_counter()
            ok = all(d[0] for d in done)
            visible = sum(d[1] for d in done)

            peer = _peer_knsupdate(
                primary.server.port, primary.key, base, args.peer_count, args.batch
            )
        finally:
            primary.server.stop()

    n = len(identities)
    print(
        f"provision + publish {n} identities to Knot (workers={args.workers}, "
        f"batch={args.batch}, {os.cpu_count()} CPUs)"
    )
    print(f"  identities created:        {n / (t1 - t0):9.0f} /s  ({t1 - t0:.2f} s)")
    print(
        f"  published:                 {stats.published / (t2 - t1):9.0f} records/s, "
        f"{stats.messages / (t2 - t1):.1f} updates/s ({stats.messages} UPDATE messages, "
        f"{t2 - t1:.2f} s incl. the already-published check)"
    )
    print(
        f"  end to end:                {n / (t2 - t0):9.0f} identities/s  "
        f"(target >= 500: {'met' if n / (t2 - t0) >= 500 else 'NOT met'})"
    )
    print(
        f"  all visible (validated):   {t3 - t2:9.2f} s after the last update "
        f"({visible}/{n} secure{'' if ok else ', DEADLINE PASSED'})"
    )
    print(f"  total incl. visibility:    {n / (t3 - t0):9.0f} identities/s")
    if peer is None:
        print("  peer knsupdate: not available")
    else:
        print(
            f"  peer knsupdate (same Knot, batch {args.batch}, {args.peer_count} records): "
            f"{peer:.0f} records/s  vs dance {stats.published / (t2 - t1):.0f} records/s"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
