"""Nothing published is lost: ``kill -9`` of ``dance authority`` while a publisher sends
dynamic updates, then restart and check.

:func:`crash_rounds` runs ``dance authority`` (:func:`dance.testkit.authority.serve`) on an
NSEC3 zone and, each round, a publisher thread that sends TSIG updates in a loop: single
records, bulk updates of 20 records, and TLSA rollovers that delete a name's record and add a
new one in one update. At a random moment the server gets SIGKILL and is started again on the
same port. After each restart:

* the SOA serial has grown past the serial served just before the kill (RFC 1982);
* every update acknowledged (NOERROR) before the kill is in the zone (taken by TSIG AXFR);
* every rollover name holds exactly one record (never both, never none);
* the signed zone passes ``kzonecheck -d on`` and ``ldns-verify-zone`` (those installed; at
  least one must be).

At the end a validating Unbound (trusting the zone's key) answers a sample of the
acknowledged names with the AD bit. Any violation raises `CrashCheckFailed` with a stable
``reason`` and a precise message; success returns a `CrashResult`. The authority has no
DNSSEC key rollover to interrupt (its keys never change).

Used by tests/authority/test_crash.py (three rounds) and ``bench/bench_authority.py
--kill-rounds R``. Needs ``unbound`` and ``kzonecheck`` or ``ldns-verify-zone``; a missing
binary raises :class:`dance.testkit.servers.MissingServer` (or whatever the test suite's
``BINARY_FINDER`` does: skip or fail).
"""

from __future__ import annotations

import logging
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.update
import dns.xfr
import dns.zone

from dance.authority.serial import serial_gt
from dance.testkit.authority import ZONE, make_zone_dir, serve
from dance.testkit.servers import (
    MissingServer,
    find_binary,
    free_port,
    require_binary,
    start_unbound,
)
from dance.tsig import TSIGKey, generate_tsig_key, write_tsig_key

__all__ = [
    "CrashCheckFailed",
    "CrashResult",
    "Ledger",
    "check_zone",
    "crash_rounds",
    "publisher",
    "soa_serial",
    "transfer",
]

logger = logging.getLogger(__name__)

#: Names whose TLSA record is replaced (delete + add in one update) by the publisher.
ROLLOVER_NAMES = tuple(f"roll{i}._device.{ZONE}" for i in range(5))


class CrashCheckFailed(RuntimeError):
    """A check after a crash failed. ``reason`` is stable: ``serial-not-grown``,
    ``no-soa``, ``acknowledged-lost`` (a name is gone), ``acknowledged-data-lost`` (a record of
    a name is gone), ``rollover-not-one`` (a rollover name holds no record or several),
    ``kzonecheck``, ``ldns-verify-zone``, ``unbound-not-validated``, ``publisher-stuck``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass
class Ledger:
    """What the authority acknowledged (NOERROR), as name -> the TLSA data it must hold."""

    published: dict[str, set[str]] = field(default_factory=dict)
    rollover: dict[str, str] = field(default_factory=dict)  # name -> the one current record
    acknowledged: int = 0
    errors: int = 0


@dataclass(frozen=True)
class CrashResult:
    """What the rounds did; every check passed."""

    rounds: int
    acknowledged_updates: int
    records: int
    errors_during_kills: int
    serials: tuple[tuple[int, int], ...]  # per round: served before the kill, after the restart
    checkers: tuple[str, ...]  # the zone checkers run each round
    validated_names: int  # names Unbound answered with AD

    def as_dict(self) -> dict[str, int]:
        """The counters, for printing."""
        return {
            "rounds": self.rounds,
            "acknowledged_updates": self.acknowledged_updates,
            "records": self.records,
            "errors_during_kills": self.errors_during_kills,
            "validated_names": self.validated_names,
        }


def _tlsa_data(rng: random.Random) -> str:
    return f"3 1 1 {rng.getrandbits(256):064x}"


def publisher(port: int, key: TSIGKey, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    """Send updates to ``127.0.0.1:port`` in a loop until ``stop``; only NOERROR answers are
    recorded in ``ledger`` (a failed exchange counts in ``ledger.errors``)."""
    rng = random.Random(seed)
    ring = {key.dns_name: key.to_dnspython()}
    serial = 0
    while not stop.is_set():
        update = dns.update.UpdateMessage(ZONE, keyring=ring, keyname=key.dns_name)
        kind = rng.choice(("single", "bulk", "rollover"))
        adds: dict[str, set[str]] = {}
        roll: tuple[str, str] | None = None
        if kind == "rollover":
            name = rng.choice(ROLLOVER_NAMES)
            new = _tlsa_data(rng)
            update.delete(name, "TLSA")
            update.add(name, 300, "TLSA", new)
            roll = (name, new)
        else:
            for _ in range(1 if kind == "single" else 20):
                name = f"s{seed}-{serial}._device.{ZONE}"
                serial += 1
                data = _tlsa_data(rng)
                update.add(name, 300, "TLSA", data)
                adds.setdefault(name, set()).add(data)
        try:
            response = dns.query.tcp(update, "127.0.0.1", port=port, timeout=5)
        except (OSError, EOFError, dns.exception.DNSException):
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
    """The serial of the zone's SOA served on ``127.0.0.1:port`` (UDP). Raises
    `CrashCheckFailed` (``no-soa``) if the answer has none."""
    query = dns.message.make_query(ZONE, "SOA")
    answer = dns.query.udp(query, "127.0.0.1", port=port, timeout=3)
    for rrset in answer.answer:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return int(rrset[0].serial)
    raise CrashCheckFailed("no-soa", f"no SOA for {ZONE} (rcode {answer.rcode()})")


def transfer(port: int, key: TSIGKey) -> dns.zone.Zone:
    """The zone, by TSIG-signed AXFR from ``127.0.0.1:port``."""
    zone = dns.zone.Zone(ZONE, relativize=False)
    query, _ = dns.xfr.make_query(zone)
    query.use_tsig({key.dns_name: key.to_dnspython()}, keyname=key.dns_name)
    dns.query.inbound_xfr("127.0.0.1", zone, query, port=port, timeout=20)
    return zone


def _checkers() -> dict[str, str]:
    """The zone checkers installed (name -> path)."""
    found = {}
    for name in ("kzonecheck", "ldns-verify-zone"):
        try:
            found[name] = find_binary(name)
        except MissingServer:
            continue
    return found


def check_zone(
    zone: dns.zone.Zone, ledger: Ledger, path: Path, checkers: dict[str, str] | None = None
) -> tuple[str, ...]:
    """Every acknowledged record is in ``zone``; rollover names hold exactly one record; the
    signed zone (written to ``path``) passes the independent checkers (default: those
    installed). Returns the names of the checkers run; raises `CrashCheckFailed`."""
    for name, values in sorted(ledger.published.items()):
        rdataset = zone.get_rdataset(name, "TLSA")
        if rdataset is None:
            raise CrashCheckFailed("acknowledged-lost", f"acknowledged {name} TLSA is gone")
        missing = values - {rd.to_text() for rd in rdataset}
        if missing:
            raise CrashCheckFailed(
                "acknowledged-data-lost",
                f"{name} lost acknowledged TLSA {sorted(missing)} (holds {rdataset})",
            )
    for name in ROLLOVER_NAMES:
        if name not in ledger.rollover:
            continue
        rdataset = zone.get_rdataset(name, "TLSA")
        if rdataset is None or len(rdataset) != 1:
            raise CrashCheckFailed(
                "rollover-not-one", f"{name} must hold exactly one TLSA record, holds {rdataset}"
            )
    path.write_text(zone.to_text(relativize=False))
    tools = _checkers() if checkers is None else checkers
    if "kzonecheck" in tools:
        done = subprocess.run(
            [tools["kzonecheck"], "-d", "on", "-o", ZONE, str(path)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if done.returncode != 0 or done.stdout.strip():
            raise CrashCheckFailed(
                "kzonecheck", f"{path} (status {done.returncode}): {done.stdout}{done.stderr}"
            )
    if "ldns-verify-zone" in tools:
        done = subprocess.run(
            [tools["ldns-verify-zone"], str(path)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise CrashCheckFailed(
                "ldns-verify-zone",
                f"{path} (status {done.returncode}): {done.stdout}{done.stderr}",
            )
    return tuple(name for name in ("kzonecheck", "ldns-verify-zone") if name in tools)


def crash_rounds(workdir: Path, rounds: int, seed: int = 1) -> CrashResult:
    """Run ``rounds`` kill -9 / restart rounds in ``workdir`` (an existing, empty directory);
    raises `CrashCheckFailed` on any violation (see the module docstring),
    :class:`dance.testkit.authority.AuthorityStartFailed` if a restart fails."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, not {rounds}")
    checkers = _checkers()
    if not checkers:
        require_binary("kzonecheck", "ldns-verify-zone")  # raises, or the suite skips
    require_binary("unbound")
    rng = random.Random(seed)
    zone_dir, anchor = make_zone_dir(workdir, "nsec3")
    key = generate_tsig_key("dance-update")
    key_file = workdir / "update.key"
    write_tsig_key(key_file, key)
    port = free_port()
    ledger = Ledger()
    serials: list[tuple[int, int]] = []
    server = serve(zone_dir, key_file, port, workdir / "authority-0.log")
    try:
        for round_ in range(rounds):
            stop = threading.Event()
            thread = threading.Thread(
                target=publisher, args=(port, key, ledger, stop, round_), daemon=True
            )
            thread.start()
            time.sleep(rng.uniform(0.4, 1.2))  # updates are being applied and written
            before = soa_serial(port)
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(10)
            stop.set()
            thread.join(15)
            if thread.is_alive():  # it could record an update after the checks below
                raise CrashCheckFailed("publisher-stuck", "the publisher did not stop in 15 s")
            server = serve(zone_dir, key_file, port, workdir / f"authority-{round_ + 1}.log")
            after = soa_serial(port)
            if not serial_gt(after, before):
                raise CrashCheckFailed(
                    "serial-not-grown",
                    f"round {round_}: serial {after} after the restart, {before} served before",
                )
            serials.append((before, after))
            check_zone(transfer(port, key), ledger, workdir / f"round{round_}.zone", checkers)
            logger.info("round %d: serial %d -> %d, %d acknowledged", round_, before, after,
                        ledger.acknowledged)  # fmt: skip
        validated = _validate(workdir, anchor, port, ledger, rng)
    finally:
        server.stop()
    return CrashResult(
        rounds=rounds,
        acknowledged_updates=ledger.acknowledged,
        records=sum(len(v) for v in ledger.published.values()),
        errors_during_kills=ledger.errors,
        serials=tuple(serials),
        checkers=tuple(checkers),
        validated_names=validated,
    )


def _validate(workdir: Path, anchor: str, port: int, ledger: Ledger, rng: random.Random) -> int:
    """Ask a validating Unbound for a sample of the acknowledged names; each must be answered
    with data and the AD bit. Returns the number of names asked."""
    unbound = start_unbound(workdir / "unbound", anchor, {ZONE.rstrip("."): port})
    try:
        names = rng.sample(sorted(ledger.published), min(5, len(ledger.published)))
        names += sorted(ledger.rollover)[:2]
        for name in names:
            query = dns.message.make_query(name, "TLSA", want_dnssec=True)
            answer = dns.query.tcp(query, "127.0.0.1", port=unbound.port, timeout=10)
            if answer.rcode() != dns.rcode.NOERROR or not answer.answer:
                raise CrashCheckFailed(
                    "unbound-not-validated",
                    f"{name} TLSA: {dns.rcode.to_text(answer.rcode())}, no answer\n"
                    f"{unbound.logs()}",
                )
            if not answer.flags & dns.flags.AD:
                raise CrashCheckFailed(
                    "unbound-not-validated", f"{name} TLSA answered without AD\n{unbound.logs()}"
                )
        return len(names)
    finally:
        unbound.stop()
