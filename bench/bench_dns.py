"""DNS benchmarks (issue: DNSSEC-validated discovery).

* A cold lookup with full validation through a loopback authoritative server (Knot), two zone
  levels below the trust anchor (anchor `test.`, zones `example.test.` and
  `_device.example.test.`): target <= 2 ms median (the lookup's CPU time is reported too).
  Every iteration uses a new resolver, so the DNSKEY/DS chain is fetched and validated each
  time (a signature an earlier resolver of the process verified is not verified again; the
  "cold process" row forgets that too before each lookup).
* The same through a validating Unbound in front of Knot (Unbound's cache warm; dance still
  validates everything itself from the anchor).
* The peer in the same run: `dane-discovery` 0.22 (PyPI), resolving the same name through its own
  path (one query to the validating Unbound; it trusts the resolver and validates nothing). It pins
  dnspython 2.2 and cryptography < 37, so it runs in its own virtual environment
  (bench/.peer-venv, created on first use from PyPI). Its query function has no port parameter; the
  benchmark passes Unbound's port by wrapping `dns.query.udp_with_fallback`.

Run: .venv/bin/python bench/bench_dns.py [--rounds N] [--quick] [--no-peer] (figures on stdout
and in bench/results/bench_dns.json; ``--quick``: 100 rounds, no peer).

``--compare SRC`` (a ``src`` directory of another checkout, e.g. from ``git archive``) also runs
cold lookups, Knot direct, alternately with that code and with this checkout's, each batch in a
fresh process (``--batches`` of ``--rounds`` / ``--batches`` rounds per side), and reports both
medians (wall and CPU) and their ratio: a before/after comparison under the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))  # benchlib, also when imported from elsewhere

from benchlib import Results  # noqa: E402
from dance import certs, make_record  # noqa: E402
from dance.dns import Outcome, TLSAResolver, TrustAnchors  # noqa: E402
from dance.testkit.servers import (  # noqa: E402
    KnotZone,
    child_ds,
    dnskey_anchor,
    knotc,
    start_knot,
    start_unbound,
)

NAME = "sensor7._device.example.test"
SOA = "@ SOA ns1.test. hostmaster.test. 1 3600 600 86400 60"
PEER_VENV = ROOT / "bench" / ".peer-venv"

PEER_SCRIPT = r"""
import functools, statistics, sys, time
import dns.query
port = int(sys.argv[2])
dns.query.udp_with_fallback = functools.partial(dns.query.udp_with_fallback, port=port)
from dane_discovery.dane import DANE
name, rounds = sys.argv[1], int(sys.argv[3])
records = DANE.get_tlsa_records(name, nsaddr="127.0.0.1")
assert records, "dane-discovery found no records"
samples = []
for _ in range(rounds):
    t = time.perf_counter()
    DANE.get_tlsa_records(name, nsaddr="127.0.0.1")
    samples.append(time.perf_counter() - t)
print(statistics.median(samples) * 1e3)
"""


COMPARE_SCRIPT = r"""
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[1])
from dance.dns import Outcome, TLSAResolver, TrustAnchors
try:
    from dance.dns.resolver import clear_shared_memos
except ImportError:  # older code: only the parsed public keys were shared
    from dance.dns import validator
    def clear_shared_memos():
        getattr(validator, "_PUBLIC_KEYS", {}).clear()
port, rounds, name = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
anchors = TrustAnchors.from_text(sys.stdin.read())

async def run(n, cold_process=False):
    wall, cpu = [], []
    for _ in range(n):
        resolver = TLSAResolver(("127.0.0.1", port), anchors=anchors, recursion_desired=False)
        if cold_process:
            clear_shared_memos()
        t, c = time.perf_counter(), time.process_time()
        result = await resolver.lookup_tlsa(name)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        assert result.outcome is Outcome.SECURE, result
        await resolver.aclose()
    return wall, cpu

asyncio.run(run(20))  # warm-up (imports, first parses)
print(json.dumps([asyncio.run(run(rounds)), asyncio.run(run(rounds, True))]))
"""


Samples = dict[str, tuple[list[float], list[float]]]


def compare(src: str, port: int, anchor_text: str, rounds: int, batches: int) -> Samples:
    """Cold lookups alternately with the code in ``src`` ("before") and this checkout ("after"),
    as the benchmark defines them (a new resolver) and from a cold process (what every resolver
    of the process shares forgotten first: "before cold", "after cold")."""
    import json

    out: Samples = {k: ([], []) for k in ("before", "after", "before cold", "after cold")}
    per_batch = max(1, rounds // batches)
    for i in range(2 * batches):
        side = "before" if i % 2 == 0 else "after"
        path = src if side == "before" else str(ROOT / "src")
        result = subprocess.run(
            [sys.executable, "-c", COMPARE_SCRIPT, path, str(port), str(per_batch), NAME],
            input=anchor_text,
            capture_output=True,
            text=True,
            check=True,
        )
        warm, cold = json.loads(result.stdout.strip().splitlines()[-1])
        for key, (wall, cpu) in ((side, warm), (f"{side} cold", cold)):
            out[key][0].extend(wall)
            out[key][1].extend(cpu)
    return out


async def cold_process_lookups(port: int, anchors: TrustAnchors, rounds: int) -> list[float]:
    """CPU time of cold lookups that also find nothing shared by other resolvers of the
    process (parsed public keys, verified signatures, query templates)."""
    from dance.dns.resolver import clear_shared_memos

    cpu = []
    for _ in range(rounds):
        resolver = TLSAResolver(("127.0.0.1", port), anchors=anchors, recursion_desired=False)
        clear_shared_memos()
        started = time.process_time()
        result = await resolver.lookup_tlsa(NAME)
        cpu.append(time.process_time() - started)
        assert result.outcome is Outcome.SECURE, result
        await resolver.aclose()
    return cpu


def ensure_peer() -> Path | None:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print("  (creating bench/.peer-venv with dane-discovery==0.22 from PyPI)")
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "dane-discovery==0.22"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            print(f"  peer install failed: {result.stderr.strip()[-300:]}")
            return None
    return python


async def cold_lookups(
    port: int, anchors: TrustAnchors, rounds: int, rd: bool, cpu: list[float] | None = None
) -> list[float]:
    """Wall time of each cold lookup (and, into ``cpu``, this process's CPU time for it)."""
    samples = []
    for _ in range(rounds):
        resolver = TLSAResolver(("127.0.0.1", port), anchors=anchors, recursion_desired=rd)
        start = time.perf_counter()
        started_cpu = time.process_time()
        result = await resolver.lookup_tlsa(NAME)
        samples.append(time.perf_counter() - start)
        if cpu is not None:
            cpu.append(time.process_time() - started_cpu)
        assert result.outcome is Outcome.SECURE, result
        await resolver.aclose()
    return samples


async def warm_zone_lookups(port: int, anchors: TrustAnchors, rounds: int) -> list[float]:
    """Zone keys cached, the name not: a new device in a known zone."""
    samples = []
    resolver = TLSAResolver(("127.0.0.1", port), anchors=anchors, recursion_desired=False)
    await resolver.lookup_tlsa(NAME)
    for i in range(rounds):
        start = time.perf_counter()
        result = await resolver.lookup_tlsa(f"dev{i}._device.example.test")
        samples.append(time.perf_counter() - start)
        assert result.outcome is Outcome.SECURE, result  # via the wildcard
    await resolver.aclose()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="100 rounds, no peer (bench-quick)")
    parser.add_argument("--no-peer", action="store_true", help="skip dane-discovery")
    parser.add_argument("--profile", help="cProfile the cold lookups (Knot direct) into FILE")
    parser.add_argument("--compare", metavar="SRC", help="also run SRC's code alternately")
    parser.add_argument("--batches", type=int, default=6, help="batches per side (--compare)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.no_peer = min(args.rounds, 100), True
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    device = certs.self_signed(certs.generate_key(), NAME, now=now)
    ca = certs.new_ca(certs.generate_key(), "Bench CA", now=now)
    zones = [
        KnotZone(
            "test",
            f"{SOA}\n@ NS ns1\nns1 A 127.0.0.1\nexample NS ns1.example\nns1.example A 127.0.0.1",
        ),
        KnotZone(
            "example.test",
            f"{SOA}\n@ NS ns1\nns1 A 127.0.0.1\n_device NS ns1._device\nns1._device A 127.0.0.1",
        ),
        KnotZone(
            "_device.example.test",
            f"{SOA}\n@ NS ns1\nns1 A 127.0.0.1\n"
            f"sensor7 TLSA {make_record(device).to_text()}\n"
            f"* TLSA {make_record(ca, 2, 0, 1).to_text()}",
        ),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        knot = start_knot(Path(tmp) / "knot", zones)
        unbound = None
        try:
            for parent, child, label in (
                ("test", "example.test", "example"),
                ("example.test", "_device.example.test", "_device"),
            ):
                knotc(knot, "zone-begin", parent)
                for ds in child_ds(knot.port, child):
                    knotc(knot, "zone-set", parent, label, "300", "DS", *ds.split())
                knotc(knot, "zone-commit", parent)
            anchor_text = dnskey_anchor(knot.port, "test")
            anchors = TrustAnchors.from_text(anchor_text)
            unbound = start_unbound(
                Path(tmp) / "unbound", anchor_text, {z.name: knot.port for z in zones}
            )
            time.sleep(0.5)  # let Knot finish re-signing the DS changes
            asyncio.run(cold_lookups(knot.port, anchors, 20, rd=False))  # warm-up (imports)
            cold_cpu: list[float] = []
            if args.profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            cold = asyncio.run(cold_lookups(knot.port, anchors, args.rounds, False, cold_cpu))
            if args.profile:
                profiler.disable()
                profiler.dump_stats(args.profile)
            cold_process = asyncio.run(cold_process_lookups(knot.port, anchors, args.rounds))
            compared = None
            if args.compare:
                compared = compare(args.compare, knot.port, anchor_text, args.rounds, args.batches)
            via_unbound = asyncio.run(cold_lookups(unbound.port, anchors, args.rounds, rd=True))
            warm_zone = asyncio.run(warm_zone_lookups(knot.port, anchors, args.rounds))
            peer_ms: float | None = None
            python = None if args.no_peer else ensure_peer()
            if python is not None:
                out = subprocess.run(
                    [str(python), "-c", PEER_SCRIPT, NAME, str(unbound.port), str(args.rounds)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode == 0:
                    peer_ms = float(out.stdout.strip().splitlines()[-1])
                else:
                    print(f"  peer failed: {out.stderr.strip()[-300:]}")
        finally:
            if unbound is not None:
                unbound.stop()
            knot.stop()

    med = statistics.median(cold) * 1e3
    cpu_med = statistics.median(cold_cpu) * 1e3
    print(f"dance DNS benchmark ({args.rounds} rounds, medians)")
    print(
        f"  cold lookup + full validation, Knot direct, 2 levels below anchor: {med:6.2f} ms"
        f"  (target <= 2 ms) {'OK' if med <= 2 else 'OVER TARGET'}; CPU {cpu_med:6.2f} ms"
    )
    cold_process_med = statistics.median(cold_process) * 1e3
    print(
        f"  the same, cold process (nothing shared by earlier resolvers):       CPU "
        f"{cold_process_med:6.2f} ms"
    )
    print(
        f"  cold lookup + full validation via Unbound (dance validates):       "
        f"{statistics.median(via_unbound) * 1e3:6.2f} ms"
    )
    print(
        f"  new name in a zone whose keys are cached (wildcard answer):        "
        f"{statistics.median(warm_zone) * 1e3:6.2f} ms"
    )
    if peer_ms is not None:
        print(
            f"  peer dane-discovery 0.22 via Unbound (no validation of its own):  {peer_ms:6.2f} ms"
            f"  (dance cold / peer = {med / peer_ms:.2f})"
        )
    out = Results("bench_dns", quick=args.quick)
    if compared is not None:
        before = "the code before the change (--compare), same run, alternating"
        for label, suffix in (("", ""), (" cold", ", cold process")):
            (bw, bc) = compared["before" + label]
            (aw, ac) = compared["after" + label]
            b_wall, a_wall = statistics.median(bw) * 1e3, statistics.median(aw) * 1e3
            b_cpu, a_cpu = statistics.median(bc) * 1e3, statistics.median(ac) * 1e3
            print(
                f"  alternating{suffix}, {len(aw)} lookups a side: before {b_wall:6.2f} ms "
                f"(CPU {b_cpu:6.2f}), after {a_wall:6.2f} ms (CPU {a_cpu:6.2f}): "
                f"{a_wall / b_wall:.2f}x wall, {a_cpu / b_cpu:.2f}x CPU"
            )
            out.add(f"cold validated lookup{suffix}, alternating with the code before", a_wall,
                    "ms", peer=before, peer_value=b_wall, target="<= 2")  # fmt: skip
            out.add(f"cold validated lookup CPU{suffix}, alternating with the code before", a_cpu,
                    "ms", peer=before, peer_value=b_cpu)  # fmt: skip
    peer = "dane-discovery 0.22 via Unbound (no validation)" if peer_ms is not None else None
    out.add("cold validated lookup, 2 levels below the anchor (Knot direct)", med, "ms",
            peer=peer, peer_value=peer_ms, target="<= 2")  # fmt: skip
    out.add("cold validated lookup: CPU of the lookup", cpu_med, "ms")
    out.add("cold validated lookup, cold process: CPU of the lookup", cold_process_med, "ms")
    out.add("cold validated lookup via Unbound (dance validates)",
            statistics.median(via_unbound) * 1e3, "ms")  # fmt: skip
    out.add("new name in a zone whose keys are cached", statistics.median(warm_zone) * 1e3, "ms")
    out.note(
        "Every cold lookup uses a new resolver: the DNSKEY/DS chain is fetched and validated "
        "each time; signatures and public keys already checked by an earlier resolver of the "
        "process are remembered, except in the 'cold process' rows (nothing shared is left). "
        "The server (Knot) runs on the same machine."
    )
    if compared is not None:
        out.note(
            "'alternating with the code before': --compare ran cold lookups with the code before "
            "the change and this checkout in turns, each batch in a fresh process, same Knot."
        )
    out.write()


if __name__ == "__main__":
    main()
