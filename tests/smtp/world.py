"""A signed zone with two sending MTAs (`_smtp-client.<host>` names) on the testkit DNS server,
a server certificate for the proxy, and client credentials."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dance import certs, make_record
from dance.dns import TLSAResolver, TrustAnchors
from dance.testkit import Hierarchy
from dance.tls import client_context
from tests.pki import key
from tests.worlds import Files, loopback_resolver, serve_signed, write_files

NOW = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
MTA1 = "_smtp-client.mta1.example.test"  # published, allowed
MTA2 = "_smtp-client.mta2.example.test"  # published, allowed; removed by a test
OUTSIDER = "_smtp-client.mta.example.org"  # not allowed (no DNS needed)
ALLOW = [MTA1, MTA2]


@dataclass
class World:
    dir: Path
    zones: Hierarchy
    example: Any
    dns: tuple[str, int]
    anchors: TrustAnchors
    anchor_file: str
    ca: str
    server: Files
    mta1: Files
    mta2: Files
    impostor: Files  # MTA1's name, another key

    def resolver(self) -> TLSAResolver:
        return loopback_resolver(self.dns, self.anchors)

    def context(self, files: Files | None, name: str | None) -> Any:
        return client_context(
            name=name,
            cert=files.cert if files else None,
            key=files.key if files else None,
            cafile=self.ca,
        )


def make_world(d: Path) -> Iterator[World]:
    ca_key = key(0)
    ca = certs.new_ca(ca_key, "SMTP proxy test CA", now=NOW)
    server_key = key(1)
    server_cert = certs.issue_certificate(
        ca, ca_key, server_key.public_key(), dns_names=["localhost"], now=NOW, client_auth=False
    )
    (d / "ca.pem").write_bytes(certs.certificate_pem(ca))
    mta1 = certs.self_signed(key(2), MTA1, now=NOW)
    mta2 = certs.self_signed(key(3), MTA2, now=NOW)
    impostor = certs.self_signed(key(5), MTA1, now=NOW)
    zones = Hierarchy("test.", ttl=60)
    example = zones.child("example.test.")
    example.add("_smtp-client.mta1", "TLSA", make_record(mta1).to_text())
    example.add("_smtp-client.mta2", "TLSA", make_record(mta2).to_text())
    with serve_signed(zones, d) as signed:
        yield World(
            dir=d,
            zones=zones,
            example=example,
            dns=signed.dns,
            anchors=signed.anchors,
            anchor_file=signed.anchor_file,
            ca=str(d / "ca.pem"),
            server=write_files(d, "server", server_cert, server_key),
            mta1=write_files(d, "mta1", mta1, key(2)),
            mta2=write_files(d, "mta2", mta2, key(3)),
            impostor=write_files(d, "impostor", impostor, key(5)),
        )
