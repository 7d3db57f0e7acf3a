"""A DNSSEC-signed test world for message tests: dance.testkit zones served on loopback.

Names (all below _device.example.test unless said):
* sensor7     P-256 key published in full (3 1 0) and as a digest (3 1 1)
* ed1         Ed25519 key, 3 1 0
* rsa1        RSA-2048 key, 3 1 0
* gateway     P-256 key, its self-signed certificate published in full (3 0 0)
* certonly    P-256 key, only 3 1 1: name-only messages cannot be verified, x5c can
* sensor7._device.insecure.example.test   3 1 0 in an unsigned zone
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from dance import certs
from dance.auth import Authenticator
from dance.dns import TLSAResolver, TrustAnchors
from dance.message import MessageVerifier
from dance.message.keys import spki_of
from dance.tlsa import make_record

NOW_POSIX = 1_800_000_000
NOW = datetime.datetime.fromtimestamp(NOW_POSIX, datetime.UTC)
DEV = "_device.example.test"
SENSOR = f"sensor7.{DEV}"
ED = f"ed1.{DEV}"
RSA = f"rsa1.{DEV}"
GATEWAY = f"gateway.{DEV}"
CERTONLY = f"certonly.{DEV}"
INSECURE = "sensor7._device.insecure.example.test"
ABSENT = f"nobody.{DEV}"

T = TypeVar("T")


@dataclass
class Identity:
    name: str
    key: Any
    cert: x509.Certificate


def _ident(name: str, key: Any) -> Identity:
    return Identity(name, key, certs.self_signed(key, name, now=NOW))


SENSOR_ID = _ident(SENSOR, ec.generate_private_key(ec.SECP256R1()))
ED_ID = _ident(ED, ed25519.Ed25519PrivateKey.generate())
RSA_ID = _ident(RSA, rsa.generate_private_key(public_exponent=65537, key_size=2048))
GATEWAY_ID = _ident(GATEWAY, ec.generate_private_key(ec.SECP256R1()))
CERTONLY_ID = _ident(CERTONLY, ec.generate_private_key(ec.SECP256R1()))
INSECURE_ID = _ident(INSECURE, SENSOR_ID.key)


def full_spki(ident: Identity) -> str:
    return "3 1 0 " + spki_of(ident.key).hex()


@dataclass
class World:
    hierarchy: Any
    server: Any
    anchors: TrustAnchors
    verifiers: list[MessageVerifier] = field(default_factory=list)

    def resolver(self) -> TLSAResolver:
        return TLSAResolver(
            self.server.address,
            anchors=self.anchors,
            clock=lambda: NOW_POSIX,
            recursion_desired=False,
            timeout=1.0,
            deadline=3.0,
        )

    def authenticator(self, allow: list[str] | None = None) -> Authenticator:
        return Authenticator(self.resolver(), allow=allow or [".example.test"], clock=lambda: NOW)

    def run(self, fn: Callable[[MessageVerifier], Awaitable[T]], **kw: Any) -> T:
        """Run ``fn(verifier)`` with a fresh resolver (no cache shared between tests)."""

        async def go() -> T:
            auth = self.authenticator(**kw)
            verifier = MessageVerifier(auth)
            self.verifiers.append(verifier)
            async with auth.source:  # type: ignore[attr-defined]
                return await fn(verifier)

        return asyncio.run(go())

    def verify(self, token: str | bytes, **kw: Any) -> Any:
        return self.run(lambda v: v.verify(token), **kw)


def build_world(now_posix: int = NOW_POSIX) -> Iterator[World]:
    from dance import testkit

    h = testkit.Hierarchy("test.")
    h.child("example.test.")
    device = h.child("_device.example.test.")
    insecure = h.child("insecure.example.test.", signed=False)
    device.add("sensor7", "TLSA", full_spki(SENSOR_ID))
    device.add("sensor7", "TLSA", make_record(SENSOR_ID.cert).to_text())
    device.add("ed1", "TLSA", full_spki(ED_ID))
    device.add("rsa1", "TLSA", full_spki(RSA_ID))
    device.add("gateway", "TLSA", make_record(GATEWAY_ID.cert, 3, 0, 0).to_text())
    device.add("certonly", "TLSA", make_record(CERTONLY_ID.cert).to_text())
    insecure.add("sensor7._device", "TLSA", full_spki(INSECURE_ID))
    h.sign(13, "nsec", now=now_posix)
    anchors = TrustAnchors.from_text(h.export_trust_anchor())
    with testkit.ServerThread(h) as server:
        yield World(h, server, anchors)
