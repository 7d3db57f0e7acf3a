"""Online signing with a signature cache: re-signing a zone signs only what changed.

Each update rebuilds the zone's snapshot with :class:`dance.testkit.Zone` (NSEC or NSEC3
chain included), but the keys handed to it remember every RRSIG they made, keyed by the
RRset's owner, type, TTL, canonical rdata and validity window. Unchanged RRsets (and NSEC or
NSEC3 records whose content did not change) get their previous signature back; only changed
RRsets and the few chain records around a changed name are signed again. The window
(inception, expiration) stays fixed until it must be refreshed, which is when everything is
re-signed.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.NSEC import NSEC
from dns.rdtypes.ANY.NSEC3 import NSEC3
from dns.rdtypes.ANY.RRSIG import RRSIG
from dns.rdtypes.util import Bitmap

from dance.authority.store import KeyPolicy, Records
from dance.zone.zones import Nsec3Chain, SignedZone, SigningKey, Zone, ZoneKeys

__all__ = [
    "OnlineZone",
    "SignatureCache",
    "SigningWindow",
    "build_zone",
    "caching_keys",
    "patch_zone",
]

Name = dns.name.Name
RdataType = dns.rdatatype.RdataType

#: Default signature validity and refresh threshold (seconds).
DEFAULT_VALIDITY = 14 * 86400
_BACKDATE = 3600


class SignatureCache:
    """RRSIGs by signature input (RRSIG RDATA header and the RRset in canonical form: the
    content signed, so a hit is always the right signature); entries not used by the last
    complete signing are dropped."""

    def __init__(self) -> None:
        self._current: dict[bytes, RRSIG] = {}
        self._next: dict[bytes, RRSIG] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> RRSIG | None:
        found = self._next.get(key)
        if found is None:
            found = self._current.get(key)
            if found is not None:
                self._next[key] = found
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, key: bytes, rrsig: RRSIG) -> None:
        self._next[key] = rrsig

    def commit(self) -> None:
        """Keep only the signatures used since the previous commit."""
        self._current, self._next = self._next, {}

    def rollback(self) -> None:
        """Forget the signatures of a signing that was abandoned."""
        self._current.update(self._next)
        self._next = {}

    def __len__(self) -> int:
        return len(self._current)


@dataclass(frozen=True)
class _CachingKey(SigningKey):
    cache: SignatureCache = field(default_factory=SignatureCache, repr=False, compare=False)

    def signature_store(self) -> SignatureCache:
        return self.cache


def caching_keys(keys: ZoneKeys, cache: SignatureCache) -> ZoneKeys:
    """The same keys, remembering their signatures in ``cache``."""
    ksk = _CachingKey(private_key=keys.ksk.private_key, dnskey=keys.ksk.dnskey, cache=cache)
    if keys.is_csk:
        return ZoneKeys(ksk=ksk, zsk=ksk)
    zsk = _CachingKey(private_key=keys.zsk.private_key, dnskey=keys.zsk.dnskey, cache=cache)
    return ZoneKeys(ksk=ksk, zsk=zsk)


@dataclass
class SigningWindow:
    """The RRSIG validity window in use; refreshed when half of it has passed."""

    validity: int = DEFAULT_VALIDITY
    inception: int = 0
    expiration: int = 0

    def current(self, now: float | None = None) -> tuple[int, int]:
        t = int(time.time() if now is None else now)
        if self.expiration - t < self.validity // 2 or self.inception > t:
            self.inception = t - _BACKDATE
            self.expiration = t + self.validity
        return self.inception, self.expiration

    def needs_refresh(self, now: float | None = None) -> bool:
        t = int(time.time() if now is None else now)
        return self.expiration - t < self.validity // 2


class OnlineZone(Zone):
    """A :class:`Zone` whose served snapshot can also be replaced by an incrementally patched
    one (:func:`patch_zone`); the swap is one attribute assignment, atomic for readers."""

    def install(self, snapshot: SignedZone) -> None:
        self._snapshot = snapshot
        self._dirty = False


def build_zone(
    origin: Name,
    records: Records,
    policy: KeyPolicy,
    keys: ZoneKeys,
    window: tuple[int, int],
    *,
    now: float | None = None,
) -> OnlineZone:
    """A signed zone holding exactly ``records`` (delegations included), signed in full
    (through the signature cache). ``now`` is the signer's clock (default: the system's)."""
    soa = records[origin][RdataType.SOA]
    ns_names = [rd.target.to_text() for rd in records[origin][RdataType.NS]]
    zone = OnlineZone(origin, soa.ttl, nameservers=ns_names)
    zone.remove("@", "SOA")
    zone.remove("@", "NS")
    cuts = [n for n, node in records.items() if n != origin and RdataType.NS in node]
    for cut in cuts:
        node = records[cut]
        ds = node.get(RdataType.DS)
        zone.delegate(
            cut,
            nameservers=[rd.target.to_text() for rd in node[RdataType.NS]],
            signed=bool(ds),
            ds=[rd.to_text() for rd in ds] if ds else (),
            ttl=node[RdataType.NS].ttl,
        )
    for owner, node in records.items():
        for rdtype, rds in node.items():
            if owner in cuts and rdtype in (RdataType.NS, RdataType.DS):
                continue
            for rd in rds:
                zone.add(owner, rdtype, rd, rds.ttl)
    inception, expiration = window
    zone.sign(
        policy.algorithm,
        policy.denial,
        nsec3_iterations=policy.nsec3_iterations,
        nsec3_salt=policy.nsec3_salt,
        now=int(time.time() if now is None else now),
        inception=inception,
        expiration=expiration,
        csk=keys.is_csk,
        keys=keys,
    )
    return zone


# ------------------------------------------------------------------ incremental signing

_SIGNER_OWNED = frozenset({RdataType.DNSKEY, RdataType.NSEC3PARAM, RdataType.NSEC, RdataType.NSEC3})


def _node_rrsets(
    owner: Name, node: dict[RdataType, dns.rdataset.Rdataset]
) -> dict[RdataType, dns.rrset.RRset]:
    return {
        t: dns.rrset.from_rdata_list(owner, rds.ttl, list(rds))
        for t, rds in node.items()
        if len(rds)
    }


def _ancestors(name: Name, origin: Name) -> list[Name]:
    out = []
    current = name
    while current != origin:
        current = current.parent()
        out.append(current)
    return out


def _has_descendant(owners: list[Name], name: Name) -> bool:
    """Is any name of the canonically sorted ``owners`` strictly below ``name``? (A subtree is
    contiguous in canonical order and follows its apex.)"""
    index = bisect.bisect_right(owners, name)
    return index < len(owners) and owners[index].is_subdomain(name) and owners[index] != name


def patch_zone(
    old: SignedZone,
    owners: list[Name],
    records: Records,
    touched: set[Name],
    keys: ZoneKeys,
    window: tuple[int, int],
) -> SignedZone | None:
    """The snapshot for ``records`` made from ``old`` by re-signing only the ``touched`` names
    and the NSEC/NSEC3 records around them. ``owners`` (the sorted authoritative names and
    cuts of ``old``) is updated in place on success. Returns ``None`` when the change needs a
    full build: delegations, apex changes other than the SOA, a new signing window, NSEC3
    opt-out, or a changed negative TTL."""
    params = old.params
    origin = old.origin
    if params is None or (params.inception, params.expiration) != window:
        return None
    if params.nsec3_optout:
        return None
    for name in touched:
        if old.find_cut(name) is not None:
            return None  # a delegation, or occluded data below one
        new_node = records.get(name, {})
        if name != origin and RdataType.NS in new_node:
            return None  # a new delegation
        if name == origin:
            old_types = set(old.rrsets[origin]) - _SIGNER_OWNED
            if set(new_node) != old_types:
                return None
            for rdtype, rds in new_node.items():
                if rdtype == RdataType.SOA:
                    continue
                old_rrset = old.rrsets[origin][rdtype]
                if set(old_rrset) != set(rds) or old_rrset.ttl != rds.ttl:
                    return None
    soa_rds = records[origin][RdataType.SOA]
    soa = next(iter(soa_rds))
    if min(soa_rds.ttl, soa.minimum) != old.negative_ttl:
        return None

    inception, expiration = window
    rrsets = dict(old.rrsets)
    sigs = dict(old.sigs)
    names = set(old.names)
    new_owners = list(owners)

    def sign(rrset: dns.rrset.RRset) -> dns.rrset.RRset:
        rrsig = keys.key_for(rrset.rdtype).sign(rrset, origin, inception, expiration)
        return dns.rrset.from_rdata(rrset.name, rrset.ttl, rrsig)

    added: set[Name] = set()
    removed: set[Name] = set()
    for name in touched:
        node = _node_rrsets(name, records.get(name, {}))
        if name == origin:
            kept = {t: r for t, r in old.rrsets[origin].items() if t in _SIGNER_OWNED}
            node = {**node, **kept}
        if node:
            rrsets[name] = node
            sigs[name] = {
                t: sign(r) for t, r in node.items() if t not in (RdataType.NSEC, RdataType.NSEC3)
            }
            if not _contains(new_owners, name):
                bisect.insort(new_owners, name)
                added.add(name)
        else:
            rrsets.pop(name, None)
            sigs.pop(name, None)
            if _contains(new_owners, name):
                new_owners.pop(bisect.bisect_left(new_owners, name))
                removed.add(name)

    # the set of existing names: owners plus their ancestors (empty non-terminals)
    changed_names: set[Name] = set()
    for name in added:
        for n in (name, *_ancestors(name, origin)):
            if n not in names:
                names.add(n)
                changed_names.add(n)
    for name in removed:
        for n in (name, *_ancestors(name, origin)):
            if n == origin:
                break
            if _contains(new_owners, n) or _has_descendant(new_owners, n):
                break
            if n in names:
                names.discard(n)
                changed_names.add(n)

    nsec_chain = old.nsec_chain
    nsec3 = old.nsec3
    ttl = old.negative_ttl
    if params.denial == "nsec":
        nsec_chain = new_owners
        refresh: set[Name] = set()
        for name in touched | added | removed:
            index = bisect.bisect_left(nsec_chain, name)
            if _contains(nsec_chain, name):
                refresh.add(name)
            refresh.add(nsec_chain[index - 1])  # the predecessor (wraps to the last)
        for owner in refresh:
            i = bisect.bisect_left(nsec_chain, owner)
            nxt = nsec_chain[(i + 1) % len(nsec_chain)]
            node = dict(rrsets[owner])
            node.pop(RdataType.NSEC, None)
            types = [*node, RdataType.RRSIG, RdataType.NSEC]
            windows = Bitmap.from_rdtypes(types).windows
            rd = NSEC(dns.rdataclass.IN, RdataType.NSEC, nxt, windows)  # type: ignore[no-untyped-call]
            nsec_rrset = dns.rrset.from_rdata(owner, ttl, rd)
            node[RdataType.NSEC] = nsec_rrset
            rrsets[owner] = node
            owner_sigs = dict(sigs.get(owner, {}))
            owner_sigs[RdataType.NSEC] = sign(nsec_rrset)
            sigs[owner] = owner_sigs
    else:
        assert old.nsec3 is not None
        nsec3 = _patch_nsec3(old.nsec3, rrsets, sigs, touched, changed_names, names, ttl, sign)
        if nsec3 is None:
            return None
    owners[:] = new_owners
    return SignedZone(
        origin=origin,
        rrsets=rrsets,
        sigs=sigs,
        names=frozenset(names),
        cuts=old.cuts,
        nsec_chain=nsec_chain if params.denial == "nsec" else [],
        nsec3=nsec3,
        keys=old.keys,
        params=params,
        negative_ttl=ttl,
    )


def _contains(sorted_names: list[Name], name: Name) -> bool:
    index = bisect.bisect_left(sorted_names, name)
    return index < len(sorted_names) and sorted_names[index] == name


def _patch_nsec3(
    old: Nsec3Chain,
    rrsets: dict[Name, dict[RdataType, dns.rrset.RRset]],
    sigs: dict[Name, dict[RdataType, dns.rrset.RRset]],
    touched: set[Name],
    changed_names: set[Name],
    names: set[Name],
    ttl: int,
    sign: Callable[[dns.rrset.RRset], dns.rrset.RRset],
) -> Nsec3Chain | None:
    chain = Nsec3Chain(
        origin=old.origin,
        salt=old.salt,
        iterations=old.iterations,
        optout=old.optout,
        hashes=list(old.hashes),
        owner_of=dict(old.owner_of),
        original=dict(old.original),
        rrsets=dict(old.rrsets),
    )
    refresh: set[bytes] = set()
    for name in changed_names:
        digest = chain.hash(name)
        if name in names:  # a new member
            if digest in chain.owner_of:
                return None  # hash collision: let the full build report it
            bisect.insort(chain.hashes, digest)
            owner = chain.owner_name(digest)
            chain.owner_of[digest] = owner
            chain.original[owner] = name
            refresh.add(digest)
        else:
            owner = chain.owner_of.pop(digest)
            chain.hashes.pop(bisect.bisect_left(chain.hashes, digest))
            del chain.original[owner]
            del chain.rrsets[owner]
            sigs.pop(owner, None)
        index = bisect.bisect_left(chain.hashes, digest)
        refresh.add(chain.hashes[index - 1])  # the predecessor's next hash changed
    for name in touched:
        if name in names:
            refresh.add(chain.hash(name))
    for digest in refresh:
        if digest not in chain.owner_of:
            continue
        owner = chain.owner_of[digest]
        original = chain.original[owner]
        types: list[RdataType] = [t for t in rrsets.get(original, {}) if t != RdataType.NSEC3]
        if types:
            types.append(RdataType.RRSIG)
        i = bisect.bisect_left(chain.hashes, digest)
        nxt = chain.hashes[(i + 1) % len(chain.hashes)]
        rd = NSEC3(  # type: ignore[no-untyped-call]
            dns.rdataclass.IN,
            RdataType.NSEC3,
            1,
            0,
            chain.iterations,
            chain.salt,
            nxt,
            Bitmap.from_rdtypes(types).windows,
        )
        rrset = dns.rrset.from_rdata(owner, ttl, rd)
        chain.rrsets[owner] = rrset
        sigs[owner] = {RdataType.NSEC3: sign(rrset)}
    return chain


def sorted_owners(snapshot: SignedZone) -> list[Name]:
    """Authoritative names and delegation points of ``snapshot``, canonically sorted."""
    out = []
    for name in snapshot.rrsets:
        cut = snapshot.find_cut(name)
        if cut is None or cut == name:
            out.append(name)
    return sorted(out)
