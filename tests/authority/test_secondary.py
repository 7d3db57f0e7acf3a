"""Scale-out: a Knot DNS secondary transfers the signed zone from the authority (AXFR with TSIG)
and serves it; dance validates the secondary's answers with the authority's trust anchor. Every
re-signing raises the serial and sends NOTIFY, so the secondary follows restarts and signature
refreshes and stays valid (checked by Unbound) after the first signatures have expired."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import subprocess
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rdatatype

from dance.authority import Authority, Limits, generate_tsig_key
from dance.authority.serial import serial_gt
from dance.dns import Outcome, TLSAResolver, TrustAnchors
from tests.authority.conftest import H2, ZONE, Env, make_zone_dir
from tests.conftest import require_binary
from tests.integration.servers import Server, free_port, start_unbound


def _start_secondary(
    workdir: Path, primary_port: int, key_name: str, secret: bytes, port: int | None = None
) -> Server:
    knotd = require_binary("knotd")
    port = port or free_port()
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
acl:
  - id: notify
    address: 127.0.0.1
    key: {key_name}
    action: notify
template:
  - id: default
    storage: "{workdir}"
    zonefile-sync: -1
zone:
  - domain: {ZONE}
    master: dance
    acl: notify
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


def _secondary_soa(server: Server) -> tuple[int, int]:
    """(serial, expiration of the SOA's RRSIG) served by the secondary."""
    query = dns.message.make_query(ZONE, "SOA", want_dnssec=True)
    answer = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=2)
    serial = expiration = 0
    for rrset in answer.answer:
        for rd in rrset:
            if rrset.rdtype == dns.rdatatype.SOA:
                serial = rd.serial
            elif rrset.rdtype == dns.rdatatype.RRSIG:
                expiration = rd.expiration
    return serial, expiration


def _wait_serial(server: Server, serial: int, timeout: float = 30.0) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    seen = (0, 0)
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            seen = _secondary_soa(server)
            if seen[0] == serial:
                return seen
        time.sleep(0.1)
    raise AssertionError(f"secondary serial {seen[0]} never became {serial}:\n{server.logs()}")


def test_secondary_follows_every_resign_by_notify(tmp_path: Path) -> None:
    """Restart and signature refresh each raise the serial and send NOTIFY: the Knot secondary
    transfers each time (no SOA-refresh wait: the zone's refresh is 3,600 s). With the
    authority's clock moved past the first signatures' expiry, Unbound (validating at that
    date) still finds the secondary's answers secure."""
    require_binary("knotd", "unbound")
    zone_dir, anchor = make_zone_dir(tmp_path, "nsec")
    key = generate_tsig_key("xfr-key")
    primary_port, secondary_port = free_port(), free_port()
    clock = [time.time()]

    def authority() -> Authority:
        return Authority(
            zone_dir,
            tsig_keys=[key],
            limits=Limits(rate=0),
            notify=[("127.0.0.1", secondary_port)],
            notify_key="xfr-key",
            now=lambda: clock[0],
        )

    first = authority().start(port=primary_port)
    secondary = _start_secondary(
        tmp_path / "knot", primary_port, key.name, key.secret, port=secondary_port
    )
    try:
        first_serial, first_expiry = _wait_serial(secondary, first.serial(ZONE))
        first.stop()
        with authority().start(port=primary_port) as second:  # re-signed at start
            assert serial_gt(second.serial(ZONE), first_serial)
            _wait_serial(secondary, second.serial(ZONE))
            assert second.stats.notifies >= 1
            clock[0] = first_expiry + 3600.0  # the first signatures have expired
            before = second.serial(ZONE)
            assert second.refresh_signatures() == 1  # the periodic check would do the same
            assert serial_gt(second.serial(ZONE), before)
            _, expiry = _wait_serial(secondary, second.serial(ZONE))
            assert expiry > clock[0] > first_expiry
            date = time.strftime("%Y%m%d%H%M%S", time.gmtime(clock[0]))
            unbound = start_unbound(
                tmp_path / "unbound",
                anchor,
                {"example.test": secondary.port},
                extra=f'    val-override-date: "{date}"',
            )
            try:
                for name, rcode in (("sensor7._device", 0), ("nobody._device", 3)):
                    query = dns.message.make_query(f"{name}.{ZONE}", "TLSA", want_dnssec=True)
                    answer = dns.query.tcp(query, "127.0.0.1", port=unbound.port, timeout=10)
                    assert answer.rcode() == rcode, (answer, unbound.logs())
                    assert answer.flags & dns.flags.AD, (answer, unbound.logs())
            finally:
                unbound.stop()
    finally:
        first.stop()
        secondary.stop()
