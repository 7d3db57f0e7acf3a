"""Keys and certificates for DANCE identities: generation, issuing, and safe storage.

Pure functions that take ``now`` explicitly. Used by the demo, the tests, and the provisioning
commands. Underscore labels (``sensor7._device.example.com``) are allowed in SAN dNSNames, as
draft-ietf-dance-client-auth-13 notes private CAs do; public CAs will not issue them.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dance.names import parse_client_name, to_a_label_domain
from dance.userid import OID_SMTP_UTF8_MAILBOX, OID_UID, encode_utf8_string

__all__ = [
    "KeyKind",
    "generate_key",
    "issue_certificate",
    "new_ca",
    "private_key_pem",
    "self_signed",
    "write_private_key",
]

KeyKind = Literal["ec-p256", "ed25519", "rsa-3072"]
KEY_KINDS: tuple[KeyKind, ...] = ("ec-p256", "ed25519", "rsa-3072")
_BACKDATE = datetime.timedelta(minutes=5)


def generate_key(kind: KeyKind = "ec-p256") -> CertificateIssuerPrivateKeyTypes:
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"unknown key kind {kind!r} (choose from {', '.join(KEY_KINDS)})")


def _hash_for(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _base(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    now: datetime.datetime,
    days: float,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def self_signed(
    key: CertificateIssuerPrivateKeyTypes,
    client_name: str,
    *,
    now: datetime.datetime,
    days: float = 365,
) -> x509.Certificate:
    """A self-signed end-entity certificate for DANE-EE (``3 1 1``): SAN dNSName = the name,
    EKU clientAuth. Its dates do not matter to DANE-EE verifiers, only to other software."""
    name = parse_client_name(client_name).text
    builder = (
        _base(_name(name), _name(name), key.public_key(), now, days)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    return builder.sign(key, _hash_for(key))


def new_ca(
    key: CertificateIssuerPrivateKeyTypes,
    common_name: str,
    *,
    now: datetime.datetime,
    days: float = 3650,
    path_length: int | None = 0,
    permitted_dns: Sequence[str] = (),
    permitted_email: Sequence[str] = (),
    issuer: tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes] | None = None,
) -> x509.Certificate:
    """A CA certificate: self-signed, or issued by ``issuer`` (an intermediate).

    ``permitted_dns`` / ``permitted_email`` add critical name constraints, which keep a domain's
    user CA from vouching for another domain's users.
    """
    subject = _name(common_name)
    issuer_name = issuer[0].subject if issuer else subject
    signing_key = issuer[1] if issuer else key
    builder = (
        _base(subject, issuer_name, key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(_aki(issuer[0]), critical=False)
    if permitted_dns or permitted_email:
        subtrees: list[x509.GeneralName] = [x509.DNSName(d) for d in permitted_dns]
        subtrees += [x509.RFC822Name(e) for e in permitted_email]
        builder = builder.add_extension(
            x509.NameConstraints(permitted_subtrees=subtrees, excluded_subtrees=None),
            critical=True,
        )
    return builder.sign(signing_key, _hash_for(signing_key))


def issue_certificate(
    ca_cert: x509.Certificate,
    ca_key: CertificateIssuerPrivateKeyTypes,
    public_key: CertificatePublicKeyTypes,
    *,
    dns_names: Sequence[str],
    now: datetime.datetime,
    days: float = 365,
    uid: str | None = None,
    mailbox: str | None = None,
    client_auth: bool = True,
    common_name: str | None = None,
    server_auth: bool = False,
) -> x509.Certificate:
    """Issue an end-entity certificate for a device (SAN dNSName = its ClientName) or a user
    (SAN dNSName = the domain, plus a ``uid`` otherName and/or a mailbox); ``server_auth`` for
    a TLS server (SAN dNSName = its host names)."""
    if not dns_names:
        raise ValueError("at least one SAN dNSName is required")
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    if uid is not None:
        sans.append(x509.OtherName(OID_UID, encode_utf8_string(uid)))
    if mailbox is not None:
        local, _, domain = mailbox.rpartition("@")
        if local.isascii():
            sans.append(x509.RFC822Name(f"{local}@{to_a_label_domain(domain)}"))
        else:
            sans.append(x509.OtherName(OID_SMTP_UTF8_MAILBOX, encode_utf8_string(mailbox)))
    cn = common_name or (f"{uid}@{dns_names[0]}" if uid else dns_names[0])
    builder = (
        _base(_name(cn), ca_cert.subject, public_key, now, days)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    builder = builder.add_extension(_aki(ca_cert), critical=False)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else []
    if server_auth:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(ca_key, _hash_for(ca_key))


def private_key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private_key(path: str | Path, key: CertificateIssuerPrivateKeyTypes) -> None:
    """Write a private key in PEM, created 0600 from the start (never briefly world-readable)."""
    data = private_key_pem(key)
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def certificate_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
