"""Adversarial tests for every denial-of-existence and wildcard path (NSEC and NSEC3)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import dns.message
import dns.rcode
import dns.rrset
import pytest

from dance.dns import LookupResult, Outcome, Reason
from tests.dns.conftest import World, build_world
from tests.dns.kit import MemoryTransport, T, TZone, n

Msg = dns.message.Message


def run(world: World, name: str, tamper: Callable[[Msg, Msg], Msg] | None = None) -> LookupResult:
    async def go() -> LookupResult:
        transport = MemoryTransport(world.server, tamper=tamper)
        return await world.resolver(transport=transport).lookup_tlsa(name)

    return asyncio.run(go())


def real_response(world: World, name: str, rdtype: str = "TLSA") -> Msg:
    q = dns.message.make_query(name, rdtype, want_dnssec=True)
    wire = world.server.respond(q).to_wire(max_size=65535)
    return dns.message.from_wire(wire)


def forge(
    rcode: int,
    authority: list[dns.rrset.RRset],
    answer: list[dns.rrset.RRset] | None = None,
) -> Callable[[Msg, Msg], Msg]:
    """Replace the TLSA response by one with the given sections."""

    def tamper(q: Msg, r: Msg) -> Msg:
        if q.question[0].rdtype != T.TLSA:
            return r
        r.set_rcode(rcode)
        r.answer = list(answer or [])
        r.authority = list(authority)
        return r

    return tamper


def with_sig(zone: TZone, owner: str, rdtype: int) -> list[dns.rrset.RRset]:
    return zone._with_sig((n(owner), rdtype))


def soa(zone: TZone) -> list[dns.rrset.RRset]:
    return zone._with_sig((zone.origin, T.SOA))


# -- forged NXDOMAIN / NODATA -----------------------------------------------------------------


def test_forged_nxdomain_replaying_other_proof(world: World) -> None:
    proof = real_response(world, "nope.example.test.")
    assert proof.rcode() == dns.rcode.NXDOMAIN
    r = run(world, "host.example.test", forge(dns.rcode.NXDOMAIN, proof.authority))
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.BAD_DENIAL


def test_nsec_that_does_not_cover(world: World) -> None:
    proof = real_response(world, "nope.example.test.")
    r = run(world, "www2.example.test", forge(dns.rcode.NXDOMAIN, proof.authority))
    assert r.outcome is Outcome.BOGUS


def test_forged_nodata_with_nsec_listing_the_type(world: World) -> None:
    parent = world.zones["parent"]
    auth = soa(parent) + with_sig(parent, "host.example.test.", T.NSEC)
    r = run(world, "host.example.test", forge(dns.rcode.NOERROR, auth))
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.BAD_DENIAL


def test_forged_nodata_nsec3(world: World) -> None:
    device = world.zones["device"]
    auth = soa(device) + device.nsec3_for(n("sensor7._device.example.test."), match=True)
    r = run(world, "sensor7._device.example.test", forge(dns.rcode.NOERROR, auth))
    assert r.outcome is Outcome.BOGUS


def test_forged_nxdomain_nsec3_for_existing_name(world: World) -> None:
    device = world.zones["device"]
    qname = n("sensor7._device.example.test.")
    auth = (
        soa(device)
        + device.nsec3_for(device.origin, match=True)
        + device.nsec3_for(qname, match=True)  # a match, not a cover
    )
    r = run(world, str(qname), forge(dns.rcode.NXDOMAIN, auth))
    assert r.outcome is Outcome.BOGUS


def test_empty_authority_is_bogus(world: World) -> None:
    parent = world.zones["parent"]
    r = run(world, "host.example.test", forge(dns.rcode.NXDOMAIN, soa(parent)))
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.BAD_DENIAL


def test_unsigned_negative_answer_is_bogus(world: World) -> None:
    r = run(world, "host.example.test", forge(dns.rcode.NXDOMAIN, []))
    assert r.outcome is Outcome.BOGUS


def test_denial_from_another_zone_is_bogus(world: World) -> None:
    other = world.zones["nsec"]
    auth = soa(other) + other.nsec_covering(n("zzzz._nsec.example.test."))
    r = run(world, "sensor7._device.example.test", forge(dns.rcode.NXDOMAIN, auth))
    assert r.outcome is Outcome.BOGUS


def test_nxdomain_when_wildcard_exists_is_bogus(world: World) -> None:
    z = world.zones["nsec"]
    auth = (
        soa(z)
        + z.nsec_covering(n("unknown7._nsec.example.test."))
        + with_sig(z, "*._nsec.example.test.", T.NSEC)
    )
    r = run(world, "unknown7._nsec.example.test", forge(dns.rcode.NXDOMAIN, auth))
    assert r.outcome is Outcome.BOGUS


def test_nxdomain_for_empty_non_terminal_is_bogus(world: World) -> None:
    # the NSEC covering b._nsec has a next name below it: b._nsec exists (ENT)
    z = world.zones["nsec"]
    qname = n("b._nsec.example.test.")
    auth = soa(z) + z.nsec_covering(qname)
    r = run(world, str(qname), forge(dns.rcode.NXDOMAIN, auth))
    assert r.outcome is Outcome.BOGUS


# -- parent-side NSEC / NSEC3 at a delegation -------------------------------------------------


def test_parent_side_nsec_cannot_deny_names_in_child(world: World) -> None:
    parent = world.zones["parent"]
    # NSEC _nsec.example.test -> (next parent name) covers every name inside the child zone
    deleg = with_sig(parent, "_nsec.example.test.", T.NSEC)
    nsec_rd = next(iter(deleg[0]))
    assert nsec_rd.next > n("sensor._nsec.example.test.")
    r = run(world, "sensor._nsec.example.test", forge(dns.rcode.NXDOMAIN, soa(parent) + deleg))
    assert r.outcome is Outcome.BOGUS
    assert r.reason in (Reason.BAD_DENIAL, Reason.BAD_SIGNER)


def test_parent_side_nsec_cannot_prove_nodata_at_child_apex(world: World) -> None:
    parent = world.zones["parent"]
    deleg = with_sig(parent, "_nsec.example.test.", T.NSEC)
    r = run(world, "_nsec.example.test", forge(dns.rcode.NOERROR, soa(parent) + deleg))
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.BAD_DENIAL


def test_parent_side_nsec3_cannot_deny_names_in_child() -> None:
    w = build_world(parent_denial="nsec3")
    parent = w.zones["parent"]
    cut = n("_nsec.example.test.")
    qname = n("sensor._nsec.example.test.")
    auth = (
        soa(parent)
        + parent.nsec3_for(cut, match=True)
        + parent.nsec3_for(qname, match=False)
        + parent.nsec3_for(n("*._nsec.example.test."), match=False)
    )
    r = run(w, str(qname), forge(dns.rcode.NXDOMAIN, auth))
    assert r.outcome is Outcome.BOGUS
    r = run(w, str(cut), forge(dns.rcode.NOERROR, soa(parent) + parent.nsec3_for(cut, match=True)))
    assert r.outcome is Outcome.BOGUS


# -- wildcards --------------------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["_device", "_nsec"])
def test_wildcard_without_proof_is_bogus(world: World, zone: str) -> None:
    def strip(q: Msg, r: Msg) -> Msg:
        if q.question[0].rdtype == T.TLSA:
            r.authority = []
        return r

    r = run(world, f"unknown7.{zone}.example.test", strip)
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.BAD_WILDCARD


@pytest.mark.parametrize(("zone", "real"), [("_device", "sensor7"), ("_nsec", "sensor")])
def test_wildcard_replayed_over_existing_name_is_bogus(world: World, zone: str, real: str) -> None:
    synth = real_response(world, f"unknown7.{zone}.example.test.")
    qname = n(f"{real}.{zone}.example.test.")
    answer = []
    for rr in synth.answer:
        moved = dns.rrset.RRset(qname, rr.rdclass, rr.rdtype, rr.covers)
        moved.update(rr)
        answer.append(moved)
    r = run(world, str(qname), forge(dns.rcode.NOERROR, synth.authority, answer))
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.BAD_WILDCARD


def test_wildcard_with_closer_encloser_is_bogus(world: World) -> None:
    # x.a.b._nsec: the closest encloser is b._nsec (an ENT); *._nsec must not apply
    synth = real_response(world, "unknown7._nsec.example.test.")
    qname = n("x.b._nsec.example.test.")
    z = world.zones["nsec"]
    answer = []
    for rr in synth.answer:
        moved = dns.rrset.RRset(qname, rr.rdclass, rr.rdtype, rr.covers)
        moved.update(rr)
        answer.append(moved)
    r = run(world, str(qname), forge(dns.rcode.NOERROR, z.nsec_covering(qname), answer))
    assert r.outcome is Outcome.BOGUS
    assert r.reason == Reason.BAD_WILDCARD


def test_wildcard_proof_opt_out_is_insecure() -> None:
    def tweak(zones: dict[str, TZone]) -> None:
        zones["optout"].add("*", "TLSA", "3 1 1 " + "ee" * 32)

    w = build_world(tweak=tweak)
    r = run(w, "anything.optout.example.test")
    assert r.outcome is Outcome.INSECURE
    assert r.reason == Reason.OPT_OUT


def test_wildcard_owner_queried_literally(world: World) -> None:
    r = run(world, "*._device.example.test")
    assert r.outcome is Outcome.SECURE


# -- NSEC3 parameters --------------------------------------------------------------------------


def test_nsec3_iterations_above_cap_are_insecure() -> None:
    def tweak(zones: dict[str, TZone]) -> None:
        zones["device"].iterations = 200
        zones["device"].rrsets.pop((n("*._device.example.test."), T.TLSA))

    w = build_world(tweak=tweak)
    r = run(w, "nothere._device.example.test")
    assert r.outcome is Outcome.INSECURE
    assert r.reason == Reason.NSEC3_ITERATIONS
    # positive answers do not need NSEC3 and stay secure
    assert run(w, "sensor7._device.example.test").outcome is Outcome.SECURE


def test_nsec3_with_salt_and_iterations_below_cap() -> None:
    def tweak(zones: dict[str, TZone]) -> None:
        zones["device"].iterations = 10
        zones["device"].salt = b"\xaa\xbb"

    w = build_world(tweak=tweak)
    assert run(w, "unknown._device.example.test").outcome is Outcome.SECURE
    assert run(w, "b._device.example.test").outcome is Outcome.SECURE_ABSENT
    assert run(w, "plain._device.example.test").outcome is Outcome.SECURE_ABSENT
