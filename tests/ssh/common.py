"""Shared material for the SSH tests: SSH keys and a signed zone served on loopback."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from dance.dns import TLSAResolver, TrustAnchors
from dance.ssh import SSHKey, ssh_key_to_spki, ssh_tlsa_record
from dance.testkit import Hierarchy, ServerThread

ALICE = "alice._user.example.test"  # 3 1 1 of ALICE's Ed25519 key
CAROL = "carol._user.example.test"  # 3 1 0 of CAROL's ECDSA P-256 key
BOB = "bob._user.example.test"  # 3 1 1 of BOB's key; never authorized for the test account
LEGACY = "dave.legacy.example.test"  # insecure (unsigned) zone, a matching 3 1 1 record
ABSENT = "erin._user.example.test"  # no record


def ssh_pub(private: Any) -> tuple[str, str]:
    """(type, base64 blob) of a cryptography private key's public half."""
    line = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    keytype, blob = line.decode().split()[:2]
    return keytype, blob


def to_key(private: Any) -> SSHKey:
    return ssh_key_to_spki(*ssh_pub(private))


def write_private(path: Path, private: Any) -> str:
    data = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600)
    path.write_bytes(data)
    return str(path)


def blob_bytes(private: Any) -> bytes:
    return base64.b64decode(ssh_pub(private)[1])


@dataclass
class World:
    zones: Hierarchy
    users: Any
    legacy: Any
    dns: tuple[str, int]
    anchors: TrustAnchors
    anchor_text: str
    keys: dict[str, Any]

    def resolver(self) -> TLSAResolver:
        return TLSAResolver(self.dns, anchors=self.anchors, recursion_desired=False, deadline=3.0)

    def resign(self) -> None:
        self.zones.sign(algorithm=13, denial="nsec3")


def make_keys() -> dict[str, Any]:
    return {
        "alice": ed25519.Ed25519PrivateKey.generate(),
        "carol": ec.generate_private_key(ec.SECP256R1()),
        "bob": ed25519.Ed25519PrivateKey.generate(),
        "dave": ed25519.Ed25519PrivateKey.generate(),
        "mallory": ed25519.Ed25519PrivateKey.generate(),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


def make_world() -> Iterator[World]:
    keys = make_keys()
    zones = Hierarchy("test.", ttl=60)
    zones.child("example.test.")
    users = zones.child("_user.example.test.")
    legacy = zones.child("legacy.example.test.", signed=False)
    users.add("alice", "TLSA", ssh_tlsa_record(to_key(keys["alice"])).to_text())
    users.add("carol", "TLSA", ssh_tlsa_record(to_key(keys["carol"]), 0).to_text())
    users.add("bob", "TLSA", ssh_tlsa_record(to_key(keys["bob"])).to_text())
    users.add("rsa", "TLSA", ssh_tlsa_record(to_key(keys["rsa"]), 2).to_text())
    legacy.add("dave", "TLSA", ssh_tlsa_record(to_key(keys["dave"])).to_text())
    zones.sign(algorithm=13, denial="nsec3")
    anchor_text = zones.export_trust_anchor()
    with ServerThread(zones) as srv:
        yield World(
            zones=zones,
            users=users,
            legacy=legacy,
            dns=srv.address,
            anchors=TrustAnchors.from_text(anchor_text),
            anchor_text=anchor_text,
            keys=keys,
        )
