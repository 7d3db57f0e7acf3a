"""A minimal, self-contained DNSSEC test kit for tests/dns: signed zones (NSEC or NSEC3, with
opt-out and wildcards) and an in-memory authoritative responder for several zones.

Deliberately independent of dance.testkit so that the validator's tests do not share code (and
possibly bugs) with the production of the zones they check.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
from cryptography.hazmat.primitives.asymmetric import ec
from dns.rdtypes.ANY.NSEC import NSEC
from dns.rdtypes.ANY.NSEC3 import NSEC3
from dns.rdtypes.ANY.RRSIG import RRSIG

Name = dns.name.Name
IN = dns.rdataclass.IN
T = dns.rdatatype.RdataType
NOW = 1_800_000_000.0  # a fixed "now" for every test (2027-01-15)
DAY = 86400

_KEY_CACHE: list[ec.EllipticCurvePrivateKey] = []


def _key(i: int) -> ec.EllipticCurvePrivateKey:
    while len(_KEY_CACHE) <= i:
        _KEY_CACHE.append(ec.generate_private_key(ec.SECP256R1()))
    return _KEY_CACHE[i]


def n(text: str) -> Name:
    return dns.name.from_text(text)


def _bitmap(types: set[int]) -> list[tuple[int, bytes]]:
    windows: dict[int, bytearray] = {}
    for t in sorted(types):
        w, b = divmod(t, 256)
        arr = windows.setdefault(w, bytearray(32))
        arr[b // 8] |= 0x80 >> (b % 8)
    out = []
    for w in sorted(windows):
        arr = windows[w].rstrip(b"\x00")
        out.append((w, bytes(arr)))
    return out


def nsec3_hash(name: Name, salt: bytes, iterations: int) -> bytes:
    wire = name.canonicalize().to_wire()
    assert wire is not None
    d = hashlib.sha1(wire + salt).digest()
    for _ in range(iterations):
        d = hashlib.sha1(d + salt).digest()
    return d


@dataclass
class TZone:
    origin: Name
    denial: str = "nsec"  # "nsec", "nsec3" or "none" (unsigned zone)
    iterations: int = 0
    salt: bytes = b""
    opt_out: bool = False
    ttl: int = 300
    key_index: int = 0
    inception: float = NOW - DAY
    expiration: float = NOW + 7 * DAY
    rrsets: dict[tuple[Name, int], dns.rrset.RRset] = field(default_factory=dict)
    sigs: dict[tuple[Name, int], dns.rrset.RRset] = field(default_factory=dict)
    nsec3_owner: dict[bytes, Name] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ksk_priv = _key(2 * self.key_index)
        self.zsk_priv = _key(2 * self.key_index + 1)
        self.ksk = dns.dnssec.make_dnskey(self.ksk_priv.public_key(), 13, flags=257)
        self.zsk = dns.dnssec.make_dnskey(self.zsk_priv.public_key(), 13, flags=256)
        self.add("@", "SOA", "ns.invalid. host.invalid. 1 3600 600 86400 60")
        self.add("@", "NS", "ns.invalid.")

    @property
    def signed(self) -> bool:
        return self.denial != "none"

    def name(self, text: str) -> Name:
        if text == "@":
            return self.origin
        return dns.name.from_text(text, self.origin)

    def add(self, owner: str, rdtype: str, *rdatas: str, ttl: int | None = None) -> TZone:
        name = self.name(owner)
        t = dns.rdatatype.from_text(rdtype)
        rrset = self.rrsets.get((name, t))
        if rrset is None:
            rrset = dns.rrset.RRset(name, IN, t)
            self.rrsets[(name, t)] = rrset
        for text in rdatas:
            rrset.add(
                dns.rdata.from_text(IN, t, text, origin=self.origin, relativize=False),
                ttl or self.ttl,
            )
        return self

    def delegate(self, child: TZone, *, with_ds: bool = True) -> TZone:
        rel = child.origin.relativize(self.origin).to_text()
        self.add(rel, "NS", "ns.invalid.")
        if with_ds and child.signed:
            for digest in (2,):
                ds = dns.dnssec.make_ds(child.origin, child.ksk, digest)
                self.add(rel, "DS", ds.to_text())
        return self

    def ds_text(self) -> str:
        ds = dns.dnssec.make_ds(self.origin, self.ksk, 2)
        return f"{self.origin} IN DS {ds.to_text()}"

    # -- structure ----------------------------------------------------------------------
    def cuts(self) -> set[Name]:
        return {name for (name, t) in self.rrsets if t == T.NS and name != self.origin}

    def below_cut(self, name: Name) -> Name | None:
        """The delegation at or above ``name`` (excluding the apex), if any."""
        for cut in self.cuts():
            if name.is_subdomain(cut):
                return cut
        return None

    def authoritative_owners(self) -> set[Name]:
        out = set()
        for name, _t in self.rrsets:
            cut = self.below_cut(name)
            if cut is None or cut == name:
                out.add(name)
        return out

    def existing(self) -> set[Name]:
        names = set(self.authoritative_owners())
        for name in list(names):
            p = name
            while p != self.origin:
                p = p.parent()
                names.add(p)
        return names

    def types_at(self, name: Name) -> set[int]:
        return {t for (o, t) in self.rrsets if o == name}

    # -- signing --------------------------------------------------------------------------
    def sign(self) -> TZone:
        for key in [k for k in self.rrsets if k[1] in (T.NSEC, T.NSEC3, T.DNSKEY)]:
            del self.rrsets[key]
        self.sigs.clear()
        self.nsec3_owner.clear()
        if not self.signed:
            return self
        dnskey = dns.rrset.RRset(self.origin, IN, T.DNSKEY)
        dnskey.add(self.ksk, self.ttl)
        dnskey.add(self.zsk, self.ttl)
        self.rrsets[(self.origin, T.DNSKEY)] = dnskey
        if self.denial == "nsec":
            self._nsec_chain()
        else:
            self._nsec3_chain()
        for (name, t), rrset in self.rrsets.items():
            cut = self.below_cut(name)
            if cut is not None and (cut != name or t not in (T.DS, T.NSEC)):
                continue  # delegation NS and glue are not signed
            self.sign_rrset(rrset)
        return self

    def sign_rrset(self, rrset: dns.rrset.RRset, **overrides: object) -> dns.rrset.RRset:
        priv = self.ksk_priv if rrset.rdtype == T.DNSKEY else self.zsk_priv
        key = self.ksk if rrset.rdtype == T.DNSKEY else self.zsk
        kwargs: dict[str, object] = {
            "inception": self.inception,
            "expiration": self.expiration,
            "signer": self.origin,
            "origin": self.origin,
            "dnskey": key,
        }
        kwargs.update(overrides)
        sig = dns.dnssec.sign(rrset, priv, **kwargs)  # type: ignore[arg-type]
        sigset = dns.rrset.RRset(rrset.name, IN, T.RRSIG, rrset.rdtype)
        sigset.add(sig, rrset.ttl)
        self.sigs[(rrset.name, rrset.rdtype)] = sigset
        return sigset

    def _nsec_chain(self) -> None:
        owners = sorted(self.authoritative_owners())
        for i, owner in enumerate(owners):
            nxt = owners[(i + 1) % len(owners)]
            types = self.types_at(owner) | {T.NSEC, T.RRSIG}
            if owner in self.cuts():
                types = (types & {T.NS, T.DS}) | {T.NSEC, T.RRSIG}
            rd = NSEC(IN, T.NSEC, nxt, _bitmap(types))
            rrset = dns.rrset.RRset(owner, IN, T.NSEC)
            rrset.add(rd, 60)
            self.rrsets[(owner, T.NSEC)] = rrset

    def _nsec3_chain(self) -> None:
        names = self.existing()
        if self.opt_out:
            names = {
                nm for nm in names if not (nm in self.cuts() and (nm, T.DS) not in self.rrsets)
            }
        hashed = sorted((nsec3_hash(nm, self.salt, self.iterations), nm) for nm in names)
        flags = 1 if self.opt_out else 0
        for i, (h, nm) in enumerate(hashed):
            nxt = hashed[(i + 1) % len(hashed)][0]
            types = self.types_at(nm)
            if nm in self.cuts():
                types &= {T.NS, T.DS}
            if types or nm == self.origin:
                types |= {T.RRSIG}
            if nm == self.origin:
                types |= {T.NSEC3PARAM}
            rd = NSEC3(IN, T.NSEC3, 1, flags, self.iterations, self.salt, nxt, _bitmap(types))
            owner = dns.name.Name((base64.b32hexencode(h).lower(), *self.origin.labels))
            rrset = dns.rrset.RRset(owner, IN, T.NSEC3)
            rrset.add(rd, 60)
            self.rrsets[(owner, T.NSEC3)] = rrset
            self.nsec3_owner[h] = owner

    # -- denial helpers for the responder --------------------------------------------------
    def _with_sig(self, key: tuple[Name, int]) -> list[dns.rrset.RRset]:
        out = [self.rrsets[key]]
        if key in self.sigs:
            out.append(self.sigs[key])
        return out

    def nsec_covering(self, name: Name) -> list[dns.rrset.RRset]:
        owners = sorted(o for (o, t) in self.rrsets if t == T.NSEC)
        best = owners[-1]
        for o in owners:
            if o <= name:
                best = o
        return self._with_sig((best, T.NSEC))

    def nsec3_for(self, name: Name, *, match: bool) -> list[dns.rrset.RRset]:
        h = nsec3_hash(name, self.salt, self.iterations)
        hashes = sorted(self.nsec3_owner)
        if match:
            return self._with_sig((self.nsec3_owner[h], T.NSEC3))
        best = hashes[-1]
        for x in hashes:
            if x < h:
                best = x
        return self._with_sig((self.nsec3_owner[best], T.NSEC3))

    def closest_encloser(self, name: Name) -> Name:
        existing = self.existing()
        p = name
        while p not in existing:
            p = p.parent()
        return p

    def has_nsec3(self, name: Name) -> bool:
        return nsec3_hash(name, self.salt, self.iterations) in self.nsec3_owner


Responder = Callable[[dns.message.Message], dns.message.Message]


class Server:
    """An in-memory authoritative server for several zones (all assumed on one address)."""

    def __init__(self, *zones: TZone) -> None:
        self.zones = list(zones)
        self.queries: list[tuple[Name, int]] = []

    def zone_for(self, qname: Name, qtype: int) -> TZone | None:
        best: TZone | None = None
        for z in self.zones:
            if qname.is_subdomain(z.origin) and (best is None or len(z.origin) > len(best.origin)):
                if qtype == T.DS and qname == z.origin and qname != dns.name.root:
                    continue  # DS is answered by the parent
                best = z
        return best

    def respond(self, query: dns.message.Message) -> dns.message.Message:
        q = query.question[0]
        self.queries.append((q.name, q.rdtype))
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA
        resp.use_edns(0, dns.flags.DO if query.ednsflags & dns.flags.DO else 0, 1232)
        zone = self.zone_for(q.name, q.rdtype)
        if zone is None:
            resp.set_rcode(dns.rcode.REFUSED)
            return resp
        self._answer(zone, q.name, q.rdtype, resp)
        return resp

    def _answer(self, z: TZone, qname: Name, qtype: int, resp: dns.message.Message) -> None:
        cut = z.below_cut(qname)
        if cut is not None and not (cut == qname and qtype == T.DS):
            resp.flags &= ~dns.flags.AA
            resp.authority.extend(z._with_sig((cut, T.NS)))
            if (cut, T.DS) in z.rrsets:
                resp.authority.extend(z._with_sig((cut, T.DS)))
            elif z.signed:
                resp.authority.extend(self._nodata_proof(z, cut, T.DS))
            return
        if (qname, qtype) in z.rrsets:
            resp.answer.extend(z._with_sig((qname, qtype)))
            return
        if (qname, T.CNAME) in z.rrsets:
            resp.answer.extend(z._with_sig((qname, T.CNAME)))
            return
        soa = z._with_sig((z.origin, T.SOA))
        if qname in z.existing():
            resp.authority.extend(soa)
            if z.signed:
                resp.authority.extend(self._nodata_proof(z, qname, qtype))
            return
        ce = z.closest_encloser(qname)
        wild = dns.name.Name((b"*", *ce.labels))
        if wild in z.existing():
            key = (wild, qtype) if (wild, qtype) in z.rrsets else (wild, T.CNAME)
            if key in z.rrsets:
                rr = z.rrsets[key]
                syn = dns.rrset.RRset(qname, IN, rr.rdtype)
                syn.update(rr)
                resp.answer.append(syn)
                if key in z.sigs:
                    sig = dns.rrset.RRset(qname, IN, T.RRSIG, rr.rdtype)
                    sig.update(z.sigs[key])
                    resp.answer.append(sig)
                if z.signed:
                    resp.authority.extend(self._nonexistence(z, qname, ce))
                return
            resp.authority.extend(soa)
            if z.signed:
                resp.authority.extend(self._nonexistence(z, qname, ce))
                if z.denial == "nsec":
                    resp.authority.extend(z._with_sig((wild, T.NSEC)))
                else:
                    resp.authority.extend(z.nsec3_for(wild, match=True))
            return
        resp.set_rcode(dns.rcode.NXDOMAIN)
        resp.authority.extend(soa)
        if z.signed:
            resp.authority.extend(self._nonexistence(z, qname, ce))
            if z.denial == "nsec":
                resp.authority.extend(z.nsec_covering(wild))
            else:
                resp.authority.extend(z.nsec3_for(wild, match=False))

    def _nodata_proof(self, z: TZone, name: Name, qtype: int) -> list[dns.rrset.RRset]:
        if z.denial == "nsec":
            if (name, T.NSEC) in z.rrsets:
                return z._with_sig((name, T.NSEC))
            return z.nsec_covering(name)  # empty non-terminal
        if z.has_nsec3(name):
            return z.nsec3_for(name, match=True)
        ce = z.closest_encloser(name.parent())
        while not z.has_nsec3(ce):
            ce = ce.parent()
        return self._nonexistence(z, name, ce)

    def _nonexistence(self, z: TZone, qname: Name, ce: Name) -> list[dns.rrset.RRset]:
        if z.denial == "nsec":
            return z.nsec_covering(qname)
        nc = qname.split(len(ce) + 1)[1]
        out = z.nsec3_for(ce, match=True) if z.has_nsec3(ce) else []
        return out + z.nsec3_for(nc, match=False)


def dedupe(rrsets: list[dns.rrset.RRset]) -> list[dns.rrset.RRset]:
    seen: list[dns.rrset.RRset] = []
    for r in rrsets:
        if not any(r is s for s in seen):
            seen.append(r)
    return seen


class MemoryTransport:
    """A Transport around a responder, with hooks for tampering and delays."""

    def __init__(
        self,
        server: Server,
        *,
        tamper: Callable[[dns.message.Message, dns.message.Message], dns.message.Message]
        | None = None,
        delay: Callable[[dns.message.Message], float] | None = None,
        wire: bool = True,
    ) -> None:
        self.server = server
        self.tamper = tamper
        self.delay = delay
        self.wire = wire
        self.count = 0

    async def query(self, msg: dns.message.Message) -> dns.message.Message:
        import asyncio

        self.count += 1
        if self.delay is not None:
            d = self.delay(msg)
            if d:
                await asyncio.sleep(d)
        q = dns.message.from_wire(msg.to_wire()) if self.wire else msg
        resp = self.server.respond(q)
        for section in (resp.answer, resp.authority):
            section[:] = dedupe(section)
        if self.tamper is not None:
            # never let a tamper hook modify the zone's own RRset objects
            resp = self.tamper(msg, dns.message.from_wire(resp.to_wire(max_size=65535)))
        if self.wire:
            return dns.message.from_wire(resp.to_wire(max_size=65535))
        return resp


def rrsig_of(msg: dns.message.Message, rdtype: int) -> list[RRSIG]:
    out = []
    for rr in msg.answer + msg.authority:
        if rr.rdtype == T.RRSIG and rr.covers == rdtype:
            out.extend(rr)
    return out
