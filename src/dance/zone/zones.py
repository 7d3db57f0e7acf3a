"""Build DNSSEC-signed zones in memory.

A :class:`Zone` is a small mutable container of records with a fluent API. :meth:`Zone.sign`
turns it into an immutable :class:`SignedZone` snapshot (keys, RRSIGs, and an NSEC or NSEC3
chain built here, because dnspython signs only with NSEC). The responder serves snapshots, so
re-signing a zone while a server runs swaps the snapshot atomically.

All times are explicit parameters (``now``, ``inception``, ``expiration``, POSIX seconds);
only their defaults read the clock. Private keys never leave memory.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import logging
import time
from collections.abc import Collection, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from dns.dnssectypes import DSDigest
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.DS import DS
from dns.rdtypes.ANY.NSEC3PARAM import NSEC3PARAM
from dns.rdtypes.ANY.RRSIG import RRSIG
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.util import Bitmap

from dance.zone.signing import (
    HashedName,
    RRsetSigner,
    SignatureStore,
    canonical_wire,
    make_nsec,
    make_nsec3,
    make_rrset,
)

__all__ = [
    "DEFAULT_VALIDITY",
    "Denial",
    "Nsec3Chain",
    "PrivateKey",
    "SignedZone",
    "SigningKey",
    "SigningParams",
    "Zone",
    "ZoneKeys",
    "generate_private_key",
    "nsec3_hash_bytes",
]

log = logging.getLogger(__name__)

Denial = Literal["nsec", "nsec3"]
PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

IN = dns.rdataclass.IN
RdataType = dns.rdatatype.RdataType
Name = dns.name.Name

#: Record types the signer creates itself; :meth:`Zone.add` refuses them.
_SIGNER_TYPES = frozenset(
    {RdataType.RRSIG, RdataType.NSEC, RdataType.NSEC3, RdataType.NSEC3PARAM, RdataType.DNSKEY}
)
DEFAULT_VALIDITY = 30 * 86400
_DEFAULT_BACKDATE = 3600
_SEP = 0x0001
_ZONE = 0x0100
_NSEC3_OPTOUT = 0x01
_SHA1 = 1


def generate_private_key(algorithm: int) -> PrivateKey:
    """Generate a private key for DNSSEC ``algorithm`` (8, 10, 13, 14, 15 or 16)."""
    if algorithm in (8, 10):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == 13:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == 14:
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm == 15:
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == 16:
        return ed448.Ed448PrivateKey.generate()
    raise ValueError(f"unsupported DNSSEC algorithm {algorithm}")


@dataclass(frozen=True)
class SigningKey:
    """A DNSSEC key pair held in memory."""

    private_key: PrivateKey = field(repr=False)
    dnskey: DNSKEY
    _signers: dict[tuple[Name, int, int], RRsetSigner] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def generate(cls, algorithm: int, *, ksk: bool) -> SigningKey:
        """Generate a key; ``ksk=True`` sets the SEP flag (flags 257), else flags 256."""
        private_key = generate_private_key(algorithm)
        flags = _ZONE | (_SEP if ksk else 0)
        dnskey = dns.dnssec.make_dnskey(private_key.public_key(), algorithm, flags=flags)
        return cls(private_key=private_key, dnskey=dnskey)

    @property
    def key_tag(self) -> int:
        return dns.dnssec.key_id(self.dnskey)

    @property
    def algorithm(self) -> int:
        return int(self.dnskey.algorithm)

    @property
    def is_ksk(self) -> bool:
        return bool(self.dnskey.flags & _SEP)

    def sign(
        self,
        rrset: dns.rrset.RRset,
        signer: Name,
        inception: int,
        expiration: int,
        *,
        owner: Name | None = None,
    ) -> RRSIG:
        """Sign ``rrset`` (optionally as if it were owned by ``owner``, e.g. a wildcard)."""
        return self.rrset_signer(signer, inception, expiration).sign(rrset, owner)

    def rrset_signer(self, signer: Name, inception: int, expiration: int) -> RRsetSigner:
        """The signer of this key for ``signer``'s zone and one validity window (kept for the
        last few windows asked for)."""
        memo = self._signers
        key = (signer, inception, expiration)
        found = memo.get(key)
        if found is None:
            if len(memo) >= 4:
                memo.clear()
            found = RRsetSigner(
                self.private_key, self.dnskey, signer, inception, expiration, self.signature_store()
            )
            memo[key] = found
        return found

    def signature_store(self) -> SignatureStore | None:
        """Where signatures are remembered (none here; see ``dance.authority.signer``)."""
        return None


@dataclass(frozen=True)
class ZoneKeys:
    """The keys of one zone: a KSK (SEP, signs DNSKEY) and a ZSK (signs the rest).

    With a combined signing key (CSK) both attributes are the same key.
    """

    ksk: SigningKey
    zsk: SigningKey

    @property
    def algorithm(self) -> int:
        return self.ksk.algorithm

    @property
    def is_csk(self) -> bool:
        return self.ksk is self.zsk

    def dnskeys(self) -> list[DNSKEY]:
        return [self.ksk.dnskey] if self.is_csk else [self.ksk.dnskey, self.zsk.dnskey]

    def key_for(self, rdtype: int) -> SigningKey:
        return self.ksk if rdtype == RdataType.DNSKEY else self.zsk


@dataclass(frozen=True)
class SigningParams:
    """Parameters one snapshot was signed with (POSIX seconds)."""

    algorithm: int
    denial: Denial
    inception: int
    expiration: int
    now: int
    nsec3_iterations: int = 0
    nsec3_salt: bytes = b""
    nsec3_optout: bool = False


def nsec3_hash_bytes(name: Name, salt: bytes, iterations: int) -> bytes:
    """RFC 5155 section 5 hash (SHA-1) of ``name`` in canonical wire form."""
    digest = hashlib.sha1(canonical_wire(name) + salt).digest()  # noqa: S324 (RFC 5155 mandates SHA-1)
    for _ in range(iterations):
        digest = hashlib.sha1(digest + salt).digest()  # noqa: S324
    return digest


def _b32hex(data: bytes) -> str:
    return base64.b32hexencode(data).decode("ascii").lower()


@dataclass
class Nsec3Chain:
    """The NSEC3 chain of a signed zone, with lookups by hash."""

    origin: Name
    salt: bytes
    iterations: int
    optout: bool
    hashes: list[bytes]  # sorted
    owner_of: MutableMapping[bytes, Name]  # hash -> hashed owner name
    original: MutableMapping[Name, Name]  # hashed owner -> original (unhashed) name
    rrsets: MutableMapping[Name, dns.rrset.RRset]  # hashed owner -> NSEC3 RRset

    def hash(self, name: Name) -> bytes:
        return nsec3_hash_bytes(name, self.salt, self.iterations)

    def owner_name(self, digest: bytes) -> Name:
        return HashedName((_b32hex(digest).encode("ascii"), *self.origin.labels))

    def matching(self, name: Name) -> Name | None:
        """Hashed owner of the NSEC3 that matches ``name``, if any."""
        return self.owner_of.get(self.hash(name))

    def covering(self, name: Name) -> Name:
        """Hashed owner of the NSEC3 whose interval covers ``name``'s hash (no exact match)."""
        digest = self.hash(name)
        index = bisect.bisect_left(self.hashes, digest) - 1
        return self.owner_of[self.hashes[index]]  # index -1 wraps to the last record


@dataclass
class SignedZone:
    """An immutable-by-convention snapshot served by the responder."""

    origin: Name
    # plain dicts from a full build, `dance.zone.cowmap.CowMap`s once patched by updates
    rrsets: Mapping[Name, dict[RdataType, dns.rrset.RRset]]
    sigs: Mapping[Name, dict[RdataType, dns.rrset.RRset]]  # owner -> type covered -> RRSIG RRset
    # existing names, empty non-terminals included, occluded excluded (a frozenset from a full
    # build, a CowMap's keys once patched)
    names: Collection[Name]
    cuts: frozenset[Name]  # delegation points below the apex
    nsec_chain: list[Name]  # sorted owners of NSEC records (empty unless denial == "nsec")
    nsec3: Nsec3Chain | None
    keys: ZoneKeys | None
    params: SigningParams | None
    negative_ttl: int

    @property
    def signed(self) -> bool:
        return self.keys is not None and self.params is not None

    @property
    def soa(self) -> dns.rrset.RRset:
        return self.rrsets[self.origin][RdataType.SOA]

    def find_cut(self, name: Name) -> Name | None:
        """The topmost delegation point at or above ``name`` (below the apex), if any."""
        if not self.cuts or not name.is_subdomain(self.origin):
            return None
        depth = len(self.origin)
        for n in range(depth + 1, len(name) + 1):
            candidate = Name(name.labels[-n:])
            if candidate in self.cuts:
                return candidate
        return None

    def closest_encloser(self, name: Name) -> Name:
        """Deepest existing ancestor-or-self of ``name`` in this zone."""
        current = name
        while current not in self.names and current != self.origin:
            current = current.parent()
        return current

    def nsec_covering(self, name: Name) -> Name:
        """Owner of the NSEC whose interval covers ``name`` (canonical order, wrapping)."""
        index = bisect.bisect_left(self.nsec_chain, name)
        if index < len(self.nsec_chain) and self.nsec_chain[index] == name:
            return name
        return self.nsec_chain[index - 1]

    def sign_rrset(
        self,
        rrset: dns.rrset.RRset,
        *,
        owner: Name | None = None,
        inception: int | None = None,
        expiration: int | None = None,
    ) -> dns.rrset.RRset:
        """Sign an RRset with this zone's keys (fresh RRSIG RRset owned by ``rrset.name``)."""
        if self.keys is None or self.params is None:
            raise ValueError(f"zone {self.origin} is not signed")
        key = self.keys.key_for(rrset.rdtype)
        rrsig = key.sign(
            rrset,
            self.origin,
            self.params.inception if inception is None else inception,
            self.params.expiration if expiration is None else expiration,
            owner=owner,
        )
        return dns.rrset.from_rdata(rrset.name, rrset.ttl, rrsig)

    def to_text(self) -> str:
        """Zone-file text of the snapshot (absolute names), e.g. to load into another server."""
        lines: list[str] = []
        owners = sorted(set(self.rrsets) | set(self.sigs))
        if self.nsec3 is not None:
            owners = sorted(set(owners) | set(self.nsec3.rrsets))
        for owner in owners:
            node = self.rrsets.get(owner, {})
            sigs = self.sigs.get(owner, {})
            order = sorted(set(node) | set(sigs), key=lambda t: (t != RdataType.SOA, int(t)))
            for rdtype in order:
                if rdtype in node:
                    lines.append(node[rdtype].to_text())
                if rdtype in sigs:
                    lines.append(sigs[rdtype].to_text())
            if self.nsec3 is not None and owner in self.nsec3.rrsets:
                lines.append(self.nsec3.rrsets[owner].to_text())
        return "\n".join(lines) + "\n"


@dataclass
class _Delegation:
    signed: bool
    child: Zone | None
    digest_types: tuple[int, ...]
    ds: tuple[DS, ...]


def _as_name(text: str | Name, origin: Name) -> Name:
    if isinstance(text, Name):
        return text if text.is_absolute() else text.derelativize(origin)
    if text in ("@", ""):
        return origin
    return dns.name.from_text(text, origin=origin)


def _as_rdtype(rdtype: str | int) -> RdataType:
    return dns.rdatatype.from_text(rdtype) if isinstance(rdtype, str) else RdataType.make(rdtype)


def _rrset_of(owner: Name, rds: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    """An RRset holding the records of ``rds`` (their hashes are not computed again)."""
    rrset = dns.rrset.RRset(owner, rds.rdclass, rds.rdtype, rds.covers)
    rrset.ttl = rds.ttl
    rrset.items = dict(rds.items)
    return rrset


def _with_ancestors(names: Iterable[Name], origin: Name) -> set[Name]:
    """``names`` (all at or below ``origin``) and every ancestor of theirs down to ``origin``
    (the empty non-terminals). Ancestors are found by label tuples, each made a name once."""
    out = set(names)
    depth = len(origin)
    seen: set[tuple[bytes, ...]] = set()
    for n in out.copy():
        labels = n.labels
        while len(labels) > depth:
            labels = labels[1:]
            if labels in seen:
                break
            seen.add(labels)
            out.add(HashedName(labels))
    return out


class _WindowCache:
    """NSEC/NSEC3 type bitmap windows by set of types (a zone has few distinct sets)."""

    def __init__(self) -> None:
        self._known: dict[frozenset[RdataType], tuple[object, ...]] = {}

    def get(self, types: Iterable[RdataType]) -> tuple[object, ...]:
        key = frozenset(types)
        found = self._known.get(key)
        if found is None:
            found = tuple(Bitmap.from_rdtypes(sorted(key)).windows)
            self._known[key] = found
        return found


class Zone:
    """A zone under construction: ``Zone("example.test").add("www", "A", "192.0.2.1").sign()``.

    The constructor adds an SOA, one NS (``ns1.<origin>``) and its address record unless
    ``nameservers`` is given (then only the NS records; add addresses yourself, or none for
    out-of-zone servers). Names given to :meth:`add` are relative to the origin unless they end
    with a dot; ``"@"`` is the apex.
    """

    def __init__(
        self,
        origin: str | Name,
        ttl: int = 300,
        *,
        serial: int = 1,
        negative_ttl: int = 60,
        nameservers: Sequence[str] | None = None,
        ns_address: str = "127.0.0.1",
    ) -> None:
        self.origin: Name = _as_name(origin, dns.name.root)
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._data: dict[Name, dict[RdataType, dns.rdataset.Rdataset]] = {}
        self._delegations: dict[Name, _Delegation] = {}
        self._keys: ZoneKeys | None = None
        self._snapshot: SignedZone | None = None
        self._dirty = True
        self._unsigned_by_choice = False
        ns_host = _as_name("ns1", self.origin)
        mname = ns_host if nameservers is None else _as_name(nameservers[0], self.origin)
        rname = _as_name("hostmaster", self.origin)
        self.add(
            "@",
            "SOA",
            f"{mname} {rname} {serial} 3600 900 604800 {negative_ttl}",
        )
        if nameservers is None:
            self.add("@", "NS", ns_host.to_text())
            rdtype = "AAAA" if ":" in ns_address else "A"
            self.add(ns_host, rdtype, ns_address)
        else:
            for ns in nameservers:
                self.add("@", "NS", _as_name(ns, self.origin).to_text())

    def __repr__(self) -> str:
        return f"Zone({self.origin.to_text()!r})"

    # ----------------------------------------------------------------- building

    def name(self, text: str | Name) -> Name:
        """Absolute name for ``text`` relative to this zone."""
        return _as_name(text, self.origin)

    def add(
        self,
        name: str | Name,
        rdtype: str | int,
        rdata: str | dns.rdata.Rdata,
        ttl: int | None = None,
    ) -> Zone:
        """Add one record; returns ``self`` for chaining."""
        owner = self.name(name)
        if not owner.is_subdomain(self.origin):
            raise ValueError(f"{owner} is not in zone {self.origin}")
        rtype = _as_rdtype(rdtype)
        if rtype in _SIGNER_TYPES:
            raise ValueError(f"{rtype.name} records are created by the signer")
        if rtype == RdataType.DS and owner not in self._delegations:
            raise ValueError("DS records belong to delegations: use delegate(..., ds=...)")
        rd = (
            rdata
            if isinstance(rdata, dns.rdata.Rdata)
            else dns.rdata.from_text(IN, rtype, rdata, origin=self.origin, relativize=False)
        )
        node = self._data.get(owner, {})
        if rtype == RdataType.CNAME and any(t != RdataType.CNAME for t in node):
            raise ValueError(f"CNAME at {owner} cannot coexist with other data")
        if rtype != RdataType.CNAME and RdataType.CNAME in node:
            raise ValueError(f"{owner} already has a CNAME")
        if rtype == RdataType.CNAME and owner == self.origin:
            raise ValueError("no CNAME at the zone apex")
        self._data[owner] = node
        rdataset = node.get(rtype)
        if rdataset is None:
            rdataset = dns.rdataset.Rdataset(IN, rtype)
            node[rtype] = rdataset
        rdataset.add(rd, self.ttl if ttl is None else ttl)
        if ttl is not None:
            rdataset.update_ttl(ttl)
        self._dirty = True
        return self

    def add_rdataset(self, name: str | Name, rdataset: dns.rdataset.Rdataset) -> Zone:
        """Add every record of ``rdataset`` with its TTL: what :meth:`add` does for each, with
        the same checks, in one step (the records are not parsed or hashed again)."""
        if not len(rdataset):
            return self
        owner = self.name(name)
        if not owner.is_subdomain(self.origin):
            raise ValueError(f"{owner} is not in zone {self.origin}")
        rtype = RdataType.make(rdataset.rdtype)
        if rdataset.rdclass != IN:
            raise ValueError(f"{owner} {rtype.name}: only class IN")
        if rtype in _SIGNER_TYPES:
            raise ValueError(f"{rtype.name} records are created by the signer")
        if rtype == RdataType.DS and owner not in self._delegations:
            raise ValueError("DS records belong to delegations: use delegate(..., ds=...)")
        node = self._data.get(owner, {})
        if rtype == RdataType.CNAME and any(t != RdataType.CNAME for t in node):
            raise ValueError(f"CNAME at {owner} cannot coexist with other data")
        if rtype != RdataType.CNAME and RdataType.CNAME in node:
            raise ValueError(f"{owner} already has a CNAME")
        if rtype == RdataType.CNAME and owner == self.origin:
            raise ValueError("no CNAME at the zone apex")
        self._data[owner] = node
        existing = node.get(rtype)
        if existing is None:
            node[rtype] = rdataset.copy()  # type: ignore[no-untyped-call]
        else:
            for rd in rdataset:
                existing.add(rd, rdataset.ttl)
            existing.update_ttl(rdataset.ttl)
        self._dirty = True
        return self

    def remove(self, name: str | Name, rdtype: str | int | None = None) -> Zone:
        """Remove all records of ``rdtype`` (or every type) at ``name``."""
        owner = self.name(name)
        node = self._data.get(owner)
        if node is not None:
            if rdtype is None:
                del self._data[owner]
            else:
                node.pop(_as_rdtype(rdtype), None)
                if not node:
                    del self._data[owner]
        if owner in self._delegations and (rdtype is None or _as_rdtype(rdtype) == RdataType.NS):
            del self._delegations[owner]
        self._dirty = True
        return self

    def delegate(
        self,
        label: str | Name,
        *,
        child: Zone | None = None,
        signed: bool | None = None,
        nameservers: Sequence[str] | None = None,
        addresses: Mapping[str, Sequence[str]] | None = None,
        digest_type: int | Sequence[int] = 2,
        ds: Sequence[str] = (),
        ttl: int | None = None,
    ) -> Zone:
        """Delegate ``label`` (relative to the origin) to a child zone.

        Adds the NS records and glue. With ``child`` the child's apex NS names and their
        addresses in the child zone are used (so glue matches the child); otherwise
        ``ns1.<child>`` at 127.0.0.1 unless ``nameservers``/``addresses`` say otherwise.
        For a signed delegation (default when ``child`` or ``ds`` is given) the parent publishes, at
        signing time, a DS for each of the child's KSKs per ``digest_type`` (2 = SHA-256,
        4 = SHA-384), plus any literal ``ds`` records given as text.
        """
        cut = self.name(label)
        if cut == self.origin or not cut.is_subdomain(self.origin):
            raise ValueError(f"{cut} is not strictly below {self.origin}")
        if child is not None and child.origin != cut:
            raise ValueError(f"child zone {child.origin} does not match delegation {cut}")
        is_signed = (child is not None or bool(ds)) if signed is None else signed
        if is_signed and child is None and not ds:
            raise ValueError("a signed delegation needs child= (for its keys) or ds=")
        if nameservers is None:
            if child is not None:
                ns_rdataset = child._data[child.origin][RdataType.NS]
                ns_names = [rd.target for rd in ns_rdataset]
                addresses = addresses or {
                    n.to_text(): child._addresses(n) for n in ns_names if n.is_subdomain(cut)
                }
            else:
                ns_names = [_as_name("ns1", cut)]
                addresses = addresses or {ns_names[0].to_text(): ["127.0.0.1"]}
        else:
            ns_names = [self.name(n) for n in nameservers]
        for ns in ns_names:
            self.add(cut, "NS", ns.to_text(), ttl)
        for host, addrs in (addresses or {}).items():
            host_name = self.name(host)
            if not host_name.is_subdomain(self.origin):
                continue
            for addr in addrs:
                self.add(host_name, "AAAA" if ":" in addr else "A", addr, ttl)
        digests = (digest_type,) if isinstance(digest_type, int) else tuple(digest_type)
        literal = tuple(
            dns.rdata.from_text(IN, RdataType.DS, text, origin=self.origin, relativize=False)
            for text in ds
        )
        self._delegations[cut] = _Delegation(
            signed=is_signed,
            child=child,
            digest_types=digests,
            ds=literal,  # type: ignore[arg-type]
        )
        self._dirty = True
        return self

    def _addresses(self, host: Name) -> list[str]:
        node = self._data.get(host, {})
        out: list[str] = []
        for rtype in (RdataType.A, RdataType.AAAA):
            if rtype in node:
                out.extend(rd.to_text() for rd in node[rtype])
        return out

    # ------------------------------------------------------------------ keys

    @property
    def keys(self) -> ZoneKeys | None:
        """The zone's keys (``None`` until :meth:`generate_keys` or :meth:`sign`)."""
        return self._keys

    def generate_keys(self, algorithm: int = 13, *, csk: bool = False) -> ZoneKeys:
        """(Re)generate the KSK and ZSK (or one CSK) for ``algorithm``."""
        ksk = SigningKey.generate(algorithm, ksk=True)
        zsk = ksk if csk else SigningKey.generate(algorithm, ksk=False)
        self._keys = ZoneKeys(ksk=ksk, zsk=zsk)
        self._dirty = True
        return self._keys

    def ds_records(self, digest_types: Iterable[int] = (2,)) -> list[DS]:
        """DS records for this zone's KSK (to publish at the parent or use as trust anchor)."""
        if self._keys is None:
            raise ValueError(f"zone {self.origin} has no keys yet: sign it first")
        return [
            dns.dnssec.make_ds(self.origin, self._keys.ksk.dnskey, DSDigest.make(digest))
            for digest in digest_types
        ]

    # --------------------------------------------------------------- signing

    @property
    def snapshot(self) -> SignedZone:
        """The snapshot served: the last signed one, or an unsigned one if never signed."""
        snap = self._snapshot
        if snap is None or (self._dirty and not snap.signed):
            snap = self._build(None)
            self._snapshot = snap
            self._dirty = False
        return snap

    @property
    def unsigned_by_choice(self) -> bool:
        """True after :meth:`publish_unsigned` (until the next :meth:`sign`)."""
        return self._unsigned_by_choice

    @property
    def is_signed(self) -> bool:
        return self._snapshot is not None and self._snapshot.signed

    def publish_unsigned(self) -> Zone:
        """Serve the records unsigned (drops any signed snapshot; ZoneSet.sign skips it)."""
        self._unsigned_by_choice = True
        self._snapshot = self._build(None)
        self._dirty = False
        return self

    def sign(
        self,
        algorithm: int = 13,
        denial: Denial = "nsec",
        *,
        nsec3_optout: bool = False,
        nsec3_iterations: int = 0,
        nsec3_salt: bytes | str = b"",
        now: int | float | None = None,
        inception: int | float | None = None,
        expiration: int | float | None = None,
        validity: int = DEFAULT_VALIDITY,
        csk: bool = False,
        keys: ZoneKeys | None = None,
    ) -> Zone:
        """Sign the zone and publish the signed snapshot; returns ``self``.

        Keys are kept across re-signing unless the algorithm or CSK choice changes (a new
        key changes the DS: re-sign the parent afterwards). ``now`` defaults to the clock;
        ``inception`` defaults to ``now - 3600`` and ``expiration`` to ``now + validity``.
        NSEC3 defaults follow RFC 9276: SHA-1, 0 extra iterations, empty salt.
        """
        if denial not in ("nsec", "nsec3"):
            raise ValueError(f"denial must be 'nsec' or 'nsec3', not {denial!r}")
        self._unsigned_by_choice = False
        if keys is not None:
            self._keys = keys
        elif self._keys is None or self._keys.algorithm != algorithm or self._keys.is_csk != csk:
            self.generate_keys(algorithm, csk=csk)
        assert self._keys is not None
        t_now = int(time.time() if now is None else now)
        salt = bytes.fromhex(nsec3_salt) if isinstance(nsec3_salt, str) else nsec3_salt
        params = SigningParams(
            algorithm=self._keys.algorithm,
            denial=denial,
            inception=max(0, int(t_now - _DEFAULT_BACKDATE if inception is None else inception)),
            expiration=int(t_now + validity if expiration is None else expiration),
            now=t_now,
            nsec3_iterations=nsec3_iterations,
            nsec3_salt=salt,
            nsec3_optout=nsec3_optout,
        )
        self._snapshot = self._build(params)
        self._dirty = False
        log.debug("signed %s with algorithm %d, %s", self.origin, params.algorithm, denial)
        return self

    def _delegation_ds(self) -> dict[Name, list[DS]]:
        out: dict[Name, list[DS]] = {}
        for cut, deleg in self._delegations.items():
            records: list[DS] = list(deleg.ds)
            if deleg.signed and deleg.child is not None:
                if deleg.child.keys is None:
                    raise ValueError(
                        f"sign child zone {cut} before its parent {self.origin} "
                        "(or use ZoneSet.sign)"
                    )
                records.extend(deleg.child.ds_records(deleg.digest_types))
            if deleg.signed and records:
                out[cut] = records
        return out

    def _build(self, params: SigningParams | None) -> SignedZone:
        origin = self.origin
        data: dict[Name, dict[RdataType, dns.rrset.RRset]] = {}
        for owner, node in self._data.items():
            data[owner] = {rtype: _rrset_of(owner, rds) for rtype, rds in node.items()}
        for cut, records in self._delegation_ds().items():
            data.setdefault(cut, {})[RdataType.DS] = dns.rrset.from_rdata_list(
                cut, self._ttl_of(cut, RdataType.NS), records
            )
        soa_rrset = data[origin][RdataType.SOA]
        soa_rd = next(iter(soa_rrset))
        assert isinstance(soa_rd, SOA)
        negative_ttl = min(soa_rrset.ttl, soa_rd.minimum)

        cuts = frozenset(n for n, node in data.items() if RdataType.NS in node and n != origin)
        if cuts:
            occluded = {n for n in data if any(n != c and n.is_subdomain(c) for c in cuts)}
            authoritative = {n for n in data if n not in occluded and n not in cuts}
        else:
            authoritative = set(data)
        names = _with_ancestors(authoritative | cuts, origin)

        keys = self._keys if params is not None else None
        sigs: dict[Name, dict[RdataType, dns.rrset.RRset]] = {}
        nsec_chain: list[Name] = []
        nsec3: Nsec3Chain | None = None
        if params is not None and keys is not None:
            data[origin][RdataType.DNSKEY] = make_rrset(
                origin, self.ttl, RdataType.DNSKEY, keys.dnskeys()
            )
            if params.denial == "nsec3":
                data[origin][RdataType.NSEC3PARAM] = dns.rrset.from_rdata(
                    origin,
                    0,
                    NSEC3PARAM(  # type: ignore[no-untyped-call]
                        IN,
                        RdataType.NSEC3PARAM,
                        _SHA1,
                        0,
                        params.nsec3_iterations,
                        params.nsec3_salt,
                    ),
                )
            to_sign = [rrset for owner in authoritative for rrset in data[owner].values()]
            to_sign.extend(data[cut][RdataType.DS] for cut in cuts if RdataType.DS in data[cut])
            if params.denial == "nsec":
                nsec_chain = sorted(authoritative | cuts)
                windows = _WindowCache()
                for i, owner in enumerate(nsec_chain):
                    nxt = nsec_chain[(i + 1) % len(nsec_chain)]
                    types = [*data[owner]]
                    if owner in cuts:
                        types = [t for t in types if t in (RdataType.NS, RdataType.DS)]
                    types += [RdataType.RRSIG, RdataType.NSEC]
                    rrset = make_rrset(
                        owner, negative_ttl, RdataType.NSEC, [make_nsec(nxt, windows.get(types))]
                    )
                    data[owner][RdataType.NSEC] = rrset
                    to_sign.append(rrset)
            else:
                nsec3 = self._build_nsec3(params, data, authoritative, cuts, negative_ttl)
                to_sign.extend(nsec3.rrsets.values())
            self._sign_all(keys, to_sign, params, sigs)
        return SignedZone(
            origin=origin,
            rrsets=data,
            sigs=sigs,
            names=frozenset(names),
            cuts=cuts,
            nsec_chain=nsec_chain,
            nsec3=nsec3,
            keys=keys,
            params=params,
            negative_ttl=negative_ttl,
        )

    def _sign_all(
        self,
        keys: ZoneKeys,
        rrsets: list[dns.rrset.RRset],
        params: SigningParams,
        sigs: dict[Name, dict[RdataType, dns.rrset.RRset]],
    ) -> None:
        """Sign ``rrsets`` (DNSKEY with the KSK, the rest with the ZSK) into ``sigs``; many
        signatures are made in worker processes."""
        origin = self.origin
        by_key: dict[int, tuple[SigningKey, list[dns.rrset.RRset]]] = {}
        for rrset in rrsets:
            key = keys.key_for(rrset.rdtype)
            by_key.setdefault(id(key), (key, []))[1].append(rrset)
        for key, group in by_key.values():
            signer = key.rrset_signer(origin, params.inception, params.expiration)
            for rrset, rrsig in zip(group, signer.sign_many(group, parallel=True), strict=True):
                sigs.setdefault(rrset.name, {})[rrset.rdtype] = make_rrset(
                    rrset.name, rrset.ttl, RdataType.RRSIG, (rrsig,), rrset.rdtype
                )

    def _ttl_of(self, owner: Name, rdtype: RdataType) -> int:
        rds = self._data.get(owner, {}).get(rdtype)
        return rds.ttl if rds is not None else self.ttl

    def _build_nsec3(
        self,
        params: SigningParams,
        data: dict[Name, dict[RdataType, dns.rrset.RRset]],
        authoritative: set[Name],
        cuts: frozenset[Name],
        ttl: int,
    ) -> Nsec3Chain:
        origin = self.origin
        secure_cuts = {c for c in cuts if RdataType.DS in data[c]}
        members = set(authoritative) | secure_cuts
        if not params.nsec3_optout:
            members |= cuts
        members = _with_ancestors(members, origin)  # empty non-terminals (RFC 5155 7.1)
        salt, iterations = params.nsec3_salt, params.nsec3_iterations
        by_hash: dict[bytes, Name] = {}
        for n in members:
            digest = nsec3_hash_bytes(n, salt, iterations)
            if digest in by_hash:
                raise ValueError(f"NSEC3 hash collision between {n} and {by_hash[digest]}")
            by_hash[digest] = n
        hashes = sorted(by_hash)
        flags = _NSEC3_OPTOUT if params.nsec3_optout else 0
        chain = Nsec3Chain(
            origin=origin,
            salt=salt,
            iterations=iterations,
            optout=params.nsec3_optout,
            hashes=hashes,
            owner_of={},
            original={},
            rrsets={},
        )
        windows = _WindowCache()
        owner_of, original_of, rrsets = chain.owner_of, chain.original, chain.rrsets
        count = len(hashes)
        for i, digest in enumerate(hashes):
            original = by_hash[digest]
            node = data.get(original)
            types = list(node) if node else []
            if original in cuts:
                assert node is not None
                types = [t for t in types if t in (RdataType.NS, RdataType.DS)]
                if RdataType.DS in node:
                    types.append(RdataType.RRSIG)
            elif types:
                types.append(RdataType.RRSIG)
            nxt = hashes[(i + 1) % count]
            rd = make_nsec3(flags, iterations, salt, nxt, windows.get(types))
            owner = chain.owner_name(digest)
            owner_of[digest] = owner
            original_of[owner] = original
            rrsets[owner] = make_rrset(owner, ttl, RdataType.NSEC3, (rd,))
        return chain

    @property
    def dirty(self) -> bool:
        """True when records changed since the last snapshot (sign again to publish)."""
        return self._dirty
