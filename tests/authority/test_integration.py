"""Cross-checks with real software from Debian: Unbound validates what the authority serves,
and Knot's knsupdate/kdig send TSIG-signed updates and transfers to it."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from dance.authority import Authority, Limits, generate_tsig_key, write_tsig_key
from dance.dns import Outcome, TLSAResolver, TrustAnchors
from tests.authority.conftest import H2, ZONE, Env, make_zone_dir
from tests.conftest import require_binary
from tests.integration.servers import Server, start_unbound


@pytest.fixture(params=["nsec", "nsec3"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Env, Server]]:
    require_binary("unbound")
    zone_dir, anchor = make_zone_dir(tmp_path, request.param)
    key = generate_tsig_key("dance-update")
    authority = Authority(zone_dir, tsig_keys=[key], limits=Limits(rate=0)).start()
    try:
        unbound = start_unbound(tmp_path / "unbound", anchor, {"example.test": authority.port})
        try:
            yield Env(zone_dir, key, anchor, authority), unbound
        finally:
            unbound.stop()
    finally:
        authority.stop()


def _ask(unbound: Server, name: str, rdtype: str = "TLSA") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, want_dnssec=True)
    return dns.query.tcp(query, "127.0.0.1", port=unbound.port, timeout=10)


def _secure(response: dns.message.Message) -> bool:
    return bool(response.flags & dns.flags.AD)


def _knsupdate(env: Env, tmp_path: Path, commands: str) -> subprocess.CompletedProcess[str]:
    knsupdate = require_binary("knsupdate")
    key_file = tmp_path / "knot.key"
    if not key_file.exists():
        write_tsig_key(key_file, env.key, style="line")
    script = f"server 127.0.0.1 {env.port}\nzone {ZONE}\n{commands}\nsend\n"
    return subprocess.run(
        [knsupdate, "-k", str(key_file)], input=script, capture_output=True, text=True, timeout=30
    )


def test_unbound_validates_answers_and_denials(world: tuple[Env, Server]) -> None:
    env, unbound = world
    found = _ask(unbound, "sensor7._device.example.test")
    assert found.rcode() == dns.rcode.NOERROR and _secure(found), (found, unbound.logs())
    assert found.answer
    missing = _ask(unbound, "nobody._device.example.test")
    assert missing.rcode() == dns.rcode.NXDOMAIN and _secure(missing), (missing, unbound.logs())
    nodata = _ask(unbound, "www.example.test")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and _secure(nodata)

    resolver = TLSAResolver(("127.0.0.1", unbound.port), anchors=TrustAnchors.from_text(env.anchor))

    async def lookup() -> Outcome:
        async with resolver:
            return (await resolver.lookup_tlsa("sensor7._device.example.test")).outcome

    assert asyncio.run(lookup()) is Outcome.SECURE


def test_knsupdate_changes_seen_secure_by_unbound(
    world: tuple[Env, Server], tmp_path: Path
) -> None:
    env, unbound = world
    added = _knsupdate(
        env,
        tmp_path,
        f"update add fresh._device.{ZONE} 300 TLSA 3 1 1 {H2}\n"
        f"update add gone._device.{ZONE} 300 TLSA 3 1 1 {H2}",
    )
    assert added.returncode == 0, added.stderr
    fresh = _ask(unbound, "fresh._device.example.test")
    assert fresh.answer and _secure(fresh), (fresh, unbound.logs())
    deleted = _knsupdate(env, tmp_path, f"update delete gone._device.{ZONE} TLSA")
    assert deleted.returncode == 0, deleted.stderr
    gone = _ask(unbound, "gone._device.example.test")  # never asked before: not cached
    assert gone.rcode() == dns.rcode.NXDOMAIN and _secure(gone), (gone, unbound.logs())


def test_knsupdate_with_wrong_key_refused(world: tuple[Env, Server], tmp_path: Path) -> None:
    env, _ = world
    knsupdate = require_binary("knsupdate")
    serial = env.authority.serial(ZONE)
    stranger = generate_tsig_key(env.key.name)  # same name, other secret
    key_file = tmp_path / "wrong.key"
    write_tsig_key(key_file, stranger, style="line")
    script = (
        f"server 127.0.0.1 {env.port}\nzone {ZONE}\nupdate add x._device.{ZONE} 300 TXT x\nsend\n"
    )
    result = subprocess.run(
        [knsupdate, "-k", str(key_file)], input=script, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "BADSIG" in output, output  # NOTAUTH with TSIG error BADSIG
    assert env.authority.serial(ZONE) == serial


def test_kdig_axfr_with_tsig(world: tuple[Env, Server], tmp_path: Path) -> None:
    env, _ = world
    kdig = require_binary("kdig")
    key_file = tmp_path / "kdig.key"
    write_tsig_key(key_file, env.key, style="line")
    result = subprocess.run(
        [kdig, "@127.0.0.1", "-p", str(env.port), "-k", str(key_file), "AXFR", ZONE],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "sensor7._device.example.test." in result.stdout
    assert "RRSIG" in result.stdout and "DNSKEY" in result.stdout
    unsigned = subprocess.run(
        [kdig, "@127.0.0.1", "-p", str(env.port), "AXFR", ZONE],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "sensor7._device" not in unsigned.stdout
