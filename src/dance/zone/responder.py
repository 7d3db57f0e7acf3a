"""Sans-I/O authoritative responder over the zones of a :class:`~dance.zone.ZoneSet`.

It answers like an RFC 1034/4035/5155 authoritative server with minimal responses:

* AA on authoritative answers, not on referrals; RD and CD copied; never RA or AD.
* DNSSEC records (RRSIG, NSEC, NSEC3) only when the query has DO=1 (RFC 4035 3.1, 3.2.1),
  unless the query asks for such a type explicitly.
* Positive answers, CNAME answers (followed inside the zone), wildcard expansion with the
  wildcard's RRSIG and the proof that no closer match exists, NODATA and NXDOMAIN with NSEC
  (RFC 4035 3.1.3) or NSEC3 (RFC 5155 7.2) proofs, empty non-terminals, referrals with DS or
  the proof of its absence (opt-out aware) and glue, DS answered by the parent side.
* EDNS(0): OPT echoed with the DO bit, BADVERS for versions above 0, UDP size honoured with
  TC=1 when an answer does not fit; REFUSED outside its zones, FORMERR for garbage, NOTIMP
  for other opcodes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.DS import DS
from dns.rdtypes.ANY.NSEC import NSEC
from dns.rdtypes.ANY.NSEC3 import NSEC3
from dns.rdtypes.ANY.RRSIG import RRSIG
from dns.rdtypes.util import Bitmap

from dance.zone.faults import Fault, FaultKind, FaultSet, Transport
from dance.zone.zones import SignedZone, Zone


class ZoneSet(Protocol):
    """What the responder needs of a set of zones (`dance.zone.ZoneSet` is one)."""

    def get(self, origin: str | dns.name.Name) -> Zone | None: ...

    def zone_for(self, qname: dns.name.Name, qtype: int = ...) -> Zone | None: ...

    @property
    def faults(self) -> FaultSet: ...


__all__ = ["DEFAULT_MAX_UDP", "WireReply", "respond", "respond_wire"]

log = logging.getLogger(__name__)

RdataType = dns.rdatatype.RdataType
Name = dns.name.Name
IN = dns.rdataclass.IN

#: Largest UDP payload this server sends (DNS flag day 2020 value).
DEFAULT_MAX_UDP = 1232
_MAX_CNAME_CHAIN = 8
_DNSSEC_TYPES = frozenset({RdataType.RRSIG, RdataType.NSEC, RdataType.NSEC3})
_EXPIRED_AGE = 7 * 86400  # beyond any validator clock skew allowance (Unbound: 24 h max)


@dataclass
class WireReply:
    """What to send back for one query: ``data`` is ``None`` when nothing must be sent."""

    data: bytes | None
    delay: float = 0.0
    message: dns.message.Message | None = None


@dataclass
class _Ctx:
    zoneset: ZoneSet
    do: bool
    faults: tuple[Fault, ...]
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR
    aa: bool = True
    referral: bool = False

    def add(
        self,
        section: list[dns.rrset.RRset],
        rrset: dns.rrset.RRset,
        sig: dns.rrset.RRset | None = None,
    ) -> None:
        for existing in section:
            if (
                existing.name == rrset.name
                and existing.rdtype == rrset.rdtype
                and existing.covers == rrset.covers
            ):
                return
        section.append(rrset)
        if sig is not None and self.do:
            section.append(sig)

    def ds_fault(self, cut: Name) -> FaultKind | None:
        for fault in self.faults:
            if fault.matches_delegation(cut):
                return fault.kind
        return None


def _sig(zd: SignedZone, owner: Name, rdtype: RdataType) -> dns.rrset.RRset | None:
    return zd.sigs.get(owner, {}).get(rdtype)


def _with_ttl(rrset: dns.rrset.RRset, ttl: int) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(rrset.name, min(ttl, rrset.ttl), list(rrset))


def _renamed(rrset: dns.rrset.RRset, name: Name) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(name, rrset.ttl, list(rrset))


# ----------------------------------------------------------------- denial records


def _ds_at(
    ctx: _Ctx, zd: SignedZone, cut: Name
) -> tuple[dns.rrset.RRset | None, dns.rrset.RRset | None]:
    ds = zd.rrsets.get(cut, {}).get(RdataType.DS)
    if ds is None:
        return None, None
    kind = ctx.ds_fault(cut)
    if kind in (FaultKind.MISSING_DS, FaultKind.UNSIGNED_DELEGATION):
        return None, None
    if kind == FaultKind.WRONG_DS:
        wrong = [
            DS(  # type: ignore[no-untyped-call]
                IN,
                RdataType.DS,
                rd.key_tag,
                rd.algorithm,
                rd.digest_type,
                rd.digest[:-1] + bytes([rd.digest[-1] ^ 0xFF]),
            )
            for rd in ds
        ]
        bad = dns.rrset.from_rdata_list(cut, ds.ttl, wrong)
        return bad, (zd.sign_rrset(bad) if zd.signed else None)
    return ds, _sig(zd, cut, RdataType.DS)


def _ds_removed(ctx: _Ctx, zd: SignedZone, owner: Name) -> bool:
    return owner in zd.cuts and ctx.ds_fault(owner) in (
        FaultKind.MISSING_DS,
        FaultKind.UNSIGNED_DELEGATION,
    )


def _add_nsec(ctx: _Ctx, zd: SignedZone, owner: Name) -> None:
    rrset = zd.rrsets[owner][RdataType.NSEC]
    sig = _sig(zd, owner, RdataType.NSEC)
    if _ds_removed(ctx, zd, owner) and RdataType.DS in zd.rrsets[owner]:
        old = next(iter(rrset))
        assert isinstance(old, NSEC)
        types = [RdataType.NS, RdataType.RRSIG, RdataType.NSEC]
        windows = Bitmap.from_rdtypes(types).windows
        new = NSEC(IN, RdataType.NSEC, old.next, windows)  # type: ignore[no-untyped-call]
        rrset = dns.rrset.from_rdata(owner, rrset.ttl, new)
        sig = zd.sign_rrset(rrset)
    ctx.add(ctx.authority, rrset, sig)


def _add_nsec3(ctx: _Ctx, zd: SignedZone, hashed: Name) -> None:
    chain = zd.nsec3
    assert chain is not None
    rrset = chain.rrsets[hashed]
    sig = _sig(zd, hashed, RdataType.NSEC3)
    original = chain.original[hashed]
    if _ds_removed(ctx, zd, original) and RdataType.DS in zd.rrsets[original]:
        old = next(iter(rrset))
        assert isinstance(old, NSEC3)
        new = NSEC3(  # type: ignore[no-untyped-call]
            IN,
            RdataType.NSEC3,
            old.algorithm,
            old.flags,
            old.iterations,
            old.salt,
            old.next,
            Bitmap.from_rdtypes([RdataType.NS]).windows,
        )
        rrset = dns.rrset.from_rdata(hashed, rrset.ttl, new)
        sig = zd.sign_rrset(rrset)
    ctx.add(ctx.authority, rrset, sig)


def _next_closer(qname: Name, encloser: Name) -> Name:
    return Name(qname.labels[-(len(encloser) + 1) :])


def _wildcard_of(name: Name) -> Name:
    return Name((b"*", *name.labels))


def _nsec3_closest_encloser_proof(ctx: _Ctx, zd: SignedZone, qname: Name) -> Name:
    """Add the closest provable encloser proof (RFC 5155 7.2.1); return the encloser."""
    chain = zd.nsec3
    assert chain is not None
    encloser = qname.parent() if qname != zd.origin else qname
    while chain.matching(encloser) is None and encloser != zd.origin:
        encloser = encloser.parent()
    match = chain.matching(encloser)
    if match is not None:
        _add_nsec3(ctx, zd, match)
    if qname != encloser:
        _add_nsec3(ctx, zd, chain.covering(_next_closer(qname, encloser)))
    return encloser


def _add_soa(ctx: _Ctx, zd: SignedZone) -> None:
    soa = _with_ttl(zd.soa, zd.negative_ttl)
    sig = _sig(zd, zd.origin, RdataType.SOA)
    ctx.add(ctx.authority, soa, None if sig is None else _with_ttl(sig, zd.negative_ttl))


def _denial_wanted(ctx: _Ctx, zd: SignedZone) -> bool:
    return ctx.do and zd.signed


def _nodata(ctx: _Ctx, zd: SignedZone, qname: Name, wildcard: Name | None = None) -> None:
    _add_soa(ctx, zd)
    if not _denial_wanted(ctx, zd):
        return
    if zd.nsec3 is None:
        if wildcard is not None:  # RFC 4035 3.1.3.4
            _add_nsec(ctx, zd, zd.nsec_covering(qname))
            _add_nsec(ctx, zd, wildcard)
        else:  # 3.1.3.1; an empty non-terminal gets the NSEC that covers it
            _add_nsec(ctx, zd, zd.nsec_covering(qname))
        return
    chain = zd.nsec3
    if wildcard is not None:  # RFC 5155 7.2.5
        encloser = wildcard.parent()
        match = chain.matching(encloser)
        if match is not None:
            _add_nsec3(ctx, zd, match)
        _add_nsec3(ctx, zd, chain.covering(_next_closer(qname, encloser)))
        wmatch = chain.matching(wildcard)
        if wmatch is not None:
            _add_nsec3(ctx, zd, wmatch)
        return
    match = chain.matching(qname)
    if match is not None:  # 7.2.3
        _add_nsec3(ctx, zd, match)
    else:  # 7.2.4 (DS, opt-out) and opt-out empty non-terminals
        _nsec3_closest_encloser_proof(ctx, zd, qname)


def _nxdomain(ctx: _Ctx, zd: SignedZone, qname: Name, encloser: Name) -> None:
    ctx.rcode = dns.rcode.NXDOMAIN
    _add_soa(ctx, zd)
    if not _denial_wanted(ctx, zd):
        return
    if zd.nsec3 is None:  # RFC 4035 3.1.3.2
        _add_nsec(ctx, zd, zd.nsec_covering(qname))
        _add_nsec(ctx, zd, zd.nsec_covering(_wildcard_of(encloser)))
        return
    provable = _nsec3_closest_encloser_proof(ctx, zd, qname)  # RFC 5155 7.2.2
    _add_nsec3(ctx, zd, zd.nsec3.covering(_wildcard_of(provable)))


def _wildcard_proof(ctx: _Ctx, zd: SignedZone, qname: Name, encloser: Name) -> None:
    """No closer match than the wildcard exists (RFC 4035 3.1.3.3, RFC 5155 7.2.6)."""
    if not _denial_wanted(ctx, zd):
        return
    if zd.nsec3 is None:
        _add_nsec(ctx, zd, zd.nsec_covering(qname))
    else:
        _add_nsec3(ctx, zd, zd.nsec3.covering(_next_closer(qname, encloser)))


# -------------------------------------------------------------------- answers


def _referral(ctx: _Ctx, zd: SignedZone, cut: Name) -> None:
    ctx.aa = False
    ctx.referral = True
    node = zd.rrsets[cut]
    ns = node[RdataType.NS]
    ctx.add(ctx.authority, ns)
    ds, ds_sig = _ds_at(ctx, zd, cut)
    if ctx.do and ds is not None:  # RFC 4035 3.1.4
        ctx.add(ctx.authority, ds, ds_sig)
    elif _denial_wanted(ctx, zd):
        if zd.nsec3 is None:
            _add_nsec(ctx, zd, cut)
        else:
            match = zd.nsec3.matching(cut)
            if match is not None:
                _add_nsec3(ctx, zd, match)
            else:  # RFC 5155 7.2.7: opt-out
                _nsec3_closest_encloser_proof(ctx, zd, cut)
    for rd in ns:
        target = rd.target
        if not target.is_subdomain(zd.origin):
            continue
        for rtype in (RdataType.A, RdataType.AAAA):
            glue = zd.rrsets.get(target, {}).get(rtype)
            if glue is not None:
                ctx.add(ctx.additional, glue, _sig(zd, target, rtype))


def _positive(ctx: _Ctx, zd: SignedZone, owner: Name, node_owner: Name, rtype: RdataType) -> None:
    """Answer the RRset of ``node_owner`` (maybe a wildcard) as owned by ``owner``."""
    rrset = zd.rrsets[node_owner][rtype]
    sig = _sig(zd, node_owner, rtype)
    if owner != node_owner:
        rrset = _renamed(rrset, owner)
        sig = None if sig is None else _renamed(sig, owner)
    ctx.add(ctx.answer, rrset, sig)


def _answer_any(ctx: _Ctx, zd: SignedZone, owner: Name, node_owner: Name) -> None:
    for rtype in zd.rrsets[node_owner]:
        if rtype in _DNSSEC_TYPES and not ctx.do:
            continue
        _positive(ctx, zd, owner, node_owner, rtype)


def _answer_name(
    ctx: _Ctx, zd: SignedZone, qname: Name, qtype: RdataType, first: bool
) -> Name | None:
    """Answer ``qname``/``qtype`` from ``zd``; return a CNAME target to follow, if any."""
    cut = zd.find_cut(qname)
    if cut is not None and not (cut == qname and qtype == RdataType.DS):
        if first:
            _referral(ctx, zd, cut)
        return None
    if cut is not None:  # DS at a delegation point: the parent is authoritative
        ds, ds_sig = _ds_at(ctx, zd, cut)
        if ds is not None:
            ctx.add(ctx.answer, ds, ds_sig)
        else:
            _nodata(ctx, zd, qname)
        return None

    if qname in zd.names:
        node = zd.rrsets.get(qname, {})
        if qtype == RdataType.ANY and node:
            _answer_any(ctx, zd, qname, qname)
            return None
        if qtype == RdataType.RRSIG:
            for sig in zd.sigs.get(qname, {}).values():
                ctx.add(ctx.answer, sig)
            if not zd.sigs.get(qname):
                _nodata(ctx, zd, qname)
            return None
        if qtype in node:
            _positive(ctx, zd, qname, qname, qtype)
            return None
        if RdataType.CNAME in node and qtype != RdataType.CNAME:
            _positive(ctx, zd, qname, qname, RdataType.CNAME)
            return node[RdataType.CNAME][0].target  # type: ignore[no-any-return]
        _nodata(ctx, zd, qname)
        return None

    nsec3_owner = zd.nsec3.rrsets.get(qname) if zd.nsec3 is not None else None
    if nsec3_owner is not None and qtype == RdataType.NSEC3:
        ctx.add(ctx.answer, nsec3_owner, _sig(zd, qname, RdataType.NSEC3))
        return None

    encloser = zd.closest_encloser(qname)
    wildcard = _wildcard_of(encloser)
    wnode = zd.rrsets.get(wildcard) if wildcard in zd.names else None
    if wnode is None:
        _nxdomain(ctx, zd, qname, encloser)
        return None
    if qtype == RdataType.ANY:
        _answer_any(ctx, zd, qname, wildcard)
        _wildcard_proof(ctx, zd, qname, encloser)
        return None
    if qtype in wnode:
        _positive(ctx, zd, qname, wildcard, qtype)
        _wildcard_proof(ctx, zd, qname, encloser)
        return None
    if RdataType.CNAME in wnode:
        _positive(ctx, zd, qname, wildcard, RdataType.CNAME)
        _wildcard_proof(ctx, zd, qname, encloser)
        return wnode[RdataType.CNAME][0].target  # type: ignore[no-any-return]
    _nodata(ctx, zd, qname, wildcard)
    return None


def _resolve(ctx: _Ctx, zd: SignedZone, qname: Name, qtype: RdataType) -> None:
    seen = {qname}
    current = qname
    first = True
    for _ in range(_MAX_CNAME_CHAIN):
        target = _answer_name(ctx, zd, current, qtype, first)
        first = False
        if target is None or not target.is_subdomain(zd.origin) or target in seen:
            return
        if ctx.rcode != dns.rcode.NOERROR:
            return
        seen.add(target)
        current = target


# ------------------------------------------------------------------ RRSIG faults


def _rrsig_owner_for_signing(owner: Name, labels: int) -> Name:
    if labels < len(owner) - 1:
        return Name((b"*", *owner.labels[-(labels + 1) :]))
    return owner


def _apply_rrsig_faults(ctx: _Ctx, section: list[dns.rrset.RRset]) -> list[dns.rrset.RRset]:
    out: list[dns.rrset.RRset] = []
    for rrset in section:
        if rrset.rdtype != RdataType.RRSIG or not len(rrset):
            out.append(rrset)
            continue
        first = next(iter(rrset))
        assert isinstance(first, RRSIG)
        fault = next(
            (f for f in ctx.faults if f.matches_rrsig(rrset.name, first.signer, rrset.covers)),
            None,
        )
        if fault is None:
            out.append(rrset)
        elif fault.kind == FaultKind.STRIPPED_RRSIG:
            continue
        elif fault.kind == FaultKind.BAD_SIGNATURE:
            bad = [
                rd.replace(signature=bytes([rd.signature[0] ^ 0xFF]) + rd.signature[1:])
                for rd in rrset
            ]
            out.append(dns.rrset.from_rdata_list(rrset.name, rrset.ttl, bad))
        else:  # EXPIRED_RRSIG
            out.append(_expired(ctx, section, rrset, first))
    return out


def _expired(
    ctx: _Ctx, section: list[dns.rrset.RRset], rrsig: dns.rrset.RRset, first: RRSIG
) -> dns.rrset.RRset:
    zone = ctx.zoneset.get(first.signer)
    covered = next(
        (
            r
            for r in section
            if r.name == rrsig.name and r.rdtype == rrsig.covers and r.rdtype != RdataType.RRSIG
        ),
        None,
    )
    if zone is None or covered is None:
        return rrsig
    zd = zone.snapshot
    if not zd.signed or zd.params is None:
        return rrsig
    now = zd.params.now
    validity = max(zd.params.expiration - zd.params.inception, _EXPIRED_AGE)
    owner = _rrsig_owner_for_signing(rrsig.name, first.labels)
    fresh = zd.sign_rrset(
        _with_ttl(covered, first.original_ttl),
        owner=owner,
        inception=now - _EXPIRED_AGE - validity,
        expiration=now - _EXPIRED_AGE,
    )
    return dns.rrset.from_rdata_list(rrsig.name, rrsig.ttl, list(fresh))


# ---------------------------------------------------------------------- entry


def _error(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    response = _skeleton(query)
    response.set_rcode(rcode)
    return response


def _skeleton(query: dns.message.Message, max_udp: int = DEFAULT_MAX_UDP) -> dns.message.Message:
    response = dns.message.Message(id=query.id)
    response.flags = dns.flags.QR | (query.flags & (dns.flags.RD | dns.flags.CD))
    response.set_opcode(query.opcode())
    response.question = [dns.rrset.RRset(q.name, q.rdclass, q.rdtype) for q in query.question]
    if query.edns >= 0:
        response.use_edns(0, query.ednsflags & dns.flags.DO, max_udp)
    return response


def _formerr_from_wire(wire: bytes) -> dns.message.Message:
    response = dns.message.Message(id=int.from_bytes(wire[:2], "big") if len(wire) >= 2 else 0)
    response.flags = dns.flags.QR
    if len(wire) >= 4:
        response.flags |= int.from_bytes(wire[2:4], "big") & dns.flags.RD
        response.set_opcode(dns.opcode.from_flags(int.from_bytes(wire[2:4], "big")))
    response.set_rcode(dns.rcode.FORMERR)
    return response


def _answer(
    zoneset: ZoneSet,
    zd: SignedZone,
    query: dns.message.Message,
    qname: Name,
    qtype: RdataType,
    faults: tuple[Fault, ...],
    max_udp: int,
) -> dns.message.Message:
    do = bool(query.ednsflags & dns.flags.DO) and query.edns >= 0
    if any(
        f.kind == FaultKind.UNSIGNED_DELEGATION and f.matches_delegation(zd.origin) for f in faults
    ):
        do = False
    ctx = _Ctx(zoneset=zoneset, do=do, faults=faults)
    _resolve(ctx, zd, qname, qtype)
    response = _skeleton(query, max_udp)
    if ctx.aa:
        response.flags |= dns.flags.AA
    response.set_rcode(ctx.rcode)
    response.answer = _apply_rrsig_faults(ctx, ctx.answer)
    response.authority = _apply_rrsig_faults(ctx, ctx.authority)
    response.additional = _apply_rrsig_faults(ctx, ctx.additional)
    return response


def respond(
    zoneset: ZoneSet,
    query: dns.message.Message | bytes,
    *,
    transport: Transport | None = None,
    max_udp: int = DEFAULT_MAX_UDP,
    only_zone: Name | None = None,
) -> dns.message.Message:
    """Answer one query from the zones of ``zoneset`` (faults applied).

    With ``only_zone`` answer as a server holding only that zone would (referrals at its
    cuts, REFUSED outside it): handy to drive a validator that iterates from the root.
    """
    if isinstance(query, bytes | bytearray):
        wire = bytes(query)
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # any parse failure is a format error
            log.debug("unparsable query", exc_info=True)
            return _formerr_from_wire(wire)
    if query.flags & dns.flags.QR:
        return _error(query, dns.rcode.FORMERR)
    if query.opcode() != dns.opcode.QUERY:
        return _error(query, dns.rcode.NOTIMP)
    if len(query.question) != 1:
        return _error(query, dns.rcode.FORMERR)
    if query.edns > 0:
        response = _skeleton(query, max_udp)
        response.use_edns(0, query.ednsflags & dns.flags.DO, max_udp)
        response.set_rcode(dns.rcode.BADVERS)
        return response
    question = query.question[0]
    qname, qtype = question.name, RdataType.make(question.rdtype)
    if question.rdclass != IN:
        return _error(query, dns.rcode.REFUSED)
    if qtype in (RdataType.AXFR, RdataType.IXFR):
        return _error(query, dns.rcode.REFUSED)
    if dns.rdatatype.is_metatype(qtype) and qtype != RdataType.ANY:
        return _error(query, dns.rcode.FORMERR)

    if only_zone is None:
        zone = zoneset.zone_for(qname, qtype)
    else:
        zone = zoneset.get(only_zone) if qname.is_subdomain(only_zone) else None
    faults = zoneset.faults.active()
    zone_name = zone.origin if zone is not None else None
    message_faults = {f.kind for f in faults if f.matches_query(qname, zone_name, transport)}
    if zone is None:
        response = _error(query, dns.rcode.REFUSED)
    else:
        try:
            response = _answer(zoneset, zone.snapshot, query, qname, qtype, faults, max_udp)
        except Exception:  # a broken zone (e.g. parent signed before child): SERVFAIL
            log.exception("cannot answer %s %s", qname, qtype.name)
            response = _error(query, dns.rcode.SERVFAIL)
    if FaultKind.STRIPPED_DENIAL in message_faults:
        denial = (RdataType.NSEC, RdataType.NSEC3)
        for name in ("answer", "authority", "additional"):
            section = getattr(response, name)
            kept = [r for r in section if r.rdtype not in denial and r.covers not in denial]
            setattr(response, name, kept)
    if FaultKind.WRONG_ID in message_faults:
        response.id = (response.id + 0x5A5A) & 0xFFFF
    if FaultKind.WRONG_QUESTION in message_faults:
        response.question = [dns.rrset.RRset(Name((b"wrong-question", *qname.labels)), IN, qtype)]
    return response


def _fit(response: dns.message.Message, limit: int) -> bytes:
    """Render within ``limit`` bytes: drop optional additional data, else set TC."""
    wire = response.to_wire(max_size=65535)
    if len(wire) <= limit:
        return wire
    if response.additional and not _is_referral(response):
        response.additional = []
        wire = response.to_wire(max_size=65535)
        if len(wire) <= limit:
            return wire
    response.answer = []
    response.authority = []
    response.additional = []
    response.flags |= dns.flags.TC
    return response.to_wire(max_size=65535)


def _is_referral(response: dns.message.Message) -> bool:
    return not (response.flags & dns.flags.AA) and any(
        r.rdtype == RdataType.NS for r in response.authority
    )


def _malformed(wire: bytes) -> bytes:
    header = bytearray(wire[:12].ljust(12, b"\0"))
    header[6:8] = (0xFFFF).to_bytes(2, "big")  # ANCOUNT promises records that are not there
    return bytes(header) + wire[12:] + b"\xc0\xff\x00"


def respond_wire(
    zoneset: ZoneSet,
    wire: bytes,
    *,
    transport: Transport = "udp",
    max_udp: int = DEFAULT_MAX_UDP,
) -> WireReply:
    """Answer one query in wire format, including message-level faults and UDP truncation."""
    if len(wire) < 12 or wire[2] & 0x80:
        return WireReply(None)  # no header, or a response: never answer
    try:
        query = dns.message.from_wire(wire)
    except Exception:
        log.debug("unparsable query", exc_info=True)
        return WireReply(_formerr_from_wire(wire).to_wire())
    response = respond(zoneset, query, transport=transport, max_udp=max_udp)
    kinds: dict[FaultKind, Fault] = {}
    if len(query.question) == 1:
        qname = query.question[0].name
        qtype = RdataType.make(query.question[0].rdtype)
        zone = zoneset.zone_for(qname, qtype)
        zone_name = zone.origin if zone is not None else None
        for fault in zoneset.faults.active():
            if fault.matches_query(qname, zone_name, transport):
                kinds.setdefault(fault.kind, fault)
    if FaultKind.SILENT in kinds:
        return WireReply(None, message=response)
    delay = kinds[FaultKind.SLOW].delay if FaultKind.SLOW in kinds else 0.0
    if transport == "udp":
        client = max(512, query.payload) if query.edns >= 0 else 512
        limit = min(client, max(512, max_udp))
    else:
        limit = 65535
    if FaultKind.FORCE_TC in kinds and transport == "udp":
        response.answer, response.authority, response.additional = [], [], []
        response.flags |= dns.flags.TC
    try:
        data = _fit(response, limit)
    except dns.exception.TooBig:
        response.answer, response.authority, response.additional = [], [], []
        response.set_rcode(dns.rcode.SERVFAIL)
        data = response.to_wire()
    if FaultKind.TRUNCATED in kinds:
        data = data[: max(len(data) // 2, 6)]
    if FaultKind.MALFORMED in kinds:
        data = _malformed(data)
    return WireReply(data, delay=delay, message=response)
