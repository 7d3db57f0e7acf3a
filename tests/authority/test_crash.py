"""Nothing published is lost (issue 13, item 5): ``kill -9`` of ``dance authority`` while a
publisher sends dynamic updates in a loop (single records, bulk updates of 20 records, and
TLSA rollovers that add the new record and delete the old one in one update). After each
restart the zone is consistent (every rollover name holds exactly one record), the serial has
grown past every serial served before the kill, every acknowledged update is there, and the
signed zone validates with kzonecheck and ldns-verify-zone (from a TSIG AXFR) and through
Unbound. The authority has no DNSSEC key rollover to interrupt (its keys never change).

Three rounds here; ``python bench/bench_authority.py --kill-rounds N`` runs more."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.update
import dns.xfr
import dns.zone
import pytest

from dance.authority import TSIGKey, generate_tsig_key, write_tsig_key
from dance.authority.serial import serial_gt
from tests.authority.conftest import ZONE, make_zone_dir
from tests.authority.test_abuse import serve
from tests.conftest import require_binary
from tests.integration.servers import free_port, start_unbound


@dataclass
class Ledger:
    """What the authority acknowledged (NOERROR), as name -> the TLSA data it must hold."""

    published: dict[str, set[str]] = field(default_factory=dict)
    rollover: dict[str, str] = field(default_factory=dict)  # name -> the one current record
    acknowledged: int = 0
    errors: int = 0


def _hex(rng: random.Random) -> str:
    return f"3 1 1 {rng.getrandbits(256):064x}"


def publisher(port: int, key: TSIGKey, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    """Updates in a loop until ``stop`` (or the server is gone); only NOERROR is recorded."""
    rng = random.Random(seed)
    ring = {key.dns_name: key.to_dnspython()}
    serial = 0
    while not stop.is_set():
        update = dns.update.UpdateMessage(ZONE, keyring=ring, keyname=key.dns_name)
        kind = rng.choice(("single", "bulk", "rollover"))
        adds: dict[str, set[str]] = {}
        roll: tuple[str, str] | None = None
        if kind == "rollover":
            name = f"roll{rng.randrange(5)}._device.{ZONE}"
            new = _hex(rng)
            update.delete(name, "TLSA")
            update.add(name, 300, "TLSA", new)
            roll = (name, new)
        else:
            for _ in range(1 if kind == "single" else 20):
                name = f"s{seed}-{serial}._device.{ZONE}"
                serial += 1
                data = _hex(rng)
                update.add(name, 300, "TLSA", data)
                adds.setdefault(name, set()).add(data)
        try:
            response = dns.query.tcp(update, "127.0.0.1", port=port, timeout=5)
        except (OSError, dns.exception.DNSException, EOFError):
            ledger.errors += 1
            time.sleep(0.05)
            continue
        if response.rcode() != dns.rcode.NOERROR:
            continue
        ledger.acknowledged += 1
        for name, values in adds.items():
            ledger.published.setdefault(name, set()).update(values)
        if roll is not None:
            ledger.rollover[roll[0]] = roll[1]


def soa_serial(port: int) -> int:
    answer = dns.query.udp(dns.message.make_query(ZONE, "SOA"), "127.0.0.1", port=port, timeout=3)
    return int(answer.answer[0][0].serial)


def transfer(port: int, key: TSIGKey) -> dns.zone.Zone:
    zone = dns.zone.Zone(ZONE, relativize=False)
    query, _ = dns.xfr.make_query(zone)
    query.use_tsig({key.dns_name: key.to_dnspython()}, keyname=key.dns_name)
    dns.query.inbound_xfr("127.0.0.1", zone, query, port=port, timeout=20)
    return zone


def check_zone(zone: dns.zone.Zone, ledger: Ledger, path: Path) -> None:
    """Every acknowledged record is there; rollover names hold exactly one record; the
    signed zone passes the independent checkers."""
    for name, values in ledger.published.items():
        rdataset = zone.get_rdataset(name, "TLSA")
        assert rdataset is not None, f"acknowledged {name} lost"
        assert values <= {rd.to_text() for rd in rdataset}, name
    for name in (f"roll{i}._device.{ZONE}" for i in range(5)):
        rdataset = zone.get_rdataset(name, "TLSA")
        if name in ledger.rollover:
            assert rdataset is not None and len(rdataset) == 1, (name, rdataset)
    path.write_text(zone.to_text(relativize=False))
    if shutil.which("kzonecheck"):
        done = subprocess.run(
            ["kzonecheck", "-d", "on", "-o", ZONE, str(path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr
    if shutil.which("ldns-verify-zone"):
        done = subprocess.run(
            ["ldns-verify-zone", str(path)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr


def crash_rounds(workdir: Path, rounds: int, seed: int = 1) -> dict[str, int]:
    """Run ``rounds`` kill -9 / restart rounds; raises AssertionError on any loss."""
    if not (shutil.which("kzonecheck") or shutil.which("ldns-verify-zone")):
        require_binary("kzonecheck", "ldns-verify-zone")
    require_binary("unbound")
    rng = random.Random(seed)
    zone_dir, anchor = make_zone_dir(workdir, "nsec3")
    key = generate_tsig_key("dance-update")
    key_file = workdir / "update.key"
    write_tsig_key(key_file, key)
    port = free_port()
    ledger = Ledger()
    process = serve(zone_dir, key_file, port, workdir / "authority-0.log")
    try:
        for round_ in range(rounds):
            stop = threading.Event()
            thread = threading.Thread(
                target=publisher, args=(port, key, ledger, stop, round_), daemon=True
            )
            thread.start()
            time.sleep(rng.uniform(0.4, 1.2))  # updates are being applied and written
            before = soa_serial(port)
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            stop.set()
            thread.join(15)
            process = serve(zone_dir, key_file, port, workdir / f"authority-{round_ + 1}.log")
            after = soa_serial(port)
            assert serial_gt(after, before), (before, after)
            check_zone(transfer(port, key), ledger, workdir / f"round{round_}.zone")
        unbound = start_unbound(workdir / "unbound", anchor, {"example.test": port})
        try:
            names = [*rng.sample(sorted(ledger.published), min(5, len(ledger.published)))]
            names += sorted(ledger.rollover)[:2]
            for name in names:
                query = dns.message.make_query(name, "TLSA", want_dnssec=True)
                answer = dns.query.tcp(query, "127.0.0.1", port=unbound.port, timeout=10)
                assert answer.rcode() == dns.rcode.NOERROR and answer.answer, answer
                assert answer.flags & dns.flags.AD, (name, unbound.logs())
        finally:
            unbound.stop()
    finally:
        process.terminate()
        process.wait(20)
    return {
        "rounds": rounds,
        "acknowledged_updates": ledger.acknowledged,
        "records": sum(len(v) for v in ledger.published.values()),
        "errors_during_kills": ledger.errors,
    }


@pytest.mark.integration
def test_kill_9_loses_no_acknowledged_update(tmp_path: Path) -> None:
    result = crash_rounds(tmp_path, rounds=3)
    print(f"\n{result}")
    assert result["acknowledged_updates"] >= 10  # the rounds really published
