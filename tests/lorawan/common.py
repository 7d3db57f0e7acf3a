"""The LoRaWAN test world: a signed hierarchy on the testkit DNS server, with the join server's
key at ``_443._tcp.js.example.test`` and the network servers' keys at their ClientNames, all
self-signed (no CA anywhere), and helpers to run a join server and a network server."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dance import certs, make_record
from dance.auth import Authenticator
from dance.dns import TLSAResolver, TrustAnchors
from dance.lorawan import JoinResult, JoinServer, join_request
from dance.lorawan.frames import join_request as join_frame
from dance.testkit import Hierarchy
from dance.tls import DanceServer, serve
from tests.pki import key
from tests.worlds import Files, loopback_resolver, serve_signed, write_files

T = TypeVar("T")
NOW = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)

JS = "js.example.test"  # TLSA at _443._tcp.js.example.test
JS_LEGACY = "js.legacy.example.test"  # in an unsigned zone: insecure
JS_NONE = "js2.example.test"  # no TLSA record
JS_PKIX = "js3.example.test"  # only a PKIX-EE (1 1 1) record: unusable without a CA store
NS1 = "ns1.netid-000013.example.test"
NS2 = "ns2.netid-000042.example.test"  # published, not served by this join server
NS_LEGACY = "ns9.legacy.example.test"  # allowed, but its zone is unsigned
NETID1 = "000013"
JOIN_EUI = "70b3d57ed0000001"
DEV_EUI = "0004a30b001c0530"
APP_KEY = bytes(range(16))
UNKNOWN_DEV = "0004a30b001c0599"


@dataclass
class World:
    dir: Path
    zones: Hierarchy
    dns: tuple[str, int]
    anchors: TrustAnchors
    anchor_file: str
    js: Files  # the published join server key
    js_impostor: Files  # the join server's name, another key
    ns1: Files
    ns1_impostor: Files
    ns2: Files
    ns_legacy: Files


def make_world(d: Path) -> Iterator[World]:
    js = certs.self_signed(key(11), JS, now=NOW)
    js_impostor = certs.self_signed(key(12), JS, now=NOW)
    ns1 = certs.self_signed(key(13), NS1, now=NOW)
    ns1_impostor = certs.self_signed(key(14), NS1, now=NOW)
    ns2 = certs.self_signed(key(15), NS2, now=NOW)
    ns_legacy = certs.self_signed(key(16), NS_LEGACY, now=NOW)
    zones = Hierarchy("test.", ttl=60)
    example = zones.child("example.test.")
    example.add("_443._tcp.js", "TLSA", make_record(js).to_text())
    example.add("ns1.netid-000013", "TLSA", make_record(ns1).to_text())
    example.add("ns2.netid-000042", "TLSA", make_record(ns2).to_text())
    example.add("js2", "A", "192.0.2.2")
    example.add("_443._tcp.js3", "TLSA", make_record(js, 1, 1, 1).to_text())
    legacy = zones.child("legacy.example.test.", signed=False)
    legacy.add("_443._tcp.js", "TLSA", make_record(js).to_text())
    legacy.add("ns9", "TLSA", make_record(ns_legacy).to_text())
    with serve_signed(zones, d) as signed:
        yield World(
            dir=d,
            zones=zones,
            dns=signed.dns,
            anchors=signed.anchors,
            anchor_file=signed.anchor_file,
            js=write_files(d, "js", js, key(11)),
            js_impostor=write_files(d, "js_impostor", js_impostor, key(12)),
            ns1=write_files(d, "ns1", ns1, key(13)),
            ns1_impostor=write_files(d, "ns1_impostor", ns1_impostor, key(14)),
            ns2=write_files(d, "ns2", ns2, key(15)),
            ns_legacy=write_files(d, "ns_legacy", ns_legacy, key(16)),
        )


def resolver(world: World) -> TLSAResolver:
    return loopback_resolver(world.dns, world.anchors)


def join_req(
    *,
    dev_nonce: int = 1,
    transaction_id: int = 4711,
    sender: str = NETID1,
    dev_eui: str = DEV_EUI,
    app_key: bytes = APP_KEY,
) -> dict[str, Any]:
    frame = join_frame(
        app_key, bytes.fromhex(JOIN_EUI), bytes.fromhex(dev_eui), dev_nonce.to_bytes(2, "little")
    )
    return {
        "ProtocolVersion": "1.0",
        "SenderID": sender,
        "ReceiverID": JOIN_EUI,
        "TransactionID": transaction_id,
        "MessageType": "JoinReq",
        "MACVersion": "1.0.3",
        "PHYPayload": frame.hex().upper(),
        "DevEUI": dev_eui,
        "DevAddr": "26011F2A",
        "DLSettings": "00",
        "RxDelay": 1,
    }


@dataclass
class Running:
    js: JoinServer
    server: DanceServer
    port: int


def make_join_server() -> JoinServer:
    return JoinServer(
        join_eui=JOIN_EUI,
        devices={DEV_EUI: APP_KEY},
        network_servers={NS1: NETID1, NS_LEGACY: "000099"},
    )


def with_join_server(
    world: World,
    scenario: Callable[[Running], Awaitable[T]],
    *,
    js: JoinServer | None = None,
    files: Files | None = None,
) -> T:
    """Run an in-process join server (its own resolver and Authenticator) around ``scenario``."""

    async def main() -> T:
        app = js or make_join_server()
        async with resolver(world) as res:
            auth = Authenticator(res, allow=app.allow_list())
            tls = files or world.js
            server = await serve(
                app.handle, "127.0.0.1", 0, cert=tls.cert, key=tls.key, authenticator=auth
            )
            async with server:
                assert server.server is not None
                port = server.server.sockets[0].getsockname()[1]
                return await scenario(Running(app, server, port))

    return asyncio.run(main())


async def ns_join(
    world: World,
    port: int,
    message: dict[str, Any],
    *,
    files: Files | None = None,
    name: str = NS1,
    server_name: str = JS,
) -> JoinResult:
    """The network server's JoinReq (a fresh resolver: no answer cached from another test)."""
    tls = files or world.ns1
    async with resolver(world) as res:
        return await join_request(
            message,
            host="127.0.0.1",
            port=port,
            service_port=443,
            server_name=server_name,
            client_name=name,
            cert=tls.cert,
            key=tls.key,
            resolver=res,
            timeout=10.0,
        )
