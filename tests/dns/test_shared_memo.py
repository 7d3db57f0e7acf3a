"""Signatures verified by one resolver are not checked again by another resolver of the process
(the public-key operation is skipped), but only for the same key, data and signature."""

from __future__ import annotations

import asyncio

import dns.message
import dns.rdatatype
import dns.rrset

from dance.dns import LookupResult, Outcome, Reason
from dance.dns.resolver import clear_shared_memos
from dance.dns.validator import Limits
from tests.dns.conftest import World
from tests.dns.kit import MemoryTransport

NAME = "sensor7._device.example.test"


def _lookup(world: World, **kw: object) -> LookupResult:
    return asyncio.run(world.resolver(**kw).lookup_tlsa(NAME))


def test_second_resolver_spends_no_signature_checks(world: World) -> None:
    no_checks = Limits(max_sig_checks=0)  # any public-key operation stops the lookup
    clear_shared_memos()
    r = _lookup(world, limits=no_checks)
    assert (r.outcome, r.reason) == (Outcome.BOGUS, Reason.TOO_MUCH_WORK)
    assert _lookup(world).outcome is Outcome.SECURE  # verifies, and remembers
    r = _lookup(world, limits=no_checks)
    assert r.outcome is Outcome.SECURE  # every signature known: no public-key operation
    clear_shared_memos()
    r = _lookup(world, limits=no_checks)
    assert (r.outcome, r.reason) == (Outcome.BOGUS, Reason.TOO_MUCH_WORK)


def test_remembered_signature_does_not_cover_changed_data(world: World) -> None:
    assert _lookup(world).outcome is Outcome.SECURE  # the real TLSA signature is remembered

    def tamper(query: dns.message.Message, resp: dns.message.Message) -> dns.message.Message:
        if query.question[0].rdtype == dns.rdatatype.TLSA:
            for i, rrset in enumerate(resp.answer):
                if rrset.rdtype == dns.rdatatype.TLSA:
                    forged = dns.rrset.from_text(
                        rrset.name, rrset.ttl, "IN", "TLSA", "3 1 1 " + "cd" * 32
                    )
                    resp.answer[i] = forged  # same RRSIG, other data
        return resp

    r = _lookup(world, transport=MemoryTransport(world.server, tamper=tamper))
    assert (r.outcome, r.reason) == (Outcome.BOGUS, Reason.BAD_SIGNATURE)
    assert _lookup(world).outcome is Outcome.SECURE
