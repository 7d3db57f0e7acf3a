"""RFC 6698 / RFC 7671 matching of a presented credential against a validated TLSA RRset.

`verify()` is the one function every layer of dance calls to decide; nothing else re-implements
matching. It is pure: no I/O, and the time is a parameter.

Order of work (RFC 7671 sections 4.1, 5 and 9; draft-ietf-dance-client-auth-13 section 8.2):

1. Discard malformed records (short RDATA, digest data of the wrong length, empty data).
2. Discard unusable records: usages, selectors and matching types not implemented or not enabled
   by the policy; for raw public keys everything but ``3 1 x``; for the ``_user`` profile
   everything but DANE-TA; PKIX usages unless a local trust store is configured.
3. Digest agility, per (usage, selector): keep Full(0) and the strongest supported digest present.
4. Any one usable record that matches authenticates:
   * DANE-EE(3): the end-entity certificate or key matches; no name, validity or chain checks.
   * DANE-TA(2): a path is built from the end entity through the presented certificates to a
     certificate matching the record (at depth >= 1, not necessarily self-signed), or to a trust
     anchor given in full in DNS (``2 0 0``; ``2 1 0`` when ``allow_dns_key_anchor``). Signatures,
     validity at ``now`` of the end entity and intermediates (not of the anchor), CA flags, path
     lengths, dNSName/rfc822Name name constraints, unknown critical extensions, EKU clientAuth
     (when an EKU is present) and the name check (the ClientName is a SAN dNSName of the end
     entity, exactly, case-insensitively, never through a wildcard) are all checked.
   * PKIX-TA(0) / PKIX-EE(1): full RFC 5280 validation against the configured trust store
     (cryptography's verifier), then the record must match a certificate of the validated chain,
     and the same name and EKU checks apply.
5. The ``_user`` profile (architecture-10 section 4.1.3): ClientName ``_user.D``; only DANE-TA;
   the end entity's SAN dNSName must be D; the user id comes from a ``uid`` otherName or a
   mailbox in D; the identity is ``uid@D`` (uid checked and compared with the ``dance-uid``
   profile of :mod:`dance.userid`, U-label domain).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, SignatureAlgorithmOID
from dns.rdtypes.ANY.TLSA import TLSA as _DnsTLSA

from dance import userid
from dance.credentials import (
    Cert,
    CertificateChain,
    CredentialError,
    Presented,
    RawPublicKey,
)
from dance.identity import Identity, Reason, Rejection, Result
from dance.names import ClientName, InvalidName, NameFormat, parse_client_name
from dance.tlsa.record import MalformedRecord, TLSARecord

__all__ = ["MatchPolicy", "usable_records", "verify"]

log = logging.getLogger(__name__)

# Extensions whose semantics this verifier implements; any other critical one fails the chain.
_HANDLED_CRITICAL = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.NAME_CONSTRAINTS,
    }
)
_MAX_SIGNATURE_CHECKS = 32


@dataclass(frozen=True, slots=True)
class MatchPolicy:
    """What the verifier accepts. The defaults are DANCE's: DANE-EE and DANE-TA only.

    * ``usages``: the certificate usages to use at all. PKIX-TA(0) and PKIX-EE(1) also need
      ``trust_store``; without one they are unusable.
    * ``digest_preference``: supported digests, strongest first (RFC 7671 section 9).
    * ``allow_dns_key_anchor``: let a ``2 1 0`` record act as a trust anchor that the client did
      not send, by checking that the top-most presented certificate is signed by that key
      (RFC 7671 section 5.2.3). ``2 0 0`` anchors from DNS are always usable.
    * ``user_profile``: treat ``_user.D`` names with the architecture's user profile.
    * ``require_client_auth_eku``: when an EKU extension is present, it must allow clientAuth.
    """

    usages: frozenset[int] = frozenset({2, 3})
    trust_store: tuple[x509.Certificate, ...] = ()
    digest_preference: tuple[int, ...] = (2, 1)
    allow_dns_key_anchor: bool = True
    user_profile: bool = True
    require_client_auth_eku: bool = True
    max_path_length: int = 8
    _store: object = field(default=None, repr=False, compare=False)

    @classmethod
    def with_pkix(cls, trust_store: Iterable[x509.Certificate], **kwargs: object) -> MatchPolicy:
        """A policy that also uses PKIX-TA/PKIX-EE records against ``trust_store``."""
        return cls(usages=frozenset({0, 1, 2, 3}), trust_store=tuple(trust_store), **kwargs)  # type: ignore[arg-type]


DEFAULT_POLICY = MatchPolicy()


# --- record usability and digest agility --------------------------------------------------------


def _coerce_records(
    records: Iterable[TLSARecord | bytes | str | _DnsTLSA],
) -> tuple[list[TLSARecord], int]:
    """Parse what we were given; count what could not even be read."""
    parsed: list[TLSARecord] = []
    unreadable = 0
    for item in records:
        try:
            if isinstance(item, TLSARecord):
                parsed.append(item)
            elif isinstance(item, bytes | bytearray | memoryview):
                parsed.append(TLSARecord.from_wire(bytes(item)))
            elif isinstance(item, str):
                parsed.append(TLSARecord.from_text(item))
            elif isinstance(item, _DnsTLSA):  # what dns.resolver / dns.message hand out
                parsed.append(TLSARecord(item.usage, item.selector, item.mtype, bytes(item.cert)))
            else:
                unreadable += 1
        except MalformedRecord:
            unreadable += 1
    return parsed, unreadable


def usable_records(
    records: Iterable[TLSARecord],
    *,
    policy: MatchPolicy = DEFAULT_POLICY,
    raw_public_key: bool = False,
    user_profile: bool = False,
) -> list[TLSARecord]:
    """Apply RFC 7671 usability and digest agility (sections 4.1 and 9) to a record set."""
    supported_mtypes = {0, *policy.digest_preference}
    usages = set(policy.usages)
    if not policy.trust_store:
        usages -= {0, 1}
    candidates: list[TLSARecord] = []
    for record in records:
        if not record.well_formed:
            continue
        if record.usage not in usages or record.selector not in (0, 1):
            continue
        if record.mtype not in supported_mtypes:
            continue
        if raw_public_key and (record.usage != 3 or record.selector != 1):
            continue
        if user_profile and record.usage not in (0, 2):
            continue
        candidates.append(record)
    # Digest agility per (usage, selector): Full(0) plus the strongest digest present.
    strongest: dict[tuple[int, int], int] = {}
    rank = {mtype: i for i, mtype in enumerate(policy.digest_preference)}
    for record in candidates:
        if record.mtype == 0:
            continue
        key = (record.usage, record.selector)
        best = strongest.get(key)
        if best is None or rank[record.mtype] < rank[best]:
            strongest[key] = record.mtype
    return [r for r in candidates if r.mtype == 0 or r.mtype == strongest[(r.usage, r.selector)]]


# --- the decision --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Failures:
    """Keeps the most telling failure: a failed check after an anchor was found beats no-match."""

    best: Rejection | None = None
    rank: int = -1

    def add(self, rejection: Rejection, rank: int) -> None:
        if rank > self.rank:
            self.best, self.rank = rejection, rank


def verify(
    client_name: str | ClientName,
    presented: Presented,
    records: Iterable[TLSARecord | bytes | str | _DnsTLSA],
    *,
    now: datetime.datetime,
    policy: MatchPolicy = DEFAULT_POLICY,
) -> Result:
    """Decide whether ``presented`` is authenticated by ``records`` for ``client_name``.

    ``records`` must be a DNSSEC-validated (secure) TLSA RRset for the ClientName; items may be
    `TLSARecord`, RDATA wire bytes, presentation strings or dnspython TLSA rdata (so a
    ``dns.rrset.RRset`` or ``dns.resolver.Answer`` can be passed as it is); unreadable ones are
    discarded.
    ``now`` (timezone-aware) is used for the validity checks of DANE-TA and PKIX chains.
    Never raises for bad input: returns a `Rejection` with a stable reason instead.
    """
    try:
        name = parse_client_name(client_name)
    except InvalidName as exc:
        return Rejection(Reason.MALFORMED_INPUT, f"client name: {exc}")
    if now.tzinfo is None:
        return Rejection(Reason.MALFORMED_INPUT, "now must be timezone-aware", name.text)
    if not isinstance(presented, CertificateChain | RawPublicKey):
        return Rejection(Reason.MALFORMED_INPUT, "nothing usable was presented", name.text)
    try:
        return _verify(name, presented, records, now, policy)
    except (CredentialError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # Malformed certificates surface lazily in cryptography (extensions, keys): fail closed.
        log.debug("malformed input while verifying %s: %s", name.text, exc)
        return Rejection(Reason.MALFORMED_INPUT, f"unreadable credential: {exc}", name.text)
    except Exception as exc:  # never an accept, never an exception to the caller
        log.warning("unexpected error while verifying %s", name.text, exc_info=True)
        return Rejection(Reason.MALFORMED_INPUT, f"unreadable credential: {exc}", name.text)


def _verify(
    name: ClientName,
    presented: Presented,
    records_in: Iterable[TLSARecord | bytes | str | _DnsTLSA],
    now: datetime.datetime,
    policy: MatchPolicy,
) -> Result:
    records, unreadable = _coerce_records(records_in)
    user = policy.user_profile and name.format is NameFormat.USER
    rpk = isinstance(presented, RawPublicKey)
    if not records and not unreadable:
        return Rejection(Reason.NO_RECORDS, "no TLSA records", name.text)
    usable = usable_records(records, policy=policy, raw_public_key=rpk, user_profile=user)
    if not usable:
        what = "raw public keys match only 3 1 x records" if rpk else "no record is usable"
        return Rejection(Reason.NO_USABLE_RECORDS, what, name.text)

    if isinstance(presented, RawPublicKey):
        for record in usable:
            if presented.digest(record.mtype) == record.data:
                return Identity(name.text, name.text, 3, 1, record.mtype, 0, raw_public_key=True)
        return Rejection(Reason.NO_MATCH, "the raw public key matches no record", name.text)

    chain = presented
    ee = chain.end_entity
    failures = _Failures()
    failures.add(Rejection(Reason.NO_MATCH, _no_match_detail(usable), name.text), 0)

    # DANE-EE: the cheapest check first.
    for record in usable:
        if record.usage == 3 and ee.digest(record.selector, record.mtype) == record.data:
            return Identity(name.text, name.text, 3, record.selector, record.mtype, 0)

    subject = _ClientSubject(name, user)
    ta_records = [r for r in usable if r.usage == 2]
    if ta_records:
        result = _verify_dane_ta(subject, chain, ta_records, now, policy, failures)
        if result is not None:
            return result

    pkix_records = [r for r in usable if r.usage in (0, 1)]
    if pkix_records:
        result = _verify_pkix(subject, chain, pkix_records, now, policy, failures)
        if result is not None:
            return result

    assert failures.best is not None
    return failures.best


# --- who is being authenticated: a client (ClientName) or a server (reference host names) -------


@dataclass(frozen=True, slots=True)
class _ClientSubject:
    name: ClientName
    user: bool

    @property
    def text(self) -> str:
        return self.name.text

    def finish(self, ee: Cert, record: TLSARecord, depth: int) -> Identity | Rejection:
        return _finish(self.name, ee, record, depth, self.user)

    def eku_problem(self, cert: x509.Certificate, policy: MatchPolicy) -> str | None:
        return _eku_problem(cert) if policy.require_client_auth_eku else None


@dataclass(frozen=True, slots=True)
class _ServerSubject:
    owner: str  # the TLSA owner name, _PORT._tcp.HOST
    reference: tuple[str, ...]  # host names the certificate must name (DANE-TA, PKIX)

    @property
    def text(self) -> str:
        return self.owner

    def finish(self, ee: Cert, record: TLSARecord, depth: int) -> Identity | Rejection:
        matched = _server_name_match(ee.certificate, self.reference)
        if matched is None:
            return Rejection(
                Reason.NAME_MISMATCH,
                f"the server certificate names none of {', '.join(self.reference)}",
                self.owner,
            )
        return Identity(matched, self.owner, record.usage, record.selector, record.mtype, depth)

    def eku_problem(self, cert: x509.Certificate, policy: MatchPolicy) -> str | None:
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return None
        if (
            ExtendedKeyUsageOID.SERVER_AUTH in eku
            or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku
        ):
            return None
        return "extended key usage does not allow server authentication"


_Subject = _ClientSubject | _ServerSubject


def _wildcard_match(pattern: str, host: str) -> bool:
    """RFC 6125 section 6.4.3, as RFC 7671 section 7 allows: ``*`` only as the whole leftmost
    label, matching exactly one label, never in a public-suffix-like two-label name."""
    if pattern == host:
        return True
    if not pattern.startswith("*.") or "*" in pattern[2:]:
        return False
    rest = pattern[2:]
    if rest.count(".") < 1:
        return False  # *.com, *.test: too broad
    head, dot, tail = host.partition(".")
    return bool(head) and dot == "." and tail == rest


def _server_name_match(cert: x509.Certificate, reference: tuple[str, ...]) -> str | None:
    """The reference name the certificate matches (SAN dNSName; the subject CN only when the
    certificate has no dNSName at all, RFC 6125 section 6.4.4)."""
    names = _dns_names(cert)
    if not names:
        cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        names = [str(cn.value).lower() for cn in cns]
    for ref in reference:
        for presented in names:
            if _wildcard_match(presented.rstrip("."), ref):
                return ref
    return None


def _no_match_detail(usable: list[TLSARecord]) -> str:
    usages = {r.usage for r in usable}
    parts = []
    if 3 in usages:
        parts.append("the end-entity key matches no DANE-EE record")
    if 2 in usages:
        parts.append("the chain leads to no DANE-TA anchor (digest anchors must be sent)")
    if usages & {0, 1}:
        parts.append("no PKIX record matches the validated chain")
    return "; ".join(parts) or "no usable record matches"


# --- DANE-TA --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _DnsAnchor:
    record: TLSARecord
    cert: Cert | None  # for 2 0 0
    key: CertificatePublicKeyTypes | None  # for 2 1 0


def _dns_anchors(records: list[TLSARecord], policy: MatchPolicy) -> list[_DnsAnchor]:
    anchors: list[_DnsAnchor] = []
    for record in records:
        if record.mtype != 0:
            continue
        if record.selector == 0:
            try:
                anchors.append(_DnsAnchor(record, Cert.from_der(record.data), None))
            except CredentialError:
                continue
        elif policy.allow_dns_key_anchor:
            try:
                key = serialization.load_der_public_key(record.data)
            except (ValueError, UnsupportedAlgorithm):
                continue
            anchors.append(_DnsAnchor(record, None, key))  # type: ignore[arg-type]
    return anchors


def _signed_by(child: Cert, issuer: Cert) -> bool:
    try:
        child.certificate.verify_directly_issued_by(issuer.certificate)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _signed_by_key(child: Cert, key: CertificatePublicKeyTypes) -> bool:
    """Signature check against a bare key (no issuer name to compare, RFC 7671 5.2.3)."""
    cert = child.certificate
    params = cert.signature_algorithm_parameters
    algorithm = cert.signature_hash_algorithm
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if not isinstance(params, padding.PKCS1v15 | padding.PSS) or algorithm is None:
                return False
            key.verify(cert.signature, cert.tbs_certificate_bytes, params, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(params, ec.ECDSA):
                return False
            key.verify(cert.signature, cert.tbs_certificate_bytes, params)
        elif isinstance(key, ed25519.Ed25519PublicKey):
            if cert.signature_algorithm_oid != SignatureAlgorithmOID.ED25519:
                return False
            key.verify(cert.signature, cert.tbs_certificate_bytes)
        elif isinstance(key, ed448.Ed448PublicKey):
            if cert.signature_algorithm_oid != SignatureAlgorithmOID.ED448:
                return False
            key.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _verify_dane_ta(
    subject: _Subject,
    chain: CertificateChain,
    records: list[TLSARecord],
    now: datetime.datetime,
    policy: MatchPolicy,
    failures: _Failures,
) -> Identity | None:
    anchors = _dns_anchors(records, policy)
    pool = chain.certs[1:]
    budget = [_MAX_SIGNATURE_CHECKS]

    def matches(cert: Cert) -> TLSARecord | None:
        for record in records:
            if cert.digest(record.selector, record.mtype) == record.data:
                return record
        return None

    def check(path: list[Cert], record: TLSARecord, depth: int, anchor: Cert | None) -> Result:
        rejection = _check_path(subject, path, anchor, now, policy)
        if rejection is not None:
            return rejection
        return subject.finish(path[0], record, depth)

    def search(path: list[Cert]) -> Identity | None:
        if len(path) > policy.max_path_length:
            return None
        current = path[-1]
        # Presented issuers first (the anchor may be any of them, self-signed or not).
        for candidate in pool:
            if any(candidate is p for p in path):
                continue
            if budget[0] <= 0:
                return None
            if candidate.certificate.subject != current.certificate.issuer:
                continue
            budget[0] -= 1
            if not _signed_by(current, candidate):
                continue
            record = matches(candidate)
            if record is not None:
                result = check(path, record, len(path), candidate)
                if isinstance(result, Identity):
                    return result
                failures.add(result, 10)
            found = search([*path, candidate])
            if found is not None:
                return found
        # Trust anchors given in full in DNS, which the client need not send.
        for anchor in anchors:
            if budget[0] <= 0:
                return None
            budget[0] -= 1
            if anchor.cert is not None:
                if any(anchor.cert.der == p.der for p in path):
                    continue
                if not _signed_by(current, anchor.cert):
                    continue
                result = check(path, anchor.record, len(path), anchor.cert)
            elif anchor.key is not None:
                if not _signed_by_key(current, anchor.key):
                    continue
                result = check(path, anchor.record, len(path), None)
            else:  # pragma: no cover - constructed above with one of the two
                continue
            if isinstance(result, Identity):
                return result
            failures.add(result, 10)
        return None

    return search([chain.end_entity])


def _check_path(
    subject: _Subject,
    path: list[Cert],
    anchor: Cert | None,
    now: datetime.datetime,
    policy: MatchPolicy,
) -> Rejection | None:
    """RFC 5280-style checks of EE + intermediates below a DANE-TA anchor."""
    for depth, cert in enumerate(path):
        c = cert.certificate
        if now < c.not_valid_before_utc:
            return Rejection(
                Reason.EXPIRED, f"certificate at depth {depth} is not yet valid", subject.text
            )
        if now > c.not_valid_after_utc:
            return Rejection(
                Reason.EXPIRED, f"certificate at depth {depth} has expired", subject.text
            )
        problem = _critical_problem(c)
        if problem:
            return Rejection(Reason.BAD_CHAIN, f"depth {depth}: {problem}", subject.text)
        if depth >= 1:
            problem = _ca_problem(c, depth - 1, require_ca=True)
            if problem:
                return Rejection(Reason.BAD_CHAIN, f"depth {depth}: {problem}", subject.text)
    if anchor is not None:
        problem = _ca_problem(anchor.certificate, len(path) - 1, require_ca=False)
        if problem:
            return Rejection(Reason.BAD_CHAIN, f"trust anchor: {problem}", subject.text)
    issuers = [c.certificate for c in path[1:]]
    if anchor is not None:
        issuers.append(anchor.certificate)
    problem = _name_constraints_problem(path[0].certificate, issuers)
    if problem:
        return Rejection(Reason.BAD_CHAIN, problem, subject.text)
    problem = subject.eku_problem(path[0].certificate, policy)
    if problem:
        return Rejection(Reason.BAD_EKU, problem, subject.text)
    return None


def _critical_problem(cert: x509.Certificate) -> str | None:
    for ext in cert.extensions:
        if ext.critical and ext.oid not in _HANDLED_CRITICAL:
            return f"unhandled critical extension {ext.oid.dotted_string}"
    return None


def _ca_problem(cert: x509.Certificate, below: int, *, require_ca: bool) -> str | None:
    """``below``: number of intermediate CA certificates below this one in the path."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return "issuer is not marked as a CA (no basicConstraints)" if require_ca else None
    if not bc.ca:
        return "issuer certificate is not a CA"
    if bc.path_length is not None and below > bc.path_length:
        return f"path length constraint {bc.path_length} exceeded"
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not ku.key_cert_sign:
        return "issuer key usage does not allow certificate signing"
    return None


def _eku_problem(cert: x509.Certificate) -> str | None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if ExtendedKeyUsageOID.CLIENT_AUTH in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku:
        return None
    return "extended key usage does not allow client authentication"


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [n.lower() for n in san.get_values_for_type(x509.DNSName)]


def _dns_in_subtree(name: str, constraint: str) -> bool:
    constraint = constraint.lower().rstrip(".")
    if not constraint:
        return True
    if constraint.startswith("."):
        return name.endswith(constraint)
    return name == constraint or name.endswith("." + constraint)


def _mail_in_subtree(address: str, constraint: str) -> bool:
    constraint = constraint.lower()
    address = address.lower()
    if "@" in constraint:
        return address == constraint
    domain = address.rpartition("@")[2]
    if constraint.startswith("."):
        return domain.endswith(constraint)
    return domain == constraint


def _name_constraints_problem(ee: x509.Certificate, issuers: list[x509.Certificate]) -> str | None:
    constrained = []
    for issuer in issuers:
        try:
            constrained.append(
                issuer.extensions.get_extension_for_class(x509.NameConstraints).value
            )
        except x509.ExtensionNotFound:
            continue
    if not constrained:
        return None
    dns_names = _dns_names(ee)
    mailboxes = userid.mailboxes(ee)
    for nc in constrained:
        permitted = list(nc.permitted_subtrees or [])
        excluded = list(nc.excluded_subtrees or [])
        for subtree_kind in {type(g) for g in permitted + excluded}:
            if subtree_kind not in (x509.DNSName, x509.RFC822Name):
                return f"unsupported name constraint type {subtree_kind.__name__}"
        p_dns = [g.value for g in permitted if isinstance(g, x509.DNSName)]
        e_dns = [g.value for g in excluded if isinstance(g, x509.DNSName)]
        p_mail = [g.value for g in permitted if isinstance(g, x509.RFC822Name)]
        e_mail = [g.value for g in excluded if isinstance(g, x509.RFC822Name)]
        for dns_name in dns_names:
            if p_dns and not any(_dns_in_subtree(dns_name, c) for c in p_dns):
                return f"dNSName {dns_name} outside the permitted name constraints"
            if any(_dns_in_subtree(dns_name, c) for c in e_dns):
                return f"dNSName {dns_name} excluded by name constraints"
        for mailbox in mailboxes:
            if p_mail and not any(_mail_in_subtree(mailbox, c) for c in p_mail):
                return f"mailbox {mailbox} outside the permitted name constraints"
            if any(_mail_in_subtree(mailbox, c) for c in e_mail):
                return f"mailbox {mailbox} excluded by name constraints"
    return None


def _finish(
    name: ClientName, ee: Cert, record: TLSARecord, depth: int, user: bool
) -> Identity | Rejection:
    """Name check and, for the user profile, the user id. Runs only after the path checked out."""
    dns_names = _dns_names(ee.certificate)
    if user:
        domain = name.user_domain
        assert domain is not None
        if domain not in dns_names:
            return Rejection(
                Reason.NAME_MISMATCH,
                f"the user certificate is not for {domain} (SAN dNSName must equal the domain)",
                name.text,
            )
        found = userid.extract(ee.certificate, domain)
        if isinstance(found, Rejection):
            return Rejection(found.reason, found.detail, name.text)
        return Identity(
            identity=found,
            client_name=name.text,
            usage=record.usage,
            selector=record.selector,
            mtype=record.mtype,
            depth=depth,
            user_id=found.rpartition("@")[0],
            domain=found.rpartition("@")[2],
        )
    if name.text not in dns_names:
        return Rejection(
            Reason.NAME_MISMATCH,
            f"{name.text} is not a SAN dNSName of the certificate",
            name.text,
        )
    return Identity(name.text, name.text, record.usage, record.selector, record.mtype, depth)


# --- PKIX-TA / PKIX-EE ---------------------------------------------------------------------------


def _verify_pkix(
    subject: _Subject,
    chain: CertificateChain,
    records: list[TLSARecord],
    now: datetime.datetime,
    policy: MatchPolicy,
    failures: _Failures,
) -> Identity | None:
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    try:
        builder = (
            PolicyBuilder()
            .store(Store(list(policy.trust_store)))
            .time(now)
            .max_chain_depth(policy.max_path_length)
        )
        intermediates = [c.certificate for c in chain.certs[1:]]
        if isinstance(subject, _ServerSubject):
            verified_chain = _pkix_server_chain(builder, chain, intermediates, subject.reference)
        else:
            verified_chain = (
                builder.build_client_verifier()
                .verify(chain.end_entity.certificate, intermediates)
                .chain
            )
    except VerificationError as exc:
        failures.add(Rejection(Reason.BAD_CHAIN, f"PKIX validation failed: {exc}", subject.text), 5)
        return None
    validated = [Cert.from_certificate(c) for c in verified_chain]
    for record in records:
        positions = [0] if record.usage == 1 else range(1, len(validated))
        for depth in positions:
            if validated[depth].digest(record.selector, record.mtype) == record.data:
                problem = subject.eku_problem(validated[0].certificate, policy)
                if problem:
                    failures.add(Rejection(Reason.BAD_EKU, problem, subject.text), 10)
                    return None
                result = subject.finish(validated[0], record, depth)
                if isinstance(result, Identity):
                    return result
                failures.add(result, 10)
    return None


def _pkix_server_chain(
    builder: Any,
    chain: CertificateChain,
    intermediates: list[x509.Certificate],
    reference: tuple[str, ...],
) -> list[x509.Certificate]:
    """PKIX validation of a server chain for the first reference name that validates."""
    from cryptography.x509.verification import VerificationError

    last: VerificationError | None = None
    for host in reference:
        try:
            verifier = builder.build_server_verifier(x509.DNSName(host))
            return list(verifier.verify(chain.end_entity.certificate, intermediates))
        except VerificationError as exc:
            last = exc
    raise last if last is not None else VerificationError("no reference name")


# --- servers --------------------------------------------------------------------------------------


def server_owner(host: str, port: int, protocol: str = "tcp") -> str:
    """The TLSA owner name of a TLS service: ``_PORT._PROTOCOL.HOST`` (RFC 6698 section 3)."""
    return f"_{port}._{protocol}.{host.rstrip('.').lower()}"


def verify_server(
    host: str,
    presented: CertificateChain,
    records: Iterable[TLSARecord | bytes | str | _DnsTLSA],
    *,
    now: datetime.datetime,
    port: int = 443,
    protocol: str = "tcp",
    reference_names: Iterable[str] = (),
    policy: MatchPolicy = DEFAULT_POLICY,
) -> Result:
    """Authenticate a TLS server's chain by the TLSA records at ``_PORT._PROTOCOL.HOST``.

    RFC 6698/7671 (with RFC 7672's SMTP rules where they apply to any client): DANE-EE (3 x x)
    matches the end-entity certificate or key with no name or validity checks; DANE-TA (2 x x)
    needs a valid chain to the anchor whose end-entity certificate names ``host`` (or one of
    ``reference_names``: a SAN dNSName, wildcards only as a whole leftmost label, and allows
    serverAuth if it has an EKU). PKIX usages need ``policy.trust_store``. ``records`` must be the
    DNSSEC-validated (secure) RRset; a caller with secure records that do not match must refuse the
    connection, never fall back. Never raises for bad input.
    """
    try:
        ref_host = parse_client_name(host).text
        owner = server_owner(ref_host, port, protocol)
        reference = tuple(
            dict.fromkeys([ref_host, *(n.rstrip(".").lower() for n in reference_names)])
        )
    except (InvalidName, ValueError) as exc:
        return Rejection(Reason.MALFORMED_INPUT, f"server name: {exc}")
    if now.tzinfo is None:
        return Rejection(Reason.MALFORMED_INPUT, "now must be timezone-aware", owner)
    if not isinstance(presented, CertificateChain):
        return Rejection(Reason.MALFORMED_INPUT, "a server presents a certificate chain", owner)
    try:
        records_list, unreadable = _coerce_records(records)
        if not records_list and not unreadable:
            return Rejection(Reason.NO_RECORDS, "no TLSA records", owner)
        usable = usable_records(records_list, policy=policy)
        if not usable:
            return Rejection(Reason.NO_USABLE_RECORDS, "no record is usable", owner)
        ee = presented.end_entity
        for record in usable:
            if record.usage == 3 and ee.digest(record.selector, record.mtype) == record.data:
                return Identity(ref_host, owner, 3, record.selector, record.mtype, 0)
        failures = _Failures()
        failures.add(Rejection(Reason.NO_MATCH, _no_match_detail(usable), owner), 0)
        subject = _ServerSubject(owner, reference)
        ta = [r for r in usable if r.usage == 2]
        if ta:
            result = _verify_dane_ta(subject, presented, ta, now, policy, failures)
            if result is not None:
                return result
        pkix = [r for r in usable if r.usage in (0, 1)]
        if pkix:
            result = _verify_pkix(subject, presented, pkix, now, policy, failures)
            if result is not None:
                return result
        assert failures.best is not None
        return failures.best
    except (CredentialError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return Rejection(Reason.MALFORMED_INPUT, f"unreadable credential: {exc}", owner)
    except Exception as exc:  # never an accept, never an exception to the caller
        log.warning("unexpected error while verifying server %s", owner, exc_info=True)
        return Rejection(Reason.MALFORMED_INPUT, f"unreadable credential: {exc}", owner)
