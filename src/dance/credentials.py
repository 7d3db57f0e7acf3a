"""What a client presents: a certificate chain or a raw public key, and how to read them.

`CertificateChain` keeps each certificate's original DER next to the parsed object, and extracts
the SubjectPublicKeyInfo *as encoded in the certificate* (RFC 6698 selector 1 is defined on those
bytes, not on a re-encoding of the key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = [
    "CertificateChain",
    "CredentialError",
    "Presented",
    "RawPublicKey",
    "load_certificates",
    "load_public_key",
]

MAX_CHAIN_LENGTH = 16


class CredentialError(ValueError):
    """A certificate or key could not be read."""


def _der_header(data: bytes, offset: int) -> tuple[int, int, int]:
    """Return (tag, content_start, content_end) of the DER element at ``offset``."""
    if offset + 2 > len(data):
        raise CredentialError("truncated DER")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise CredentialError("high-tag-number DER form is not used in certificates")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise CredentialError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise CredentialError("truncated DER")
    return tag, pos, end


def spki_from_tbs(tbs: bytes) -> bytes:
    """The SubjectPublicKeyInfo DER inside a TBSCertificate (RFC 5280 section 4.1)."""
    tag, pos, end = _der_header(tbs, 0)
    if tag != 0x30:
        raise CredentialError("TBSCertificate is not a SEQUENCE")
    # version [0] EXPLICIT (optional), serial, signature, issuer, validity, subject, spki
    tag, _, stop = _der_header(tbs, pos)
    if tag == 0xA0:
        pos = stop
    for _ in range(5):
        _, _, pos = _der_header(tbs, pos)
    tag, _, stop = _der_header(tbs, pos)
    if tag != 0x30 or stop > end:
        raise CredentialError("SubjectPublicKeyInfo not found")
    return tbs[pos:stop]


@dataclass(frozen=True, slots=True, eq=False)
class Cert:
    """One parsed certificate with its original DER and lazily computed selector contents."""

    certificate: x509.Certificate
    der: bytes
    _memo: dict[str, bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def from_der(cls, der: bytes) -> Cert:
        try:
            certificate = x509.load_der_x509_certificate(der)
        except Exception as exc:  # cryptography raises several types (e.g. InvalidVersion)
            raise CredentialError(f"not a DER certificate: {exc}") from None
        return cls(certificate, bytes(der))

    @classmethod
    def from_certificate(cls, certificate: x509.Certificate) -> Cert:
        return cls(certificate, certificate.public_bytes(serialization.Encoding.DER))

    @property
    def spki(self) -> bytes:
        value = self._memo.get("spki")
        if value is None:
            value = spki_from_tbs(self.certificate.tbs_certificate_bytes)
            self._memo["spki"] = value
        return value

    def content(self, selector: int) -> bytes:
        return self.der if selector == 0 else self.spki

    def digest(self, selector: int, mtype: int) -> bytes:
        """Association data for (selector, mtype): Full, SHA2-256 or SHA2-512."""
        key = f"{selector}/{mtype}"
        value = self._memo.get(key)
        if value is None:
            content = self.content(selector)
            if mtype == 0:
                value = content
            elif mtype == 1:
                value = hashlib.sha256(content).digest()
            elif mtype == 2:
                value = hashlib.sha512(content).digest()
            else:
                raise ValueError(f"unsupported matching type {mtype}")
            self._memo[key] = value
        return value


@dataclass(frozen=True, slots=True, eq=False)
class CertificateChain:
    """A presented chain, end entity first, as sent by the peer (order of the rest not trusted)."""

    certs: tuple[Cert, ...]

    @classmethod
    def from_der(cls, ders: Iterable[bytes]) -> CertificateChain:
        certs = tuple(Cert.from_der(d) for d in ders)
        return cls._checked(certs)

    @classmethod
    def from_certificates(cls, certificates: Iterable[x509.Certificate]) -> CertificateChain:
        return cls._checked(tuple(Cert.from_certificate(c) for c in certificates))

    @classmethod
    def _checked(cls, certs: tuple[Cert, ...]) -> CertificateChain:
        if not certs:
            raise CredentialError("empty certificate chain")
        if len(certs) > MAX_CHAIN_LENGTH:
            raise CredentialError(f"certificate chain longer than {MAX_CHAIN_LENGTH}")
        return cls(certs)

    @property
    def end_entity(self) -> Cert:
        return self.certs[0]


@dataclass(frozen=True, slots=True, eq=False)
class RawPublicKey:
    """An RFC 7250 raw public key: the DER SubjectPublicKeyInfo as presented."""

    spki: bytes
    _memo: dict[str, bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def from_spki(cls, spki: bytes) -> RawPublicKey:
        spki = bytes(spki)
        try:
            serialization.load_der_public_key(spki)
        except Exception as exc:
            raise CredentialError(f"not a DER SubjectPublicKeyInfo: {exc}") from None
        return cls(spki)

    def digest(self, mtype: int) -> bytes:
        key = str(mtype)
        value = self._memo.get(key)
        if value is None:
            if mtype == 0:
                value = self.spki
            elif mtype == 1:
                value = hashlib.sha256(self.spki).digest()
            elif mtype == 2:
                value = hashlib.sha512(self.spki).digest()
            else:
                raise ValueError(f"unsupported matching type {mtype}")
            self._memo[key] = value
        return value


Presented = CertificateChain | RawPublicKey


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Read one DER certificate or any number of PEM certificates (in order)."""
    if b"-----BEGIN" in data:
        try:
            certs = x509.load_pem_x509_certificates(data)
        except Exception as exc:
            raise CredentialError(f"bad PEM certificate data ({brief_error(exc)})") from None
        if not certs:
            raise CredentialError("no certificate found")
        return list(certs)
    if not data:
        raise CredentialError("empty certificate file")
    try:
        return [x509.load_der_x509_certificate(data)]
    except Exception as exc:
        raise CredentialError(f"not a PEM or DER certificate ({brief_error(exc)})") from None


def brief_error(exc: BaseException) -> str:
    """A short, one-line reason from a parser exception (no Rust debug dumps, no URLs)."""
    text = str(exc).split("\n", 1)[0]
    for cut in (" {", ". See ", " See https"):
        pos = text.find(cut)
        if pos > 0:
            text = text[:pos]
    return text[:120].rstrip(": ") or type(exc).__name__


def load_public_key(data: bytes) -> bytes:
    """Read a public key (PEM ``PUBLIC KEY`` or DER SubjectPublicKeyInfo) and return SPKI DER.

    A certificate is accepted too, and gives its SubjectPublicKeyInfo.
    """
    if b"-----BEGIN CERTIFICATE" in data:
        return Cert.from_certificate(load_certificates(data)[0]).spki
    if b"-----BEGIN" in data:
        if b"PRIVATE KEY" in data:
            raise CredentialError("this is a private key; give the public key")
        try:
            key = serialization.load_pem_public_key(data)
        except Exception as exc:
            raise CredentialError(f"bad PEM public key: {exc}") from None
        return key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    try:
        RawPublicKey.from_spki(data)
    except CredentialError:
        try:
            return Cert.from_der(data).spki
        except CredentialError:
            raise CredentialError("not a PEM or DER public key") from None
    return bytes(data)


def chain_from(
    value: Presented | Sequence[x509.Certificate | bytes] | x509.Certificate,
) -> Presented:
    """Normalize what callers pass in: a chain, a list of certificates or DER, or one cert."""
    if isinstance(value, CertificateChain | RawPublicKey):
        return value
    if isinstance(value, x509.Certificate):
        return CertificateChain.from_certificates([value])
    if isinstance(value, bytes | bytearray):
        raise CredentialError("pass a list of DER certificates or RawPublicKey.from_spki(...)")
    items = list(value)
    if all(isinstance(i, x509.Certificate) for i in items):
        return CertificateChain.from_certificates(
            i for i in items if isinstance(i, x509.Certificate)
        )
    if all(isinstance(i, bytes | bytearray) for i in items):
        return CertificateChain.from_der(
            bytes(i) for i in items if isinstance(i, bytes | bytearray)
        )
    raise CredentialError("a chain must be all x509.Certificate or all DER bytes")
