"""Shared material for the TLS tests: a PKI, a signed zone on the testkit DNS server, and helpers
to run a DANCE TLS server and clients inside one event loop."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dance import certs, make_record
from dance.auth import Authenticator
from dance.dns import TLSAResolver, TrustAnchors
from dance.identity import Identity
from dance.testkit import Hierarchy
from dance.tls import DanceServer, client_context, serve
from tests.pki import key
from tests.worlds import Files, loopback_resolver, serve_signed, write_files

NOW = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
DEVICE = "sensor7._device.example.test"
OTHER = "sensor9._device.example.test"  # has a record, for another key
UNPUBLISHED = "sensor8._device.example.test"
OUTSIDE = "host.example.org"
ALLOW = ["._device.example.test"]

T = TypeVar("T")


@dataclass
class World:
    """Everything a TLS test needs; the DNS server runs for the whole module."""

    dir: Path
    zones: Hierarchy
    devices: Any
    dns: tuple[str, int]
    anchors: TrustAnchors
    anchor_file: str
    ca: str  # the server's CA (clients verify the server with it)
    server: Files
    device: Files  # the published key for DEVICE
    impostor: Files  # DEVICE's name, another key
    other: Files  # OTHER's published key
    san_device: Files  # CA-less self-signed for DEVICE (SAN = DEVICE), same key as device
    two_sans: Files  # two SAN dNSNames, key of device
    records: dict[str, str] = field(default_factory=dict)

    def resign(self) -> None:
        self.zones.sign(algorithm=13, denial="nsec3")


def make_world(d: Path) -> Iterator[World]:
    ca_key = key(0)
    ca = certs.new_ca(ca_key, "TLS test server CA", now=NOW)
    server_key = key(1)
    server_cert = certs.issue_certificate(
        ca, ca_key, server_key.public_key(), dns_names=["localhost"], now=NOW, client_auth=False
    )
    (d / "ca.pem").write_bytes(certs.certificate_pem(ca))
    device_cert = certs.self_signed(key(2), DEVICE, now=NOW)
    impostor_cert = certs.self_signed(key(5), DEVICE, now=NOW)
    other_cert = certs.self_signed(key(3), OTHER, now=NOW)
    dev_ca = certs.new_ca(key(6), "Device CA", now=NOW)
    two = certs.issue_certificate(
        dev_ca, key(6), key(2).public_key(), dns_names=[DEVICE, OTHER], now=NOW
    )
    zones = Hierarchy("test.", ttl=60)
    zones.child("example.test.")
    devices = zones.child("_device.example.test.")
    devices.add("sensor7", "TLSA", make_record(device_cert).to_text())
    devices.add("sensor9", "TLSA", make_record(other_cert).to_text())
    with serve_signed(zones, d) as signed:
        yield World(
            dir=d,
            zones=zones,
            devices=devices,
            dns=signed.dns,
            anchors=signed.anchors,
            anchor_file=signed.anchor_file,
            ca=str(d / "ca.pem"),
            server=write_files(d, "server", server_cert, server_key),
            device=write_files(d, "device", device_cert, key(2)),
            impostor=write_files(d, "impostor", impostor_cert, key(5)),
            other=write_files(d, "other", other_cert, key(3)),
            san_device=write_files(d, "san_device", device_cert, key(2)),
            two_sans=write_files(d, "two_sans", two, key(2)),
            records={DEVICE: make_record(device_cert).to_text()},
        )


def resolver(world: World) -> TLSAResolver:
    return loopback_resolver(world.dns, world.anchors)


@dataclass
class Served:
    server: DanceServer
    auth: Authenticator
    res: TLSAResolver
    seen: list[Identity]
    received: list[bytes]


async def echo_identity(
    seen: list[Identity], received: list[bytes]
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter, Identity], Awaitable[None]]:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, identity: Identity
    ) -> None:
        seen.append(identity)
        writer.write(f"hello {identity.identity}\n".encode())
        await writer.drain()
        data = await reader.read(100)
        received.append(data)

    return handler


def run_with_server(
    world: World,
    scenario: Callable[[Served], Awaitable[T]],
    *,
    allow: list[str] | None = None,
    **options: Any,
) -> T:
    """Start a DANCE server (its own resolver and Authenticator), run ``scenario``, stop."""

    async def main() -> T:
        async with resolver(world) as res:
            auth = Authenticator(res, allow=allow if allow is not None else ALLOW)
            seen: list[Identity] = []
            received: list[bytes] = []
            handler = await echo_identity(seen, received)
            server = await serve(
                handler,
                "127.0.0.1",
                0,
                cert=world.server.cert,
                key=world.server.key,
                authenticator=auth,
                **options,
            )
            async with server:
                return await scenario(Served(server, auth, res, seen, received))

    return asyncio.run(main())


def ctx_for(world: World, files: Files | None, name: str | None, **kw: Any) -> Any:
    return client_context(
        name=name,
        cert=files.cert if files else None,
        key=files.key if files else None,
        cafile=world.ca,
        **kw,
    )
