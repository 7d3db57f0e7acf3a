"""Organization device CAs and domain user CAs, and the certificates they issue.

* A **device CA** for domain D is published as DANE-TA at ``*._device.D`` (``2 0 1``: digest of
  the whole CA certificate, RFC 7671 section 5.2.1) and is name-constrained to ``_device.D``.
  It issues device certificates with SAN dNSName = the ClientName and the clientAuth EKU.
* A **user CA** for D is published at ``_user.D`` (architecture section 4.1) and is
  name-constrained to D (dNSName and rfc822Name). It issues user certificates with SAN dNSName D
  plus a ``uid`` otherName or a mailbox; users themselves are never listed in DNS.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PublicKeyTypes,
)

from dance import certs
from dance.names import InvalidName, parse_client_name, to_a_label_domain
from dance.provision.identity import IdentityError, paths_for, write_new_file
from dance.tlsa import TLSARecord, make_record

__all__ = ["CA", "CAKind", "Issued", "issue", "load_csr", "new_ca_files", "permitted_dns"]

CAKind = Literal["device", "user"]


@dataclasses.dataclass(frozen=True)
class CA:
    kind: CAKind
    domain: str
    certificate: x509.Certificate
    key_path: Path
    cert_path: Path
    owner: str  # where the DANE-TA record goes
    record: TLSARecord

    def zone_line(self, ttl: int = 300) -> str:
        return self.record.to_zone_line(self.owner, ttl)

    def to_dict(self, ttl: int = 300) -> dict[str, object]:
        return {
            "kind": self.kind,
            "domain": self.domain,
            "key": str(self.key_path),
            "certificate": str(self.cert_path),
            "records": [
                {
                    "owner": self.owner,
                    "ttl": ttl,
                    "rdata": self.record.to_text(),
                    "zone_line": self.zone_line(ttl),
                }
            ],
        }


@dataclasses.dataclass(frozen=True)
class Issued:
    name: str  # the ClientName the certificate is for (``_user.D`` for users)
    certificate: x509.Certificate
    cert_path: Path
    key_path: Path | None  # None when issued from a CSR
    user: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "user": self.user,
            "certificate": str(self.cert_path),
            "key": str(self.key_path) if self.key_path else None,
            "serial": format(self.certificate.serial_number, "x"),
        }


def _domain(domain: str) -> str:
    try:
        d = to_a_label_domain(domain)
        parse_client_name(d)
    except (InvalidName, ValueError) as exc:
        raise IdentityError(f"bad domain {domain!r}: {exc}", "bad-name") from None
    return d


def ca_owner(kind: CAKind, domain: str) -> str:
    return f"*._device.{domain}" if kind == "device" else f"_user.{domain}"


def new_ca_files(
    kind: CAKind,
    domain: str,
    out_dir: str | Path,
    *,
    key_type: certs.KeyKind = "ec-p256",
    now: datetime.datetime | None = None,
    days: float = 3650,
    force: bool = False,
    common_name: str | None = None,
) -> CA:
    """Create a name-constrained CA key (0600) and certificate in ``out_dir``."""
    if kind not in ("device", "user"):
        raise IdentityError(f"unknown CA kind {kind!r} (device or user)", "bad-input")
    d = _domain(domain)
    when = now or datetime.datetime.now(datetime.UTC)
    key = certs.generate_key(key_type)
    if kind == "device":
        cn = common_name or f"{d} device CA"
        cert = certs.new_ca(key, cn, now=when, days=days, permitted_dns=[f"_device.{d}"])
    else:
        cn = common_name or f"{d} user CA"
        cert = certs.new_ca(key, cn, now=when, days=days, permitted_dns=[d], permitted_email=[d])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = paths_for(f"{kind}-ca.{d}", out)
    if not force:
        for p in (paths.key, paths.cert):
            if p.exists():
                raise IdentityError(f"{p} exists (use --force to overwrite)", "exists")
    write_new_file(paths.key, certs.private_key_pem(key), force=force, mode=0o600)
    write_new_file(paths.cert, certs.certificate_pem(cert), force=force)
    return CA(kind, d, cert, paths.key, paths.cert, ca_owner(kind, d), make_record(cert, 2, 0, 1))


def permitted_dns(ca_cert: x509.Certificate) -> list[str]:
    try:
        nc = ca_cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return []
    return [n.value for n in nc.permitted_subtrees or () if isinstance(n, x509.DNSName)]


def _within(name: str, subtree: str) -> bool:
    subtree = subtree.lower().lstrip(".")
    return name == subtree or name.endswith("." + subtree)


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = (
            x509.load_pem_x509_csr(data)
            if data.lstrip().startswith(b"-----")
            else x509.load_der_x509_csr(data)
        )
    except ValueError:
        raise IdentityError("not a PEM or DER certificate signing request", "bad-csr") from None
    if not csr.is_signature_valid:
        raise IdentityError("CSR signature does not verify (no proof of possession)", "bad-csr")
    return csr


def csr_name(csr: x509.CertificateSigningRequest) -> str | None:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
        if names:
            return names[0]
    except x509.ExtensionNotFound:
        pass
    cns = csr.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else None


def issue(
    ca_cert: x509.Certificate,
    ca_key: CertificateIssuerPrivateKeyTypes,
    out_dir: str | Path,
    *,
    name: str | None = None,
    csr: x509.CertificateSigningRequest | None = None,
    uid: str | None = None,
    mailbox: str | None = None,
    domain: str | None = None,
    key_type: certs.KeyKind = "ec-p256",
    now: datetime.datetime | None = None,
    days: float = 365,
    force: bool = False,
) -> Issued:
    """Issue a device certificate (``name`` = its ClientName) or, with ``uid``/``mailbox``, a
    user certificate for domain D (SAN dNSName D). Without ``csr`` a new key is generated and
    written 0600 next to the certificate; the certificate file holds the chain (EE + CA), since
    a DANE-TA ``2 0 1`` record needs the CA in the presented chain."""
    when = now or datetime.datetime.now(datetime.UTC)
    if uid is not None and mailbox is not None:
        raise IdentityError("give either a uid or a mailbox, not both", "bad-input")
    if _spki(ca_cert.public_key()) != _spki(ca_key.public_key()):
        raise IdentityError("the CA key does not belong to the CA certificate", "bad-key")
    user = uid or mailbox
    constraints = permitted_dns(ca_cert)
    if user is not None:
        if mailbox is not None:
            local, at, mdomain = mailbox.rpartition("@")
            if not at or not local or not mdomain:
                raise IdentityError(f"bad mailbox {mailbox!r}", "bad-input")
            domain = domain or mdomain
        if domain is None and name is not None:
            domain = name.removeprefix("_user.")
        if domain is None:
            if not constraints:
                raise IdentityError("a user certificate needs --domain D", "bad-input")
            domain = constraints[0]
        subject = _domain(domain)
        client_name = f"_user.{subject}"
        if mailbox is not None and _domain(mailbox.rpartition("@")[2]) != subject:
            raise IdentityError(f"mailbox {mailbox!r} is not in domain {subject}", "bad-input")
    else:
        raw = name or (csr_name(csr) if csr is not None else None)
        if raw is None:
            raise IdentityError("a device certificate needs --name NAME", "bad-input")
        try:
            subject = parse_client_name(raw).text
        except InvalidName as exc:
            raise IdentityError(f"bad client name {raw!r}: {exc}", "bad-name") from None
        client_name = subject
    if constraints and not any(_within(subject, c) for c in constraints):
        raise IdentityError(
            f"{subject} is outside the CA's name constraints ({', '.join(constraints)})",
            "name-constraints",
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = client_name if user is None else f"{_safe(user)}@{subject}"
    paths = paths_for(stem, out)
    key = None
    public_key: CertificatePublicKeyTypes
    if csr is not None:
        public_key = csr.public_key()
    else:
        key = certs.generate_key(key_type)
        public_key = key.public_key()
    cert = certs.issue_certificate(
        ca_cert,
        ca_key,
        public_key,
        dns_names=[subject],
        now=when,
        days=days,
        uid=uid,
        mailbox=mailbox,
    )
    if not force:
        for p in (paths.cert, *([paths.key] if key is not None else [])):
            if p.exists():
                raise IdentityError(f"{p} exists (use --force to overwrite)", "exists")
    if key is not None:
        write_new_file(paths.key, certs.private_key_pem(key), force=force, mode=0o600)
    write_new_file(paths.cert, certs.certificate_pem(cert, ca_cert), force=force)
    return Issued(client_name, cert, paths.cert, paths.key if key is not None else None, user)


def _safe(user: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in user.split("@", maxsplit=1)[0])[
        :64
    ]


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
