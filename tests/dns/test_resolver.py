"""TLSAResolver behaviour: cache, de-duplication, deadlines, trusted-resolver mode, config."""

from __future__ import annotations

import asyncio
import time

import dns.flags
import dns.message
import dns.name
import dns.rcode
import pytest

from dance.dns import (
    ConfigurationError,
    DecisionCache,
    LookupResult,
    Outcome,
    Reason,
    TLSAResolver,
    TrustAnchors,
)
from tests.dns.conftest import World, build_world
from tests.dns.kit import NOW, MemoryTransport, T, TZone

Msg = dns.message.Message


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def tlsa_queries(world: World) -> int:
    return sum(1 for _n, t in world.server.queries if t == T.TLSA)


# -- cache --------------------------------------------------------------------------------


def test_cache_hit_and_expiry_bound_by_rrsig_expiration() -> None:
    def tweak(zones: dict[str, TZone]) -> None:
        zones["device"].expiration = NOW + 100  # RRSIGs expire before the 300 s TTL

    w = build_world(tweak=tweak)
    clock = Clock()
    resolver = w.resolver(clock=clock)

    async def go() -> None:
        r1 = await resolver.lookup_tlsa("sensor7._device.example.test")
        assert r1.outcome is Outcome.SECURE
        assert r1.ttl == 100
        before = len(w.server.queries)
        clock.t += 60
        r2 = await resolver.lookup_tlsa("sensor7._device.example.test")
        assert r2.outcome is Outcome.SECURE
        assert r2.ttl == pytest.approx(40)
        assert len(w.server.queries) == before  # served from cache
        assert resolver.cached("sensor7._device.example.test") is not None
        clock.t += 41  # past the RRSIG expiration: never served stale
        assert resolver.cached("sensor7._device.example.test") is None
        r3 = await resolver.lookup_tlsa("sensor7._device.example.test")
        assert len(w.server.queries) > before
        assert r3.outcome is Outcome.BOGUS
        assert r3.reason == Reason.EXPIRED_SIGNATURE

    asyncio.run(go())
    stats = resolver.stats()
    assert stats["cache_hits"] >= 1
    assert stats["outcome_secure"] == 1
    assert stats["outcome_bogus"] == 1


def test_cache_bounded_by_dnskey_rrsig_expiration() -> None:
    def tweak(zones: dict[str, TZone]) -> None:
        zones["parent"].expiration = NOW + 50  # the anchor zone's DNSKEY/DS signatures

    w = build_world(tweak=tweak)
    r = asyncio.run(w.resolver().lookup_tlsa("sensor7._device.example.test"))
    assert r.outcome is Outcome.SECURE
    assert r.ttl == 50


def test_cache_max_ttl_and_negative_ttl(world: World) -> None:
    resolver = world.resolver(cache=DecisionCache(max_ttl=30, negative_ttl=2))

    async def go() -> tuple[LookupResult, LookupResult]:
        a = await resolver.lookup_tlsa("sensor7._device.example.test")
        b = await resolver.lookup_tlsa("nope.example.test")
        return a, b

    a, b = asyncio.run(go())
    assert a.ttl == 30
    assert b.ttl == 2


def test_failures_cached_briefly() -> None:
    w = build_world()
    w.zones["device"].expiration = NOW - 1
    w.zones["device"].sign()
    clock = Clock()
    resolver = w.resolver(clock=clock, cache=DecisionCache(failure_ttl=3))

    async def go() -> None:
        r = await resolver.lookup_tlsa("sensor7._device.example.test")
        assert r.outcome is Outcome.BOGUS
        assert r.ttl == 3
        n1 = tlsa_queries(w)
        await resolver.lookup_tlsa("sensor7._device.example.test")
        assert tlsa_queries(w) == n1
        clock.t += 3
        await resolver.lookup_tlsa("sensor7._device.example.test")
        assert tlsa_queries(w) == n1 + 1

    asyncio.run(go())


def test_cache_disabled(world: World) -> None:
    w = build_world()
    resolver = w.resolver(cache=DecisionCache(max_ttl=0, negative_ttl=0, failure_ttl=0))

    async def go() -> None:
        await resolver.lookup_tlsa("sensor7._device.example.test")
        n1 = tlsa_queries(w)
        await resolver.lookup_tlsa("sensor7._device.example.test")
        assert tlsa_queries(w) == n1 + 1

    asyncio.run(go())


def test_lru_bound() -> None:
    w = build_world()
    resolver = w.resolver(cache=DecisionCache(max_entries=3))

    async def go() -> None:
        for i in range(10):
            await resolver.lookup_tlsa(f"d{i}._device.example.test")

    asyncio.run(go())
    stats = resolver.stats()
    assert stats["cache_entries"] == 3
    assert stats["cache_evictions"] == 7


def test_second_name_in_zone_costs_one_query() -> None:
    w = build_world()
    resolver = w.resolver()

    async def go() -> None:
        await resolver.lookup_tlsa("sensor7._device.example.test")
        before = len(w.server.queries)
        r = await resolver.lookup_tlsa("other1._device.example.test")
        assert r.outcome is Outcome.SECURE
        assert len(w.server.queries) == before + 1

    asyncio.run(go())


def test_cold_lookup_query_count() -> None:
    w = build_world()
    r = asyncio.run(w.resolver().lookup_tlsa("sensor7._device.example.test"))
    assert r.outcome is Outcome.SECURE
    # TLSA, DNSKEY example.test, DS _device, DNSKEY _device
    assert sorted((str(q), t) for q, t in w.server.queries) == sorted(
        [
            ("sensor7._device.example.test.", T.TLSA),
            ("example.test.", T.DNSKEY),
            ("_device.example.test.", T.DS),
            ("_device.example.test.", T.DNSKEY),
        ]
    )


def test_cold_lookup_asks_the_chain_with_the_answer() -> None:
    """The DNSKEY and DS queries of the chain of trust go out with the TLSA query (the path
    from the anchor to the name is known before any answer): one round trip, not three."""
    w = build_world()
    answered = 0
    sent_after: list[tuple[str, int, int]] = []

    class Recording(MemoryTransport):
        async def query(self, msg: Msg) -> Msg:
            nonlocal answered
            q = msg.question[0]
            sent_after.append((str(q.name), q.rdtype, answered))
            try:
                return await super().query(msg)
            finally:
                answered += 1

    resolver = w.resolver(transport=Recording(w.server, delay=lambda q: 0.02))
    r = asyncio.run(resolver.lookup_tlsa("sensor7._device.example.test"))
    assert r.outcome is Outcome.SECURE
    assert len(sent_after) == 4
    assert [after for _n, _t, after in sent_after] == [0, 0, 0, 0]
    # a second name in the known zone: the cached chain, the answer alone
    r = asyncio.run(resolver.lookup_tlsa("other1._device.example.test"))
    assert r.outcome is Outcome.SECURE
    assert [(n, t) for n, t, _a in sent_after[4:]] == [("other1._device.example.test.", T.TLSA)]


# -- concurrency ----------------------------------------------------------------------------


def test_inflight_deduplication() -> None:
    w = build_world()
    transport = MemoryTransport(w.server, delay=lambda q: 0.01)
    resolver = w.resolver(transport=transport)

    async def go() -> list[LookupResult]:
        return await asyncio.gather(
            *[resolver.lookup_tlsa("sensor7._device.example.test") for _ in range(50)]
        )

    results = asyncio.run(go())
    assert all(r.outcome is Outcome.SECURE for r in results)
    assert tlsa_queries(w) == 1
    assert transport.count == 4
    assert resolver.stats()["deduplicated_lookups"] == 49


def test_old_inflight_lookup_is_not_joined() -> None:
    """A lookup that starts after a query has been out longer than the join window (a lost
    answer, a DNS fault that has since ended) sends its own queries instead of inheriting the
    old one's wait (the soak's recovery after a silent DNS server)."""
    w = build_world()
    first = True

    def delay(q: Msg) -> float:
        nonlocal first
        if first:  # the first query's answer is slow (lost and late)
            first = False
            return 3.0
        return 0.0

    transport = MemoryTransport(w.server, delay=delay)
    resolver = w.resolver(transport=transport, timeout=2.0)  # join window 0.5 s
    done: list[str] = []

    async def lookup(label: str, wait: float) -> LookupResult:
        await asyncio.sleep(wait)
        result = await resolver.lookup_tlsa("sensor7._device.example.test")
        done.append(label)
        return result

    async def go() -> list[LookupResult]:
        return await asyncio.gather(lookup("stuck", 0), lookup("joins", 0.1), lookup("fresh", 0.8))

    results = asyncio.run(go())
    assert all(r.outcome is Outcome.SECURE for r in results)
    assert done.index("fresh") < done.index("stuck"), done  # not behind the old query
    assert done.index("joins") > done.index("fresh"), done  # a young one is still joined
    assert resolver.stats()["deduplicated_lookups"] == 1


def test_query_deduplication_across_names() -> None:
    w = build_world()
    transport = MemoryTransport(w.server, delay=lambda q: 0.01)
    resolver = w.resolver(transport=transport)

    async def go() -> list[LookupResult]:
        names = [f"n{i}._device.example.test" for i in range(20)]
        return await asyncio.gather(*[resolver.lookup_tlsa(x) for x in names])

    results = asyncio.run(go())
    assert all(r.outcome is Outcome.SECURE for r in results)
    # one DNSKEY per zone and one DS, however many names wanted them at once
    assert sum(1 for _n, t in w.server.queries if t == T.DNSKEY) == 2
    assert sum(1 for _n, t in w.server.queries if t == T.DS) == 1


def test_slow_server_deadline_and_other_names_unaffected() -> None:
    w = build_world()

    def delay(q: Msg) -> float:
        return 5.0 if q.question[0].name.labels[0] == b"slow" else 0.0

    resolver = w.resolver(
        transport=MemoryTransport(w.server, delay=delay), deadline=0.3, timeout=10
    )

    async def go() -> tuple[LookupResult, LookupResult, float, float]:
        t0 = time.monotonic()
        fast_done = 0.0

        async def fast() -> LookupResult:
            nonlocal fast_done
            r = await resolver.lookup_tlsa("sensor7._device.example.test")
            fast_done = time.monotonic() - t0
            return r

        slow, ok = await asyncio.gather(resolver.lookup_tlsa("slow._device.example.test"), fast())
        return slow, ok, time.monotonic() - t0, fast_done

    slow, ok, elapsed, fast_done = asyncio.run(go())
    assert slow.outcome is Outcome.INDETERMINATE
    assert slow.reason == Reason.TIMEOUT
    assert elapsed < 1.5
    assert ok.outcome is Outcome.SECURE
    assert fast_done < 0.25


def test_down_resolver_is_indeterminate(world: World) -> None:
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    resolver = TLSAResolver(
        ("127.0.0.1", port), anchors=world.anchors, timeout=0.3, deadline=1, clock=lambda: NOW
    )
    t0 = time.monotonic()
    r = asyncio.run(resolver.lookup_tlsa("sensor7._device.example.test"))
    assert r.outcome is Outcome.INDETERMINATE
    assert r.reason in (Reason.NETWORK, Reason.TIMEOUT)
    assert time.monotonic() - t0 < 1.5


def test_transport_exception_never_escapes(world: World) -> None:
    class Broken:
        async def query(self, msg: Msg) -> Msg:
            raise RuntimeError("boom")

    r = asyncio.run(world.resolver(transport=Broken()).lookup_tlsa("host.example.test"))
    assert r.outcome is Outcome.INDETERMINATE


def test_invalid_name_is_indeterminate(world: World) -> None:
    r = asyncio.run(world.resolver().lookup_tlsa("a" * 64 + ".example.test"))
    assert r.outcome is Outcome.INDETERMINATE


def test_query_flags_validating_mode(world: World) -> None:
    seen: list[Msg] = []

    def spy(q: Msg, r: Msg) -> Msg:
        seen.append(q)
        return r

    asyncio.run(
        world.resolver(transport=MemoryTransport(world.server, tamper=spy)).lookup_tlsa(
            "host.example.test"
        )
    )
    assert seen
    for q in seen:
        assert q.flags & dns.flags.CD
        assert q.ednsflags & dns.flags.DO


def test_client_name_like_object(world: World) -> None:
    class ClientName:
        text = "sensor7._device.example.test"

        def to_dns(self) -> dns.name.Name:
            return dns.name.from_text(self.text)

    r = asyncio.run(world.resolver().lookup_tlsa(ClientName()))
    assert r.outcome is Outcome.SECURE


# -- trusted-resolver mode ------------------------------------------------------------------


def _ad(set_ad: bool, rcode: int | None = None):  # type: ignore[no-untyped-def]
    def tamper(q: Msg, r: Msg) -> Msg:
        assert not q.flags & dns.flags.CD
        if set_ad:
            r.flags |= dns.flags.AD
        else:
            r.flags &= ~dns.flags.AD
        if rcode is not None:
            r.set_rcode(rcode)
        return r

    return tamper


def _trusted(world: World, name: str, tamper: object) -> LookupResult:
    resolver = world.resolver(
        transport=MemoryTransport(world.server, tamper=tamper),  # type: ignore[arg-type]
        trust_ad=True,
    )
    return asyncio.run(resolver.lookup_tlsa(name))


def test_trusted_ad_secure(world: World) -> None:
    r = _trusted(world, "sensor7._device.example.test", _ad(True))
    assert r.outcome is Outcome.SECURE
    assert r.ttl == 300
    assert len(r.records) == 1


def test_trusted_ad_clear_is_not_secure(world: World) -> None:
    r = _trusted(world, "sensor7._device.example.test", _ad(False))
    assert r.outcome is Outcome.INSECURE
    assert r.reason == Reason.AD_CLEAR
    assert not r.records


def test_trusted_nxdomain_and_servfail(world: World) -> None:
    assert _trusted(world, "nope.example.test", _ad(True)).outcome is Outcome.SECURE_ABSENT
    r = _trusted(world, "x.example.test", _ad(True, dns.rcode.SERVFAIL))
    assert r.outcome is Outcome.INDETERMINATE


def test_trusted_mode_configuration() -> None:
    anchors = TrustAnchors.builtin_root()
    with pytest.raises(ConfigurationError):
        TLSAResolver(("192.0.2.53", 53), anchors=anchors, trust_ad=True)
    with pytest.raises(ConfigurationError):
        TLSAResolver(("192.0.2.53", 53), anchors=anchors, trust_ad=True, transport="tcp")
    with pytest.raises(ConfigurationError):
        TLSAResolver(("192.0.2.53", 853), transport="tls")  # no authentication
    with pytest.raises(ConfigurationError):
        TLSAResolver(("192.0.2.53", 53), transport="udp", server_name="dns.example")
    with pytest.raises(ConfigurationError):
        TLSAResolver(("192.0.2.53", 53), transport="quic")
    TLSAResolver(("127.0.0.1", 53), trust_ad=True)
    TLSAResolver(("::1", 53), trust_ad=True, transport="tcp")
    TLSAResolver(("192.0.2.53", 853), trust_ad=True, transport="tls", server_name="dns.example")
    TLSAResolver(("192.0.2.53", 853), trust_ad=True, transport="tls", spki_pins=["AAAA"])


def test_cached_throughput(world: World) -> None:
    resolver = world.resolver()

    async def go() -> float:
        await resolver.lookup_tlsa("sensor7._device.example.test")
        t0 = time.perf_counter()
        for _ in range(20_000):
            await resolver.lookup_tlsa("sensor7._device.example.test")
        return 20_000 / (time.perf_counter() - t0)

    rate = asyncio.run(go())
    assert rate > 20_000  # loose bound for slow CI machines; the bench measures the real figure


def test_generic_lookup_other_types(world: World) -> None:
    resolver = world.resolver()

    async def go() -> None:
        a = await resolver.lookup("host.example.test", "A")
        assert a.outcome is Outcome.SECURE
        assert a.records == (bytes([192, 0, 2, 1]),)
        t = await resolver.lookup_tlsa("host.example.test")
        assert t.outcome is Outcome.SECURE
        assert t.records != a.records  # separate cache entries per type
        assert resolver.cached("host.example.test", "A") == a
        k = await resolver.lookup("_device.example.test", "DNSKEY")
        assert k.outcome is Outcome.SECURE
        assert len(k.records) == 2
        nodata = await resolver.lookup("sensor7._device.example.test", "A")
        assert nodata.outcome is Outcome.SECURE_ABSENT
        bad = await resolver.lookup("host.example.test", "RRSIG")
        assert bad.outcome is Outcome.INDETERMINATE
        bad = await resolver.lookup("host.example.test", "NOSUCHTYPE")
        assert bad.outcome is Outcome.INDETERMINATE

    asyncio.run(go())
