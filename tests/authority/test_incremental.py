"""Incremental re-signing (patch_zone) gives the same zone as signing everything again."""

from __future__ import annotations

import random
from pathlib import Path

import dns.dnssec
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import dns.update
import pytest

from dance.authority.signer import (
    SignatureCache,
    SigningWindow,
    build_zone,
    caching_keys,
    patch_zone,
    sorted_owners,
)
from dance.authority.store import Records, ZoneDir
from dance.authority.update import apply_update
from dance.zone.zones import SignedZone

ORIGIN = dns.name.from_text("example.test.")
LABELS = ["a", "b", "c", "*", "_device", "x-1", "zz"]


def _content(zone: SignedZone) -> dict[str, object]:
    rrsets = {
        (n.to_text(), int(t)): (r.ttl, sorted(rd.to_text() for rd in r))
        for n, node in zone.rrsets.items()
        for t, r in node.items()
    }
    sig_shape = sorted((n.to_text(), int(t)) for n, node in zone.sigs.items() for t in node)
    out: dict[str, object] = {
        "rrsets": rrsets,
        "sigs": sig_shape,
        "names": sorted(n.to_text() for n in zone.names),
        "nsec_chain": [n.to_text() for n in zone.nsec_chain],
        "negative_ttl": zone.negative_ttl,
    }
    if zone.nsec3 is not None:
        out["nsec3"] = {
            "hashes": zone.nsec3.hashes,
            "original": sorted((k.to_text(), v.to_text()) for k, v in zone.nsec3.original.items()),
            "rrsets": sorted(r.to_text() for r in zone.nsec3.rrsets.values()),
        }
    return out


def _check_signatures(zone: SignedZone) -> None:
    dnskeys = zone.rrsets[zone.origin][dns.rdatatype.DNSKEY]
    keys = {zone.origin: dnskeys}
    all_rrsets = [r for node in zone.rrsets.values() for r in node.values()]
    if zone.nsec3 is not None:
        all_rrsets += list(zone.nsec3.rrsets.values())
    for rrset in all_rrsets:
        sig = zone.sigs.get(rrset.name, {}).get(dns.rdatatype.RdataType.make(rrset.rdtype))
        cut = zone.find_cut(rrset.name)
        if cut is not None and not (cut == rrset.name and rrset.rdtype == dns.rdatatype.DS):
            continue  # delegation NS and glue are not signed
        assert sig is not None, rrset
        dns.dnssec.validate(rrset, sig, keys, now=zone.params.now)  # type: ignore[union-attr]


def _random_update(rng: random.Random, records: Records) -> dns.update.UpdateMessage:
    update = dns.update.UpdateMessage(ORIGIN)
    for _ in range(rng.randint(1, 4)):
        depth = rng.randint(1, 3)
        labels = [rng.choice(LABELS) for _ in range(depth)]
        if "*" in labels[1:]:
            labels = [lb for lb in labels if lb != "*"] or ["a"]
        name = ".".join(labels)
        existing = [n for n in records if n != ORIGIN]
        roll = rng.random()
        if roll < 0.5:
            update.add(name, 300, "TLSA", f"3 1 1 {rng.getrandbits(256):064x}")
        elif roll < 0.6:
            update.add(name, 300, "TXT", f'"t{rng.randint(0, 3)}"')
        elif roll < 0.9 and existing:
            update.delete(rng.choice(existing))
        elif roll < 0.95 and existing:
            update.delete(rng.choice(existing), "TLSA")
        else:
            update.add("@", 300, "TXT", '"apex change: full build"')
    return dns.message.from_wire(update.to_wire())  # type: ignore[return-value]


@pytest.mark.parametrize("denial", ["nsec", "nsec3"])
@pytest.mark.parametrize("seed", [1, 2])
def test_patch_equals_full_build(tmp_path: Path, denial: str, seed: int) -> None:
    store = ZoneDir(tmp_path)
    policy = store.init_zone(ORIGIN, denial=denial)  # type: ignore[arg-type]
    records = store.read_records(ORIGIN)
    keys = caching_keys(policy.keys, SignatureCache())
    window = SigningWindow().current()
    zone = build_zone(ORIGIN, records, policy, keys, window)
    owners = sorted_owners(zone.snapshot)
    rng = random.Random(seed)
    patched_count = 0
    for _ in range(60):
        result = apply_update(records, ORIGIN, _random_update(rng, records))
        if not result.changed:
            continue
        assert result.records is not None
        patched = patch_zone(
            zone.snapshot, owners, result.records, set(result.touched), keys, window
        )
        full = build_zone(ORIGIN, result.records, policy, keys, window)
        if patched is not None:
            patched_count += 1
            assert _content(patched) == _content(full.snapshot)
            _check_signatures(patched)
            zone.install(patched)
        else:
            zone = full
            owners = sorted_owners(full.snapshot)
        assert owners == sorted_owners(full.snapshot)
        records = result.records
    assert patched_count > 20


def test_patch_signs_only_what_changed(tmp_path: Path) -> None:
    store = ZoneDir(tmp_path)
    policy = store.init_zone(ORIGIN, denial="nsec3")
    records = store.read_records(ORIGIN)
    update = dns.update.UpdateMessage(ORIGIN)
    for i in range(200):
        update.add(f"d{i}._device", 300, "TLSA", f"3 1 1 {i:064x}")
    records = apply_update(records, ORIGIN, dns.message.from_wire(update.to_wire())).records  # type: ignore[arg-type, assignment]
    assert records is not None
    cache = SignatureCache()
    keys = caching_keys(policy.keys, cache)
    window = SigningWindow().current()
    zone = build_zone(ORIGIN, records, policy, keys, window)
    owners = sorted_owners(zone.snapshot)
    one = dns.update.UpdateMessage(ORIGIN)
    one.add("new._device", 300, "TLSA", "3 1 1 " + "ab" * 32)
    result = apply_update(records, ORIGIN, dns.message.from_wire(one.to_wire()))  # type: ignore[arg-type]
    assert result.records is not None
    before = cache.misses
    patched = patch_zone(zone.snapshot, owners, result.records, set(result.touched), keys, window)
    assert patched is not None
    # the TLSA, the SOA, and NSEC3 records: the new name's and its predecessor's
    assert cache.misses - before <= 4
