"""The fast RRset signer: signatures dnspython validates, the same RRSIG records as
dnspython's signer makes, in this process or in worker processes."""

from __future__ import annotations

import sys

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdatatype
import dns.rrset
import pytest

from dance.zone import signing
from dance.zone.zones import SigningKey, Zone

ORIGIN = dns.name.from_text("example.test.")
NOW = 1_800_000_000


def _validate_all(zone: Zone) -> int:
    snap = zone.snapshot
    keys = {snap.origin: snap.rrsets[snap.origin][dns.rdatatype.DNSKEY]}
    rrsets = [r for node in snap.rrsets.values() for r in node.values()]
    if snap.nsec3 is not None:
        rrsets += list(snap.nsec3.rrsets.values())
    for rrset in rrsets:
        sig = snap.sigs[rrset.name][dns.rdatatype.RdataType.make(rrset.rdtype)]
        dns.dnssec.validate(rrset, sig, keys, now=NOW)
    return len(rrsets)


def _zone(names: int) -> Zone:
    zone = Zone(ORIGIN)
    for i in range(names):
        zone.add(f"d{i}._device", "TLSA", f"3 1 1 {i:064x}")
    zone.add("*.wild", "TXT", '"wildcard"')
    return zone


@pytest.mark.parametrize("algorithm", [13, 15])
@pytest.mark.parametrize("cpus", [2, 3])
def test_parallel_signing_validates(
    monkeypatch: pytest.MonkeyPatch, algorithm: int, cpus: int
) -> None:
    monkeypatch.setattr(signing, "PARALLEL_MIN", 8)
    monkeypatch.setattr(signing, "_cpus", lambda: cpus)
    signing.shutdown_workers()
    zone = _zone(40).sign(algorithm, "nsec3", now=NOW)
    assert len(signing._workers) == cpus - 1  # the work was shared
    assert _validate_all(zone) > 80
    signing.shutdown_workers()
    assert signing._workers == []


def test_worker_failure_falls_back_to_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signing, "PARALLEL_MIN", 8)
    monkeypatch.setattr(signing, "_cpus", lambda: 2)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    signing.shutdown_workers()
    zone = _zone(20).sign(13, "nsec", now=NOW)
    assert signing._workers == []
    assert _validate_all(zone) > 40


def test_rrsig_equals_dnspython_signer_output() -> None:
    key = SigningKey.generate(15, ksk=False)  # Ed25519: deterministic signatures
    rrset = dns.rrset.from_text("*.Wild.example.test.", 300, "IN", "TXT", '"b"', '"a"')
    ours = key.sign(rrset, ORIGIN, NOW - 10, NOW + 10)
    theirs = dns.dnssec.sign(rrset, key.private_key, ORIGIN, key.dnskey,
                             inception=NOW - 10, expiration=NOW + 10)  # fmt: skip
    assert ours == theirs and ours.to_wire() == theirs.to_wire()
    assert ours.labels == 3  # wild.example.test: the wildcard label is not counted
    assert hash(ours) == hash(theirs)  # found in sets of dnspython's records
    assert ours in {theirs} and theirs in {ours}
    other = rrset.copy()
    other.ttl = 60
    assert key.sign(other, ORIGIN, NOW - 10, NOW + 10) != ours  # the TTL is signed
