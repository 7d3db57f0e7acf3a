"""Zone building, signing parameters, keys and trust-anchor export."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import time

import dns.dnssec
import dns.name
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest
from _testkit_support import NOW, TLSA_EE, nsec_covers, q, rrsets, validate_all

from dance.testkit import Fault, Hierarchy, Zone, ZoneSet, dance_example

T = dns.rdatatype.RdataType
N = dns.name.from_text


def test_fluent_build_and_explicit_times() -> None:
    parent = Zone("example.test", ttl=600)
    child = Zone("_device.example.test", ttl=120)
    child.add("sensor7", "TLSA", TLSA_EE).add("*", "TLSA", "2 0 1 " + "cd" * 32, ttl=60)
    child.sign(15, "nsec3", inception=NOW - 10, expiration=NOW + 3600)
    parent.delegate("_device", child=child, digest_type=(2, 4)).sign(15, now=NOW)
    zs = ZoneSet(parent, child)
    response = q(zs, "sensor7._device.example.test.", "TLSA")
    rrsig = next(iter(rrsets(response.answer, T.RRSIG)[0]))
    assert (rrsig.inception, rrsig.expiration, rrsig.algorithm) == (NOW - 10, NOW + 3600, 15)
    assert response.answer[0].ttl == 120
    assert q(zs, "x._device.example.test.", "TLSA").answer[0].ttl == 60
    ds = q(zs, "_device.example.test.", "DS").answer[0]
    assert sorted(rd.digest_type for rd in ds) == [2, 4]
    parent_sig = next(iter(rrsets(q(zs, "example.test.", "SOA").answer, T.RRSIG)[0]))
    assert parent_sig.inception == NOW - 3600 and parent_sig.expiration == NOW + 30 * 86400
    validate_all(zs, response)


def test_keys_kept_across_resign_and_record_removal() -> None:
    h = Hierarchy("test.")
    device = h.child("_device.test.")
    device.add("sensor7", "TLSA", TLSA_EE)
    h.sign(now=NOW)
    keys = device.keys
    assert keys is not None and keys.ksk.is_ksk and not keys.zsk.is_ksk
    device.remove("sensor7", "TLSA")
    assert device.dirty
    assert q(h, "sensor7._device.test.", "TLSA").answer  # old snapshot until re-signed
    device.sign(now=NOW)
    assert device.keys is keys
    response = q(h, "sensor7._device.test.", "TLSA")
    assert response.rcode() == 3
    validate_all(h, response)


def test_csk_and_algorithm_change_regenerates_keys() -> None:
    zone = Zone("csk.test").sign(13, csk=True, now=NOW)
    keys = zone.keys
    assert keys is not None and keys.is_csk and len(keys.dnskeys()) == 1
    zone.sign(8, now=NOW)
    assert zone.keys is not None and zone.keys.algorithm == 8 and not zone.keys.is_csk
    validate_all(ZoneSet(zone), q(ZoneSet(zone), "csk.test.", "DNSKEY"))


def test_add_rejects_invalid_data() -> None:
    zone = Zone("example.test")
    with pytest.raises(ValueError, match="signer"):
        zone.add("@", "RRSIG", "A 13 2 300 20300101000000 20290101000000 1 example.test. AA==")
    with pytest.raises(ValueError, match="not in zone"):
        zone.add("www.example.com.", "A", "192.0.2.1")
    zone.add("www", "A", "192.0.2.1")
    with pytest.raises(ValueError, match="CNAME"):
        zone.add("www", "CNAME", "other")
    with pytest.raises(ValueError, match="CNAME"):
        zone.add("@", "CNAME", "other")
    zone.add("c", "CNAME", "www")
    with pytest.raises(ValueError, match="CNAME"):
        zone.add("c", "TXT", '"x"')
    with pytest.raises(ValueError, match="DS"):
        zone.add("sub", "DS", "1 13 2 " + "00" * 32)
    with pytest.raises(ValueError, match="strictly below"):
        zone.delegate("@")
    with pytest.raises(ValueError, match="child= "):
        zone.delegate("sub", signed=True)
    with pytest.raises(ValueError, match="does not match"):
        zone.delegate("sub", child=Zone("other.test"))
    with pytest.raises(ValueError, match="signer"):
        zone.add("fresh", "NSEC", "www.example.test. A")
    zone.sign(now=NOW)
    assert N("fresh.example.test.") not in zone.snapshot.names  # failed adds leave nothing


def test_parent_before_child_is_an_error() -> None:
    child = Zone("c.example.test")
    parent = Zone("example.test").delegate("c", child=child)
    with pytest.raises(ValueError, match="sign child zone"):
        parent.sign(now=NOW)
    # served unsigned, the broken parent answers SERVFAIL instead of raising
    assert q(ZoneSet(parent), "www.example.test.", "A").rcode() == 2


def test_literal_ds_and_out_of_zone_nameservers() -> None:
    parent = Zone("example.test")
    parent.delegate(
        "ext",
        nameservers=["ns.provider.invalid.", "ns1.ext"],
        addresses={"ns1.ext": ["192.0.2.53", "2001:db8::53"]},
        ds=["12345 13 2 " + "aa" * 32],
    )
    parent.sign(now=NOW)
    zs = ZoneSet(parent)
    response = q(zs, "www.ext.example.test.", "A")
    assert rrsets(response.authority, T.DS)
    glue = {r.rdtype for r in response.additional if r.name == N("ns1.ext.example.test.")}
    assert glue == {T.A, T.AAAA}


def test_unsigned_zone_and_publish_unsigned() -> None:
    zone = Zone("plain.test").add("www", "A", "192.0.2.1")
    zs = ZoneSet(zone)
    response = q(zs, "www.plain.test.", "A")
    assert response.answer and not rrsets(response.answer, T.RRSIG)
    zone.add("new", "A", "192.0.2.2")  # unsigned snapshots follow the records
    assert q(zs, "new.plain.test.", "A").answer
    zone.sign(now=NOW)
    assert rrsets(q(zs, "www.plain.test.", "A").answer, T.RRSIG)
    zone.publish_unsigned()
    assert zone.unsigned_by_choice and not zone.is_signed
    zs.sign(now=NOW)  # skips zones published unsigned on purpose
    assert not zone.is_signed


def test_zone_text_round_trip() -> None:
    h = Hierarchy("test.")
    device = h.child("_device.test.")
    device.add("sensor7", "TLSA", TLSA_EE)
    h.sign(denial="nsec3", now=NOW)
    text = device.snapshot.to_text()
    parsed = dns.zone.from_text(text, origin="_device.test.", relativize=False)
    nsec3 = [n for n, node in parsed.nodes.items() if node.get_rdataset(1, T.NSEC3)]
    assert len(nsec3) == 3  # apex, ns1, sensor7
    assert parsed.get_rdataset("sensor7._device.test.", "TLSA") is not None
    keys = parsed.get_rrset("_device.test.", "DNSKEY")
    assert keys is not None
    rrsig = parsed.get_rdataset("sensor7._device.test.", "RRSIG", "TLSA")
    tlsa = parsed.get_rrset("sensor7._device.test.", "TLSA")
    assert rrsig is not None and tlsa is not None
    sig = dns.rrset.from_rdata_list("sensor7._device.test.", rrsig.ttl, list(rrsig))
    dns.dnssec.validate(tlsa, sig, {N("_device.test."): keys}, now=NOW)


def test_export_trust_anchor() -> None:
    h = Hierarchy("test.")
    h.child("example.test.")
    h.sign(now=NOW)
    text = h.export_trust_anchor()
    lines = text.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("test. ") for line in lines)
    parsed = dns.zone.from_text(text, origin="test.", relativize=False, check_origin=False)
    ds = parsed.get_rdataset("test.", "DS")
    dnskey = parsed.get_rdataset("test.", "DNSKEY")
    assert ds is not None and dnskey is not None
    (key,) = list(dnskey)
    assert key.flags == 257
    assert next(iter(ds)) == dns.dnssec.make_ds("test.", key, "SHA256")
    assert h.export_trust_anchor(dnskey=False).count("\n") == 1
    (anchor,) = h.trust_anchor_rrsets()
    assert next(iter(anchor)) == key
    assert [z.origin.to_text() for z in h.anchors()] == ["test."]


def test_root_zone_as_anchor() -> None:
    h = Hierarchy(".")
    tld = h.child("test.")
    tld.add("www", "A", "192.0.2.1")
    h.sign(now=NOW)
    assert h.export_trust_anchor().startswith(". ")
    response = q(h, "nothing.", "A")
    assert response.rcode() == 3
    assert any(nsec_covers(n, N("nothing.")) for n in rrsets(response.authority, T.NSEC))
    validate_all(h, response)
    assert q(h, "example.com.", "A").rcode() == 3  # the root holds everything


def test_fault_scoping_helpers() -> None:
    fault = Fault("bad-signature", zone="_device.test.", rdtype="TLSA")
    assert fault.matches_rrsig(N("a._device.test."), N("_device.test."), T.TLSA)
    assert not fault.matches_rrsig(N("a._device.test."), N("_device.test."), T.NSEC)
    assert not fault.matches_rrsig(N("a._device.test."), N("test."), T.TLSA)
    ds_fault = Fault("wrong-ds", zone="_device.test.")
    assert ds_fault.matches_delegation(N("_device.test."))
    assert not ds_fault.matches_delegation(N("other.test."))


@pytest.mark.parametrize(
    ("denial", "options"),
    [
        ("nsec", {}),
        ("nsec3", {}),
        ("nsec3", {"nsec3_optout": True}),
        ("nsec3", {"nsec3_iterations": 3, "nsec3_salt": b"\xaa\xbb"}),
    ],
)
def test_independent_zone_checkers(
    denial: str, options: dict[str, object], tmp_path: pathlib.Path
) -> None:
    """Knot's kzonecheck and ldns-verify-zone agree the signed zones are correct.

    Optional: the tools come from Debian's knot-dnssecutils and ldnsutils, which CI does not
    install; the test skips without them (Unbound's test is the mandatory real-validator check).
    """
    tools = [t for t in ("kzonecheck", "ldns-verify-zone") if shutil.which(t)]
    if not tools:
        pytest.skip("kzonecheck / ldns-verify-zone not installed")
    h = dance_example(denial, now=int(time.time()), **options)  # type: ignore[arg-type]
    for zone in h:
        if not zone.is_signed:
            continue
        path = tmp_path / f"{zone.origin.to_text()}zone"
        path.write_text(zone.snapshot.to_text())
        if "kzonecheck" in tools:
            done = subprocess.run(
                ["kzonecheck", "-d", "on", "-o", zone.origin.to_text(), str(path)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr
        if "ldns-verify-zone" in tools:
            done = subprocess.run(
                ["ldns-verify-zone", str(path)], capture_output=True, text=True, timeout=30
            )
            assert done.returncode == 0, done.stdout + done.stderr
