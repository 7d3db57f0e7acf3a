"""What the test worlds of the adapters share (tests/{tls,smtp,lorawan,eap,ldap}): certificate and
key files, a signed zone hierarchy served on loopback by the test kit's DNS server with its trust
anchor, and a validating resolver that asks that server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from dance import certs
from dance.dns import TLSAResolver, TrustAnchors
from dance.testkit import Hierarchy, ServerThread


@dataclass
class Files:
    cert: str
    key: str


def write_files(
    d: Path, label: str, cert: x509.Certificate, key: Any, *chain: x509.Certificate
) -> Files:
    """``<label>.pem`` (``cert``, then ``chain``) and ``<label>.key`` (0600) in ``d``."""
    (d / f"{label}.pem").write_bytes(b"".join(certs.certificate_pem(c) for c in (cert, *chain)))
    certs.write_private_key(d / f"{label}.key", key)
    return Files(str(d / f"{label}.pem"), str(d / f"{label}.key"))


@dataclass
class SignedZones:
    dns: tuple[str, int]  # the loopback DNS server's address
    anchor_text: str
    anchors: TrustAnchors
    anchor_file: str


@contextlib.contextmanager
def serve_signed(zones: Hierarchy, d: Path) -> Iterator[SignedZones]:
    """Sign ``zones`` (ECDSA P-256, NSEC3), write its trust anchor to ``d/anchor.txt`` and serve
    the hierarchy on loopback while the context is open."""
    zones.sign(algorithm=13, denial="nsec3")
    anchor_text = zones.export_trust_anchor()
    (d / "anchor.txt").write_text(anchor_text)
    with ServerThread(zones) as srv:
        yield SignedZones(
            srv.address, anchor_text, TrustAnchors.from_text(anchor_text), str(d / "anchor.txt")
        )


def loopback_resolver(dns: tuple[str, int], anchors: TrustAnchors) -> TLSAResolver:
    """A validating resolver asking the test DNS server at ``dns`` only (no recursion)."""
    return TLSAResolver(dns, anchors=anchors, recursion_desired=False, deadline=3.0)
