"""Benchmark of the embedded authority, with Knot DNS (knotd, signing online) as the peer.

For a zone with N TLSA names (default 10,000) it prints, for each server:

* initial signing: time from start until the signed zone is served (dance: building the
  authority in this process; the updates then go to `dance authority` in its own process);
* single updates: latency of one-record RFC 2136 updates over TCP with TSIG (median, p90),
  and updates per second, sequentially;
* batched publication: B new records in updates of S records each: records per second, and
  the time until the last one is visible through dance's DNSSEC-validated lookup.

Run: .venv/bin/python bench/bench_authority.py [--quick] [--names N] [--updates U] [--batch B]
[--size S] (the figures go to stdout and bench/results/bench_authority.json; knotd must be on PATH
or in /usr/sbin for the peer). ``--quick`` (make bench-quick) sends 60 single updates and
publishes 1,000 records.

Two more modes (the long versions of tests in tests/authority):

* ``--abuse [--seconds S] [--non-readers N] [--axfrs M]``: ``dance authority`` with its default
  limits serving a zone of ``--names`` names (default here 3,000) under N TCP clients that never
  read and M looping TSIG AXFRs; prints the latency of a legitimate client's UDP and TCP
  queries (p50, p99, max) before and during the abuse;
* ``--kill-rounds R``: R rounds of ``kill -9`` during dynamic, bulk and rollover updates, each
  followed by a restart and the checks of ``dance.testkit.crash`` (nothing acknowledged
  lost, serial grown, kzonecheck / ldns-verify-zone, Unbound), as in
  tests/authority/test_crash.py.

Only ``dance`` is imported (the load generator, the server helper and the crash rounds are in
the test kit: ``dance.testkit.dnsload``, ``dance.testkit.authority``, ``dance.testkit.crash``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, also when imported

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.update

from benchlib import Results
from dance.authority import Authority, Limits
from dance.authority.store import ZoneDir, trust_anchor_text
from dance.dns import Outcome, TLSAResolver, TrustAnchors
from dance.testkit.authority import make_zone_dir, serve
from dance.testkit.crash import crash_rounds
from dance.testkit.dnsload import measure, start_load
from dance.tsig import TSIGKey, generate_tsig_key, write_tsig_key

ZONE = "example.test."


def _free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def _body(names: int) -> str:
    return "".join(f"d{i}._device.{ZONE} 300 IN TLSA 3 1 1 {i:064x}\n" for i in range(names))


def _update(port: int, key: TSIGKey, records: list[tuple[str, str]]) -> None:
    message = dns.update.UpdateMessage(
        ZONE, keyring={key.dns_name: key.to_dnspython()}, keyname=key.dns_name
    )
    for name, rdata in records:
        message.add(name, 300, "TLSA", rdata)
    response = dns.query.tcp(message, "127.0.0.1", port=port, timeout=60)
    if response.rcode() != dns.rcode.NOERROR:
        raise RuntimeError(f"update failed: {dns.rcode.to_text(response.rcode())}")


def _visible(port: int, anchor: str, name: str, deadline: float) -> float:
    started = time.perf_counter()

    async def once() -> Outcome:
        async with TLSAResolver(
            ("127.0.0.1", port), anchors=TrustAnchors.from_text(anchor), recursion_desired=False
        ) as resolver:
            return (await resolver.lookup_tlsa(name)).outcome

    while time.perf_counter() - started < deadline:
        if asyncio.run(once()) is Outcome.SECURE:
            return time.perf_counter() - started
        time.sleep(0.01)
    return float("nan")


def _cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) of process ``pid`` (None: this process)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(
    label: str,
    port: int,
    key: TSIGKey,
    anchor: str,
    start_seconds: float,
    updates: int,
    batch: int,
    size: int,
    pid: int | None = None,
) -> dict[str, float]:
    latencies = []
    cpu = _cpu_seconds(pid)
    for i in range(updates):
        t = time.perf_counter()
        _update(port, key, [(f"single{i}._device", "3 1 1 " + f"{i:064x}")])
        latencies.append(time.perf_counter() - t)
    cpu = (_cpu_seconds(pid) - cpu) / updates
    latencies.sort()
    t = time.perf_counter()
    for first in range(0, batch, size):
        chunk = [
            (f"b{j}._device", "3 1 1 " + f"{j:064x}")
            for j in range(first, min(batch, first + size))
        ]
        _update(port, key, chunk)
    sent = time.perf_counter() - t
    visible = _visible(port, anchor, f"b{batch - 1}._device.{ZONE}", 120.0)
    figures = {
        "start": start_seconds,
        "median": statistics.median(latencies) * 1000,
        "p90": latencies[max(0, int(len(latencies) * 0.9) - 1)] * 1000,
        "p99": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        "cpu": cpu * 1000,
        "records": batch / sent,
    }
    print(
        f"{label:<10} initial signing {start_seconds:7.2f} s | single update median "
        f"{figures['median']:7.1f} ms p90 {figures['p90']:7.1f} ms p99 {figures['p99']:7.1f} ms "
        f"(CPU {figures['cpu']:5.1f} ms/update{' incl. client' if pid is None else ''}) | "
        f"{batch} records in updates of {size}: {figures['records']:8.0f} records/s "
        f"({batch / size / sent:5.1f} updates/s), last visible (validated) "
        f"{visible * 1000:6.0f} ms after the last update"
    )
    return figures


def bench_dance(tmp: Path, names: int, updates: int, batch: int, size: int) -> dict[str, float]:
    store = ZoneDir(tmp / "dance")
    origin = dns.name.from_text(ZONE)
    policy = store.init_zone(origin, denial="nsec3")
    with store.zone_path(origin).open("a") as out:
        out.write(_body(names))
    key = generate_tsig_key("bench")
    t = time.perf_counter()
    Authority(store.path, tsig_keys=[key], limits=Limits(rate=0))  # signs and writes the zone
    start = time.perf_counter() - t
    gc.collect()
    # Updates go to `dance authority` in its own process, as knotd runs in its own: a server in
    # the benchmark's process would share its interpreter lock with the client
    write_tsig_key(tmp / "bench.key", key)
    server = serve(
        store.path, tmp / "bench.key", _free_port(), tmp / "dance.log",
        extra_args=("--rate", "0"),
    )  # fmt: skip
    try:
        anchor = trust_anchor_text(origin, policy.keys, 300)
        return _measure(
            "dance", server.port, key, anchor, start, updates, batch, size, server.process.pid
        )
    finally:
        server.stop()


@contextlib.contextmanager
def _knot(tmp: Path, names: int, key: TSIGKey) -> Iterator[tuple[int, Callable[[], str], int]]:
    knotd = shutil.which("knotd") or shutil.which("knotd", path="/usr/sbin:/usr/bin")
    if knotd is None:
        raise FileNotFoundError("knotd")
    work = tmp / "knot"
    (work / "db").mkdir(parents=True)
    (work / "example.test.zone").write_text(
        f"$ORIGIN {ZONE}\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 900 604800 60\n@ NS ns1\n"
        f"ns1 A 127.0.0.1\n{_body(names)}"
    )
    port = _free_port()
    secret = base64.b64encode(key.secret).decode()
    conf = work / "knot.conf"
    conf.write_text(
        f"""server:
    rundir: "{work}"
    listen: 127.0.0.1@{port}
log:
  - target: stderr
    any: warning
database:
    storage: "{work}/db"
key:
  - id: {key.name}
    algorithm: hmac-sha256
    secret: {secret}
acl:
  - id: update
    key: {key.name}
    action: update
policy:
  - id: nsec3
    algorithm: ecdsap256sha256
    nsec3: on
    nsec3-iterations: 0
    nsec3-salt-length: 0
template:
  - id: default
    storage: "{work}"
    journal-content: all
    zonefile-sync: -1
    semantic-checks: off
zone:
  - domain: {ZONE}
    file: {work}/example.test.zone
    dnssec-signing: on
    dnssec-policy: nsec3
    acl: update
"""
    )
    log = (work / "knot.log").open("wb")
    process = subprocess.Popen([knotd, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:

        def anchor() -> str:
            query = dns.message.make_query(ZONE, "DNSKEY")
            answer = dns.query.tcp(query, "127.0.0.1", port=port, timeout=5)
            lines = [
                f"{ZONE} 300 IN DNSKEY {rd.to_text()}"
                for rrset in answer.answer
                for rd in rrset
                if rrset.rdtype == dns.rdatatype.DNSKEY and rd.flags & 1
            ]
            return "\n".join(lines) + "\n"

        yield port, anchor, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def bench_knot(
    tmp: Path, names: int, updates: int, batch: int, size: int
) -> dict[str, float] | None:
    key = generate_tsig_key("bench")
    t = time.perf_counter()
    try:
        with _knot(tmp, names, key) as (port, anchor, pid):
            query = dns.message.make_query(f"d{names - 1}._device.{ZONE}", "TLSA", want_dnssec=True)
            while True:
                with contextlib.suppress(Exception):
                    answer = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
                    if any(r.rdtype == dns.rdatatype.RRSIG for r in answer.answer):
                        break
                if time.perf_counter() - t > 120:
                    raise RuntimeError("knot did not serve the signed zone")
                time.sleep(0.05)
            start = time.perf_counter() - t
            return _measure("knot", port, key, anchor(), start, updates, batch, size, pid)
    except FileNotFoundError:
        print("knot       not installed (apt-get install knot): no peer figures")
        return None


def bench_abuse(tmp: Path, names: int, seconds: float, readers: int, axfrs: int) -> None:
    zone_dir, _ = make_zone_dir(tmp, "nsec", names=names)
    key = generate_tsig_key("xfr-key")
    write_tsig_key(tmp / "xfr.key", key)
    server = serve(zone_dir, tmp / "xfr.key", _free_port(), tmp / "authority.log")
    try:
        print(f"quiet:       {measure(server.port, 3.0).summary()}")
        load = start_load(
            server.port, key.to_line(), non_readers=readers, axfrs=axfrs, seconds=seconds + 3,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
        try:
            time.sleep(2.0)
            during = measure(server.port, seconds)
            abuse = load.result(timeout=seconds + 60)
        finally:
            load.kill()
        print(f"under abuse: {during.summary()}")
        print(f"abuse:       {abuse}")
    finally:
        server.stop()


def bench_kill(tmp: Path, rounds: int) -> None:
    started = time.monotonic()
    result = crash_rounds(tmp, rounds, seed=int(time.time()))
    print(
        f"kill -9 rounds: {result.as_dict()} in {time.monotonic() - started:.1f} s: nothing "
        f"lost, serial grown each round, zone checked by {', '.join(result.checkers)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--names", type=int, default=None, help="TLSA names in the zone")
    parser.add_argument("--updates", type=int, default=200, help="single-record updates")
    parser.add_argument("--batch", type=int, default=4000, help="records published in batches")
    parser.add_argument("--size", type=int, default=500, help="records per batched update")
    parser.add_argument("--abuse", action="store_true", help="latency under abuse (see above)")
    parser.add_argument("--seconds", type=float, default=20.0, help="abuse duration")
    parser.add_argument("--non-readers", type=int, default=100)
    parser.add_argument("--axfrs", type=int, default=8)
    parser.add_argument("--kill-rounds", type=int, default=0, metavar="R")
    parser.add_argument("--quick", action="store_true", help="fewer updates (make bench-quick)")
    args = parser.parse_args()
    if args.abuse or args.kill_rounds:
        with tempfile.TemporaryDirectory(prefix="dance-bench-") as tmp:
            if args.abuse:
                names = args.names or 3000
                print(f"abuse: {args.non_readers} non-readers, {args.axfrs} looping AXFRs "
                      f"of {names} names, {args.seconds:.0f} s")  # fmt: skip
                bench_abuse(Path(tmp) / "abuse", names, args.seconds, args.non_readers, args.axfrs)
            if args.kill_rounds:
                (Path(tmp) / "kill").mkdir()
                bench_kill(Path(tmp) / "kill", args.kill_rounds)
        return
    args.names = args.names or 10000
    if args.quick:
        args.updates, args.batch = min(args.updates, 60), min(args.batch, 1000)
    print(
        f"zone {ZONE} with {args.names} TLSA names, ECDSA P-256, NSEC3; updates over TCP "
        "with TSIG (HMAC-SHA256) from one client"
    )
    with tempfile.TemporaryDirectory(prefix="dance-bench-") as tmp:
        dance = bench_dance(Path(tmp), args.names, args.updates, args.batch, args.size)
        knot = bench_knot(Path(tmp), args.names, args.updates, args.batch, args.size)
    out = Results("bench_authority", quick=args.quick)
    peer = "knot" if knot else None
    k = knot or {}
    out.add(f"initial signing, {args.names} names (NSEC3)", dance["start"], "s", peer=peer,
            peer_value=k.get("start"), target="<= 2.0x")  # fmt: skip
    out.add(f"bulk publication, updates of {args.size}", dance["records"], "records/s",
            peer=peer, peer_value=k.get("records"), target=">= 0.5x")  # fmt: skip
    out.add(f"one-record update p99 ({args.updates} updates)", dance["p99"], "ms", peer=peer,
            peer_value=k.get("p99"), target="<= 20")  # fmt: skip
    out.add("one-record update median", dance["median"], "ms", peer=peer,
            peer_value=k.get("median"))  # fmt: skip
    out.add("one-record update CPU of the server process", dance["cpu"],
            "ms", peer=peer, peer_value=k.get("cpu"))  # fmt: skip
    out.note(
        "Initial signing: dance's authority built in the benchmark's process, knotd from its "
        "start until it serves the signed zone. Updates: `dance authority` and knotd each in "
        "their own process (knotd with its default threads), the same client; latencies are "
        "wall-clock, end to end (TCP connection, TSIG, signing, journal fsync)."
    )
    out.write()


if __name__ == "__main__":
    main()
