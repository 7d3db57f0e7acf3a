"""Randomised zones and queries: the responder's answer and its proofs agree with an
independent model of the zone and with denial checks written from RFC 4035 / RFC 5155."""

from __future__ import annotations

import random

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from _testkit_support import (
    NOW,
    nsec3_covers,
    nsec3_matches,
    nsec3_optout,
    nsec_covers,
    nsec_types,
    rrsets,
    validate_all,
)

from dance.testkit import Zone, ZoneSet

T = dns.rdatatype.RdataType
Name = dns.name.Name
ORIGIN = dns.name.from_text("zone.test.")
LABELS = ["a", "b", "c", "_d", "x"]
TYPES = {T.A: "192.0.2.1", T.TXT: '"t"', T.TLSA: "3 1 1 " + "ab" * 32}
QTYPES = [T.A, T.TXT, T.TLSA, T.DS, T.NS, T.MX]


def _random_name(rng: random.Random, depth: int) -> Name:
    return Name(tuple(rng.choice(LABELS).encode() for _ in range(depth)) + ORIGIN.labels)


class Model:
    """What the zone holds, computed independently of the kit."""

    def __init__(self, rng: random.Random) -> None:
        self.data: dict[Name, set[int]] = {ORIGIN: {T.SOA, T.NS}}
        self.cuts: dict[Name, bool] = {}  # cut -> signed (has DS)
        for _ in range(rng.randint(4, 14)):
            name = _random_name(rng, rng.randint(1, 3))
            if rng.random() < 0.25:
                name = Name((b"*", *name.labels[1:])) if len(name) > len(ORIGIN) + 1 else name
            self.data.setdefault(name, set()).add(rng.choice(list(TYPES)))
        for _ in range(rng.randint(0, 2)):
            cut = _random_name(rng, rng.randint(1, 2))
            if cut in self.data or any(
                cut.is_subdomain(c) or c.is_subdomain(cut) for c in self.cuts
            ):
                continue
            self.cuts[cut] = rng.random() < 0.5
        # drop names at or below cuts (they would be glue-like junk)
        self.data = {
            n: t for n, t in self.data.items() if not any(n.is_subdomain(c) for c in self.cuts)
        }

    def zone(self) -> Zone:
        zone = Zone(ORIGIN, nameservers=["ns.elsewhere.invalid."])
        for name, types in self.data.items():
            for rdtype in types - {T.SOA, T.NS}:
                zone.add(name, rdtype, TYPES[rdtype])
        for cut, signed in self.cuts.items():
            zone.delegate(
                cut,
                nameservers=["ns.elsewhere.invalid."],
                ds=["12345 13 2 " + "aa" * 32] if signed else (),
                signed=signed,
            )
        return zone

    def exists(self, name: Name) -> bool:
        return any(n.is_subdomain(name) for n in (*self.data, *self.cuts))

    def expect(self, qname: Name, qtype: int) -> str:
        for cut in self.cuts:
            if qname.is_subdomain(cut) and not (qname == cut and qtype == T.DS):
                return "referral"
        if qname in self.cuts:
            return "answer" if self.cuts[qname] else "nodata"
        if self.exists(qname):
            return "answer" if qtype in self.data.get(qname, set()) else "nodata"
        encloser = qname.parent()
        while not self.exists(encloser):
            encloser = encloser.parent()
        wildcard = Name((b"*", *encloser.labels))
        if wildcard in self.data:
            return "wildcard-answer" if qtype in self.data[wildcard] else "wildcard-nodata"
        return "nxdomain"


def _classify(response: dns.message.Message, qname: Name, qtype: int) -> str:
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return "nxdomain"
    assert rcode == dns.rcode.NOERROR
    if not response.flags & dns.flags.AA:
        return "referral"
    answers = [r for r in response.answer if r.rdtype == qtype and r.name == qname]
    if answers:
        sig = [r for r in response.answer if r.rdtype == T.RRSIG and r.covers == qtype]
        labels = next(iter(sig[0])).labels
        literal = qname.labels[0] == b"*"  # the wildcard owner itself
        return "wildcard-answer" if labels < len(qname) - 1 and not literal else "answer"
    assert not response.answer and rrsets(response.authority, T.SOA)
    return "nodata"


def _ancestors(name: Name) -> list[Name]:
    out = []
    while name != ORIGIN:
        name = name.parent()
        out.append(name)
    return out


def _check_nsec(response: dns.message.Message, qname: Name, qtype: int, kind: str) -> None:
    nsecs = rrsets(response.authority, T.NSEC)
    for nsec in nsecs if kind != "referral" else []:
        # no parent-side NSEC may deny anything below its cut (RFC 6840 4.1)
        types = nsec_types(nsec)
        if T.NS in types and T.SOA not in types:
            assert not (qname != nsec.name and qname.is_subdomain(nsec.name))
    if kind == "nxdomain":
        cover = [n for n in nsecs if nsec_covers(n, qname)]
        assert cover
        # closest encloser from the covering NSEC (RFC 4035 5.4): longest common ancestor
        ce = max(
            (
                qname.fullcompare(cover[0].name)[2],
                qname.fullcompare(next(iter(cover[0])).next)[2],
            )
        )
        encloser = Name(qname.labels[-ce:])
        assert any(nsec_covers(n, Name((b"*", *encloser.labels))) for n in nsecs)
    elif kind == "nodata":
        match = [n for n in nsecs if n.name == qname]
        if match:
            assert qtype not in nsec_types(match[0]) and T.CNAME not in nsec_types(match[0])
        else:  # empty non-terminal: covered, and the next name lies below it
            assert any(
                nsec_covers(n, qname) and next(iter(n)).next.is_subdomain(qname) for n in nsecs
            )
    elif kind == "wildcard-answer":
        assert any(nsec_covers(n, qname) for n in nsecs)
    elif kind == "wildcard-nodata":
        assert any(nsec_covers(n, qname) for n in nsecs)
        wild = [
            n for n in nsecs if n.name.labels[0] == b"*" and qname.is_subdomain(n.name.parent())
        ]
        assert wild and qtype not in nsec_types(wild[0])
    elif kind == "referral" and not rrsets(response.authority, T.DS):
        cut = rrsets(response.authority, T.NS)[0].name
        match = [n for n in nsecs if n.name == cut]
        assert match and T.DS not in nsec_types(match[0])


def _ce_proof(n3: list[dns.rrset.RRset], qname: Name) -> tuple[Name, list[dns.rrset.RRset]]:
    """RFC 5155 8.3: closest provable encloser and the NSEC3 covering the next closer."""
    candidates = [qname, *_ancestors(qname)]
    for i, candidate in enumerate(candidates):
        match = [r for r in n3 if nsec3_matches(r, candidate)]
        if match and i > 0:
            types = nsec_types(match[0])
            assert not (T.NS in types and T.SOA not in types), "delegation as closest encloser"
            next_closer = candidates[i - 1]
            cover = [r for r in n3 if nsec3_covers(r, next_closer)]
            assert cover, f"next closer {next_closer} not covered"
            return candidate, cover
    raise AssertionError(f"no closest encloser proof for {qname}")


def _check_nsec3(response: dns.message.Message, qname: Name, qtype: int, kind: str) -> None:
    n3 = rrsets(response.authority, T.NSEC3)
    if kind == "nxdomain":
        ce, cover = _ce_proof(n3, qname)
        if not nsec3_optout(cover[0]):
            assert any(nsec3_covers(r, Name((b"*", *ce.labels))) for r in n3)
    elif kind == "nodata":
        match = [r for r in n3 if nsec3_matches(r, qname)]
        if match:
            assert qtype not in nsec_types(match[0]) and T.CNAME not in nsec_types(match[0])
        else:  # only with opt-out (DS of an insecure delegation, or an opt-out ENT)
            _, cover = _ce_proof(n3, qname)
            assert nsec3_optout(cover[0])
    elif kind == "wildcard-answer":
        sig = next(iter(next(r for r in response.answer if r.rdtype == T.RRSIG)))
        next_closer = Name(qname.labels[-(sig.labels + 2) :])
        assert any(nsec3_covers(r, next_closer) for r in n3)
    elif kind == "wildcard-nodata":
        ce, _ = _ce_proof(n3, qname)
        wild = [r for r in n3 if nsec3_matches(r, Name((b"*", *ce.labels)))]
        assert wild and qtype not in nsec_types(wild[0])
    elif kind == "referral" and not rrsets(response.authority, T.DS):
        cut = rrsets(response.authority, T.NS)[0].name
        match = [r for r in n3 if nsec3_matches(r, cut)]
        if match:
            assert T.DS not in nsec_types(match[0])
        else:
            _, cover = _ce_proof(n3, cut)
            assert nsec3_optout(cover[0])


@pytest.mark.parametrize("seed", range(40))
def test_random_zone(seed: int) -> None:
    rng = random.Random(seed)
    model = Model(rng)
    zone = model.zone()
    denial, optout = [("nsec", False), ("nsec3", False), ("nsec3", True)][seed % 3]
    zone.sign(13, denial, now=NOW, nsec3_optout=optout)  # type: ignore[arg-type]
    zs = ZoneSet(zone)
    names = set(model.data) | set(model.cuts)
    names |= {a for n in list(names) for a in _ancestors(n)}
    names |= {_random_name(rng, rng.randint(1, 4)) for _ in range(25)}
    names |= {Name((b"q", *n.labels)) for n in list(names) if n.labels[0] == b"*"}
    for qname in sorted(names):
        for qtype in QTYPES:
            response = zs.respond(dns.message.make_query(qname, qtype, want_dnssec=True))
            expected = model.expect(qname, qtype)
            got = _classify(response, qname, qtype)
            if expected == "wildcard-nodata":
                expected = "nodata"
            assert got == expected, (qname, dns.rdatatype.to_text(qtype), got, expected)
            kind = model.expect(qname, qtype)
            validate_all(zs, response)
            if denial == "nsec":
                _check_nsec(response, qname, qtype, kind)
            else:
                _check_nsec3(response, qname, qtype, kind)
