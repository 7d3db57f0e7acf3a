"""EAP-TLS client certificates checked through DANCE (sans I/O but for the Authenticator's lookup).

EAP-TLS carries no TLS extension, so there is no ``dane_clientid``: the ClientName is the client
certificate's one SAN dNSName. A certificate with none, or with several, is refused (never "the
first one"): which name would be authenticated must not depend on an order the issuer chose.

When the EAP identity (RADIUS User-Name) is given, it must be that ClientName (compared as DNS
names: case-insensitively, A-labels), so the identity the NAS and accounting see is the
authenticated one. Deployments hiding the identity (an anonymous outer NAI, RFC 9190 section
2.1.7) run the daemon with ``require_identity=False`` and take the name from the verdict instead.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from cryptography import x509

from dance.auth import Authenticator
from dance.credentials import CertificateChain, CredentialError
from dance.identity import Identity
from dance.names import InvalidName, parse_client_name

__all__ = ["Decision", "EapCertError", "check_certificate", "client_name_from_certificate"]

log = logging.getLogger("dance.eap")


class EapCertError(ValueError):
    """A certificate or identity refused before any DNS query; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# Stable reason codes of this adapter (the Authenticator's own codes pass through unchanged).
MALFORMED_CERTIFICATE = "malformed-certificate"
NO_DNS_NAME = "no-san-dnsname"
SEVERAL_DNS_NAMES = "several-san-dnsnames"
BAD_DNS_NAME = "bad-san-dnsname"
NO_IDENTITY = "no-identity"
IDENTITY_MISMATCH = "identity-mismatch"
EXPIRED = "expired"  # the same code as dance.identity.Reason.EXPIRED


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one certificate: ``client_name`` when accepted, else ``reason``."""

    accepted: bool
    client_name: str | None
    reason: str  # "-" when accepted
    detail: str = ""
    dns_outcome: str = "-"
    identity: Identity | None = None


def client_name_from_certificate(cert: x509.Certificate) -> str:
    """The ClientName: the certificate's single SAN dNSName, as a canonical DNS name."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        raise EapCertError(NO_DNS_NAME, "the certificate has no subjectAltName") from None
    except Exception as exc:  # cryptography parses extensions lazily: a malformed one raises
        raise EapCertError(MALFORMED_CERTIFICATE, f"unreadable extensions: {exc}") from None
    if not names:
        raise EapCertError(NO_DNS_NAME, "the subjectAltName has no dNSName")
    if len(names) > 1:
        raise EapCertError(SEVERAL_DNS_NAMES, f"{len(names)} SAN dNSNames: which one is meant?")
    try:
        return parse_client_name(names[0]).text
    except InvalidName as exc:
        raise EapCertError(BAD_DNS_NAME, f"SAN dNSName {names[0]!r}: {exc}") from None


def _bind_identity(identity: str | None, client_name: str, require: bool) -> None:
    if identity is None:
        if require:
            raise EapCertError(NO_IDENTITY, "no EAP identity given to compare with the name")
        return
    try:
        same = parse_client_name(identity).text == client_name
    except InvalidName:
        same = False
    if not same:
        raise EapCertError(
            IDENTITY_MISMATCH, f"EAP identity {identity!r} is not the certificate's {client_name}"
        )


def _check_dates(cert: x509.Certificate, now: datetime.datetime) -> None:
    """Stricter than DANE-EE (RFC 7671 section 5.1 ignores the dates): an EAP-TLS server refuses
    a certificate outside its validity, as FreeRADIUS's own OpenSSL check does before the hook;
    the daemon does the same so that the verdict never depends on the front's configuration."""
    if now < cert.not_valid_before_utc:
        raise EapCertError(EXPIRED, f"not valid before {cert.not_valid_before_utc:%Y-%m-%dT%H:%MZ}")
    if now > cert.not_valid_after_utc:
        raise EapCertError(EXPIRED, f"expired at {cert.not_valid_after_utc:%Y-%m-%dT%H:%MZ}")


async def check_certificate(
    authenticator: Authenticator,
    der: bytes,
    identity: str | None,
    *,
    require_identity: bool = True,
) -> Decision:
    """Authenticate one DER end-entity certificate as its SAN dNSName. Never raises for bad
    input; the allow-list, the DNSSEC lookup and the matching are the Authenticator's."""
    try:
        chain = CertificateChain.from_der([der])
        cert = chain.end_entity.certificate
        name = client_name_from_certificate(cert)
        _bind_identity(identity, name, require_identity)
        _check_dates(cert, authenticator.clock())
    except CredentialError as exc:
        return Decision(False, None, MALFORMED_CERTIFICATE, str(exc))
    except EapCertError as exc:
        return Decision(False, None, exc.reason, str(exc))
    result = await authenticator.authenticate(name, chain)
    if isinstance(result, Identity):
        return Decision(True, result.client_name, "-", "", "secure", result)
    return Decision(False, name, result.reason.value, result.detail, result.dns_outcome or "-")
