"""A Knot DNS primary that signs online and accepts TSIG-signed updates, for provisioning tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dance.tsig import TSIGKey
from tests.integration.servers import KnotZone, Server, dnskey_anchor, start_knot

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
    workdir.mkdir(parents=True, exist_ok=True)
    key = TSIGKey("dance-update", "hmac-sha256", bytes(range(32)))
    key_file = workdir / "update.key"
    key_file.write_text(
        f'key "{key.name}" {{\n    algorithm hmac-sha256;\n    secret "{key.secret_b64()}";\n}};\n'
    )
    key_file.chmod(0o600)
    base = f"{SOA}\n@ NS ns1\nns1 A 127.0.0.1\n"
    zones = [KnotZone(zone, base + extra)] + [KnotZone(other, base) for other in more_zones]
    server = start_knot(workdir, zones, update_key=key, workers=2)
    try:
        anchor_file = workdir / "anchor.txt"
        anchor_file.write_text(dnskey_anchor(server.port, zone))
    except Exception:
        server.stop()
        raise
    return Primary(server, zone, key, key_file, anchor_file)
