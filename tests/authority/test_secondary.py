"""Scale-out: a Knot DNS secondary transfers the signed zone from the authority (AXFR with TSIG)
and serves it; dance validates the secondary's answers with the authority's trust anchor."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import subprocess
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype

from dance.authority import Authority, Limits, generate_tsig_key
from dance.dns import Outcome, TLSAResolver, TrustAnchors
from tests.authority.conftest import H2, ZONE, Env, make_zone_dir
from tests.conftest import require_binary
from tests.integration.servers import Server, free_port


def _start_secondary(workdir: Path, primary_port: int, key_name: str, secret: bytes) -> Server:
    knotd = require_binary("knotd")
    port = free_port()
    (workdir / "db").mkdir(parents=True, exist_ok=True)
    conf = workdir / "knot.conf"
    conf.write_text(
        f"""server:
    rundir: "{workdir}"
    listen: 127.0.0.1@{port}
log:
  - target: stderr
    any: info
database:
    storage: "{workdir}/db"
key:
  - id: {key_name}
    algorithm: hmac-sha256
    secret: {base64.b64encode(secret).decode()}
remote:
  - id: dance
    address: 127.0.0.1@{primary_port}
    key: {key_name}
template:
  - id: default
    storage: "{workdir}"
    zonefile-sync: -1
zone:
  - domain: {ZONE}
    master: dance
"""
    )
    log = workdir / "knot.log"
    with log.open("wb") as out:
        process = subprocess.Popen([knotd, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    return Server(process, port, workdir, log)


def _wait_signed(server: Server, name: str, timeout: float = 20.0) -> bool:
    query = dns.message.make_query(name, "TLSA", want_dnssec=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            answer = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=0.5)
            if any(r.rdtype == dns.rdatatype.RRSIG for r in answer.answer):
                return True
        time.sleep(0.1)
    return False


def test_knot_secondary_serves_the_signed_zone(tmp_path: Path) -> None:
    require_binary("knotd", "knotc")
    zone_dir, anchor = make_zone_dir(tmp_path, "nsec3")
    key = generate_tsig_key("xfr-key")
    with Authority(zone_dir, tsig_keys=[key], limits=Limits(rate=0)).start() as authority:
        env = Env(zone_dir, key, anchor, authority)
        update = env.update()
        update.add("fleet1._device", 300, "TLSA", f"3 1 1 {H2}")
        assert env.send(update).rcode() == 0
        secondary = _start_secondary(tmp_path / "knot", authority.port, key.name, key.secret)
        try:
            assert _wait_signed(secondary, f"fleet1._device.{ZONE}"), secondary.logs()
            resolver = TLSAResolver(
                ("127.0.0.1", secondary.port),
                anchors=TrustAnchors.from_text(anchor),
                recursion_desired=False,
            )

            async def lookups() -> tuple[Outcome, Outcome]:
                async with resolver:
                    found = await resolver.lookup_tlsa(f"fleet1._device.{ZONE}")
                    missing = await resolver.lookup_tlsa(f"nobody._device.{ZONE}")
                    return found.outcome, missing.outcome

            assert asyncio.run(lookups()) == (Outcome.SECURE, Outcome.SECURE_ABSENT)
        finally:
            secondary.stop()
    assert authority.stats.transfers >= 1


def test_secondary_with_wrong_key_gets_nothing(tmp_path: Path) -> None:
    require_binary("knotd")
    zone_dir, _ = make_zone_dir(tmp_path, "nsec")
    key = generate_tsig_key("xfr-key")
    with Authority(zone_dir, tsig_keys=[key], limits=Limits(rate=0)).start() as authority:
        secondary = _start_secondary(tmp_path / "knot", authority.port, key.name, b"w" * 32)
        try:
            assert not _wait_signed(secondary, f"sensor7._device.{ZONE}", timeout=3)
        finally:
            secondary.stop()
        assert authority.stats.transfers == 0
