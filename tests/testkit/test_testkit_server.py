"""The embedded server over real sockets: UDP, TCP, bounds, faults, clean stop."""

from __future__ import annotations

import asyncio
import socket
import time

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from _testkit_support import rrsets, validate_all

from dance.testkit import Fault, ServerThread, TestServer, ZoneSet

T = dns.rdatatype.RdataType
SENSOR = "sensor7._device.example.test."


def _query(name: str = SENSOR, rdtype: str = "TLSA") -> dns.message.Message:
    return dns.message.make_query(name, rdtype, want_dnssec=True)


def test_async_udp_and_tcp(nsec_zs: ZoneSet) -> None:
    async def main() -> None:
        async with TestServer(nsec_zs, host="127.0.0.1", port=0) as srv:
            assert srv.port > 0
            udp = await dns.asyncquery.udp(_query(), "127.0.0.1", port=srv.port, timeout=2)
            tcp = await dns.asyncquery.tcp(_query(), "127.0.0.1", port=srv.port, timeout=2)
            for response in (udp, tcp):
                assert response.flags & dns.flags.AA and rrsets(response.answer, T.TLSA)
                validate_all(nsec_zs, response)
        port = srv.port
        # stopped: the port can be bound again
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))

    asyncio.run(main())


def test_thread_runner_several_queries_per_tcp_connection(nsec_zs: ZoneSet) -> None:
    with ServerThread(nsec_zs) as srv:
        host, port = srv.address
        assert host == "127.0.0.1" and port == srv.port
        with socket.create_connection((host, port), timeout=2) as sock:
            queries = [_query(), _query("www.example.test.", "A"), _query("nope.test.", "A")]
            for query in queries:  # pipelined: all sent before reading
                dns.query.send_tcp(sock, query)
            for query in queries:
                response, _ = dns.query.receive_tcp(sock, expiration=time.time() + 2)
                assert query.is_response(response)
        response = dns.query.udp(_query(), host, port=port, timeout=2)
        assert rrsets(response.answer, T.TLSA)
        assert srv.server.queries == 4


def test_udp_truncation_then_tcp(nsec3_zs: ZoneSet) -> None:
    query = dns.message.make_query("a.b.nope.example.test.", "A", want_dnssec=True, payload=512)
    with ServerThread(nsec3_zs) as srv:
        response = dns.query.udp(query, "127.0.0.1", port=srv.port, timeout=2)
        assert response.flags & dns.flags.TC
        response, used_tcp = dns.query.udp_with_fallback(
            query, "127.0.0.1", port=srv.port, timeout=2
        )
        assert used_tcp and response.rcode() == dns.rcode.NXDOMAIN


def test_silent_and_slow_faults(nsec_zs: ZoneSet) -> None:
    zs = ZoneSet(*nsec_zs.zones)
    with ServerThread(zs) as srv:
        with zs.inject(Fault("silent", SENSOR)), pytest.raises(dns.exception.Timeout):
            dns.query.udp(_query(), "127.0.0.1", port=srv.port, timeout=0.3)
        with zs.inject(Fault("slow", SENSOR, delay=0.4)):
            start = time.monotonic()
            with pytest.raises(dns.exception.Timeout):
                dns.query.udp(_query(), "127.0.0.1", port=srv.port, timeout=0.2)
            response = dns.query.tcp(_query(), "127.0.0.1", port=srv.port, timeout=2)
            assert time.monotonic() - start >= 0.4 and response.answer
        with (
            zs.inject(Fault("wrong-id", SENSOR)),
            pytest.raises((dns.exception.Timeout, dns.query.BadResponse)),
        ):
            dns.query.udp(_query(), "127.0.0.1", port=srv.port, timeout=0.3)
        with zs.inject(Fault("malformed", SENSOR)), pytest.raises(dns.exception.DNSException):
            dns.query.tcp(_query(), "127.0.0.1", port=srv.port, timeout=1)


def test_bounds_connection_limit_and_idle_timeout(nsec_zs: ZoneSet) -> None:
    with ServerThread(nsec_zs, max_tcp_connections=1, tcp_idle_timeout=0.3) as srv:
        first = socket.create_connection(srv.address, timeout=2)
        try:
            dns.query.send_tcp(first, _query())
            dns.query.receive_tcp(first, expiration=time.time() + 2)
            with socket.create_connection(srv.address, timeout=2) as second:
                second.settimeout(2)
                assert second.recv(10) == b""  # over the limit: closed at once
            first.settimeout(2)
            assert first.recv(10) == b""  # idle timeout closes the connection
        finally:
            first.close()
        # after the idle close a new connection is served again
        assert dns.query.tcp(_query(), "127.0.0.1", port=srv.port, timeout=2).answer


def test_oversized_and_garbage_queries(nsec_zs: ZoneSet) -> None:
    with ServerThread(nsec_zs, max_message_size=512) as srv:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            s.sendto(b"\x00" * 600, srv.address)
            with pytest.raises(TimeoutError):
                s.recv(100)
            s.sendto(b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07", srv.address)
            reply = dns.message.from_wire(s.recv(512))
            assert reply.id == 0xABCD and reply.rcode() == dns.rcode.FORMERR
        assert dns.query.udp(_query(), "127.0.0.1", port=srv.port, timeout=2).answer


def test_stop_with_open_connection_and_pending_slow_reply(nsec_zs: ZoneSet) -> None:
    zs = ZoneSet(*nsec_zs.zones)
    zs.inject(Fault("slow", delay=30))
    srv = ServerThread(zs).start()
    sock = socket.create_connection(srv.address, timeout=2)
    try:
        dns.query.send_tcp(sock, _query())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(_query().to_wire(), srv.address)
        time.sleep(0.1)
        start = time.monotonic()
        srv.stop()
        assert time.monotonic() - start < 3
        assert srv._thread is None
    finally:
        sock.close()


def test_ipv6_loopback(nsec_zs: ZoneSet) -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with ServerThread(nsec_zs, host="::1") as srv:
        assert dns.query.udp(_query(), "::1", port=srv.port, timeout=2).answer
        assert dns.query.tcp(_query(), "::1", port=srv.port, timeout=2).answer
