"""The resolver's own UDP path: query wire templates (byte equality with dnspython's rendering)
and the per-lookup socket (UdpExchange): strict matching, spoofed and garbage datagrams, network
errors, timeouts, one socket per lookup, closed afterwards."""

from __future__ import annotations

import asyncio
import socket

import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dance.dns import LookupResult, Outcome, Reason, TLSAResolver
from dance.dns.transport import (
    MalformedResponse,
    UdpExchange,
    UdpTransport,
    answers,
    make_query,
    query_wire,
)
from tests.dns.conftest import World
from tests.dns.kit import NOW

_labels = st.lists(st.binary(min_size=1, max_size=63), min_size=0, max_size=4)
_flags = st.sampled_from(
    [0, dns.flags.CD, dns.flags.AD, dns.flags.RD | dns.flags.CD, dns.flags.RD | dns.flags.AD]
)


@settings(max_examples=300, deadline=None)
@given(
    labels=_labels,
    rdtype=st.integers(min_value=1, max_value=65535),
    flags=_flags,
    qid=st.integers(min_value=0, max_value=65535),
)
def test_query_wire_equals_dnspython(
    labels: list[bytes], rdtype: int, flags: int, qid: int
) -> None:
    qname = dns.name.Name([*labels, b""])
    expected = make_query(qname, rdtype, flags, qid).to_wire()
    assert query_wire(qname, rdtype, flags, qid) == expected
    assert query_wire(qname, rdtype, flags, qid) == expected  # from the cached template
    # the case of the name as written is kept (templates are not shared across cases)
    upper = dns.name.Name([label.upper() for label in labels] + [b""])
    assert query_wire(upper, rdtype, flags, qid) == make_query(upper, rdtype, flags, qid).to_wire()


def test_query_wire_fields() -> None:
    qname = dns.name.from_text("_device.example.test")
    wire = query_wire(qname, dns.rdatatype.DNSKEY, dns.flags.CD, 0xBEEF)
    msg = dns.message.from_wire(wire)
    assert msg.id == 0xBEEF
    assert msg.flags == dns.flags.CD
    assert msg.edns == 0 and msg.payload == 1232 and msg.ednsflags & dns.flags.DO
    assert msg.question[0].name == qname and msg.question[0].rdtype == dns.rdatatype.DNSKEY
    with pytest.raises(ValueError):
        query_wire(dns.name.from_text("relative", origin=None), 1, 0, 1)


def _response(qname: str, rdtype: int, qid: int) -> dns.message.Message:
    query = make_query(dns.name.from_text(qname), rdtype, 0, qid)
    return dns.message.make_response(query)


def test_answers_checks_id_question_and_flags() -> None:
    name = dns.name.from_text("a.example.test")
    ok = _response("a.example.test", dns.rdatatype.TLSA, 7)
    assert answers(7, name, dns.rdatatype.TLSA, ok)
    assert not answers(8, name, dns.rdatatype.TLSA, ok)
    assert not answers(7, name, dns.rdatatype.DS, ok)
    assert not answers(7, dns.name.from_text("b.example.test"), dns.rdatatype.TLSA, ok)
    no_qr = _response("a.example.test", dns.rdatatype.TLSA, 7)
    no_qr.flags &= ~dns.flags.QR
    assert not answers(7, name, dns.rdatatype.TLSA, no_qr)
    two = _response("a.example.test", dns.rdatatype.TLSA, 7)
    two.question.append(two.question[0])
    assert not answers(7, name, dns.rdatatype.TLSA, two)


class _Echo(asyncio.DatagramProtocol):
    """Answers each query with: what ``script`` returns for it (a list of datagrams)."""

    def __init__(self, script: object) -> None:
        self.script = script
        self.sources: list[tuple[str, int]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sources.append(addr)
        query = dns.message.from_wire(data)
        for out in self.script(query):  # type: ignore[operator]
            self.transport.sendto(out, addr)  # type: ignore[attr-defined]


async def _serve(script: object) -> tuple[asyncio.DatagramTransport, _Echo, int]:
    loop = asyncio.get_running_loop()
    proto = _Echo(script)
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=("127.0.0.1", 0))
    return transport, proto, transport.get_extra_info("sockname")[1]


def test_exchange_ignores_spoofed_and_matches_each_query() -> None:
    def script(query: dns.message.Message) -> list[bytes]:
        wrong_id = dns.message.make_response(query)
        wrong_id.id ^= 0x5555
        wrong_q = dns.message.make_response(
            make_query(dns.name.from_text("other.test"), query.question[0].rdtype, 0, query.id)
        )
        no_qr = dns.message.make_response(query)
        no_qr.flags &= ~dns.flags.QR
        return [
            b"\x00\x01garbage",
            wrong_id.to_wire(),
            wrong_q.to_wire(),
            no_qr.to_wire(),
            dns.message.make_response(query).to_wire(),
        ]

    async def go() -> None:
        server, proto, port = await _serve(script)
        try:
            exchange = UdpExchange(("127.0.0.1", port), 2.0)
            a = dns.name.from_text("a.test")
            b = dns.name.from_text("b.test")
            (qa, fa), (qb, fb) = exchange.send(a, 52, 0), exchange.send(b, 43, 0)
            ra, rb = await fa, await fb
            assert ra.id == qa and ra.question[0].name == a and ra.question[0].rdtype == 52
            assert rb.id == qb and rb.question[0].name == b and rb.question[0].rdtype == 43
            assert qa != qb
            assert len(set(proto.sources)) == 1  # one socket (source port) for the lookup
            assert not exchange.closed
            exchange.release()
            assert exchange.closed
        finally:
            server.close()

    asyncio.run(go())


def test_exchange_timeout_and_garbage_is_malformed() -> None:
    def silent(query: dns.message.Message) -> list[bytes]:
        return []

    def garbage(query: dns.message.Message) -> list[bytes]:
        return [b"\xff" * 7]

    async def go() -> None:
        for script, error in ((silent, TimeoutError), (garbage, MalformedResponse)):
            server, _proto, port = await _serve(script)
            try:
                exchange = UdpExchange(("127.0.0.1", port), 0.2)
                _qid, fut = exchange.send(dns.name.from_text("a.test"), 52, 0)
                exchange.release()  # the socket stays open while the query is pending
                assert not exchange.closed
                with pytest.raises(error):
                    await fut
                assert exchange.closed
            finally:
                server.close()

    asyncio.run(go())


def test_exchange_network_error_fails_pending_queries() -> None:
    async def go() -> None:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # nobody listens: ICMP port unreachable, ECONNREFUSED on the socket
        exchange = UdpExchange(("127.0.0.1", port), 2.0)
        _qid, fut = exchange.send(dns.name.from_text("a.test"), 52, 0)
        with pytest.raises(OSError):
            await asyncio.wait_for(fut, 5)
        exchange.release()
        assert exchange.closed

    asyncio.run(go())


def test_resolver_lookup_uses_one_socket_and_closes_it(world: World) -> None:
    """A whole cold lookup over UDP: every query from one source port, the socket closed after;
    a second lookup gets a new port."""
    from tests.dns.test_transport import NetServer

    net = NetServer(world.server)
    counts: list[int] = []
    opened: list[UdpExchange] = []

    class Counting(UdpTransport):
        def exchange(self) -> UdpExchange:
            ex = super().exchange()
            opened.append(ex)
            return ex

    async def go() -> list[LookupResult]:
        async with net.run() as port:
            transport = Counting(("127.0.0.1", port), 1.0)
            out = []
            for _ in range(2):
                resolver = TLSAResolver(
                    ("127.0.0.1", port), anchors=world.anchors, clock=lambda: NOW,
                    transport=transport,
                )  # fmt: skip
                out.append(await resolver.lookup_tlsa("sensor7._device.example.test"))
                counts.append(opened[-1].queries)
            return out

    results = asyncio.run(go())
    assert [r.outcome for r in results] == [Outcome.SECURE, Outcome.SECURE]
    assert len(opened) == 2 and all(ex.closed for ex in opened)
    assert counts == [net.udp_queries // 2] * 2  # all queries of a lookup on its exchange


def test_resolver_udp_refused_is_network(world: World) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()

    async def go() -> LookupResult:
        resolver = TLSAResolver(
            ("127.0.0.1", port), anchors=world.anchors, clock=lambda: NOW, timeout=1.0
        )
        return await resolver.lookup_tlsa("sensor7._device.example.test")

    r = asyncio.run(go())
    assert r.outcome is Outcome.INDETERMINATE and r.reason == Reason.NETWORK


def test_exchange_closed_when_the_waiter_is_cancelled() -> None:
    def silent(query: dns.message.Message) -> list[bytes]:
        return []

    async def go() -> None:
        server, _proto, port = await _serve(silent)
        try:
            transport = UdpTransport(("127.0.0.1", port), 5.0)
            exchange = transport.exchange()
            task = asyncio.ensure_future(
                transport.query_name(exchange, dns.name.from_text("a.test"), 52, 0)
            )
            await asyncio.sleep(0.05)
            assert not exchange.closed
            exchange.release()
            assert not exchange.closed  # a query is pending
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert exchange.closed
        finally:
            server.close()

    asyncio.run(go())


def test_lookup_cut_by_its_deadline_closes_its_sockets(world: World) -> None:
    """A lookup ended by its deadline while its queries wait: the socket is closed once they
    time out."""
    from tests.dns.test_transport import NetServer

    net = NetServer(world.server)
    net.silent_udp = True
    opened: list[UdpExchange] = []

    class Counting(UdpTransport):
        def exchange(self) -> UdpExchange:
            ex = super().exchange()
            opened.append(ex)
            return ex

    async def go() -> LookupResult:
        async with net.run() as port:
            resolver = TLSAResolver(
                ("127.0.0.1", port), anchors=world.anchors, clock=lambda: NOW,
                transport=Counting(("127.0.0.1", port), 0.3), deadline=0.0001,
            )  # fmt: skip
            result = await resolver.lookup_tlsa("sensor7._device.example.test")
            await asyncio.sleep(0.6)  # the queries' own timeouts
            return result

    r = asyncio.run(go())
    assert r.outcome is Outcome.INDETERMINATE and r.reason == Reason.TIMEOUT
    assert opened and all(ex.closed for ex in opened)
