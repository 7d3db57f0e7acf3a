"""Shared material for the EAP-TLS tests: a device CA, device certificates, signed zones."""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from dance.auth import AllowList
from dance.certs import (
    certificate_pem,
    generate_key,
    issue_certificate,
    new_ca,
    private_key_pem,
    self_signed,
)
from dance.dns import TLSAResolver, TrustAnchors
from dance.eap.server import VerifyDaemon, VerifyDaemonConfig
from dance.testkit import Hierarchy
from dance.tlsa import make_record
from tests.worlds import loopback_resolver, serve_signed

D = "_device.example.test"
OK1 = f"sensor1.{D}"  # published 3 1 1, used by the positive tests
WRONG = f"sensor2.{D}"  # published 3 1 1 of another key
BOGUS = f"sensor3.{D}"  # published, its signatures broken by an injected fault
REMOVED = f"sensor4.{D}"  # published, then removed
EXPIRED = f"sensor5.{D}"  # published 3 1 1 of a certificate that has expired
TWO = f"sensor6.{D}"  # published; the certificate also names sensor7
OUTSIDE = "printer.example.test"  # published, outside the allow-list
LEGACY = "cam.legacy.example.test"  # published in an unsigned zone (allowed)
ALLOW = [f".{D}", LEGACY]

NOW = datetime.datetime.now(datetime.UTC)


@dataclass
class Device:
    name: str
    cert: Path
    key: Path
    certificate: x509.Certificate


@dataclass
class World:
    dir: Path
    zones: Hierarchy
    devices_zone: Any
    dns: tuple[str, int]
    anchors: TrustAnchors
    anchor_text: str
    ca_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes
    devices: dict[str, Device] = field(default_factory=dict)

    def resolver(self) -> TLSAResolver:
        return loopback_resolver(self.dns, self.anchors)

    def resign(self) -> None:
        self.zones.sign(algorithm=13, denial="nsec3")


def _device(
    d: Path, label: str, ca: x509.Certificate, ca_key: Any, names: list[str], **kw: Any
) -> Device:
    key = generate_key("ec-p256")
    cert = issue_certificate(ca, ca_key, key.public_key(), dns_names=names, **kw)
    (d / f"{label}.pem").write_bytes(certificate_pem(cert))
    kp = d / f"{label}.key"
    kp.touch(mode=0o600)
    kp.write_bytes(private_key_pem(key))
    return Device(names[0], d / f"{label}.pem", kp, cert)


def make_world(d: Path) -> Iterator[World]:
    ca_key = generate_key("ec-p256")
    ca = new_ca(ca_key, "Example EAP device CA", now=NOW)
    server_key = generate_key("ec-p256")
    server = issue_certificate(
        ca, ca_key, server_key.public_key(), dns_names=["radius.example.test"], now=NOW,
        client_auth=False, server_auth=True,
    )  # fmt: skip
    (d / "ca.pem").write_bytes(certificate_pem(ca))
    devices = {
        "ok": _device(d, "ok", ca, ca_key, [OK1], now=NOW),
        "wrong": _device(d, "wrong", ca, ca_key, [WRONG], now=NOW),
        "bogus": _device(d, "bogus", ca, ca_key, [BOGUS], now=NOW),
        "removed": _device(d, "removed", ca, ca_key, [REMOVED], now=NOW),
        "expired": _device(
            d, "expired", ca, ca_key, [EXPIRED], now=NOW - datetime.timedelta(days=30), days=1
        ),
        "two": _device(d, "two", ca, ca_key, [TWO, f"sensor7.{D}"], now=NOW),
        "outside": _device(d, "outside", ca, ca_key, [OUTSIDE], now=NOW),
        "legacy": _device(d, "legacy", ca, ca_key, [LEGACY], now=NOW),
    }
    other = generate_key("ec-p256")  # what WRONG's name publishes instead of its cert's key
    zones = Hierarchy("test.", ttl=60)
    example = zones.child("example.test.")
    devices_zone = zones.child(f"{D}.")
    legacy = zones.child("legacy.example.test.", signed=False)
    for label in ("ok", "bogus", "removed", "expired", "two"):
        dev = devices[label]
        devices_zone.add(dev.name.split(".")[0], "TLSA", make_record(dev.certificate).to_text())
    wrong_cert = self_signed(other, WRONG, now=NOW)
    devices_zone.add("sensor2", "TLSA", make_record(wrong_cert).to_text())
    example.add("printer", "TLSA", make_record(devices["outside"].certificate).to_text())
    legacy.add("cam", "TLSA", make_record(devices["legacy"].certificate).to_text())
    with serve_signed(zones, d) as signed:
        yield World(
            dir=d,
            zones=zones,
            devices_zone=devices_zone,
            dns=signed.dns,
            anchors=signed.anchors,
            anchor_text=signed.anchor_text,
            ca_pem=certificate_pem(ca),
            server_cert_pem=certificate_pem(server),
            server_key_pem=private_key_pem(server_key),
            devices=devices,
        )


class DaemonThread:
    """A `VerifyDaemon` on its own event loop in a thread (its counters readable from tests)."""

    def __init__(self, world: World, socket_path: Path, **config: Any) -> None:
        self.config = VerifyDaemonConfig(
            socket_path=str(socket_path), allow=AllowList.parse(ALLOW), **config
        )
        self.daemon = VerifyDaemon(self.config, world.resolver)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> DaemonThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.daemon.start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.daemon.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def flush(self) -> None:
        self.loop.call_soon_threadsafe(self.daemon.flush)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self.loop).result(10)
