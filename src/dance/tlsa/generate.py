"""Generate TLSA records from certificates and public keys."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from dance.credentials import Cert
from dance.tlsa.record import TLSARecord

__all__ = ["all_records", "association_data", "make_record"]

Source = x509.Certificate | PublicKeyTypes | bytes


def _selector_content(source: Source, selector: int) -> bytes:
    if isinstance(source, x509.Certificate):
        cert = Cert.from_certificate(source)
        return cert.der if selector == 0 else cert.spki
    if selector == 0:
        raise ValueError("selector 0 (Cert) needs a certificate, not a bare public key")
    if selector != 1:
        raise ValueError(f"unsupported selector {selector}")
    if isinstance(source, bytes):
        return source  # DER SubjectPublicKeyInfo
    return source.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def association_data(source: Source, selector: int, mtype: int) -> bytes:
    """The certificate association data for ``source`` under (selector, mtype)."""
    if selector not in (0, 1):
        raise ValueError(f"unsupported selector {selector}")
    content = _selector_content(source, selector)
    if mtype == 0:
        return content
    if mtype == 1:
        return hashlib.sha256(content).digest()
    if mtype == 2:
        return hashlib.sha512(content).digest()
    raise ValueError(f"unsupported matching type {mtype}")


def make_record(source: Source, usage: int = 3, selector: int = 1, mtype: int = 1) -> TLSARecord:
    """One TLSA record for a certificate, a public key (object or SPKI DER) or a CA certificate.

    The default ``3 1 1`` (DANE-EE, SPKI, SHA2-256) survives certificate renewal and works with
    raw public keys. For a CA published as DANE-TA, ``2 0 1`` is the recommended shape.
    """
    return TLSARecord(usage, selector, mtype, association_data(source, selector, mtype))


def all_records(source: Source, usages: tuple[int, ...] = (0, 1, 2, 3)) -> Iterator[TLSARecord]:
    """Every usage x selector x matching-type combination that ``source`` can produce."""
    selectors = (0, 1) if isinstance(source, x509.Certificate) else (1,)
    for usage in usages:
        for selector in selectors:
            for mtype in (0, 1, 2):
                yield make_record(source, usage, selector, mtype)
