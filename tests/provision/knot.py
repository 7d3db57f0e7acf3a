"""A Knot DNS primary that signs online and accepts TSIG-signed updates, for provisioning tests."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dance.tsig import TSIGKey
from tests.conftest import require_binary
from tests.integration.servers import Server, _wait_for, dnskey_anchor, free_port

SOA = "@ SOA ns1 hostmaster 1 3600 600 86400 5"


@dataclass
class Primary:
    server: Server
    zone: str
    key: TSIGKey
    key_file: Path
    anchor_file: Path

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.server.port)

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.server.port}"


def start_primary(
    workdir: Path, zone: str = "example.test", extra: str = "", more_zones: Sequence[str] = ()
) -> Primary:
    """Knot serving ``zone`` (and ``more_zones``, e.g. fleet shard zones), all signed online and
    updatable with the returned TSIG key."""
    knotd = require_binary("knotd")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    key = TSIGKey("dance-update", "hmac-sha256", bytes(range(32)))
    key_file = workdir / "update.key"
    key_file.write_text(
        f'key "{key.name}" {{\n    algorithm hmac-sha256;\n    secret "{key.secret_b64()}";\n}};\n'
    )
    key_file.chmod(0o600)
    (workdir / "db").mkdir(exist_ok=True)
    (workdir / f"{zone}.zone").write_text(
        f"$ORIGIN {zone}.\n$TTL 300\n{SOA}\n@ NS ns1\nns1 A 127.0.0.1\n{extra}\n"
    )
    for other in more_zones:
        (workdir / f"{other}.zone").write_text(
            f"$ORIGIN {other}.\n$TTL 300\n{SOA}\n@ NS ns1\nns1 A 127.0.0.1\n"
        )
    zone_conf = "".join(
        f"""  - domain: {z}.
    file: {workdir}/{z}.zone
    dnssec-signing: on
    dnssec-policy: nsec
    acl: update
"""
        for z in (zone, *more_zones)
    )
    conf = workdir / "knot.conf"
    conf.write_text(
        f"""server:
    rundir: "{workdir}"
    listen: 127.0.0.1@{port}
    background-workers: 1
    tcp-workers: 2
    udp-workers: 2
    tcp-max-clients: 256
log:
  - target: stderr
    any: info
database:
    storage: "{workdir}/db"
key:
  - id: {key.name}.
    algorithm: hmac-sha256
    secret: {base64.b64encode(key.secret).decode()}
acl:
  - id: update
    key: {key.name}.
    action: update
policy:
  - id: nsec
    algorithm: ecdsap256sha256
    rrsig-lifetime: 14d
    rrsig-refresh: 7d
template:
  - id: default
    storage: "{workdir}"
    journal-content: all
    zonefile-sync: -1
    semantic-checks: off
zone:
{zone_conf}"""
    )
    log = workdir / "knot.log"
    with log.open("wb") as out:
        process = subprocess.Popen([knotd, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, port, workdir, log)
    try:
        for z in (zone, *more_zones):
            _wait_for(port, z + ".", "DNSKEY", server)
        anchor_file = workdir / "anchor.txt"
        anchor_file.write_text(dnskey_anchor(port, zone))
    except Exception:
        server.stop()
        raise
    return Primary(server, zone, key, key_file, anchor_file)
