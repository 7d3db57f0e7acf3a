"""A small PKI for tests: an org CA, an intermediate, device and user certificates."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from dance import certs
from dance.credentials import CertificateChain

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
NAME = "sensor7._device.example.com"

# Key generation dominates test time: reuse a small pool of P-256 keys.
_KEYS: list[ec.EllipticCurvePrivateKey] = [
    ec.generate_private_key(ec.SECP256R1()) for _ in range(8)
]


def key(i: int) -> ec.EllipticCurvePrivateKey:
    return _KEYS[i % len(_KEYS)]


@dataclass
class Pki:
    ca: x509.Certificate
    ca_key: CertificateIssuerPrivateKeyTypes
    ica: x509.Certificate
    ica_key: CertificateIssuerPrivateKeyTypes


def make_pki(
    *,
    ca_key_index: int = 0,
    ica_key_index: int = 1,
    now: datetime.datetime = NOW,
    ca_days: float = 3650,
    ica_days: float = 1000,
    ca_name: str = "Example Device CA",
    permitted_dns: tuple[str, ...] = (),
    permitted_email: tuple[str, ...] = (),
) -> Pki:
    ca_key = key(ca_key_index)
    ca = certs.new_ca(
        ca_key,
        ca_name,
        now=now,
        days=ca_days,
        path_length=1,
        permitted_dns=permitted_dns,
        permitted_email=permitted_email,
    )
    ica_key = key(ica_key_index)
    ica = certs.new_ca(
        ica_key, ca_name + " Intermediate", now=now, days=ica_days, issuer=(ca, ca_key)
    )
    return Pki(ca, ca_key, ica, ica_key)


def device(
    pki: Pki,
    names: tuple[str, ...] = (NAME,),
    *,
    key_index: int = 2,
    now: datetime.datetime = NOW,
    days: float = 365,
    client_auth: bool = True,
) -> x509.Certificate:
    return certs.issue_certificate(
        pki.ica,
        pki.ica_key,
        key(key_index).public_key(),
        dns_names=names,
        now=now,
        days=days,
        client_auth=client_auth,
    )


def chain(*items: x509.Certificate) -> CertificateChain:
    return CertificateChain.from_certificates(items)
