"""Shared material for the HTTP tests: identities, header encodings, a fake TLSA source."""

from __future__ import annotations

import base64
import datetime
import urllib.parse
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dance import certs as gen
from dance import make_record
from dance.auth import Authenticator
from dance.dns import LookupResult, Outcome
from dance.http.core import HttpAuth
from dance.http.headers import CertificateHeaderParser
from tests.pki import key

NOW = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
DEVICE = "sensor7._device.example.test"
ISSUED = "sensor9._device.example.test"
CHAINED = "sensor11._device.example.test"  # DANE-TA 2 0 1: the CA must be sent too
USER = "_user.example.test"
ALLOW = ["._device.example.test", USER]


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> str:
    return gen.certificate_pem(cert).decode()


def nginx_header(*certs: x509.Certificate) -> str:
    """What nginx's $ssl_client_escaped_cert looks like (URL-escaped PEM)."""
    return urllib.parse.quote("".join(pem(c) for c in certs), safe="")


def rfc9440(cert: x509.Certificate) -> str:
    return ":" + base64.b64encode(der(cert)).decode() + ":"


def b64(cert: x509.Certificate) -> str:
    return base64.b64encode(der(cert)).decode()


@dataclass
class Identities:
    device: x509.Certificate
    impostor: x509.Certificate  # same name, other key
    ca: x509.Certificate
    issued: x509.Certificate  # issued by ca for ISSUED
    two_names: x509.Certificate  # SANs DEVICE and another name, key of device
    user_ca: x509.Certificate
    alice: x509.Certificate  # _user.example.test, uid alice
    outsider: x509.Certificate  # a name outside the allow-list, with a record
    chained: x509.Certificate  # issued by ca for CHAINED


def make_identities() -> Identities:
    device = gen.self_signed(key(2), DEVICE, now=NOW)
    impostor = gen.self_signed(key(5), DEVICE, now=NOW)
    ca = gen.new_ca(key(0), "Example Test Device CA", now=NOW)
    issued = gen.issue_certificate(ca, key(0), key(3).public_key(), dns_names=[ISSUED], now=NOW)
    two_names = gen.issue_certificate(
        ca, key(0), key(2).public_key(), dns_names=[DEVICE, "other._device.example.test"], now=NOW
    )
    user_ca = gen.new_ca(key(1), "Example Test User CA", now=NOW)
    alice = gen.issue_certificate(
        user_ca, key(1), key(4).public_key(), dns_names=["example.test"], uid="alice", now=NOW
    )
    outsider = gen.self_signed(key(6), "host.example.org", now=NOW)
    chained = gen.issue_certificate(ca, key(0), key(7).public_key(), dns_names=[CHAINED], now=NOW)
    return Identities(device, impostor, ca, issued, two_names, user_ca, alice, outsider, chained)


def records(ids: Identities) -> dict[str, list[bytes]]:
    return {
        DEVICE: [make_record(ids.device).to_wire()],
        ISSUED: [make_record(ids.ca, 2, 0, 0).to_wire()],
        CHAINED: [make_record(ids.ca, 2, 0, 1).to_wire()],
        "other._device.example.test": [make_record(ids.ca, 2, 0, 0).to_wire()],
        USER: [make_record(ids.user_ca, 2, 0, 0).to_wire()],
        "host.example.org": [make_record(ids.outsider).to_wire()],
    }


@dataclass
class FakeSource:
    """A TLSA source answering from a dict (every answer secure), counting queries."""

    zone: dict[str, list[bytes]]
    ttl: float = 300.0
    queries: list[str] = field(default_factory=list)

    async def lookup_tlsa(self, name: str) -> LookupResult:
        self.queries.append(name)
        found = self.zone.get(name)
        if found:
            return LookupResult(Outcome.SECURE, tuple(found), self.ttl, name=name)
        return LookupResult(Outcome.SECURE_ABSENT, (), self.ttl, reason="nxdomain", name=name)

    def cached(self, name: str) -> LookupResult | None:
        return None


def make_http_auth(
    ids: Identities, *, allow_chain: bool = False, ttl: float = 300.0
) -> tuple[HttpAuth, FakeSource]:
    source = FakeSource(records(ids), ttl)
    auth = Authenticator(source, allow=ALLOW)
    return HttpAuth(auth, parser=CertificateHeaderParser(allow_chain=allow_chain)), source
