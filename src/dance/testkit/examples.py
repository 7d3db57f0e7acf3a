"""A ready-made DANCE hierarchy covering the DNS cases of the spec (TC-D2, D3, D4, D7-D9).

::

    test.                                 anchor (export_trust_anchor)
    example.test.                         signed, delegated from test.
        www              A, AAAA
        a.b.c            A                (b.c and c are empty non-terminals)
        alias            CNAME www        (followed inside the zone)
        dangling         CNAME nothing-here   (NXDOMAIN at the end of the chain)
        outside          CNAME sensor7._device.example.test.   (crosses a zone cut)
        t._dane          TLSA <tlsa>      (CNAME target of moved._device)
        elsewhere        NS ns.elsewhere.invalid.   (insecure delegation, no zone held)
    _device.example.test.                 signed, delegated with DS
        sensor7          TLSA <tlsa>
        *.wild           TLSA <wildcard_tlsa>   (any-name.wild._device.example.test)
        *.wildcname      CNAME sensor7
        moved            CNAME t._dane.example.test.
        revoked          (absent: NXDOMAIN)
    insecure.example.test.                unsigned, delegated without DS
        sensor7._device  TLSA <tlsa>      (insecure: must never authenticate)
"""

from __future__ import annotations

from dance.zone.zones import Denial
from dance.zone.zoneset import Hierarchy

__all__ = ["DEFAULT_TLSA", "DEFAULT_WILDCARD_TLSA", "dance_example"]

DEFAULT_TLSA = "3 1 1 " + "ab" * 32
DEFAULT_WILDCARD_TLSA = "2 0 1 " + "cd" * 32


def dance_example(
    denial: Denial = "nsec",
    *,
    algorithm: int = 13,
    now: int | None = None,
    tlsa: str = DEFAULT_TLSA,
    wildcard_tlsa: str = DEFAULT_WILDCARD_TLSA,
    nsec3_optout: bool = False,
    nsec3_iterations: int = 0,
    nsec3_salt: bytes = b"",
) -> Hierarchy:
    """Build and sign the hierarchy above (``now`` defaults to the clock)."""
    h = Hierarchy("test.")
    example = h.child("example.test.")
    device = h.child("_device.example.test.")
    insecure = h.child("insecure.example.test.", signed=False)
    insecure.add("www", "A", "192.0.2.9")
    insecure.add("sensor7._device", "TLSA", tlsa)
    example.delegate("elsewhere", nameservers=["ns.elsewhere.invalid."])
    example.add("www", "A", "192.0.2.1")
    example.add("www", "AAAA", "2001:db8::1")
    example.add("a.b.c", "A", "192.0.2.2")
    example.add("alias", "CNAME", "www")
    example.add("dangling", "CNAME", "nothing-here")
    example.add("outside", "CNAME", "sensor7._device.example.test.")
    example.add("t._dane", "TLSA", tlsa)
    device.add("sensor7", "TLSA", tlsa)
    device.add("*.wild", "TLSA", wildcard_tlsa)
    device.add("*.wildcname", "CNAME", "sensor7")
    device.add("moved", "CNAME", "t._dane.example.test.")
    h.sign(
        algorithm,
        denial,
        now=now,
        nsec3_optout=nsec3_optout,
        nsec3_iterations=nsec3_iterations,
        nsec3_salt=nsec3_salt,
    )
    return h
