"""Direct tests of the sans-I/O validation core (dance.dns.validator)."""

from __future__ import annotations

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from dance.dns import Outcome, Reason, TrustAnchors
from dance.dns.validator import (
    Budget,
    Limits,
    Stop,
    ZoneKeys,
    classify_ds,
    keys_from_anchor,
    keys_from_ds,
    label_count,
    validate_answer,
    verify_rrset,
)
from tests.dns.conftest import World, build_world
from tests.dns.kit import NOW, T, TZone, n

LIMITS = Limits()


def ask(world: World, name: str | dns.name.Name, rdtype: str = "TLSA") -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, want_dnssec=True)
    return dns.message.from_wire(world.server.respond(q).to_wire(max_size=65535))


def parent_keys(world: World) -> ZoneKeys:
    anchor = world.anchors.closest(n("example.test."))
    assert anchor is not None
    return keys_from_anchor(
        anchor, ask(world, "example.test.", "DNSKEY"), NOW, LIMITS, Budget(LIMITS)
    )


def child_keys(world: World, zone: str) -> ZoneKeys:
    pk = parent_keys(world)
    ds = classify_ds(n(zone), pk, ask(world, zone, "DS"), NOW, LIMITS, Budget(LIMITS))
    assert ds.kind == "ds"
    return keys_from_ds(n(zone), ds, ask(world, zone, "DNSKEY"), NOW, LIMITS, Budget(LIMITS))


def forged(qname: str, rcode: int, authority: list[dns.rrset.RRset]) -> dns.message.Message:
    msg = dns.message.make_response(dns.message.make_query(qname, "TLSA", want_dnssec=True))
    msg.set_rcode(rcode)
    msg.authority = authority
    return msg


def judge(
    world: World, qname: str, msg: dns.message.Message, keys: ZoneKeys
) -> tuple[Outcome, str]:
    try:
        a = validate_answer(n(qname), T.TLSA, msg, keys, NOW, LIMITS, Budget(LIMITS))
    except Stop as stop:
        return stop.outcome, stop.reason
    return a.outcome, a.reason


def test_label_count() -> None:
    assert label_count(n("a.b.c.")) == 3
    assert label_count(n("*.b.c.")) == 2
    assert label_count(dns.name.root) == 0


def test_keys_and_answer(world: World) -> None:
    keys = child_keys(world, "_device.example.test.")
    assert keys.zone == n("_device.example.test.")
    assert keys.expires <= NOW + 300
    msg = ask(world, "sensor7._device.example.test.")
    assert judge(world, "sensor7._device.example.test.", msg, keys) == (Outcome.SECURE, Reason.OK)


def test_parent_side_nsec_blocked_in_core(world: World) -> None:
    """Without the resolver's zone-cut walk, the core itself rejects the parent-side NSEC."""
    parent = world.zones["parent"]
    keys = parent_keys(world)
    auth = parent._with_sig((parent.origin, T.SOA)) + parent._with_sig(
        (n("_nsec.example.test."), T.NSEC)
    )
    for qname, rcode in [
        ("sensor._nsec.example.test.", dns.rcode.NXDOMAIN),
        ("sensor._nsec.example.test.", dns.rcode.NOERROR),
        ("_nsec.example.test.", dns.rcode.NOERROR),
    ]:
        outcome, reason = judge(world, qname, forged(qname, rcode, auth), keys)
        assert outcome is Outcome.BOGUS, (qname, rcode)
        assert reason == Reason.BAD_DENIAL


def test_parent_side_nsec3_blocked_in_core() -> None:
    w = build_world(parent_denial="nsec3")
    parent = w.zones["parent"]
    keys = parent_keys(w)
    cut = n("_nsec.example.test.")
    qname = "sensor._nsec.example.test."
    auth = (
        parent._with_sig((parent.origin, T.SOA))
        + parent.nsec3_for(cut, match=True)
        + parent.nsec3_for(n(qname), match=False)
        + parent.nsec3_for(n("*._nsec.example.test."), match=False)
    )
    assert judge(w, qname, forged(qname, dns.rcode.NXDOMAIN, auth), keys)[0] is Outcome.BOGUS
    assert judge(w, qname, forged(qname, dns.rcode.NOERROR, auth), keys)[0] is Outcome.BOGUS
    only_cut = parent._with_sig((parent.origin, T.SOA)) + parent.nsec3_for(cut, match=True)
    assert (
        judge(w, str(cut), forged(str(cut), dns.rcode.NOERROR, only_cut), keys)[0] is Outcome.BOGUS
    )


def test_ds_classification(world: World) -> None:
    pk = parent_keys(world)
    budget = Budget(LIMITS)

    def kind(name: str) -> str:
        return classify_ds(n(name), pk, ask(world, name, "DS"), NOW, LIMITS, budget).kind

    assert kind("_device.example.test.") == "ds"
    assert kind("unsigned.example.test.") == "insecure"
    assert kind("host.example.test.") == "not-cut"
    assert kind("b.example.test.") == "not-cut"  # empty non-terminal
    assert kind("nope.example.test.") == "absent"


def test_child_apex_nsec_cannot_deny_ds(world: World) -> None:
    """A DS NODATA must come from the parent: the child's apex NSEC (SOA bit) is rejected."""
    device_nsec = build_world(device_denial="nsec")
    child = device_nsec.zones["device"]
    pk = parent_keys(device_nsec)
    msg = dns.message.make_response(
        dns.message.make_query("_device.example.test.", "DS", want_dnssec=True)
    )
    msg.authority = child._with_sig((child.origin, T.SOA)) + child._with_sig((child.origin, T.NSEC))
    with pytest.raises(Stop) as info:
        classify_ds(child.origin, pk, msg, NOW, LIMITS, Budget(LIMITS))
    assert info.value.outcome in (Outcome.BOGUS, Outcome.INDETERMINATE)


def test_verify_rrset_reasons(world: World) -> None:
    keys = child_keys(world, "_device.example.test.")
    msg = ask(world, "sensor7._device.example.test.")
    rrset = next(r for r in msg.answer if r.rdtype == T.TLSA)
    sigs = [rd for r in msg.answer if r.rdtype == T.RRSIG for rd in r]
    budget = Budget(LIMITS)
    sig, expires = verify_rrset(rrset, sigs, keys, NOW, LIMITS, budget)
    assert expires == min(NOW + 300, sig.expiration)

    def reason(sigs2: list[object], now: float = NOW, keys2: ZoneKeys = keys) -> str:
        with pytest.raises(Stop) as info:
            verify_rrset(rrset, sigs2, keys2, now, LIMITS, Budget(LIMITS))  # type: ignore[arg-type]
        return info.value.reason

    assert reason([]) == Reason.NO_SIGNATURE
    assert reason(sigs, now=sig.expiration + 1) == Reason.EXPIRED_SIGNATURE
    assert reason(sigs, now=sig.inception - 1) == Reason.NOT_YET_VALID
    assert reason([sigs[0].replace(signature=b"\x01" * 64)]) == Reason.BAD_SIGNATURE
    assert reason([sigs[0].replace(key_tag=(sigs[0].key_tag + 1) % 65536)]) == Reason.BAD_SIGNATURE
    assert reason([sigs[0].replace(signer=n("example.test."))]) == Reason.BAD_SIGNER
    assert reason([sigs[0].replace(labels=9)]) == Reason.BAD_SIGNATURE
    pk = parent_keys(world)
    with pytest.raises(Stop):
        verify_rrset(rrset, sigs, pk, NOW, LIMITS, Budget(LIMITS))


def test_signature_budget(world: World) -> None:
    keys = child_keys(world, "_device.example.test.")
    msg = ask(world, "sensor7._device.example.test.")
    rrset = next(r for r in msg.answer if r.rdtype == T.TLSA)
    sig = next(rd for r in msg.answer if r.rdtype == T.RRSIG for rd in r)
    bad = [sig.replace(signature=bytes([i]) * 64) for i in range(8)]
    budget = Budget(Limits(max_sig_checks=3))
    with pytest.raises(Stop) as info:
        verify_rrset(rrset, bad, keys, NOW, LIMITS, budget)
    assert info.value.reason == Reason.TOO_MUCH_WORK


def test_dnskey_rrset_too_large(world: World) -> None:
    anchor = world.anchors.closest(n("example.test."))
    assert anchor is not None
    with pytest.raises(Stop) as info:
        keys_from_anchor(
            anchor,
            ask(world, "example.test.", "DNSKEY"),
            NOW,
            Limits(max_dnskeys=1),
            Budget(LIMITS),
        )
    assert info.value.reason == Reason.TOO_LARGE


def test_anchor_with_unsupported_algorithm_is_insecure(world: World) -> None:
    anchors = TrustAnchors.from_text("example.test. IN DS 1 5 2 " + "00" * 32)
    anchor = anchors.closest(n("example.test."))
    assert anchor is not None
    with pytest.raises(Stop) as info:
        keys_from_anchor(anchor, ask(world, "example.test.", "DNSKEY"), NOW, LIMITS, Budget(LIMITS))
    assert info.value.outcome is Outcome.INSECURE


def test_zsk_only_matching_ds_is_enough() -> None:
    """Any zone key matched by a DS may sign the DNSKEY RRset (the SEP bit is only a hint)."""
    w = build_world()
    z: TZone = w.zones["device"]
    assert z.ksk.flags & 1
    keys = child_keys(w, "_device.example.test.")
    assert len(keys.by_tag) == 2
