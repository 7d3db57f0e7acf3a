"""Property tests: random or recombined responses never raise and never yield a wrong decision."""

from __future__ import annotations

import asyncio
import struct

import dns.message
import dns.rcode
import dns.rrset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dance.dns import LookupResult, MalformedResponse, Outcome
from tests.dns.conftest import World, build_world
from tests.dns.kit import NOW, MemoryTransport, T, n

Msg = dns.message.Message
WORLD: World = build_world()
WORLD_N3: World = build_world(parent_denial="nsec3", device_denial="nsec")
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def genuine(world: World, name: str) -> LookupResult:
    return asyncio.run(world.resolver().lookup_tlsa(name))


GENUINE = {
    name: genuine(WORLD, name)
    for name in ["sensor7._device.example.test", "sensor._nsec.example.test", "host.example.test"]
}


class BytesTransport:
    """Answers the TLSA query with arbitrary bytes (patched to pass the ID check or not)."""

    def __init__(self, world: World, payload: bytes, patch_header: bool, which: int) -> None:
        self.inner = MemoryTransport(world.server)
        self.payload = payload
        self.patch_header = patch_header
        self.which = which
        self.n = 0

    async def query(self, msg: Msg) -> Msg:
        self.n += 1
        if self.n != self.which:
            return await self.inner.query(msg)
        data = self.payload
        if self.patch_header:
            qwire = msg.to_wire()
            # keep the query's header and question, then the random remainder
            qlen = 12 + len(msg.question[0].name.to_wire() or b"") + 4
            header = struct.pack("!HH", msg.id, 0x8400) + data[4:12].ljust(8, b"\x00")
            data = header + qwire[12:qlen] + data[12:]
        try:
            return dns.message.from_wire(data)
        except Exception as exc:
            raise MalformedResponse(str(exc)) from exc


@SETTINGS
@given(
    payload=st.binary(min_size=0, max_size=600),
    patch=st.booleans(),
    which=st.integers(min_value=1, max_value=4),
)
def test_random_bytes_never_secure(payload: bytes, patch: bool, which: int) -> None:
    transport = BytesTransport(WORLD, payload, patch, which)
    r = asyncio.run(WORLD.resolver(transport=transport).lookup_tlsa("sensor7._device.example.test"))
    if which <= transport.n:
        assert r.outcome is not Outcome.SECURE_ABSENT
        if r.outcome is Outcome.SECURE:
            assert r.records == GENUINE["sensor7._device.example.test"].records


class FlipTransport:
    """Flips bytes in the genuine answer to one query."""

    def __init__(self, world: World, flips: list[tuple[int, int]], which: int) -> None:
        self.inner = MemoryTransport(world.server)
        self.flips = flips
        self.which = which
        self.n = 0

    async def query(self, msg: Msg) -> Msg:
        self.n += 1
        resp = await self.inner.query(msg)
        if self.n != self.which:
            return resp
        wire = bytearray(resp.to_wire(max_size=65535))
        for pos, val in self.flips:
            wire[pos % len(wire)] ^= val or 1
        try:
            return dns.message.from_wire(bytes(wire))
        except Exception as exc:
            raise MalformedResponse(str(exc)) from exc


@SETTINGS
@given(
    name=st.sampled_from(sorted(GENUINE)),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=1, max_size=4),
    which=st.integers(min_value=1, max_value=4),
)
def test_bit_flips_never_change_the_answer(
    name: str, flips: list[tuple[int, int]], which: int
) -> None:
    r = asyncio.run(WORLD.resolver(transport=FlipTransport(WORLD, flips, which)).lookup_tlsa(name))
    assert r.outcome in (Outcome.SECURE, Outcome.BOGUS, Outcome.INDETERMINATE, Outcome.INSECURE)
    if r.outcome is Outcome.SECURE:
        assert r.records == GENUINE[name].records


def _pool(world: World) -> list[list[dns.rrset.RRset]]:
    """Genuine signed RRsets (each with its RRSIG) from many responses of the world."""
    names = [
        ("nope.example.test.", "TLSA"),
        ("zzzz.example.test.", "TLSA"),
        ("host.example.test.", "A"),
        ("unknown7._device.example.test.", "TLSA"),
        ("unknown7._nsec.example.test.", "TLSA"),
        ("b._nsec.example.test.", "TLSA"),
        ("x.w._nsec.example.test.", "TLSA"),
        ("plain._device.example.test.", "TLSA"),
        ("_nsec.example.test.", "DS"),
        ("_device.example.test.", "DS"),
        ("unsigned.example.test.", "DS"),
        ("x.unsigned.example.test.", "TLSA"),
        ("_nsec.example.test.", "TLSA"),
        ("missing.optout.example.test.", "TLSA"),
        ("a.b._device.example.test.", "TLSA"),
        ("www.example.test.", "TLSA"),
    ]
    pool: list[list[dns.rrset.RRset]] = []
    for qname, rdtype in names:
        q = dns.message.make_query(qname, rdtype, want_dnssec=True)
        resp = dns.message.from_wire(world.server.respond(q).to_wire(max_size=65535))
        for section in (resp.answer, resp.authority):
            data = [r for r in section if r.rdtype != T.RRSIG]
            for rr in data:
                group = [rr] + [
                    s
                    for s in section
                    if s.rdtype == T.RRSIG and s.name == rr.name and s.covers == rr.rdtype
                ]
                pool.append(group)
    # the parent-side NSEC/NSEC3 records at delegations, explicitly
    parent = world.zones["parent"]
    for cut in ("_nsec.example.test.", "_device.example.test.", "unsigned.example.test."):
        if (n(cut), T.NSEC) in parent.rrsets:
            pool.append(parent._with_sig((n(cut), T.NSEC)))
        else:
            pool.append(parent.nsec3_for(n(cut), match=True))
    return pool


POOLS = {id(WORLD): _pool(WORLD), id(WORLD_N3): _pool(WORLD_N3)}


class MixTransport:
    def __init__(
        self, world: World, rcode: int, answer: list[int], auth: list[int], rename: bool
    ) -> None:
        self.inner = MemoryTransport(world.server)
        self.pool = POOLS[id(world)]
        self.rcode, self.answer, self.auth, self.rename = rcode, answer, auth, rename

    async def query(self, msg: Msg) -> Msg:
        resp = await self.inner.query(msg)
        if msg.question[0].rdtype != T.TLSA:
            return resp
        qname = msg.question[0].name
        resp.set_rcode(self.rcode)
        resp.answer = []
        for i in self.answer:
            for rr in self.pool[i % len(self.pool)]:
                if self.rename:
                    moved = dns.rrset.RRset(qname, rr.rdclass, rr.rdtype, rr.covers)
                    moved.update(rr)
                    rr = moved
                resp.answer.append(rr)
        resp.authority = [rr for i in self.auth for rr in self.pool[i % len(self.pool)]]
        return dns.message.from_wire(resp.to_wire(max_size=65535))


@SETTINGS
@given(
    name=st.sampled_from(sorted(GENUINE)),
    n3=st.booleans(),
    rcode=st.sampled_from([dns.rcode.NOERROR, dns.rcode.NXDOMAIN]),
    answer=st.lists(st.integers(0, 1000), max_size=2),
    auth=st.lists(st.integers(0, 1000), max_size=5),
    rename=st.booleans(),
)
def test_recombined_genuine_records_never_deny_existing_names(
    name: str, n3: bool, rcode: int, answer: list[int], auth: list[int], rename: bool
) -> None:
    world = WORLD_N3 if n3 else WORLD
    transport = MixTransport(world, rcode, answer, auth, rename)
    r = asyncio.run(world.resolver(transport=transport).lookup_tlsa(name))
    assert r.outcome is not Outcome.SECURE_ABSENT, r
    if r.outcome is Outcome.SECURE:
        assert r.records == genuine(world, name).records


def test_time_is_a_parameter() -> None:
    late = asyncio.run(
        WORLD.resolver(clock=lambda: NOW + 30 * 86400).lookup_tlsa("sensor7._device.example.test")
    )
    assert late.outcome is Outcome.BOGUS
