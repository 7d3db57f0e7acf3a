"""Starting and restarting safely: keys only under the zone-directory lock (two authorities
started at once on a new zone never serve a KSK that is not the one on disk), leftover
temporary files removed at start, and the replay cache of TSIG-signed updates."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.message
import dns.name
import dns.query
import dns.rcode
import pytest

from dance.authority import Authority, AuthorityError, Limits, ZoneDir, generate_tsig_key
from tests.authority.conftest import H1, H2, ZONE, Env, make_zone_dir


def _new_zone(tmp_path: Path) -> Path:
    """A zone directory whose zone has no keys yet (they are made on first start)."""
    zone_dir, _ = make_zone_dir(tmp_path)
    for key_file in (zone_dir / "keys").iterdir():
        key_file.unlink()
    return zone_dir


def _served_ksk(port: int) -> str:
    query = dns.message.make_query(ZONE, "DNSKEY")
    answer = dns.query.tcp(query, "127.0.0.1", port=port, timeout=5)
    (ksk,) = [rd.to_text() for rr in answer.answer for rd in rr if rd.flags == 257]
    return ksk


def _ksk_on_disk(zone_dir: Path) -> str:
    policy = ZoneDir(zone_dir).read_policy(dns.name.from_text(ZONE))
    assert policy is not None
    return policy.keys.ksk.dnskey.to_text()


def _race(zone_dir: Path) -> tuple[list[Authority], list[str]]:
    """Two authorities made and started at the same moment on ``zone_dir``."""
    barrier = threading.Barrier(2)
    started: list[Authority] = []
    refused: list[str] = []

    def run() -> None:
        barrier.wait()
        try:
            started.append(Authority(zone_dir, limits=Limits(rate=0)).start())
        except AuthorityError as exc:
            refused.append(exc.reason)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return started, refused


def test_two_authorities_at_once_serve_the_key_on_disk(tmp_path: Path) -> None:
    for round_ in range(10):
        zone_dir = _new_zone(tmp_path / str(round_))
        started, refused = _race(zone_dir)
        try:
            assert len(started) == 1 and refused == ["zone-dir-busy"], (started, refused)
            assert _served_ksk(started[0].port) == _ksk_on_disk(zone_dir)
        finally:
            for authority in started:
                authority.stop()


def _spawn(zone_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dance.cli", "authority", "--zone-dir", str(zone_dir),
         "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ),
    )  # fmt: skip


def test_two_cli_authorities_at_once(tmp_path: Path) -> None:
    """The same with two ``dance authority`` processes: one serves, the other exits 2
    (zone-dir-busy) without touching the keys."""
    for round_ in range(2):
        zone_dir = _new_zone(tmp_path / str(round_))
        processes = [_spawn(zone_dir), _spawn(zone_dir)]
        try:
            ports = []
            for process in processes:
                assert process.stdout is not None
                match = re.search(r"port (\d+)", process.stdout.readline())
                if match:
                    ports.append(int(match.group(1)))
                else:
                    assert process.wait(30) == 2
                    assert process.stderr is not None
                    assert "zone-dir-busy" in process.stderr.read()
            assert len(ports) == 1
            assert _served_ksk(ports[0]) == _ksk_on_disk(zone_dir)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
                    process.communicate(timeout=20)


def test_leftover_temp_files_removed_at_start(tmp_path: Path) -> None:
    zone_dir, _ = make_zone_dir(tmp_path)
    leftovers = [
        zone_dir / ".example.test.zone.k2j4_x9a.tmp",
        zone_dir / "keys" / ".example.test.key.abcd1234.tmp",
    ]
    for path in leftovers:
        path.write_text("half a write")
    kept = [zone_dir / "notes.tmp", zone_dir / ".other.tmp", zone_dir / "example.test.zone"]
    for path in kept[:2]:
        path.write_text("not ours")
    authority = Authority(zone_dir)
    try:
        assert not any(path.exists() for path in leftovers)
        assert all(path.exists() for path in kept)
    finally:
        authority.close()


def test_init_waits_for_no_authority(tmp_path: Path) -> None:
    """``init`` takes the lock too: no keys are created while an authority serves the dir."""
    zone_dir, _ = make_zone_dir(tmp_path)
    authority = Authority(zone_dir)
    try:
        with pytest.raises(AuthorityError) as err:
            ZoneDir(zone_dir).init_zone(dns.name.from_text("other.test."))
        assert err.value.reason == "zone-dir-busy"
        assert not (zone_dir / "keys" / "other.test.key").exists()
    finally:
        authority.close()


# ------------------------------------------------------------------------ replay cache


def test_replayed_publish_after_revoke_is_refused(nsec_env: Env) -> None:
    """The bytes of a publish, sent again after a revoke (within the fudge window), do not
    bring the record back: REFUSED, counted, the zone unchanged."""
    env = nsec_env
    publish = env.update()
    publish.add("victim._device", 300, "TLSA", f"3 1 1 {H2}")
    wire = publish.to_wire()  # signed once: these exact bytes are replayed
    assert _rcode(_raw_tcp(env.port, wire)) == dns.rcode.NOERROR
    assert env.lookup("victim._device.example.test").records
    revoke = env.update()
    revoke.delete("victim._device", "TLSA")
    assert env.send(revoke).rcode() == dns.rcode.NOERROR
    serial = env.authority.serial(ZONE)
    for transport in ("tcp", "udp"):
        replies = _raw_tcp(env.port, wire) if transport == "tcp" else _raw_udp(env.port, wire)
        reply = dns.message.from_wire(replies, keyring=False)
        assert reply.rcode() == dns.rcode.REFUSED
    assert env.authority.serial(ZONE) == serial
    assert env.authority.stats.replays == 2
    assert env.authority.stats.refused.get("replay") == 2
    assert env.lookup("victim._device.example.test").outcome.value == "secure-absent"
    fresh = env.update()  # the same change, signed again, is accepted
    fresh.add("victim._device", 300, "TLSA", f"3 1 1 {H1}")
    assert env.send(fresh).rcode() == dns.rcode.NOERROR


def test_update_signed_before_the_start_is_refused(tmp_path: Path) -> None:
    """A replay across a restart: the cache starts empty, but updates signed before the
    authority started are refused."""
    zone_dir, anchor = make_zone_dir(tmp_path)
    key = generate_tsig_key("dance-update")
    with Authority(zone_dir, tsig_keys=[key], limits=Limits(rate=0)).start() as first:
        env = Env(zone_dir, key, anchor, first)
        publish = env.update()
        publish.add("old._device", 300, "TLSA", f"3 1 1 {H2}")
        wire = publish.to_wire()
        assert _rcode(_raw_tcp(first.port, wire)) == dns.rcode.NOERROR
        revoke = env.update()
        revoke.delete("old._device", "TLSA")
        assert env.send(revoke).rcode() == dns.rcode.NOERROR
    time.sleep(1.1)  # the next start is in a later second than the signature
    with Authority(zone_dir, tsig_keys=[key], limits=Limits(rate=0)).start() as second:
        assert _rcode(_raw_tcp(second.port, wire)) == dns.rcode.REFUSED
        assert second.stats.refused.get("signed-before-floor") == 1
        assert dns.name.from_text("old._device.example.test.") not in second.records(ZONE)


def test_replay_cache_bounds() -> None:
    from dance.authority.replay import ReplayCache

    now = [1000.0]
    cache = ReplayCache(max_entries=2, clock=lambda: now[0])
    assert cache.check("k.", 1000, 300, b"a") is None
    assert cache.check("k.", 1000, 300, b"a") == "replay"
    assert cache.check("k.", 999, 300, b"z") == "signed-before-floor"  # before the start
    assert cache.check("k.", 1001, 300, b"b") is None
    assert cache.check("k.", 1002, 300, b"c") is None  # full: the oldest (1000) is dropped
    assert len(cache) == 2
    assert cache.check("k.", 1000, 300, b"a") == "signed-before-floor"  # still refused
    assert cache.check("other.", 1000, 300, b"a") is None  # another key's floor is its own
    now[0] = 1400.0  # past every entry's fudge window: entries expire
    assert cache.check("k.", 1399, 300, b"d") is None
    assert len(cache) == 1


def _rcode(wire: bytes) -> int:
    return dns.message.from_wire(wire, keyring=False).rcode()


def _raw_tcp(port: int, wire: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(len(wire).to_bytes(2, "big") + wire)
        length = int.from_bytes(sock.recv(2), "big")
        data = b""
        while len(data) < length:
            data += sock.recv(length - len(data))
        return data


def _raw_udp(port: int, wire: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(wire, ("127.0.0.1", port))
        return sock.recv(65535)
