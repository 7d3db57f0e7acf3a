"""A signed zone with two WebRTC peers' keys (and an impostor), served on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from dance import make_record
from dance.dns import TLSAResolver, TrustAnchors
from dance.names import hashed_owner_name
from dance.testkit import Hierarchy, ServerThread
from tests.pki import key

ALICE = "alice._user.example.test"  # a user's media key (SIP AOR sip:alice@example.test)
# the same user without the local part in DNS: <sha-256/28 hex>._user.example.test
ALICE_HASHED = hashed_owner_name("alice@example.test", under="_user").text
BOB = "bob-phone._device.example.test"  # a device's media key
ALLOW = ["._user.example.test", "._device.example.test"]


@dataclass
class World:
    zones: Hierarchy
    dns: tuple[str, int]
    anchors: TrustAnchors
    alice: ec.EllipticCurvePrivateKey
    bob: ec.EllipticCurvePrivateKey
    mallory: ec.EllipticCurvePrivateKey  # published nowhere


def make_world(d: Path) -> Iterator[World]:
    alice, bob, mallory = key(2), key(3), key(5)
    zones = Hierarchy("test.", ttl=60)
    example = zones.child("example.test.")
    example.add("alice._user", "TLSA", make_record(alice.public_key()).to_text())
    hashed = ALICE_HASHED.removesuffix(".example.test")
    example.add(hashed, "TLSA", make_record(alice.public_key()).to_text())
    example.add("bob-phone._device", "TLSA", make_record(bob.public_key()).to_text())
    zones.sign(algorithm=13, denial="nsec3")
    anchors = TrustAnchors.from_text(zones.export_trust_anchor())
    with ServerThread(zones) as srv:
        yield World(zones, srv.address, anchors, alice, bob, mallory)


def resolver(world: World) -> TLSAResolver:
    return TLSAResolver(world.dns, anchors=world.anchors, recursion_desired=False, deadline=3.0)
