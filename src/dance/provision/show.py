"""Describe an identity file (certificate, chain, CSR, public or private key) and its records."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from dance.credentials import CredentialError, load_certificates, load_public_key
from dance.names import InvalidName, parse_client_name
from dance.provision.identity import IdentityError
from dance.tlsa import make_record

__all__ = ["describe"]


def _key_type(key: PublicKeyTypes) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ec-{key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "ed448"
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa-{key.key_size}"
    return type(key).__name__


def _dns_names(ext: x509.Extensions) -> list[str]:
    try:
        return list(
            ext.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.DNSName
            )
        )
    except x509.ExtensionNotFound:
        return []


def _client_names(names: list[str]) -> list[str]:
    out = []
    for n in names:
        try:
            out.append(parse_client_name(n).text)
        except InvalidName:
            continue
    return out


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _records(owner_names: list[str], rdata: str) -> list[dict[str, str]]:
    return [{"owner": n, "rdata": rdata} for n in owner_names]


def describe(data: bytes) -> dict[str, object]:
    """What ``data`` is and the TLSA records it needs. Never includes private key material."""
    stripped = data.lstrip()
    if b"PRIVATE KEY-----" in stripped[:100]:
        try:
            priv = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise IdentityError("unreadable or encrypted private key", "bad-key") from None
        pub = priv.public_key()
        return {
            "kind": "private-key",
            "key_type": _key_type(pub),
            "records": [{"owner": "(the identity's name)", "rdata": make_record(pub).to_text()}],
        }
    if b"CERTIFICATE REQUEST-----" in stripped[:100]:
        try:
            csr = x509.load_pem_x509_csr(data)
        except ValueError:
            raise IdentityError("unreadable certificate signing request", "bad-csr") from None
        names = _client_names(_dns_names(csr.extensions))
        return {
            "kind": "csr",
            "subject": csr.subject.rfc4514_string(),
            "dns_names": names,
            "key_type": _key_type(csr.public_key()),
            "signature_valid": csr.is_signature_valid,
            "records": _records(names, make_record(csr.public_key()).to_text()),
            "note": "DANE-EE 3 1 1 for the key; or have a CA issue a certificate (dance ca issue)",
        }
    try:
        certs = load_certificates(data)
    except CredentialError:
        certs = []
    if certs:
        ee = certs[0]
        names = _client_names(_dns_names(ee.extensions))
        info: dict[str, object] = {
            "kind": "ca-certificate" if _is_ca(ee) else "certificate",
            "subject": ee.subject.rfc4514_string(),
            "issuer": ee.issuer.rfc4514_string(),
            "self_signed": ee.issuer == ee.subject,
            "dns_names": names,
            "key_type": _key_type(ee.public_key()),
            "not_before": ee.not_valid_before_utc.isoformat(),
            "not_after": ee.not_valid_after_utc.isoformat(),
            "chain_length": len(certs),
        }
        if _is_ca(ee):
            info["records"] = [
                {"owner": "*._device.D or _user.D", "rdata": make_record(ee, 2, 0, 1).to_text()}
            ]
        elif ee.issuer == ee.subject or len(certs) == 1:
            info["records"] = _records(names, make_record(ee, 3, 1, 1).to_text())
        else:
            top = certs[-1]
            info["records"] = [
                {
                    "owner": "(the CA's name: *._device.D or _user.D)",
                    "rdata": make_record(top, 2, 0, 1).to_text(),
                }
            ]
        return info
    try:
        spki = load_public_key(data)
    except CredentialError:
        raise IdentityError(
            "not a certificate, CSR, public key or private key (PEM or DER)", "bad-input"
        ) from None
    return {
        "kind": "public-key",
        "records": [{"owner": "(name)", "rdata": make_record(spki).to_text()}],
    }
