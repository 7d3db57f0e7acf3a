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
from collections.abc import Collection, Iterable, MutableMapping
from dataclasses import dataclass, field

import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.RRSIG import RRSIG
from dns.rdtypes.util import Bitmap

from dance.authority.store import KeyPolicy, Records
from dance.zone.cowmap import CowMap
from dance.zone.signing import HashedName, make_nsec, make_nsec3, make_rrset
from dance.zone.zones import Nsec3Chain, SignedZone, SigningKey, Zone, ZoneKeys

__all__ = [
    "OnlineZone",
    "OwnerOrder",
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
    cuts = [n for n, node in records.items() if RdataType.NS in node and n != origin]
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
            if rdtype in (RdataType.NS, RdataType.DS) and owner in cuts:
                continue
            zone.add_rdataset(owner, rds)
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
_CHAIN_TYPES = (RdataType.NSEC, RdataType.NSEC3)


def canonical_key(name: Name) -> tuple[bytes, ...]:
    """A sort key giving RFC 4034 section 6.1 canonical order: labels from the most
    significant, lowercased, compared as octet strings (an ancestor sorts first)."""
    return tuple(label.lower() for label in reversed(name.labels))


class OwnerOrder:
    """Authoritative names and delegation points in canonical order, with their sort keys
    (searches compare tuples of bytes, not names)."""

    __slots__ = ("keys", "names")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, names: Iterable[Name] = ()) -> None:
        pairs = sorted((canonical_key(n), n) for n in names)
        self.keys = [k for k, _ in pairs]
        self.names = [n for _, n in pairs]

    def copy(self) -> OwnerOrder:
        out = OwnerOrder()
        out.keys = list(self.keys)
        out.names = list(self.names)
        return out

    def __eq__(self, other: object) -> bool:
        if isinstance(other, OwnerOrder):
            return self.names == other.names
        return NotImplemented

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: Name) -> int:
        """Where ``name`` is or would be inserted."""
        return bisect.bisect_left(self.keys, canonical_key(name))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, Name):
            return False
        key = canonical_key(name)
        i = bisect.bisect_left(self.keys, key)
        return i < len(self.keys) and self.keys[i] == key

    def insert(self, name: Name) -> bool:
        """Add ``name``; False if it is there already."""
        key = canonical_key(name)
        i = bisect.bisect_left(self.keys, key)
        if i < len(self.keys) and self.keys[i] == key:
            return False
        self.keys.insert(i, key)
        self.names.insert(i, name)
        return True

    def remove(self, name: Name) -> bool:
        """Remove ``name``; False if it was not there."""
        key = canonical_key(name)
        i = bisect.bisect_left(self.keys, key)
        if i < len(self.keys) and self.keys[i] == key:
            del self.keys[i]
            del self.names[i]
            return True
        return False

    def has_descendant(self, name: Name) -> bool:
        """Is any name strictly below ``name`` here? (A subtree is contiguous in canonical
        order and follows its apex.)"""
        key = canonical_key(name)
        i = bisect.bisect_right(self.keys, key)
        return i < len(self.keys) and self.keys[i][: len(key)] == key


def _node_rrsets(
    owner: Name, node: dict[RdataType, dns.rdataset.Rdataset]
) -> dict[RdataType, dns.rrset.RRset]:
    out = {}
    for t, rds in node.items():
        if len(rds):
            rrset = dns.rrset.RRset(owner, rds.rdclass, rds.rdtype, rds.covers)
            rrset.ttl = rds.ttl
            rrset.items = dict(rds.items)  # the records' hashes are not computed again
            out[t] = rrset
    return out


_windows: dict[frozenset[RdataType], tuple[object, ...]] = {}


def _type_windows(types: Iterable[RdataType]) -> tuple[object, ...]:
    """NSEC/NSEC3 type bitmap windows (a zone has few distinct sets of types)."""
    key = frozenset(types)
    found = _windows.get(key)
    if found is None:
        if len(_windows) > 4096:
            _windows.clear()
        found = _windows[key] = tuple(Bitmap.from_rdtypes(sorted(key)).windows)
    return found


def patch_zone(
    old: SignedZone,
    owners: OwnerOrder,
    records: Records,
    touched: set[Name],
    keys: ZoneKeys,
    window: tuple[int, int],
) -> SignedZone | None:
    """The snapshot for ``records`` made from ``old`` by re-signing only the ``touched`` names
    and the NSEC/NSEC3 records around them (all signatures made in one batch, in worker
    processes when there are many). ``owners`` (the ordered authoritative names and cuts of
    ``old``) is updated in place on success. Returns ``None`` when the change needs a full
    build: delegations, apex changes other than the SOA, a new signing window, NSEC3
    opt-out, or a changed negative TTL."""
    params = old.params
    origin = old.origin
    if params is None or (params.inception, params.expiration) != window:
        return None
    if params.nsec3_optout:
        return None
    for name in touched:
        if old.cuts and old.find_cut(name) is not None:
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
    rrsets = CowMap.of(old.rrsets)  # shards shared with ``old`` until written
    sigs = CowMap.of(old.sigs)
    names: CowMap[Name, None] = (
        old.names.copy() if isinstance(old.names, CowMap) else CowMap(dict.fromkeys(old.names))
    )
    order = owners.copy()
    pending: list[dns.rrset.RRset] = []  # signed in one batch at the end

    added: set[Name] = set()
    removed: set[Name] = set()
    for name in touched:
        node = _node_rrsets(name, records.get(name, {}))
        if name == origin:
            kept = {t: r for t, r in old.rrsets[origin].items() if t in _SIGNER_OWNED}
            node = {**node, **kept}
        if node:
            rrsets[name] = node
            sigs[name] = {}
            pending.extend(r for t, r in node.items() if t not in _CHAIN_TYPES)
            if order.insert(name):
                added.add(name)
        else:
            rrsets.pop(name, None)
            sigs.pop(name, None)
            if order.remove(name):
                removed.add(name)

    # the set of existing names: owners plus their ancestors (empty non-terminals)
    depth = len(origin)
    changed_names: set[Name] = set()
    for name in added:
        if name not in names:
            names[name] = None
            changed_names.add(name)
        labels = name.labels
        while len(labels) > depth + 1:
            labels = labels[1:]
            parent = HashedName(labels)
            if parent in names:
                break
            names[parent] = None
            changed_names.add(parent)
    for name in removed:
        current = name
        while current != origin:
            if current in order or order.has_descendant(current):
                break
            if current in names:
                del names[current]
                changed_names.add(current)
            current = current.parent()

    nsec_chain = old.nsec_chain
    nsec3 = old.nsec3
    ttl = old.negative_ttl
    if params.denial == "nsec":
        nsec_chain = order.names
        refresh: set[Name] = set()
        for name in touched | added | removed:
            index = order.index(name)
            if name in order:
                refresh.add(name)
            refresh.add(nsec_chain[index - 1])  # the predecessor (wraps to the last)
        for owner in refresh:
            i = order.index(owner)
            nxt = nsec_chain[(i + 1) % len(nsec_chain)]
            node = dict(rrsets[owner])
            node.pop(RdataType.NSEC, None)
            windows = _type_windows([*node, RdataType.RRSIG, RdataType.NSEC])
            nsec_rrset = make_rrset(owner, ttl, RdataType.NSEC, (make_nsec(nxt, windows),))
            node[RdataType.NSEC] = nsec_rrset
            rrsets[owner] = node
            pending.append(nsec_rrset)
    else:
        assert old.nsec3 is not None
        nsec3 = _patch_nsec3(old.nsec3, rrsets, sigs, touched, changed_names, names, ttl, pending)
        if nsec3 is None:
            return None

    _sign_pending(pending, sigs, keys, origin, inception, expiration)
    owners.keys, owners.names = order.keys, order.names
    return SignedZone(
        origin=origin,
        rrsets=rrsets,
        sigs=sigs,
        names=names,
        cuts=old.cuts,
        nsec_chain=nsec_chain if params.denial == "nsec" else [],
        nsec3=nsec3,
        keys=old.keys,
        params=params,
        negative_ttl=ttl,
    )


def _sign_pending(
    pending: list[dns.rrset.RRset],
    sigs: MutableMapping[Name, dict[RdataType, dns.rrset.RRset]],
    keys: ZoneKeys,
    origin: Name,
    inception: int,
    expiration: int,
) -> None:
    """Sign ``pending`` into ``sigs`` (each owner's entry a new dict: ``sigs`` is a copy of the
    old snapshot's, whose entries are not modified)."""
    by_key: dict[int, tuple[SigningKey, list[dns.rrset.RRset]]] = {}
    for rrset in pending:
        key = keys.key_for(rrset.rdtype)
        by_key.setdefault(id(key), (key, []))[1].append(rrset)
    fresh: dict[Name, dict[RdataType, dns.rrset.RRset]] = {}
    for key, group in by_key.values():
        signer = key.rrset_signer(origin, inception, expiration)
        for rrset, rrsig in zip(group, signer.sign_many(group, parallel=True), strict=True):
            owner = rrset.name
            entry = fresh.get(owner)
            if entry is None:
                entry = fresh[owner] = dict(sigs.get(owner, {}))
                sigs[owner] = entry
            entry[rrset.rdtype] = make_rrset(owner, rrset.ttl, RdataType.RRSIG, (rrsig,),
                                             rrset.rdtype)  # fmt: skip


def _patch_nsec3(
    old: Nsec3Chain,
    rrsets: MutableMapping[Name, dict[RdataType, dns.rrset.RRset]],
    sigs: MutableMapping[Name, dict[RdataType, dns.rrset.RRset]],
    touched: set[Name],
    changed_names: set[Name],
    names: Collection[Name],
    ttl: int,
    pending: list[dns.rrset.RRset],
) -> Nsec3Chain | None:
    chain = Nsec3Chain(
        origin=old.origin,
        salt=old.salt,
        iterations=old.iterations,
        optout=old.optout,
        hashes=list(old.hashes),
        owner_of=CowMap.of(old.owner_of),
        original=CowMap.of(old.original),
        rrsets=CowMap.of(old.rrsets),
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
        owner_name = chain.owner_of.get(digest)
        if owner_name is None:
            continue
        original = chain.original[owner_name]
        types: list[RdataType] = [t for t in rrsets.get(original, {}) if t != RdataType.NSEC3]
        if types:
            types.append(RdataType.RRSIG)
        i = bisect.bisect_left(chain.hashes, digest)
        nxt = chain.hashes[(i + 1) % len(chain.hashes)]
        rd = make_nsec3(0, chain.iterations, chain.salt, nxt, _type_windows(types))
        rrset = make_rrset(owner_name, ttl, RdataType.NSEC3, (rd,))
        chain.rrsets[owner_name] = rrset
        sigs[owner_name] = {}
        pending.append(rrset)
    return chain


def sorted_owners(snapshot: SignedZone) -> OwnerOrder:
    """Authoritative names and delegation points of ``snapshot``, in canonical order."""
    if not snapshot.cuts:
        return OwnerOrder(snapshot.rrsets)
    out = []
    for name in snapshot.rrsets:
        cut = snapshot.find_cut(name)
        if cut is None or cut == name:
            out.append(name)
    return OwnerOrder(out)
