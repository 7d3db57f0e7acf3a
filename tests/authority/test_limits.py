"""Every connection and every write is bounded: a deadline over reads and writes, a lifetime,
eviction of connections without progress at the cap, refusals counted by reason; zone transfers
streamed from a cache with TSIG on every message."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.update
import dns.xfr
import dns.zone
import pytest

from dance.authority import Authority, Limits, generate_tsig_key
from tests.authority.conftest import ZONE, make_zone_dir


def _big_zone(tmp_path: Path) -> Path:
    """The test zone plus ``big.example.test``: 40 TXT records, an 8 KB answer."""
    zone_dir, _ = make_zone_dir(tmp_path)
    with (zone_dir / "example.test.zone").open("a") as out:
        for i in range(40):
            out.write(f'big.example.test. 300 IN TXT "{i:03d}{"x" * 190}"\n')
    return zone_dir


@pytest.fixture
def big_zone(tmp_path: Path) -> Path:
    return _big_zone(tmp_path)


def _frame(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Does the server close ``sock`` within ``seconds``? (Reads and discards data.)"""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if sock.recv(1 << 20) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionError:
            return True
    return False


def _answered(port: int) -> bool:
    query = dns.message.make_query("www.example.test", "A")
    response = dns.query.tcp(query, "127.0.0.1", port=port, timeout=5)
    return response.rcode() == dns.rcode.NOERROR and bool(response.answer)


def _wait(predicate: object, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_client_that_never_reads_is_closed_by_the_write_deadline(big_zone: Path) -> None:
    """500 pipelined queries for an 8 KB answer (4 MB, more than the socket buffers hold),
    never read: the reply cannot be written within the deadline and the connection is
    aborted (before, ``drain()`` waited forever)."""
    limits = Limits(rate=0, tcp_idle_timeout=0.5)
    with Authority(big_zone, limits=limits).start() as authority:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", authority.port))
        query = _frame(dns.message.make_query("big.example.test", "TXT").to_wire())
        sock.sendall(query * 500)
        assert _wait(lambda: authority.stats.refused.get("tcp-deadline", 0) >= 1, 10)
        assert _wait(lambda: authority.connections == 0)
        assert _closed_within(sock, 5)
        sock.close()
        assert _answered(authority.port)


def test_slow_sender_hits_the_read_deadline(big_zone: Path) -> None:
    """One byte at a time: the deadline covers the whole message, not each byte."""
    with Authority(big_zone, limits=Limits(rate=0, tcp_idle_timeout=0.6)).start() as authority:
        wire = _frame(dns.message.make_query("www.example.test", "A").to_wire())
        with socket.create_connection(("127.0.0.1", authority.port), timeout=3) as sock:
            started = time.monotonic()
            closed = False
            for byte in wire:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.1)
            closed = closed or _closed_within(sock, 3)
            assert closed and time.monotonic() - started < 4
        assert authority.stats.refused.get("tcp-deadline", 0) >= 1


def test_connection_lifetime(big_zone: Path) -> None:
    """A busy connection still ends after ``tcp_lifetime``."""
    limits = Limits(rate=0, tcp_lifetime=1.0, tcp_idle_timeout=5.0)
    with Authority(big_zone, limits=limits).start() as authority:
        query = _frame(dns.message.make_query("www.example.test", "A").to_wire())
        with socket.create_connection(("127.0.0.1", authority.port), timeout=3) as sock:
            started = time.monotonic()
            closed = False
            while time.monotonic() - started < 5 and not closed:
                try:
                    sock.sendall(query)
                    closed = sock.recv(4096) == b""
                except OSError:
                    closed = True
                time.sleep(0.1)
            assert closed and time.monotonic() - started < 4


def _connect_from(address: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _ask_from(address: str, port: int) -> bool:
    with _connect_from(address, port) as sock:
        sock.sendall(_frame(dns.message.make_query("www.example.test", "A").to_wire()))
        sock.settimeout(3)
        try:
            return len(sock.recv(4096)) > 2
        except OSError:
            return False


def test_at_the_cap_a_small_client_displaces_a_big_one(big_zone: Path) -> None:
    """Four connections from one address fill the server: a fifth from that address is
    refused; one from another address displaces one of the four once it has been without
    progress for a tenth of ``tcp_evict_after`` (long before the full 2 s)."""
    limits = Limits(rate=0, max_tcp_connections=4, tcp_evict_after=2, tcp_idle_timeout=30)
    with Authority(big_zone, limits=limits).start() as authority:
        held = [_connect_from("127.0.0.2", authority.port) for _ in range(4)]
        assert _wait(lambda: authority.connections == 4)
        assert not _ask_from("127.0.0.2", authority.port)  # same address: no swapping
        assert authority.stats.refused.get("tcp-total") == 1
        time.sleep(0.3)
        assert _ask_from("127.0.0.3", authority.port)
        assert authority.stats.refused.get("tcp-evicted") == 1
        assert sum(_closed_within(s, 0.5) for s in held) == 1
        for sock in held:
            sock.close()


def test_at_the_cap_idle_connections_yield_to_new_ones(big_zone: Path) -> None:
    """Four connections from four addresses: while they are fresh a newcomer is refused
    (equal shares), once they have made no progress for ``tcp_evict_after`` it displaces one."""
    limits = Limits(rate=0, max_tcp_connections=4, tcp_evict_after=0.3, tcp_idle_timeout=30)
    with Authority(big_zone, limits=limits).start() as authority:
        idle = [_connect_from(f"127.0.0.{2 + i}", authority.port) for i in range(4)]
        assert _wait(lambda: authority.connections == 4)
        assert not _ask_from("127.0.0.9", authority.port)
        assert authority.stats.refused.get("tcp-total") == 1
        time.sleep(0.5)
        assert _ask_from("127.0.0.9", authority.port)
        assert authority.stats.refused.get("tcp-evicted") == 1
        assert sum(_closed_within(s, 0.5) for s in idle) == 1
        for sock in idle:
            sock.close()


def test_per_address_cap_counted(big_zone: Path) -> None:
    with Authority(big_zone, limits=Limits(rate=0, max_tcp_per_client=2)).start() as authority:
        held = [socket.create_connection(("127.0.0.1", authority.port)) for _ in range(2)]
        assert _wait(lambda: authority.connections == 2)
        extra = socket.create_connection(("127.0.0.1", authority.port))
        assert _closed_within(extra, 3)
        extra.close()
        assert authority.stats.refused.get("tcp-per-address") == 1
        other = socket.socket()  # another address is not affected
        other.bind(("127.0.0.2", 0))
        other.connect(("127.0.0.1", authority.port))
        other.sendall(_frame(dns.message.make_query("www.example.test", "A").to_wire()))
        other.settimeout(3)
        assert len(other.recv(4096)) > 2
        other.close()
        for sock in held:
            sock.close()


@pytest.fixture
def transfer_env(tmp_path: Path) -> Iterator[tuple[Authority, dict[dns.name.Name, object]]]:
    zone_dir, _ = make_zone_dir(tmp_path, "nsec3")
    with (zone_dir / "example.test.zone").open("a") as out:
        for i in range(400):
            out.write(f"n{i}._device.example.test. 300 IN TLSA 3 1 1 {'ab' * 32}\n")
    key = generate_tsig_key("xfr-key")
    with Authority(zone_dir, tsig_keys=[key], limits=Limits(rate=0)).start() as authority:
        yield authority, {key.dns_name: key.to_dnspython()}


def test_streamed_transfer_is_complete_and_signed(
    transfer_env: tuple[Authority, dict[dns.name.Name, object]],
) -> None:
    """Several messages, each TSIG-checked by dnspython; twice (the second from the cache)
    and again after an update (a new version is rendered)."""
    authority, ring = transfer_env
    keyname = next(iter(ring))

    def transfer() -> dns.zone.Zone:
        zone = dns.zone.Zone(ZONE)
        query, _ = dns.xfr.make_query(zone)
        query.use_tsig(ring, keyname=keyname)
        dns.query.inbound_xfr("127.0.0.1", zone, query, port=authority.port, timeout=10)
        return zone

    for _ in range(2):
        zone = transfer()
        assert zone.get_rdataset("n399._device", "TLSA") is not None
        assert zone.get_rdataset("@", "SOA")[0].serial == authority.serial(ZONE)  # type: ignore[index]
    update = dns.update.UpdateMessage(ZONE, keyring=ring, keyname=keyname)
    update.add("late._device", 300, "TLSA", f"3 1 1 {'cd' * 32}")
    assert dns.query.tcp(update, "127.0.0.1", port=authority.port, timeout=5).rcode() == 0
    zone = transfer()
    assert zone.get_rdataset("late._device", "TLSA") is not None
    assert zone.get_rdataset("@", "SOA")[0].serial == authority.serial(ZONE)  # type: ignore[index]
    query = dns.message.make_query(ZONE, "AXFR")
    query.use_tsig(ring, keyname=keyname)
    with socket.create_connection(("127.0.0.1", authority.port), timeout=5) as sock:
        sock.sendall(_frame(query.to_wire()))
        count, ctx, done = 0, None, False
        while not done:
            length = int.from_bytes(_read(sock, 2), "big")
            message = dns.message.from_wire(
                _read(sock, length), keyring=ring, request_mac=query.mac, xfr=True,
                origin=None, tsig_ctx=ctx, multi=True,
            )  # fmt: skip
            assert message.had_tsig
            ctx = message.tsig_ctx
            count += 1
            done = count > 1 and any(r.rdtype == dns.rdatatype.SOA for r in message.answer)
    assert count > 1


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk
        data += chunk
    return data


def test_ixfr_from_an_up_to_date_client_gets_the_soa(
    transfer_env: tuple[Authority, dict[dns.name.Name, object]],
) -> None:
    authority, ring = transfer_env
    keyname = next(iter(ring))
    serial = authority.serial(ZONE)
    query = dns.message.make_query(ZONE, "IXFR")
    query.authority.append(dns.rrset.from_text(ZONE, 0, "IN", "SOA", f". . {serial} 0 0 0 0"))
    query.use_tsig(ring, keyname=keyname)
    response = dns.query.tcp(query, "127.0.0.1", port=authority.port, timeout=5)
    assert response.had_tsig
    assert [r.rdtype for r in response.answer] == [dns.rdatatype.SOA]
    assert response.answer[0][0].serial == serial
