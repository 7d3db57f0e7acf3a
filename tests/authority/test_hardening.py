"""Hardening: rate limits, size limits, malformed input, TCP limits. The server never dies."""

from __future__ import annotations

import contextlib
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from dance.authority import Authority, Limits
from dance.service.ratelimit import RateLimiter
from tests.authority.conftest import make_zone_dir


def _start(tmp_path: Path, **limits: object) -> Authority:
    zone_dir, _ = make_zone_dir(tmp_path)
    return Authority(zone_dir, limits=Limits(**limits)).start()  # type: ignore[arg-type]


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Authority]:
    authority = _start(tmp_path, rate=5, burst=5, max_message_size=512)
    yield authority
    authority.stop()


def _query(name: str = "www.example.test", rdtype: str = "A") -> bytes:
    return dns.message.make_query(name, rdtype, want_dnssec=True).to_wire()


def _udp(port: int, wire: bytes, timeout: float = 0.3) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(wire, ("127.0.0.1", port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def _alive(port: int) -> bool:
    response = dns.query.tcp(dns.message.make_query("www.example.test", "A"), "127.0.0.1",
                             port=port, timeout=3)  # fmt: skip
    return response.rcode() == dns.rcode.NOERROR and bool(response.answer)


def test_token_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 3.0, max_clients=2, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back
    assert limiter.allow("a") and not limiter.allow("a")
    assert limiter.allow("b")
    limiter.allow("c")
    assert len(limiter) == 2  # the oldest client was forgotten
    assert RateLimiter(0, 1).allow("x")  # rate 0: unlimited


def test_rate_limit_drops_excess(limited: Authority) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        for i in range(30):
            sock.sendto(_query(f"q{i}.example.test"), ("127.0.0.1", limited.port))
        answers = 0
        while True:
            try:
                sock.recv(65535)
                answers += 1
            except TimeoutError:
                break
    assert 5 <= answers <= 8  # the burst (plus a few refills), not 30
    assert limited.stats.rate_limited >= 22


def test_rate_limit_refused_action(tmp_path: Path) -> None:
    authority = _start(tmp_path, rate=1, burst=1, rate_action="refused")
    try:
        first = _udp(authority.port, _query())
        second = _udp(authority.port, _query())
        assert first is not None and dns.message.from_wire(first).rcode() == dns.rcode.NOERROR
        assert second is not None
        assert dns.message.from_wire(second).rcode() == dns.rcode.REFUSED
    finally:
        authority.stop()


def test_oversize_udp_dropped(limited: Authority) -> None:
    message = dns.message.make_query("www.example.test", "A", use_edns=0, pad=600)
    wire = message.to_wire()
    assert len(wire) > 512
    assert _udp(limited.port, wire) is None
    assert limited.stats.dropped >= 1


def test_oversize_tcp_closes_connection(limited: Authority) -> None:
    with socket.create_connection(("127.0.0.1", limited.port), timeout=3) as sock:
        sock.sendall((4000).to_bytes(2, "big") + b"\0" * 4000)
        assert sock.recv(10) == b""  # closed without an answer
    assert _alive(limited.port)


@pytest.mark.parametrize(
    ("wire", "expect"),
    [
        (b"\x12", None),  # no header
        (b"\x12\x34\x81\x00" + b"\0" * 8, None),  # a response: never answered
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff", "FORMERR"),  # bad question
        (b"\x12\x34\x28\x00\x00\x05" + b"\0" * 6 + b"junk", "FORMERR"),  # garbled update
    ],
)
def test_malformed_answered_formerr_or_dropped(
    limited: Authority, wire: bytes, expect: str | None
) -> None:
    reply = _udp(limited.port, wire)
    if expect is None:
        assert reply is None
    else:
        assert reply is not None and reply[:2] == wire[:2]
        assert dns.rcode.to_text(dns.rcode.Rcode(reply[3] & 0xF)) == expect
    assert _alive(limited.port)


def test_fuzz_never_kills_the_server(tmp_path: Path) -> None:
    authority = _start(tmp_path, rate=0)
    serial = authority.serial("example.test.")
    try:
        rng = random.Random(7)
        base = _query()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(400):
                data = bytearray(base)
                for _ in range(rng.randint(1, 6)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
                if rng.random() < 0.3:
                    data = data[: rng.randrange(len(data))]
                if rng.random() < 0.2 and len(data) > 2:
                    data[2] = (data[2] & 0x87) | (5 << 3)  # as an UPDATE
                sock.sendto(bytes(data), ("127.0.0.1", authority.port))
        time.sleep(0.3)
        assert _alive(authority.port)
        assert authority.serial("example.test.") == serial  # no garbage changed the zone
    finally:
        authority.stop()


def test_tcp_connection_limit_and_idle_timeout(tmp_path: Path) -> None:
    authority = _start(tmp_path, rate=0, max_tcp_connections=2, tcp_idle_timeout=0.5)
    try:
        held = [
            socket.create_connection(("127.0.0.1", authority.port), timeout=3) for _ in range(2)
        ]
        time.sleep(0.1)
        extra = socket.create_connection(("127.0.0.1", authority.port), timeout=3)
        assert extra.recv(10) == b""  # closed at once: over the limit
        extra.close()
        assert authority.stats.tcp_refused >= 1
        time.sleep(0.8)  # the held connections idle out
        for sock in held:
            assert sock.recv(10) == b""
            sock.close()
        assert _alive(authority.port)
    finally:
        authority.stop()


def test_tcp_per_client_limit(tmp_path: Path) -> None:
    authority = _start(tmp_path, rate=0, max_tcp_per_client=1)
    try:
        first = socket.create_connection(("127.0.0.1", authority.port), timeout=3)
        time.sleep(0.1)
        second = socket.create_connection(("127.0.0.1", authority.port), timeout=3)
        assert second.recv(10) == b""
        second.close()
        first.close()
        time.sleep(0.1)
        assert _alive(authority.port)
    finally:
        authority.stop()


def _tcp_exchange(sock: socket.socket, wire: bytes) -> bytes:
    sock.sendall(len(wire).to_bytes(2, "big") + wire)
    header = sock.recv(2)
    length = int.from_bytes(header, "big")
    data = b""
    while len(data) < length:
        data += sock.recv(length - len(data))
    return data


def test_rate_limit_over_tcp(tmp_path: Path) -> None:
    authority = _start(tmp_path, rate=0.01, burst=2, rate_action="refused")
    try:
        with socket.create_connection(("127.0.0.1", authority.port), timeout=3) as sock:
            rcodes = [
                dns.message.from_wire(_tcp_exchange(sock, _query())).rcode() for _ in range(4)
            ]
        assert rcodes == [dns.rcode.NOERROR] * 2 + [dns.rcode.REFUSED] * 2
    finally:
        authority.stop()


def test_tcp_garbage_never_kills_the_server(tmp_path: Path) -> None:
    authority = _start(tmp_path, rate=0)
    try:
        rng = random.Random(11)
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", authority.port), timeout=3) as sock:
                junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
                sock.sendall(len(junk).to_bytes(2, "big") + junk)
                sock.settimeout(0.2)
                with contextlib.suppress(TimeoutError, ConnectionError):
                    sock.recv(65535)
        assert _alive(authority.port)
    finally:
        authority.stop()
