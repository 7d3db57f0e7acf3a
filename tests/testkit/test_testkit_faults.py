"""Injected faults really produce the fault, and go away when removed."""

from __future__ import annotations

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest
from _testkit_support import (
    NOW,
    build_hierarchy,
    nsec3_matches,
    nsec_types,
    q,
    rrsets,
    sigs_for,
    validate_all,
)

from dance.testkit import Fault, FaultKind, ZoneSet

T = dns.rdatatype.RdataType
N = dns.name.from_text
SENSOR = "sensor7._device.example.test."


def _tlsa_and_sig(zs: ZoneSet, name: str = SENSOR) -> tuple[object, object]:
    response = q(zs, name, "TLSA")
    tlsa = rrsets(response.answer, T.TLSA)[0]
    sigs = sigs_for(response.answer, tlsa.name, T.TLSA)
    return tlsa, (sigs[0] if sigs else None)


def _parent_only(zs: ZoneSet) -> ZoneSet:
    """The example.test. zone alone (so queries below _device get referrals), same faults."""
    parent = ZoneSet(zs["example.test."])
    parent.faults = zs.faults
    return parent


def _keys(zs: ZoneSet, zone: str) -> dict[dns.name.Name, object]:
    z = zs[zone]
    return {z.origin: z.snapshot.rrsets[z.origin][T.DNSKEY]}


def test_bad_signature(fresh_zs: ZoneSet) -> None:
    with fresh_zs.inject(Fault("bad-signature", SENSOR)):
        tlsa, sig = _tlsa_and_sig(fresh_zs)
        assert sig is not None
        with pytest.raises(dns.dnssec.ValidationFailure):
            dns.dnssec.validate(tlsa, sig, _keys(fresh_zs, "_device.example.test."), now=NOW)  # type: ignore[arg-type]
        # other names are untouched
        validate_all(fresh_zs, q(fresh_zs, "x.wild._device.example.test.", "TLSA"))
    validate_all(fresh_zs, q(fresh_zs, SENSOR, "TLSA"))  # removed on exit


def test_expired_rrsig(fresh_zs: ZoneSet) -> None:
    with fresh_zs.inject(Fault("expired-rrsig", SENSOR, rdtype="TLSA")):
        tlsa, sig = _tlsa_and_sig(fresh_zs)
        rd = next(iter(sig))  # type: ignore[call-overload]
        assert rd.expiration < NOW - 86400
        with pytest.raises(dns.dnssec.ValidationFailure):
            dns.dnssec.validate(tlsa, sig, _keys(fresh_zs, "_device.example.test."), now=NOW)  # type: ignore[arg-type]
        # the signature itself is genuine: it verifies at a time inside its validity
        dns.dnssec.validate(
            tlsa,  # type: ignore[arg-type]
            sig,  # type: ignore[arg-type]
            _keys(fresh_zs, "_device.example.test."),  # type: ignore[arg-type]
            now=rd.expiration - 10,
        )


def test_expired_rrsig_on_wildcard_keeps_labels(fresh_zs: ZoneSet) -> None:
    name = "x.wild._device.example.test."
    with fresh_zs.inject(Fault("expired-rrsig", name)):
        tlsa, sig = _tlsa_and_sig(fresh_zs, name)
        rd = next(iter(sig))  # type: ignore[call-overload]
        assert rd.labels == 4
        dns.dnssec.validate(
            tlsa,  # type: ignore[arg-type]
            sig,  # type: ignore[arg-type]
            _keys(fresh_zs, "_device.example.test."),  # type: ignore[arg-type]
            now=rd.expiration - 10,
        )


def test_stripped_rrsig_zone_wide(fresh_zs: ZoneSet) -> None:
    with fresh_zs.inject(Fault(FaultKind.STRIPPED_RRSIG, zone="_device.example.test.")):
        response = q(fresh_zs, SENSOR, "TLSA")
        assert rrsets(response.answer, T.TLSA) and not rrsets(response.answer, T.RRSIG)
        nx = q(fresh_zs, "nope._device.example.test.", "TLSA")
        assert rrsets(nx.authority, T.NSEC) and not rrsets(nx.authority, T.RRSIG)
        # the parent's signatures stay
        assert rrsets(q(fresh_zs, "_device.example.test.", "DS").answer, T.RRSIG)


def test_subtree_scope(fresh_zs: ZoneSet) -> None:
    with fresh_zs.inject(Fault("stripped-rrsig", "wild._device.example.test.", subtree=True)):
        assert not rrsets(q(fresh_zs, "a.wild._device.example.test.", "TLSA").answer, T.RRSIG)
        assert rrsets(q(fresh_zs, SENSOR, "TLSA").answer, T.RRSIG)


def test_wrong_ds(fresh_zs: ZoneSet) -> None:
    with fresh_zs.inject(Fault("wrong-ds", "_device.example.test.")):
        response = q(fresh_zs, "_device.example.test.", "DS")
        validate_all(fresh_zs, response)  # properly signed by the parent...
        ds = next(iter(rrsets(response.answer, T.DS)[0]))
        keys = q(fresh_zs, "_device.example.test.", "DNSKEY").answer[0]
        assert all(ds != dns.dnssec.make_ds("_device.example.test.", k, "SHA256") for k in keys)
        referral = q(_parent_only(fresh_zs), SENSOR, "TLSA")
        assert next(iter(rrsets(referral.authority, T.DS)[0])) == ds


@pytest.mark.parametrize("denial", ["nsec", "nsec3"])
def test_missing_ds_is_provably_insecure(denial: str) -> None:
    zs = build_hierarchy(denial)
    with zs.inject(Fault("missing-ds", zone="_device.example.test.")):
        response = q(zs, "_device.example.test.", "DS")
        assert response.rcode() == dns.rcode.NOERROR and not response.answer
        validate_all(zs, response)
        proof = rrsets(response.authority, T.NSEC if denial == "nsec" else T.NSEC3)
        assert proof and T.DS not in nsec_types(proof[0]) and T.NS in nsec_types(proof[0])
        if denial == "nsec3":
            assert nsec3_matches(proof[0], N("_device.example.test."))
        referral = q(_parent_only(zs), SENSOR, "TLSA")
        assert not rrsets(referral.authority, T.DS)
        validate_all(zs, referral)


def test_unsigned_delegation(fresh_zs: ZoneSet) -> None:
    with fresh_zs.inject(Fault("unsigned-delegation", "_device.example.test.")):
        assert not rrsets(q(fresh_zs, "_device.example.test.", "DS").answer, T.DS)
        response = q(fresh_zs, SENSOR, "TLSA")
        assert rrsets(response.answer, T.TLSA) and not rrsets(response.answer, T.RRSIG)
        nx = q(fresh_zs, "nope._device.example.test.", "TLSA")
        assert not rrsets(nx.authority, T.NSEC)


def test_stripped_denial(fresh_zs: ZoneSet) -> None:
    name = "x.wild._device.example.test."
    assert rrsets(q(fresh_zs, name, "TLSA").authority, T.NSEC)
    with fresh_zs.inject(Fault("stripped-denial", name)):
        response = q(fresh_zs, name, "TLSA")
        assert rrsets(response.answer, T.TLSA) and rrsets(response.answer, T.RRSIG)
        assert not response.authority  # wildcard answer without its no-closer-match proof
    with fresh_zs.inject(Fault("stripped-denial", zone="_device.example.test.")):
        response = q(fresh_zs, "nope._device.example.test.", "TLSA")
        assert [r.rdtype for r in response.authority] == [T.SOA, T.RRSIG]


def test_wrong_id_and_question(fresh_zs: ZoneSet) -> None:
    query = dns.message.make_query(SENSOR, "TLSA", want_dnssec=True)
    with fresh_zs.inject(Fault("wrong-id", SENSOR)):
        assert fresh_zs.respond(query).id != query.id
    with fresh_zs.inject(Fault("wrong-question", zone="_device.example.test.")):
        response = fresh_zs.respond(query)
        assert response.question[0].name != query.question[0].name
        assert not query.is_response(response)
    assert query.is_response(fresh_zs.respond(query))


def test_wire_faults(fresh_zs: ZoneSet) -> None:
    wire = dns.message.make_query(SENSOR, "TLSA", want_dnssec=True).to_wire()
    with fresh_zs.inject(Fault("silent", SENSOR)):
        assert fresh_zs.respond_wire(wire).data is None
    with fresh_zs.inject(Fault("slow", SENSOR, delay=1.5)):
        assert fresh_zs.respond_wire(wire).delay == 1.5
    for kind in ("truncated", "malformed"):
        with fresh_zs.inject(Fault(kind, SENSOR)):
            data = fresh_zs.respond_wire(wire).data
            assert data is not None
            with pytest.raises(dns.exception.DNSException):
                dns.message.from_wire(data)
    with fresh_zs.inject(Fault("force-tc", SENSOR)):
        udp = fresh_zs.respond_wire(wire, transport="udp").data
        tcp = fresh_zs.respond_wire(wire, transport="tcp").data
        assert udp is not None and tcp is not None
        assert dns.message.from_wire(udp).flags & dns.flags.TC
        assert not dns.message.from_wire(udp).answer
        assert dns.message.from_wire(tcp).answer
    with fresh_zs.inject(Fault("silent", transport="tcp")):
        assert fresh_zs.respond_wire(wire, transport="udp").data is not None
        assert fresh_zs.respond_wire(wire, transport="tcp").data is None
    assert len(fresh_zs.faults) == 0


def test_injection_handle_and_clear(fresh_zs: ZoneSet) -> None:
    handle = fresh_zs.inject(Fault("stripped-rrsig", SENSOR), Fault("wrong-id"))
    assert len(fresh_zs.faults) == 2
    handle.remove()
    assert not fresh_zs.faults
    fresh_zs.inject(Fault("silent"))
    fresh_zs.faults.clear()
    assert not fresh_zs.faults
    assert "bad-signature" in repr(Fault("bad-signature", SENSOR, rdtype="TLSA"))
    with pytest.raises(ValueError, match="delay"):
        Fault("slow")
