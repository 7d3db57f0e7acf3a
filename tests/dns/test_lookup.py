"""End-to-end validation through TLSAResolver with an in-memory authoritative server."""

from __future__ import annotations

import asyncio

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from dance.dns import LookupResult, Outcome, Reason, TrustAnchors
from tests.dns.conftest import H32, H32B, World, build_world
from tests.dns.kit import NOW, MemoryTransport, T, n

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def lookup(world: World, name: str, **kwargs: object) -> LookupResult:
    async def go() -> LookupResult:
        return await world.resolver(**kwargs).lookup_tlsa(name)

    return asyncio.run(go())


# -- positive answers ---------------------------------------------------------------------


def test_secure_exact(world: World) -> None:
    r = lookup(world, "sensor7._device.example.test")
    assert r.outcome is Outcome.SECURE
    assert r.reason == Reason.OK
    assert r.records == (bytes.fromhex("030101" + H32),)
    assert r.ttl == 300
    assert r.name == "sensor7._device.example.test"
    assert r.authenticates


def test_secure_in_anchor_zone(world: World) -> None:
    r = lookup(world, "HOST.Example.Test.")
    assert r.outcome is Outcome.SECURE
    assert r.name == "host.example.test"


@pytest.mark.parametrize("zone", ["_device", "_nsec"])  # NSEC3 and NSEC
def test_wildcard_expansion_is_secure(world: World, zone: str) -> None:
    r = lookup(world, f"unknown7.{zone}.example.test")
    assert r.outcome is Outcome.SECURE, r
    assert r.records == (bytes.fromhex("020001" + H32B),)
    assert r.ttl == 60  # bounded by the TTL of the denial records


@pytest.mark.parametrize("zone", ["_device", "_nsec"])
def test_wildcard_does_not_cover_ent_or_existing(world: World, zone: str) -> None:
    # b.<zone> is an empty non-terminal: it exists, so the wildcard does not apply
    r = lookup(world, f"b.{zone}.example.test")
    assert r.outcome is Outcome.SECURE_ABSENT
    assert r.reason == Reason.NODATA
    assert not r.records


def test_wildcard_nodata_nsec(world: World) -> None:
    r = lookup(world, "x.w._nsec.example.test")
    assert r.outcome is Outcome.SECURE_ABSENT
    assert r.reason == Reason.NODATA


def test_deep_name_below_ent(world: World) -> None:
    assert lookup(world, "deep.a.b.example.test").outcome is Outcome.SECURE
    assert lookup(world, "a.b._device.example.test").outcome is Outcome.SECURE


# -- negative answers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["nope.example.test", "a.nope.example.test", "aaa.example.test", "zzzz.example.test"],
)
def test_nxdomain_nsec(world: World, name: str) -> None:
    r = lookup(world, name)
    assert r.outcome is Outcome.SECURE_ABSENT
    assert r.reason == Reason.NXDOMAIN
    assert r.ttl == 5.0  # negative outcomes are cached briefly


def test_nxdomain_nsec3() -> None:
    w = build_world()
    # no wildcard in a fresh NSEC3 zone: use the opt-out-free device zone without its wildcard
    w.zones["device"].rrsets.pop((n("*._device.example.test."), T.TLSA))
    w.resign()
    r = lookup(w, "nothere._device.example.test")
    assert r.outcome is Outcome.SECURE_ABSENT
    assert r.reason == Reason.NXDOMAIN


@pytest.mark.parametrize(
    "name", ["plain._device.example.test", "host2.example.test", "_device.example.test"]
)
def test_nodata_and_nxdomain_never_secure(world: World, name: str) -> None:
    r = lookup(world, name)
    assert r.outcome in (Outcome.SECURE_ABSENT, Outcome.SECURE)
    if name == "host2.example.test":
        assert r.outcome is Outcome.SECURE_ABSENT


def test_nodata_at_child_apex_uses_child_nsec(world: World) -> None:
    r = lookup(world, "_device.example.test")
    assert r.outcome is Outcome.SECURE_ABSENT
    assert r.reason == Reason.NODATA


# -- insecure -----------------------------------------------------------------------------


def test_unsigned_delegation_is_insecure(world: World) -> None:
    r = lookup(world, "x.unsigned.example.test")
    assert r.outcome is Outcome.INSECURE
    assert r.reason == Reason.UNSIGNED_DELEGATION
    assert not r.records
    assert not r.authenticates


def test_nsec3_parent_unsigned_delegation_is_insecure() -> None:
    w = build_world(parent_denial="nsec3")
    r = lookup(w, "x.unsigned.example.test")
    assert r.outcome is Outcome.INSECURE
    assert lookup(w, "sensor7._device.example.test").outcome is Outcome.SECURE
    assert lookup(w, "nope.example.test").outcome is Outcome.SECURE_ABSENT


def test_opt_out_delegation_is_insecure(world: World) -> None:
    r = lookup(world, "dev.child.optout.example.test")
    assert r.outcome is Outcome.INSECURE
    assert r.reason == Reason.OPT_OUT


def test_opt_out_nxdomain_is_not_secure_absent(world: World) -> None:
    r = lookup(world, "missing.optout.example.test")
    assert r.outcome is Outcome.INSECURE
    assert r.reason == Reason.OPT_OUT
    assert lookup(world, "signed.optout.example.test").outcome is Outcome.SECURE


def test_name_outside_anchors_is_insecure(world: World) -> None:
    r = lookup(world, "foo.example.org")
    assert r.outcome is Outcome.INSECURE
    assert r.reason == Reason.NO_ANCHOR


# -- CNAME --------------------------------------------------------------------------------


def test_cname_secure_chain(world: World) -> None:
    r = lookup(world, "www.example.test")
    assert r.outcome is Outcome.SECURE
    assert r.records == (bytes.fromhex("030101" + H32),)
    assert r.name == "www.example.test"  # the reference name stays the queried name


def test_cname_across_anchors(world: World) -> None:
    assert lookup(world, "toother.example.test").outcome is Outcome.SECURE


def test_cname_to_insecure_zone_is_insecure(world: World) -> None:
    r = lookup(world, "alias.example.test")
    assert r.outcome is Outcome.INSECURE


def test_cname_loop_is_bogus(world: World) -> None:
    r = lookup(world, "loop1.example.test")
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.CNAME_LOOP


def test_cname_to_nxdomain(world: World) -> None:
    w = build_world()
    w.zones["device"].rrsets.pop((n("*._device.example.test."), T.TLSA))
    w.resign()
    r = lookup(w, "dangling.example.test")
    assert r.outcome is Outcome.SECURE_ABSENT


# -- chain of trust failures ---------------------------------------------------------------


def test_wrong_trust_anchor(world: World) -> None:
    anchors = TrustAnchors.from_text(world.zones["device"].ds_text().replace("_device.", ""))
    w = World(world.zones, world.server, anchors)
    r = lookup(w, "sensor7._device.example.test")
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.NO_DS_MATCH


def test_dnskey_anchor_works(world: World) -> None:
    key = world.zones["parent"].ksk
    anchors = TrustAnchors.from_text(f"example.test. IN DNSKEY {key.to_text()}")
    w = World(world.zones, world.server, anchors)
    assert lookup(w, "sensor7._device.example.test").outcome is Outcome.SECURE


def test_wrong_ds_in_parent() -> None:
    def tweak(z: dict[str, object]) -> None:
        pass

    w = build_world()
    parent = w.zones["parent"]
    # replace the child's DS by the DS of another zone's key
    key = (n("_device.example.test."), T.DS)
    parent.rrsets.pop(key)
    bogus_ds = w.zones["other"].ds_text().split(" DS ")[1]
    parent.add("_device", "DS", bogus_ds)
    parent.sign()
    r = lookup(w, "sensor7._device.example.test")
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.NO_DS_MATCH


def test_ds_digest_sha384() -> None:
    import dns.dnssec

    w = build_world()
    parent, device = w.zones["parent"], w.zones["device"]
    parent.rrsets.pop((n("_device.example.test."), T.DS))
    parent.add("_device", "DS", dns.dnssec.make_ds(device.origin, device.ksk, 4).to_text())
    parent.sign()
    assert lookup(w, "sensor7._device.example.test").outcome is Outcome.SECURE


def test_unsupported_ds_digest_only_is_insecure() -> None:
    import dns.dnssec

    w = build_world()
    parent, device = w.zones["parent"], w.zones["device"]
    parent.rrsets.pop((n("_device.example.test."), T.DS))
    parent.add(
        "_device",
        "DS",
        dns.dnssec.make_ds(
            device.origin, device.ksk, 1, policy=dns.dnssec.allow_all_policy
        ).to_text(),
    )
    parent.sign()
    r = lookup(w, "sensor7._device.example.test")
    assert r.outcome is Outcome.INSECURE
    assert r.reason == Reason.UNSUPPORTED_ALGORITHM


def test_revoked_ksk_is_not_trusted() -> None:
    import dns.dnssec

    w = build_world()
    device = w.zones["device"]
    revoked = dns.dnssec.make_dnskey(device.ksk_priv.public_key(), 13, flags=257 | 0x80)
    parent = w.zones["parent"]
    parent.rrsets.pop((n("_device.example.test."), T.DS))
    parent.add("_device", "DS", dns.dnssec.make_ds(device.origin, revoked, 2).to_text())
    parent.sign()
    device.ksk = revoked
    device.sign()
    r = lookup(w, "sensor7._device.example.test")
    assert r.outcome is Outcome.BOGUS


def test_expired_signatures() -> None:
    w = build_world()
    w.zones["device"].expiration = NOW - 10
    w.zones["device"].sign()
    r = lookup(w, "sensor7._device.example.test")
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.EXPIRED_SIGNATURE


def test_not_yet_valid_signatures() -> None:
    w = build_world()
    w.zones["device"].inception = NOW + 100
    w.zones["device"].sign()
    r = lookup(w, "sensor7._device.example.test")
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.NOT_YET_VALID


# -- tampering on the wire -------------------------------------------------------------------


def _tamper_lookup(world: World, name: str, tamper: object, **kwargs: object) -> LookupResult:
    transport = MemoryTransport(world.server, tamper=tamper)  # type: ignore[arg-type]
    return lookup(world, name, transport=transport, **kwargs)


def _only_tlsa(fn: object) -> object:
    def tamper(q: dns.message.Message, r: dns.message.Message) -> dns.message.Message:
        if q.question[0].rdtype == T.TLSA:
            return fn(q, r)  # type: ignore[operator,no-any-return]
        return r

    return tamper


def test_stripped_signature_is_bogus(world: World) -> None:
    def strip(q: dns.message.Message, r: dns.message.Message) -> dns.message.Message:
        r.answer = [rr for rr in r.answer if rr.rdtype != T.RRSIG]
        return r

    r = _tamper_lookup(world, "sensor7._device.example.test", _only_tlsa(strip))
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.NO_SIGNATURE


def test_modified_record_is_bogus(world: World) -> None:
    def modify(q: dns.message.Message, r: dns.message.Message) -> dns.message.Message:
        for rr in r.answer:
            if rr.rdtype == T.TLSA:
                rd = next(iter(rr))
                rr.clear()
                rr.add(rd.replace(cert=b"\x00" * 32))
        return r

    r = _tamper_lookup(world, "sensor7._device.example.test", _only_tlsa(modify))
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.BAD_SIGNATURE


def test_corrupted_signature_is_bogus(world: World) -> None:
    def corrupt(q: dns.message.Message, r: dns.message.Message) -> dns.message.Message:
        for rr in r.answer:
            if rr.rdtype == T.RRSIG:
                sig = next(iter(rr))
                rr.clear()
                rr.add(sig.replace(signature=bytes(len(sig.signature))))
        return r

    r = _tamper_lookup(world, "sensor7._device.example.test", _only_tlsa(corrupt))
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.BAD_SIGNATURE


def test_corrupted_dnskey_signature_is_bogus(world: World) -> None:
    def corrupt(q: dns.message.Message, r: dns.message.Message) -> dns.message.Message:
        if q.question[0].rdtype != T.DNSKEY:
            return r
        for rr in r.answer:
            if rr.rdtype == T.RRSIG:
                sig = next(iter(rr))
                rr.clear()
                rr.add(sig.replace(signature=bytes(len(sig.signature))))
        return r

    r = _tamper_lookup(world, "sensor7._device.example.test", corrupt)
    assert r.outcome is Outcome.BOGUS


def test_signer_outside_chain_is_bogus(world: World) -> None:
    # data signed by the anchor zone's keys, but presented as if from the device zone
    parent = world.zones["parent"]
    fake = dns.rrset.from_text("sensor7._device.example.test.", 300, "IN", "TLSA", f"3 1 1 {H32B}")
    sig = parent.sign_rrset(fake)
    parent.sigs.pop((fake.name, fake.rdtype))

    def replace(q: dns.message.Message, r: dns.message.Message) -> dns.message.Message:
        r.answer = [fake, sig]
        return r

    r = _tamper_lookup(world, "sensor7._device.example.test", _only_tlsa(replace))
    # Signed by example.test, but _device.example.test is a zone cut between the signer and the
    # owner: the parent must not speak for names inside the delegated child.
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.BAD_SIGNER


def test_oversized_rrset_is_bogus(world: World) -> None:
    r = lookup(world, "big.example.test")
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.TOO_LARGE


def test_mismatched_id_is_indeterminate(world: World) -> None:
    def bad_id(q: dns.message.Message, r: dns.message.Message) -> dns.message.Message:
        r.id = (q.id + 1) % 65536
        return r

    r = _tamper_lookup(world, "sensor7._device.example.test", bad_id)
    assert r.outcome is Outcome.INDETERMINATE
    assert r.reason == Reason.MALFORMED


def test_mismatched_question_is_indeterminate(world: World) -> None:
    def bad_q(q: dns.message.Message, r: dns.message.Message) -> dns.message.Message:
        r2 = dns.message.make_query("host.example.test.", "TLSA")
        r.question = r2.question
        return r

    r = _tamper_lookup(world, "sensor7._device.example.test", _only_tlsa(bad_q))
    assert r.outcome is Outcome.INDETERMINATE


@pytest.mark.parametrize(
    ("rcode", "reason"),
    [
        (dns.rcode.SERVFAIL, Reason.SERVFAIL),
        (dns.rcode.REFUSED, Reason.REFUSED),
        (dns.rcode.FORMERR, Reason.BAD_RCODE),
    ],
)
def test_error_rcodes(world: World, rcode: int, reason: str) -> None:
    def fail(q: dns.message.Message, r: dns.message.Message) -> dns.message.Message:
        r.set_rcode(rcode)
        return r

    r = _tamper_lookup(world, "sensor7._device.example.test", fail)
    assert r.outcome is Outcome.INDETERMINATE
    assert r.reason == reason


def test_truncated_answer_is_indeterminate(world: World) -> None:
    def trunc(q: dns.message.Message, r: dns.message.Message) -> dns.message.Message:
        r.flags |= dns.flags.TC
        return r

    r = _tamper_lookup(world, "sensor7._device.example.test", trunc)
    assert r.outcome is Outcome.INDETERMINATE
    assert r.reason == Reason.TRUNCATED


def test_too_many_signatures_bounded() -> None:
    """KeyTrap-style: many RRSIGs that all fail are bounded by the signature budget."""
    w = build_world()
    device = w.zones["device"]
    key = (n("sensor7._device.example.test."), T.TLSA)
    sigset = device.sigs[key]
    sig = next(iter(sigset))
    for i in range(1, 40):
        sigset.add(sig.replace(signature=bytes([i]) * len(sig.signature)))
    r = lookup(w, "sensor7._device.example.test")
    # 40 signatures, only the first is examined up to max_sigs_per_rrset; still secure if the
    # good one is among them, and never more than the budget of verifications
    assert r.outcome in (Outcome.SECURE, Outcome.BOGUS)


def test_cname_chain_length_is_bounded(world: World) -> None:
    from dance.dns import Limits

    r = lookup(world, "www.example.test", limits=Limits(max_cname_chain=0))
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.CNAME_LOOP


def test_referral_to_unhosted_child_is_not_secure() -> None:
    from tests.dns.kit import Server

    w = build_world()
    only_parent = World(w.zones, Server(w.zones["parent"]), w.anchors)
    r = lookup(only_parent, "sensor7._device.example.test")
    assert r.outcome is Outcome.INDETERMINATE
    assert r.reason == Reason.REFERRAL
    r = lookup(only_parent, "x.unsigned.example.test")
    assert r.outcome is Outcome.INSECURE


def test_too_many_queries_is_bounded(world: World) -> None:
    from dance.dns import Limits

    r = lookup(world, "deep.a.b.example.test", limits=Limits(max_queries=2))
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.TOO_MANY_QUERIES
