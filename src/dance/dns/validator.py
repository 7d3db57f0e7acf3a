"""Sans-I/O DNSSEC validation core.

Everything here is pure: functions take parsed DNS messages, already-validated zone keys and the
current time ``now`` (seconds since the epoch) and return a decision. The asynchronous driver in
:mod:`dance.dns.resolver` decides which messages to fetch.

The chain of trust is built zone by zone: :func:`keys_from_anchor` validates the DNSKEY RRset of
an anchored zone, :func:`classify_ds` decides from a DS response whether a name below a validated
zone is a secure zone cut, an insecure (unsigned) delegation or no zone cut at all, and
:func:`keys_from_ds` validates the child's DNSKEY RRset against the DS records. Finally
:func:`validate_answer` judges the answer to the TLSA (or any) query with the keys of the zone that
signed it, including wildcard expansions and NSEC/NSEC3 denial of existence.

Internally, failures are raised as :class:`Stop` carrying the outcome and a stable reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import dns.dnssec
import dns.dnssecalgs
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
from cryptography.exceptions import InvalidSignature
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.DS import DS
from dns.rdtypes.ANY.NSEC import NSEC
from dns.rdtypes.ANY.NSEC3 import NSEC3
from dns.rdtypes.ANY.RRSIG import RRSIG

from dance.dns.anchors import ZoneAnchor
from dance.dns.result import Outcome, Reason

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "SUPPORTED_DIGESTS",
    "Answer",
    "Budget",
    "DsResult",
    "Limits",
    "Stop",
    "ZoneKeys",
    "check_rcode",
    "classify_ds",
    "clear_shared_memos",
    "is_referral",
    "keys_from_anchor",
    "keys_from_ds",
    "label_count",
    "required_zone",
    "validate_answer",
]

log = logging.getLogger(__name__)

#: RSASHA256, ECDSAP256SHA256, ECDSAP384SHA384, ED25519, ED448.
SUPPORTED_ALGORITHMS = frozenset({8, 13, 14, 15, 16})
#: SHA-256 and SHA-384.
SUPPORTED_DIGESTS = frozenset({2, 4})

_ZONE_FLAG = 0x0100
_REVOKE_FLAG = 0x0080
_OPT_OUT = 0x01

NS = dns.rdatatype.NS
SOA = dns.rdatatype.SOA
DS_T = dns.rdatatype.DS
CNAME = dns.rdatatype.CNAME
DNAME = dns.rdatatype.DNAME
DNSKEY_T = dns.rdatatype.DNSKEY
NSEC_T = dns.rdatatype.NSEC
NSEC3_T = dns.rdatatype.NSEC3
RRSIG_T = dns.rdatatype.RRSIG
IN = dns.rdataclass.IN


class Stop(Exception):
    """Validation reached a final non-secure decision."""

    def __init__(self, outcome: Outcome, reason: str, expires: float | None = None) -> None:
        super().__init__(f"{outcome.value}: {reason}")
        self.outcome = outcome
        self.reason = reason
        self.expires = expires


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps that bound the work one lookup may cause."""

    max_rrset_size: int = 64  # records in one answer RRset
    max_dnskeys: int = 16  # records in one DNSKEY RRset
    max_ds: int = 16  # records in one DS RRset
    max_sigs_per_rrset: int = 8  # RRSIGs examined per RRset
    max_sig_checks: int = 64  # signature verifications per lookup (KeyTrap bound)
    max_denial_rrsets: int = 16  # NSEC/NSEC3 RRsets examined per response
    max_nsec3_iterations: int = 150  # RFC 9276: above this NSEC3 is treated as insecure
    max_cname_chain: int = 8
    max_queries: int = 24  # DNS messages per lookup
    max_depth: int = 16  # zone-cut walk depth below the anchor


class Budget:
    """A per-lookup counter of signature verifications."""

    __slots__ = ("sig_checks",)

    def __init__(self, limits: Limits) -> None:
        self.sig_checks = limits.max_sig_checks

    def spend(self) -> None:
        if self.sig_checks <= 0:
            raise Stop(Outcome.BOGUS, Reason.TOO_MUCH_WORK)
        self.sig_checks -= 1


_MEMO_SIZE = 4096

#: What identifies a DNSKEY (its RDATA fields: flags, protocol, algorithm, public key).
_KeyIdent = tuple[int, int, int, bytes]


def _ident(key: DNSKEY) -> _KeyIdent:
    return (key.flags, key.protocol, key.algorithm, key.key)


@dataclass(frozen=True, eq=False)
class ZoneKeys:
    """The validated, usable DNSKEYs of a zone, and until when they may be trusted.

    Also holds the parsed public keys and a bounded memo of signatures already verified with
    them, so that a signature (for instance over a wildcard TLSA RRset, identical for every name
    it expands to) is checked cryptographically only once while the keys are cached.
    """

    zone: dns.name.Name
    expires: float
    #: (key tag, algorithm) -> the distinct keys with that tag, in the order of the RRset
    by_tag: dict[tuple[int, int], tuple[DNSKEY, ...]] = field(repr=False)
    _public: dict[_KeyIdent, object] = field(default_factory=dict, repr=False)
    _verified: set[bytes] = field(default_factory=set, repr=False)

    @classmethod
    def build(
        cls,
        zone: dns.name.Name,
        keys: Iterable[DNSKEY],
        expires: float,
        tags: dict[_KeyIdent, int] | None = None,
    ) -> ZoneKeys:
        """Index ``keys`` by tag (``tags``: key tags already computed, by :func:`_ident`)."""
        by_tag: dict[tuple[int, int], list[DNSKEY]] = {}
        seen: set[_KeyIdent] = set()
        for key in keys:
            ident = _ident(key)
            if ident in seen:  # the same key twice (an RRset holds distinct records)
                continue
            seen.add(ident)
            tag = tags.get(ident) if tags is not None else None
            if tag is None:
                tag = dns.dnssec.key_id(key)
            by_tag.setdefault((tag, key.algorithm), []).append(key)
        return cls(zone, expires, {k: tuple(v) for k, v in by_tag.items()})

    def _remember(self, memo: bytes) -> None:
        if len(self._verified) >= _MEMO_SIZE:
            self._verified.clear()
        self._verified.add(memo)

    def _public_key(self, key: DNSKEY) -> object | None:
        ident = _ident(key)
        if ident not in self._public:
            self._public[ident] = _parsed_public_key(ident, key, self.zone)
        return self._public[ident]

    def verify(
        self,
        rrset: dns.rrset.RRset,
        sig: RRSIG,
        candidates: Iterable[DNSKEY],
        now: float,
        budget: Budget,
    ) -> bool:
        """Cryptographically check ``sig`` over ``rrset`` with one of ``candidates``."""
        try:
            data = _signature_data(rrset, sig)
        except Exception:
            return False
        digest = hashlib.sha256(data).digest()
        memo = digest + sig.signature
        if memo in self._verified:
            return True
        for key in candidates:  # checked by another resolver of the process: no work
            if (_ident(key), digest, sig.signature) in _VERIFIED:
                self._remember(memo)
                return True
        for key in candidates:
            budget.spend()
            public = self._public_key(key)
            if public is None:
                continue
            try:
                public.verify(sig.signature, data)  # type: ignore[attr-defined]
            except InvalidSignature:
                continue
            except Exception:  # a malformed signature for this algorithm
                log.debug("signature check raised", exc_info=True)
                continue
            self._remember(memo)
            if len(_VERIFIED) >= _VERIFIED_MAX:
                _VERIFIED.clear()
            _VERIFIED.add((_ident(key), digest, sig.signature))
            return True
        return False


#: Public keys parsed from DNSKEY RDATA, shared by every resolver of the process (a pure
#: function of the bytes: a key seen again, e.g. by a new resolver, is not parsed again).
_PUBLIC_KEYS: dict[_KeyIdent, object | None] = {}
_PUBLIC_KEYS_MAX = 1024

#: Signatures that verified, shared by every resolver of the process: (the key's RDATA fields,
#: SHA-256 of the signed data, the signature). A pure fact about those bytes (the RRSIG's
#: validity period, signer and labels are checked by the caller every time); it spares the
#: public-key operation when a new resolver, or a zone's keys fetched again after their TTL,
#: meets the same signature. Only successes are kept; cleared when full.
_VERIFIED: set[tuple[_KeyIdent, bytes, bytes]] = set()
_VERIFIED_MAX = 4096


def clear_shared_memos() -> None:
    """Forget the parsed public keys and verified signatures shared by every resolver of the
    process (see :func:`dance.dns.resolver.clear_shared_memos`)."""
    _PUBLIC_KEYS.clear()
    _VERIFIED.clear()


def _parsed_public_key(ident: _KeyIdent, key: DNSKEY, zone: dns.name.Name) -> object | None:
    if ident in _PUBLIC_KEYS:
        return _PUBLIC_KEYS[ident]
    public: object | None
    try:
        cls = dns.dnssecalgs.get_algorithm_cls_from_dnskey(key).public_cls
        public = cls.from_dnskey(key)
    except Exception:  # unsupported or malformed key material
        log.debug("unusable DNSKEY in %s", zone, exc_info=True)
        public = None
    if len(_PUBLIC_KEYS) >= _PUBLIC_KEYS_MAX:
        _PUBLIC_KEYS.clear()
    _PUBLIC_KEYS[ident] = public
    return public


def _signature_data(rrset: dns.rrset.RRset, sig: RRSIG) -> bytes:
    """The octets an RRSIG signs (RFC 4034 3.1.8.1), wildcard owners reconstructed."""
    make = getattr(dns.dnssec, "_make_rrsig_signature_data", None)
    if make is None:  # pragma: no cover - older/newer dnspython without the helper
        raise RuntimeError("dnspython lacks _make_rrsig_signature_data")
    data = make(rrset, sig)
    assert isinstance(data, bytes)
    return data


@dataclass(frozen=True, slots=True)
class DsResult:
    """What a DS response says about ``name`` (a name below the validated ``parent`` zone).

    ``kind`` is ``"ds"`` (a secure zone cut; ``ds`` holds the usable DS records), ``"not-cut"``
    (the name is inside the parent zone), ``"absent"`` (the name provably does not exist) or
    ``"insecure"`` (an unsigned delegation, an NSEC3 opt-out span or only unsupported algorithms;
    ``reason`` says which).
    """

    kind: str
    expires: float
    ds: tuple[DS, ...] = ()
    reason: str = Reason.OK


@dataclass(frozen=True, slots=True)
class Answer:
    """The decision about one name from one response.

    Either ``outcome`` is final (``rrset`` set for ``SECURE``), or ``cname_target`` is set and
    the lookup continues there (``outcome`` is then ``SECURE``: the CNAME link validated).
    """

    outcome: Outcome
    reason: str
    expires: float
    rrset: dns.rrset.RRset | None = None
    cname_target: dns.name.Name | None = None


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


def label_count(name: dns.name.Name) -> int:
    """Labels of ``name`` as RRSIG counts them: without the root and a leading ``*``."""
    n = len(name) - 1
    if name.is_wild():
        n -= 1
    return n


def check_rcode(msg: dns.message.Message) -> None:
    """Raise ``Stop(INDETERMINATE)`` unless the rcode is NOERROR or NXDOMAIN."""
    rcode = msg.rcode()
    if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return
    if rcode == dns.rcode.SERVFAIL:
        raise Stop(Outcome.INDETERMINATE, Reason.SERVFAIL)
    if rcode == dns.rcode.REFUSED:
        raise Stop(Outcome.INDETERMINATE, Reason.REFUSED)
    raise Stop(Outcome.INDETERMINATE, Reason.BAD_RCODE)


def is_referral(msg: dns.message.Message) -> bool:
    """A NOERROR response without answers that delegates elsewhere (NS, no SOA)."""
    if msg.rcode() != dns.rcode.NOERROR or msg.answer:
        return False
    types = {rrset.rdtype for rrset in msg.authority}
    return NS in types and SOA not in types


def _find(
    section: Sequence[dns.rrset.RRset], name: dns.name.Name, rdtype: int
) -> dns.rrset.RRset | None:
    found: dns.rrset.RRset | None = None
    for rrset in section:
        if rrset.rdtype == rdtype and rrset.rdclass == IN and rrset.name == name:
            if found is not None:  # duplicate RRsets of one type: refuse to pick
                raise Stop(Outcome.INDETERMINATE, Reason.MALFORMED)
            found = rrset
    return found


def _sigs(section: Sequence[dns.rrset.RRset], name: dns.name.Name, covered: int) -> list[RRSIG]:
    out: list[RRSIG] = []
    for rrset in section:
        if (
            rrset.rdtype == RRSIG_T
            and rrset.covers == covered
            and rrset.rdclass == IN
            and rrset.name == name
        ):
            out.extend(rd for rd in rrset if isinstance(rd, RRSIG))
    return out


def _usable_key(key: DNSKEY) -> bool:
    return (
        key.protocol == 3
        and key.flags & _ZONE_FLAG != 0
        and key.flags & _REVOKE_FLAG == 0
        and key.algorithm in SUPPORTED_ALGORITHMS
    )


_REASON_RANK = {
    Reason.NO_SIGNATURE: 0,
    Reason.BAD_SIGNER: 1,
    Reason.NOT_YET_VALID: 2,
    Reason.EXPIRED_SIGNATURE: 3,
    Reason.BAD_SIGNATURE: 4,
}


def verify_rrset(
    rrset: dns.rrset.RRset,
    sigs: Sequence[RRSIG],
    keys: ZoneKeys,
    now: float,
    limits: Limits,
    budget: Budget,
) -> tuple[RRSIG, float]:
    """Verify ``rrset`` with one of ``sigs`` made by ``keys``; return the RRSIG and expiry time.

    The expiry is min(now + TTL capped by the original TTL, RRSIG expiration). Raises
    ``Stop(BOGUS, reason)`` when no signature verifies.
    """
    best = Reason.NO_SIGNATURE
    owner_labels = label_count(rrset.name)
    if not rrset.name.is_subdomain(keys.zone):
        raise Stop(Outcome.BOGUS, Reason.BAD_SIGNER)
    examined = 0
    for sig in sigs:
        if sig.type_covered != rrset.rdtype or sig.algorithm not in SUPPORTED_ALGORITHMS:
            continue
        examined += 1
        if examined > limits.max_sigs_per_rrset:
            break
        reason: str
        if sig.signer != keys.zone:
            reason = Reason.BAD_SIGNER
        elif sig.labels > owner_labels:
            reason = Reason.BAD_SIGNATURE
        elif now > sig.expiration:
            reason = Reason.EXPIRED_SIGNATURE
        elif now < sig.inception:
            reason = Reason.NOT_YET_VALID
        else:
            candidates = keys.by_tag.get((sig.key_tag, sig.algorithm))
            if candidates is not None and keys.verify(rrset, sig, candidates, now, budget):
                ttl = min(rrset.ttl, sig.original_ttl)
                return sig, min(now + ttl, float(sig.expiration))
            reason = Reason.BAD_SIGNATURE
        if _REASON_RANK[reason] > _REASON_RANK[best]:
            best = reason
    raise Stop(Outcome.BOGUS, best)


# ---------------------------------------------------------------------------------------------
# DNSKEY and DS
# ---------------------------------------------------------------------------------------------


def _ds_matches(zone: dns.name.Name, key: DNSKEY, tag: int, ds: DS) -> bool:
    if ds.algorithm != key.algorithm or ds.key_tag != tag:
        return False
    try:
        made = dns.dnssec.make_ds(zone, key, ds.digest_type)
    except (dns.exception.UnsupportedAlgorithm, ValueError, dns.exception.DNSException):
        return False
    return bool(made.digest == ds.digest)


def _usable_ds(ds: Iterable[DS]) -> tuple[DS, ...]:
    return tuple(
        d for d in ds if d.digest_type in SUPPORTED_DIGESTS and d.algorithm in SUPPORTED_ALGORITHMS
    )


def _keys_from_dnskey_msg(
    zone: dns.name.Name,
    msg: dns.message.Message,
    ds: Sequence[DS],
    anchor_keys: Sequence[DNSKEY],
    cap: float,
    now: float,
    limits: Limits,
    budget: Budget,
) -> ZoneKeys:
    check_rcode(msg)
    rrset = _find(msg.answer, zone, DNSKEY_T)
    if rrset is None:
        if is_referral(msg):  # the server does not serve this zone: we cannot follow it
            raise Stop(Outcome.INDETERMINATE, Reason.REFERRAL)
        raise Stop(Outcome.BOGUS, Reason.NO_DNSKEY)
    if len(rrset) > limits.max_dnskeys:
        raise Stop(Outcome.BOGUS, Reason.TOO_LARGE)
    usable = [rd for rd in rrset if isinstance(rd, DNSKEY) and _usable_key(rd)]
    tags = {_ident(k): dns.dnssec.key_id(k) for k in usable}  # each key's tag computed once
    anchored = {(k.algorithm, k.key) for k in anchor_keys}
    trusted = [
        k
        for k in usable
        if (k.algorithm, k.key) in anchored
        or any(_ds_matches(zone, k, tags[_ident(k)], d) for d in ds)
    ]
    if not trusted:
        raise Stop(Outcome.BOGUS, Reason.NO_DS_MATCH)
    trusted_keys = ZoneKeys.build(zone, trusted, cap, tags)
    _sig, expires = verify_rrset(
        rrset, _sigs(msg.answer, zone, DNSKEY_T), trusted_keys, now, limits, budget
    )
    keys = ZoneKeys.build(zone, usable, min(cap, expires), tags)
    keys._public.update(trusted_keys._public)  # the keys parsed for the self-signature
    return keys


def keys_from_anchor(
    anchor: ZoneAnchor,
    dnskey_msg: dns.message.Message,
    now: float,
    limits: Limits,
    budget: Budget,
    max_ttl: float = math.inf,
) -> ZoneKeys:
    """Validate the anchored zone's DNSKEY RRset (self-signed by an anchored key)."""
    ds = _usable_ds(anchor.ds)
    anchor_keys = [k for k in anchor.dnskeys if _usable_key(k)]
    if not ds and not anchor_keys:
        raise Stop(Outcome.INSECURE, Reason.UNSUPPORTED_ALGORITHM, now + max_ttl)
    return _keys_from_dnskey_msg(
        anchor.zone, dnskey_msg, ds, anchor_keys, now + max_ttl, now, limits, budget
    )


def keys_from_ds(
    zone: dns.name.Name,
    ds: DsResult,
    dnskey_msg: dns.message.Message,
    now: float,
    limits: Limits,
    budget: Budget,
) -> ZoneKeys:
    """Validate a child zone's DNSKEY RRset against its validated DS records."""
    if ds.kind != "ds":
        raise ValueError("keys_from_ds needs a DS result of kind 'ds'")
    return _keys_from_dnskey_msg(zone, dnskey_msg, ds.ds, (), ds.expires, now, limits, budget)


# ---------------------------------------------------------------------------------------------
# NSEC / NSEC3 denial of existence
# ---------------------------------------------------------------------------------------------


def _bitmap_types(windows: Iterable[tuple[int, bytes]]) -> frozenset[int]:
    types: set[int] = set()
    for window, bitmap in windows:
        for i, byte in enumerate(bitmap):
            if byte:
                for bit in range(8):
                    if byte & (0x80 >> bit):
                        types.add(window * 256 + i * 8 + bit)
    return frozenset(types)


def _is_delegation(types: frozenset[int]) -> bool:
    return NS in types and SOA not in types


@dataclass(frozen=True, slots=True)
class _Nsec:
    owner: dns.name.Name
    next: dns.name.Name
    types: frozenset[int]

    def covers(self, name: dns.name.Name) -> bool:
        if self.owner < self.next:
            return bool(self.owner < name < self.next)
        return bool(name > self.owner or name < self.next)  # the last NSEC of the zone

    def blocks(self, name: dns.name.Name) -> bool:
        """True if this NSEC cannot speak for ``name``: it is a delegation or DNAME above it."""
        return (
            name != self.owner
            and name.is_subdomain(self.owner)
            and (_is_delegation(self.types) or DNAME in self.types)
        )

    def proves_nonexistence(self, name: dns.name.Name) -> bool:
        return (
            self.covers(name)
            and not self.blocks(name)
            and not self.next.is_subdomain(name)  # else ``name`` is an empty non-terminal
        )

    def closest_encloser(self, name: dns.name.Name) -> dns.name.Name:
        common = max(name.fullcompare(self.owner)[2], name.fullcompare(self.next)[2])
        return name.split(common)[1]


@dataclass(frozen=True, slots=True)
class _Nsec3:
    owner_hash: bytes
    next_hash: bytes
    flags: int
    types: frozenset[int]

    def covers(self, h: bytes) -> bool:
        if self.owner_hash < self.next_hash:
            return self.owner_hash < h < self.next_hash
        return h > self.owner_hash or h < self.next_hash

    @property
    def opt_out(self) -> bool:
        return bool(self.flags & _OPT_OUT)


@dataclass
class _Denial:
    """Verified NSEC or NSEC3 records of one zone from one response."""

    zone: dns.name.Name
    expires: float
    nsec: list[_Nsec] = field(default_factory=list)
    # NSEC3 records grouped by (algorithm, iterations, salt)
    nsec3: dict[tuple[int, int, bytes], list[_Nsec3]] = field(default_factory=dict)
    failed: str | None = None  # the reason of the first record that did not verify
    too_many_iterations: bool = False


def _collect_denial(
    msg: dns.message.Message,
    keys: ZoneKeys,
    now: float,
    limits: Limits,
    budget: Budget,
) -> _Denial:
    """Verify the NSEC/NSEC3 RRsets of ``keys.zone`` in the authority section."""
    denial = _Denial(keys.zone, math.inf)
    seen = 0
    for rrset in msg.authority:
        if rrset.rdtype not in (NSEC_T, NSEC3_T) or rrset.rdclass != IN:
            continue
        if not rrset.name.is_subdomain(keys.zone):
            continue
        seen += 1
        if seen > limits.max_denial_rrsets:
            raise Stop(Outcome.BOGUS, Reason.TOO_LARGE)
        if len(rrset) != 1:
            denial.failed = denial.failed or Reason.BAD_DENIAL
            continue
        try:
            sig, expires = verify_rrset(
                rrset, _sigs(msg.authority, rrset.name, rrset.rdtype), keys, now, limits, budget
            )
        except Stop as stop:
            if stop.reason == Reason.TOO_MUCH_WORK:
                raise
            denial.failed = denial.failed or stop.reason
            continue
        if sig.labels != label_count(rrset.name):
            # a wildcard-synthesised NSEC/NSEC3 proves nothing
            denial.failed = denial.failed or Reason.BAD_DENIAL
            continue
        rd = rrset[0]
        if isinstance(rd, NSEC):
            if not rd.next.is_subdomain(keys.zone):
                denial.failed = denial.failed or Reason.BAD_DENIAL
                continue
            denial.nsec.append(_Nsec(rrset.name, rd.next, _bitmap_types(rd.windows)))
        elif isinstance(rd, NSEC3):
            if rrset.name.parent() != keys.zone or rd.algorithm != 1:
                continue
            try:
                owner_hash = base64.b32hexdecode(rrset.name[0].upper())
            except (binascii.Error, ValueError):
                denial.failed = denial.failed or Reason.BAD_DENIAL
                continue
            if len(owner_hash) != 20 or len(rd.next) != 20:
                denial.failed = denial.failed or Reason.BAD_DENIAL
                continue
            if rd.iterations > limits.max_nsec3_iterations:
                denial.too_many_iterations = True
                continue
            group = denial.nsec3.setdefault((rd.algorithm, rd.iterations, rd.salt), [])
            group.append(_Nsec3(owner_hash, rd.next, rd.flags, _bitmap_types(rd.windows)))
        denial.expires = min(denial.expires, expires)
    return denial


def _nsec3_hash(name: dns.name.Name, salt: bytes, iterations: int) -> bytes:
    wire = name.canonicalize().to_wire()
    assert wire is not None
    digest = hashlib.sha1(wire + salt).digest()  # noqa: S324 (RFC 5155 mandates SHA-1)
    for _ in range(iterations):
        digest = hashlib.sha1(digest + salt).digest()  # noqa: S324
    return digest


class _Nsec3Group:
    """NSEC3 records of one parameter set, with memoised hashing."""

    def __init__(self, zone: dns.name.Name, params: tuple[int, int, bytes], recs: list[_Nsec3]):
        self.zone = zone
        self.iterations = params[1]
        self.salt = params[2]
        self.recs = recs
        self._hashes: dict[dns.name.Name, bytes] = {}

    def hash(self, name: dns.name.Name) -> bytes:
        h = self._hashes.get(name)
        if h is None:
            h = _nsec3_hash(name, self.salt, self.iterations)
            self._hashes[name] = h
        return h

    def match(self, name: dns.name.Name) -> _Nsec3 | None:
        h = self.hash(name)
        for rec in self.recs:
            if rec.owner_hash == h:
                return rec
        return None

    def cover(self, name: dns.name.Name) -> _Nsec3 | None:
        h = self.hash(name)
        for rec in self.recs:
            if rec.covers(h):
                return rec
        return None

    def closest_encloser(
        self, qname: dns.name.Name
    ) -> tuple[dns.name.Name, dns.name.Name, _Nsec3] | None:
        """RFC 5155 8.3: (closest encloser, next closer name, NSEC3 covering the next closer)."""
        candidate = qname
        while len(candidate) > len(self.zone) and candidate.is_subdomain(self.zone):
            parent = candidate.parent()
            rec = self.match(parent)
            if rec is not None:
                if _is_delegation(rec.types) or DNAME in rec.types:
                    return None  # a parent-side delegation NSEC3 cannot speak for the child
                cover = self.cover(candidate)
                if cover is None:
                    return None
                return parent, candidate, cover
            candidate = parent
        return None


def _groups(denial: _Denial) -> list[_Nsec3Group]:
    return [_Nsec3Group(denial.zone, p, recs) for p, recs in denial.nsec3.items()]


def _fail(denial: _Denial, reason: str) -> Stop:
    if denial.too_many_iterations and not denial.nsec and not denial.nsec3:
        return Stop(Outcome.INSECURE, Reason.NSEC3_ITERATIONS, denial.expires)
    if denial.failed is not None and denial.failed != Reason.BAD_DENIAL:
        return Stop(Outcome.BOGUS, denial.failed)
    return Stop(Outcome.BOGUS, reason)


def _nsec_nxdomain(denial: _Denial, qname: dns.name.Name) -> bool:
    for rec in denial.nsec:
        if rec.owner == qname or not rec.proves_nonexistence(qname):
            continue
        ce = rec.closest_encloser(qname)
        if not ce.is_subdomain(denial.zone):
            continue
        wildcard = dns.name.Name((b"*", *ce.labels))
        if any(r.owner == wildcard for r in denial.nsec):
            return False  # the wildcard exists: the answer should have been synthesised
        if any(r.proves_nonexistence(wildcard) for r in denial.nsec):
            return True
    return False


def _nsec_nodata(
    denial: _Denial, qname: dns.name.Name, qtype: int
) -> tuple[frozenset[int], bool] | None:
    """Return (type bitmap at ``qname``, synthesised from a wildcard?) or None.

    The bitmap is empty for an empty non-terminal; for a wildcard NODATA it is the wildcard's.
    """
    for rec in denial.nsec:
        if rec.owner == qname:
            if qtype in rec.types or CNAME in rec.types:
                return None
            if qtype != DS_T and _is_delegation(rec.types):
                return None  # parent-side NSEC at a delegation: says nothing about the child
            if qtype == DS_T and SOA in rec.types and qname != dns.name.root:
                return None  # child-side apex NSEC cannot deny the parent-side DS
            return rec.types, False
    for rec in denial.nsec:  # empty non-terminal
        if (
            rec.covers(qname)
            and not rec.blocks(qname)
            and rec.next.is_subdomain(qname)
            and rec.next != qname
        ):
            return frozenset(), False
    for rec in denial.nsec:  # wildcard NODATA
        if rec.owner == qname or not rec.proves_nonexistence(qname):
            continue
        ce = rec.closest_encloser(qname)
        if not ce.is_subdomain(denial.zone):
            continue
        wildcard = dns.name.Name((b"*", *ce.labels))
        for wrec in denial.nsec:
            if wrec.owner == wildcard:
                if qtype in wrec.types or CNAME in wrec.types or _is_delegation(wrec.types):
                    return None
                return wrec.types, True
    return None


def _prove_nxdomain(denial: _Denial, qname: dns.name.Name) -> Answer:
    if _nsec_nxdomain(denial, qname):
        return Answer(Outcome.SECURE_ABSENT, Reason.NXDOMAIN, denial.expires)
    for group in _groups(denial):
        found = group.closest_encloser(qname)
        if found is None:
            continue
        ce, _nc, nc_cover = found
        wildcard = dns.name.Name((b"*", *ce.labels))
        if group.match(wildcard) is not None or group.cover(wildcard) is None:
            continue
        if nc_cover.opt_out:
            return Answer(Outcome.INSECURE, Reason.OPT_OUT, denial.expires)
        return Answer(Outcome.SECURE_ABSENT, Reason.NXDOMAIN, denial.expires)
    raise _fail(denial, Reason.BAD_DENIAL)


def _nsec3_nodata(
    denial: _Denial, qname: dns.name.Name, qtype: int
) -> tuple[Outcome, str, frozenset[int], bool] | None:
    """(outcome, reason, type bitmap, synthesised from a wildcard?) or None (RFC 5155 8.5-8.7)."""
    for group in _groups(denial):
        rec = group.match(qname)
        if rec is not None:
            if qtype in rec.types or CNAME in rec.types:
                continue
            if qtype != DS_T and _is_delegation(rec.types):
                continue
            if qtype == DS_T and SOA in rec.types and qname != dns.name.root:
                continue
            return Outcome.SECURE_ABSENT, Reason.NODATA, rec.types, False
        found = group.closest_encloser(qname)
        if found is None:
            continue
        ce, _nc, nc_cover = found
        if nc_cover.opt_out:
            return Outcome.INSECURE, Reason.OPT_OUT, frozenset(), False
        wrec = group.match(dns.name.Name((b"*", *ce.labels)))
        if (
            wrec is not None
            and qtype not in wrec.types
            and CNAME not in wrec.types
            and not _is_delegation(wrec.types)
        ):
            return Outcome.SECURE_ABSENT, Reason.NODATA, wrec.types, True
    return None


def _prove_nodata(denial: _Denial, qname: dns.name.Name, qtype: int) -> Answer:
    if _nsec_nodata(denial, qname, qtype) is not None:
        return Answer(Outcome.SECURE_ABSENT, Reason.NODATA, denial.expires)
    found = _nsec3_nodata(denial, qname, qtype)
    if found is not None:
        return Answer(found[0], found[1], denial.expires)
    raise _fail(denial, Reason.BAD_DENIAL)


def _prove_wildcard(denial: _Denial, qname: dns.name.Name, labels: int) -> Answer:
    """Prove that ``qname`` does not exist and that the wildcard at ``labels`` is closest."""
    ce = qname.split(labels + 1)[1]
    if not ce.is_subdomain(denial.zone):
        raise Stop(Outcome.BOGUS, Reason.BAD_WILDCARD)
    for rec in denial.nsec:
        if rec.proves_nonexistence(qname) and rec.closest_encloser(qname) == ce:
            return Answer(Outcome.SECURE, Reason.OK, denial.expires)
    next_closer = qname.split(labels + 2)[1]
    for group in _groups(denial):
        cover = group.cover(next_closer)
        if cover is None:
            continue
        if cover.opt_out:
            return Answer(Outcome.INSECURE, Reason.OPT_OUT, denial.expires)
        return Answer(Outcome.SECURE, Reason.OK, denial.expires)
    stop = _fail(denial, Reason.BAD_WILDCARD)
    if stop.reason == Reason.BAD_DENIAL:
        stop = Stop(Outcome.BOGUS, Reason.BAD_WILDCARD)
    raise stop


# ---------------------------------------------------------------------------------------------
# DS classification and answers
# ---------------------------------------------------------------------------------------------


def _denial_signer(msg: dns.message.Message, qname: dns.name.Name) -> dns.name.Name | None:
    for rrset in msg.authority:
        if rrset.rdtype == RRSIG_T and rrset.covers in (NSEC_T, NSEC3_T, SOA):
            for rd in rrset:
                if isinstance(rd, RRSIG) and qname.is_subdomain(rd.signer):
                    return rd.signer
    return None


def classify_ds(
    name: dns.name.Name,
    parent: ZoneKeys,
    msg: dns.message.Message,
    now: float,
    limits: Limits,
    budget: Budget,
) -> DsResult:
    """Judge a DS response for ``name``, a descendant of the validated zone ``parent.zone``."""
    check_rcode(msg)
    rrset = _find(msg.answer, name, DS_T)
    if rrset is not None:
        if len(rrset) > limits.max_ds:
            raise Stop(Outcome.BOGUS, Reason.TOO_LARGE)
        _sig, expires = verify_rrset(
            rrset, _sigs(msg.answer, name, DS_T), parent, now, limits, budget
        )
        expires = min(expires, parent.expires)
        usable = _usable_ds(rd for rd in rrset if isinstance(rd, DS))
        if not usable:
            return DsResult("insecure", expires, reason=Reason.UNSUPPORTED_ALGORITHM)
        return DsResult("ds", expires, usable)
    if _find(msg.answer, name, CNAME) is not None:
        raise Stop(Outcome.BOGUS, Reason.BAD_CHAIN)
    signer = _denial_signer(msg, name)
    if signer is not None and signer != parent.zone:
        raise Stop(Outcome.INDETERMINATE, Reason.WRONG_ZONE)
    denial = _collect_denial(msg, parent, now, limits, budget)
    expires = min(denial.expires, parent.expires)
    if msg.rcode() == dns.rcode.NXDOMAIN:
        answer = _prove_nxdomain(denial, name)
        if answer.outcome is Outcome.INSECURE:
            return DsResult("insecure", expires, reason=answer.reason)
        return DsResult("absent", expires, reason=Reason.NXDOMAIN)
    nodata = _nsec_nodata(denial, name, DS_T)
    if nodata is None:
        found = _nsec3_nodata(denial, name, DS_T)
        if found is not None:
            if found[0] is Outcome.INSECURE:
                return DsResult("insecure", expires, reason=found[1])
            nodata = found[2], found[3]
    if nodata is not None:
        types, wildcard = nodata
        if NS in types:
            return DsResult("insecure", expires, reason=Reason.UNSIGNED_DELEGATION)
        # a name matched only by a wildcard does not exist: nothing below it can be a cut
        return DsResult("absent" if wildcard else "not-cut", expires)
    stop = _fail(denial, Reason.BAD_DENIAL)
    if stop.outcome is Outcome.INSECURE:
        return DsResult("insecure", expires, reason=stop.reason)
    raise stop


def required_zone(
    qname: dns.name.Name, qtype: int, msg: dns.message.Message
) -> dns.name.Name | None:
    """The zone whose keys are needed to judge ``msg``: the signer named by the relevant RRSIGs.

    None when the response carries no usable signature (the caller then walks the chain down to
    ``qname`` to find out whether the name is in an unsigned part of the tree).
    """
    for rtype in (qtype, CNAME):
        for sig in _sigs(msg.answer, qname, rtype):
            if qname.is_subdomain(sig.signer):
                return sig.signer
        if _find_quiet(msg.answer, qname, rtype) is not None:
            return None
    return _denial_signer(msg, qname)


def _find_quiet(
    section: Sequence[dns.rrset.RRset], name: dns.name.Name, rdtype: int
) -> dns.rrset.RRset | None:
    try:
        return _find(section, name, rdtype)
    except Stop:
        return None


def validate_answer(
    qname: dns.name.Name,
    qtype: int,
    msg: dns.message.Message,
    keys: ZoneKeys,
    now: float,
    limits: Limits,
    budget: Budget,
) -> Answer:
    """Judge the response to (``qname``, ``qtype``) with the validated keys of its zone.

    Returns a final :class:`Answer` or, for a validated CNAME at ``qname``, one carrying the
    ``cname_target`` to follow. Raises :class:`Stop` for bogus and indeterminate responses.
    """
    check_rcode(msg)
    if not qname.is_subdomain(keys.zone):
        raise Stop(Outcome.BOGUS, Reason.BAD_SIGNER)
    rrset = _find(msg.answer, qname, qtype)
    cname = None if qtype == CNAME else _find(msg.answer, qname, CNAME)
    if rrset is not None and cname is not None:
        raise Stop(Outcome.BOGUS, Reason.BAD_CNAME)
    target_rrset = rrset if rrset is not None else cname
    if target_rrset is not None:
        if len(target_rrset) > limits.max_rrset_size:
            raise Stop(Outcome.BOGUS, Reason.TOO_LARGE)
        if target_rrset.rdtype == CNAME and len(target_rrset) != 1:
            raise Stop(Outcome.BOGUS, Reason.BAD_CNAME)
        sig, expires = verify_rrset(
            target_rrset,
            _sigs(msg.answer, qname, target_rrset.rdtype),
            keys,
            now,
            limits,
            budget,
        )
        expires = min(expires, keys.expires)
        outcome, reason = Outcome.SECURE, Reason.OK
        if sig.labels < label_count(qname):
            if sig.labels < label_count(keys.zone):
                raise Stop(Outcome.BOGUS, Reason.BAD_WILDCARD)
            denial = _collect_denial(msg, keys, now, limits, budget)
            proof = _prove_wildcard(denial, qname, sig.labels)
            outcome, reason = proof.outcome, proof.reason
            expires = min(expires, proof.expires)
        if outcome is not Outcome.SECURE:
            return Answer(outcome, reason, expires)
        if target_rrset.rdtype == CNAME:
            target = target_rrset[0].target
            return Answer(Outcome.SECURE, Reason.OK, expires, cname_target=target)
        return Answer(Outcome.SECURE, Reason.OK, expires, rrset=target_rrset)
    # negative answer
    denial = _collect_denial(msg, keys, now, limits, budget)
    if msg.rcode() == dns.rcode.NXDOMAIN:
        answer = _prove_nxdomain(denial, qname)
    else:
        answer = _prove_nodata(denial, qname, qtype)
    return Answer(answer.outcome, answer.reason, min(answer.expires, keys.expires))
