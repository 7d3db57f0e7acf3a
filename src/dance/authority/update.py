"""RFC 2136 dynamic update processing (sans I/O): prerequisites, prescan, update.

:func:`apply_update` takes the zone's current records and a parsed (TSIG-checked)
``dns.update.UpdateMessage`` and returns the RCODE and, when the zone changed, the new
records. It never mutates its input, so an update is all or nothing. Beyond RFC 2136:

* DNSSEC records the signer owns (DNSKEY, RRSIG, NSEC, NSEC3, NSEC3PARAM) are REFUSED;
* DS is only accepted at a delegation (a name below the apex that has NS records);
* the SOA serial is raised after every change unless the update itself raised it: by one
  (serial arithmetic, RFC 1982), or by the caller's ``next_serial`` (the authority's serial
  policy, :mod:`dance.authority.serial`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.update
from dns.rdtypes.ANY.SOA import SOA

from dance.authority.store import SIGNER_TYPES, Records
from dance.zone.signing import hashed

__all__ = ["UpdatePolicy", "UpdateResult", "apply_update", "check_policy"]

log = logging.getLogger(__name__)

Name = dns.name.Name
RdataType = dns.rdatatype.RdataType
Rcode = dns.rcode.Rcode
ANY = dns.rdataclass.ANY
NONE = dns.rdataclass.NONE
IN = dns.rdataclass.IN
_FORBIDDEN_UPDATE_TYPES = frozenset(
    {RdataType.ANY, RdataType.AXFR, RdataType.IXFR, RdataType.MAILA, RdataType.MAILB}
)


@dataclass
class UpdateResult:
    """Outcome of one update: ``records`` is the new zone content when ``changed``."""

    rcode: Rcode
    records: Records | None = None
    changed: bool = False
    reason: str = ""
    added: int = 0
    deleted: int = 0
    touched: frozenset[Name] = frozenset()  # names whose records changed (apex included)


@dataclass(frozen=True)
class UpdatePolicy:
    """Who may change what (RFC 2136 section 3.3, "check requestor's permissions").

    ``types``: the record types an update may add or delete (None: any type the signer does
    not own). An identity zone that accepts only TLSA cannot be used to publish records that
    impersonate the organization's web sites (architecture section 6.2). ``scopes``: per TSIG
    key name, the names (and everything below them) that key may change; a key without an entry
    may change the whole zone.
    """

    types: frozenset[RdataType] | None = None
    scopes: dict[Name, tuple[Name, ...]] | None = None

    @classmethod
    def parse(cls, types: str | None, scopes: list[str] | None) -> UpdatePolicy:
        """From ``"TLSA,DS"`` and ``["KEY=NAME[,NAME...]", ...]``; ValueError on bad input."""
        parsed_types = None
        if types:
            parsed_types = frozenset(
                RdataType.make(dns.rdatatype.from_text(t.strip().upper()))
                for t in types.split(",")
                if t.strip()
            )
            if not parsed_types:
                raise ValueError("empty list of update types")
        parsed_scopes: dict[Name, tuple[Name, ...]] | None = None
        for entry in scopes or ():
            key, sep, names = entry.partition("=")
            if not sep or not key.strip() or not names.strip():
                raise ValueError(f"bad update scope {entry!r} (KEY=NAME[,NAME...])")
            parsed_scopes = parsed_scopes or {}
            parsed_scopes[dns.name.from_text(key.strip())] = tuple(
                dns.name.from_text(n.strip()) for n in names.split(",") if n.strip()
            )
        return cls(parsed_types, parsed_scopes)


def check_policy(
    policy: UpdatePolicy | None, keyname: Name | None, message: dns.update.UpdateMessage
) -> UpdateResult | None:
    """REFUSED when an update touches a type or a name its key may not change; else None."""
    if policy is None:
        return None
    scope = None
    if policy.scopes is not None and keyname is not None:
        scope = policy.scopes.get(keyname)
    for rrset in message.update:
        rdtype = RdataType.make(rrset.rdtype)
        if policy.types is not None and rdtype != RdataType.ANY and rdtype not in policy.types:
            return UpdateResult(Rcode.REFUSED, reason=f"{rdtype.name} updates are not allowed")
        if policy.types is not None and rdtype == RdataType.ANY and rrset.deleting == ANY:
            # "delete all RRsets at a name" could remove types outside the policy
            return UpdateResult(Rcode.REFUSED, reason="deleting whole names is not allowed")
        if scope is not None and not any(rrset.name.is_subdomain(top) for top in scope):
            return UpdateResult(Rcode.REFUSED, reason=f"key {keyname} may not change {rrset.name}")
    return None


def _in_use(records: Records, name: Name) -> bool:
    node = records.get(name) or {}
    return any(len(rds) for rds in node.values())


def _serial_gt(a: int, b: int) -> bool:
    """RFC 1982: is serial ``a`` greater than ``b``?"""
    return a != b and ((a - b) % 2**32) < 2**31


def _check_prerequisites(
    records: Records, origin: Name, message: dns.update.UpdateMessage
) -> UpdateResult | None:
    value_dependent: dict[tuple[Name, RdataType], set[dns.rdata.Rdata]] = {}
    for rrset in message.prerequisite:
        name = rrset.name
        rdtype = RdataType.make(rrset.rdtype)
        if rrset.ttl != 0:
            return UpdateResult(Rcode.FORMERR, reason="prerequisite with non-zero TTL")
        if not name.is_subdomain(origin):
            return UpdateResult(Rcode.NOTZONE, reason=f"{name} is outside zone {origin}")
        node = records.get(name, {})
        if rrset.deleting == ANY:
            if rdtype == RdataType.ANY:
                if not _in_use(records, name):
                    return UpdateResult(Rcode.NXDOMAIN, reason=f"{name} does not exist")
            elif not len(node.get(rdtype, ())):
                return UpdateResult(Rcode.NXRRSET, reason=f"{name} {rdtype.name} does not exist")
        elif rrset.deleting == NONE:
            if rdtype == RdataType.ANY:
                if _in_use(records, name):
                    return UpdateResult(Rcode.YXDOMAIN, reason=f"{name} exists")
            elif len(node.get(rdtype, ())):
                return UpdateResult(Rcode.YXRRSET, reason=f"{name} {rdtype.name} exists")
        elif rrset.rdclass == IN:
            if dns.rdatatype.is_metatype(rdtype):
                return UpdateResult(Rcode.FORMERR, reason="meta type in prerequisite")
            value_dependent.setdefault((name, rdtype), set()).update(rrset)
        else:
            return UpdateResult(Rcode.FORMERR, reason="bad class in prerequisite")
    for (name, rdtype), wanted in value_dependent.items():
        have = set(records.get(name, {}).get(rdtype, ()))
        if have != wanted:
            return UpdateResult(Rcode.NXRRSET, reason=f"{name} {rdtype.name} differs")
    return None


def _prescan(origin: Name, message: dns.update.UpdateMessage) -> UpdateResult | None:
    for rrset in message.update:
        name = rrset.name
        rdtype = RdataType.make(rrset.rdtype)
        if not name.is_subdomain(origin):
            return UpdateResult(Rcode.NOTZONE, reason=f"{name} is outside zone {origin}")
        if rrset.deleting is None:
            if rrset.rdclass != IN:
                return UpdateResult(Rcode.FORMERR, reason="bad class in update")
            if dns.rdatatype.is_metatype(rdtype) or rdtype in _FORBIDDEN_UPDATE_TYPES:
                return UpdateResult(Rcode.FORMERR, reason=f"cannot add {rdtype.name}")
        elif rrset.deleting == ANY:
            if rrset.ttl != 0 or len(rrset):
                return UpdateResult(Rcode.FORMERR, reason="class ANY delete with data or TTL")
            if rdtype in _FORBIDDEN_UPDATE_TYPES - {RdataType.ANY}:
                return UpdateResult(Rcode.FORMERR, reason=f"cannot delete {rdtype.name}")
        elif rrset.deleting == NONE:
            if rrset.ttl != 0:
                return UpdateResult(Rcode.FORMERR, reason="class NONE delete with a TTL")
            if dns.rdatatype.is_metatype(rdtype) or rdtype in _FORBIDDEN_UPDATE_TYPES:
                return UpdateResult(Rcode.FORMERR, reason=f"cannot delete {rdtype.name}")
        if rdtype in SIGNER_TYPES:
            return UpdateResult(
                Rcode.REFUSED, reason=f"{rdtype.name} records are managed by the signer"
            )
    return None


class _Working:
    """Copy-on-write view of the records: only touched names are copied."""

    def __init__(self, records: Records) -> None:
        self.base = records
        self.nodes: dict[Name, dict[RdataType, dns.rdataset.Rdataset]] = {}

    def node(self, name: Name) -> dict[RdataType, dns.rdataset.Rdataset]:
        node = self.nodes.get(name)
        if node is None:
            node = {t: copy.copy(rds) for t, rds in self.base.get(name, {}).items()}
            self.nodes[hashed(name)] = node  # (the new records' key: its hash is kept)
        return node

    def peek(self, name: Name) -> dict[RdataType, dns.rdataset.Rdataset]:
        return self.nodes[name] if name in self.nodes else self.base.get(name, {})

    def result(self) -> Records:
        out = dict(self.base)
        for name, node in self.nodes.items():
            kept = {t: rds for t, rds in node.items() if len(rds)}
            if kept:
                out[name] = kept
            else:
                out.pop(name, None)
        return out


def _add(work: _Working, origin: Name, rrset: dns.rrset.RRset) -> tuple[int, int]:
    name = rrset.name
    rdtype = RdataType.make(rrset.rdtype)
    existing = work.peek(name)
    has_cname = len(existing.get(RdataType.CNAME, ())) > 0
    has_other = any(len(r) for t, r in existing.items() if t != RdataType.CNAME)
    if rdtype == RdataType.CNAME and has_other:
        log.debug("ignoring CNAME at %s: other data exists", name)
        return (0, 0)
    if rdtype != RdataType.CNAME and has_cname:
        log.debug("ignoring %s at %s: a CNAME exists", rdtype.name, name)
        return (0, 0)
    if rdtype == RdataType.CNAME and name == origin:
        return (0, 0)
    node = work.node(name)
    if rdtype == RdataType.SOA:
        if name != origin:
            return (0, 0)
        new = next(iter(rrset))
        old = next(iter(node[RdataType.SOA]))
        assert isinstance(new, SOA) and isinstance(old, SOA)
        if not _serial_gt(new.serial, old.serial):
            return (0, 0)
        rds = dns.rdataset.Rdataset(IN, RdataType.SOA)
        rds.add(new, rrset.ttl)
        node[RdataType.SOA] = rds
        return (1, 1)
    if rdtype == RdataType.CNAME:
        cname = dns.rdataset.Rdataset(IN, rdtype)  # a CNAME RRset holds one record
        cname.add(next(iter(rrset)), rrset.ttl)
        replaced = len(node.get(rdtype, ()))
        node[rdtype] = cname
        return (1, replaced)
    rds = node.setdefault(rdtype, dns.rdataset.Rdataset(IN, rdtype))
    added = sum(1 for rd in rrset if rd not in rds)
    for rd in rrset:
        rds.add(rd)  # duplicates are ignored
    rds.ttl = rrset.ttl  # one TTL per RRset: the last one given

    return (added, 0)


def _delete(work: _Working, origin: Name, rrset: dns.rrset.RRset) -> int:
    name = rrset.name
    rdtype = RdataType.make(rrset.rdtype)
    existing = work.peek(name)
    if not existing:
        return 0
    apex_kept = (RdataType.SOA, RdataType.NS)
    if rrset.deleting == ANY:
        if rdtype == RdataType.ANY:
            types = [t for t in existing if not (name == origin and t in apex_kept)]
        elif name == origin and rdtype in apex_kept:
            return 0
        else:
            types = [rdtype] if rdtype in existing else []
        if not types:
            return 0
        node = work.node(name)
        count = 0
        for t in types:
            count += len(node[t])
            del node[t]
        return count
    # class NONE: delete individual records
    if rdtype == RdataType.SOA or rdtype not in existing:
        return 0
    node = work.node(name)
    rds = node[rdtype]
    count = 0
    for rd in rrset:
        if rd in rds:
            if name == origin and rdtype == RdataType.NS and len(rds) == 1:
                continue  # never delete the last apex NS
            rds.discard(rd)  # type: ignore[no-untyped-call]
            count += 1
    return count


def _bump_serial(
    records: Records, origin: Name, next_serial: Callable[[int], int] | None = None
) -> None:
    soa_rds = records[origin][RdataType.SOA]
    old = next(iter(soa_rds))
    assert isinstance(old, SOA)
    serial = (old.serial + 1) % 2**32 if next_serial is None else next_serial(old.serial)
    new = old.replace(serial=serial)
    rds = dns.rdataset.Rdataset(IN, RdataType.SOA)
    rds.add(new, soa_rds.ttl)
    node = dict(records[origin])
    node[RdataType.SOA] = rds
    records[origin] = node


def _serial(records: Records, origin: Name) -> int:
    soa = next(iter(records[origin][RdataType.SOA]))
    assert isinstance(soa, SOA)
    return int(soa.serial)


def _check_ds(records: Records, origin: Name, touched: set[Name]) -> UpdateResult | None:
    for name in touched:
        node = records.get(name, {})
        if RdataType.DS in node and (name == origin or RdataType.NS not in node):
            return UpdateResult(Rcode.REFUSED, reason=f"DS at {name} needs a delegation (NS)")
    return None


def apply_update(
    records: Records,
    origin: Name,
    message: dns.update.UpdateMessage,
    *,
    next_serial: Callable[[int], int] | None = None,
) -> UpdateResult:
    """Process one RFC 2136 update against ``records`` (not modified). ``next_serial`` maps
    the old SOA serial to the new one (default: plus one)."""
    zone_section = message.zone
    if len(zone_section) != 1 or zone_section[0].rdtype != RdataType.SOA:
        return UpdateResult(Rcode.FORMERR, reason="zone section must hold one SOA question")
    if zone_section[0].name != origin:
        return UpdateResult(Rcode.NOTAUTH, reason=f"not authoritative for {zone_section[0].name}")
    failed = _check_prerequisites(records, origin, message)
    if failed is not None:
        return failed
    failed = _prescan(origin, message)
    if failed is not None:
        return failed
    work = _Working(records)
    added = deleted = 0
    for rrset in message.update:
        if rrset.deleting is None:
            a, d = _add(work, origin, rrset)
            added += a
            deleted += d
        else:
            deleted += _delete(work, origin, rrset)
    if not work.nodes:
        return UpdateResult(Rcode.NOERROR, reason="nothing to change")
    new = work.result()
    if all(_same_node(records.get(n, {}), new.get(n, {})) for n in work.nodes):
        return UpdateResult(Rcode.NOERROR, reason="nothing to change")
    failed = _check_ds(new, origin, set(work.nodes))
    if failed is not None:
        return failed
    if not _serial_gt(_serial(new, origin), _serial(records, origin)):
        _bump_serial(new, origin, next_serial)
    touched = frozenset(
        n for n in (*work.nodes, origin) if not _same_node(records.get(n, {}), new.get(n, {}))
    )
    return UpdateResult(Rcode.NOERROR, new, True, "", added, deleted, touched)


def _same_node(
    a: dict[RdataType, dns.rdataset.Rdataset], b: dict[RdataType, dns.rdataset.Rdataset]
) -> bool:
    if set(a) != set(b):
        return False
    return all(a[t] == b[t] and a[t].ttl == b[t].ttl for t in a)
