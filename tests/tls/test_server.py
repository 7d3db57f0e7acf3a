"""End to end: the project's client against its server, over the testkit's signed DNS."""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dance.testkit import Fault
from dance.tls import ProbeResult, probe
from tests.tls.common import (
    DEVICE,
    OTHER,
    OUTSIDE,
    UNPUBLISHED,
    Served,
    World,
    ctx_for,
    make_world,
    run_with_server,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("tls"))


async def try_client(
    s: Served, world: World, files: Any, name: str | None, **kw: Any
) -> ProbeResult:
    ctx = ctx_for(world, files, name, **kw)
    return await probe(
        "127.0.0.1", s.server.port, context=ctx, server_hostname="localhost", send=b"ping\n"
    )


async def good_still_served(s: Served, world: World) -> None:
    r = await try_client(s, world, world.device, DEVICE)
    assert r.accepted, r
    assert r.reply == f"hello {DEVICE}\n".encode()


def test_accepted_then_decided_inside_the_handshake(world: World) -> None:
    async def scenario(s: Served) -> None:
        first = await try_client(s, world, world.device, DEVICE)
        assert first.accepted and first.reply == f"hello {DEVICE}\n".encode()
        assert first.negotiated["tls_version"] == "TLSv1.3"
        assert first.negotiated["clientid_requested"] is True
        assert first.negotiated["client_name_sent"] == DEVICE
        second = await try_client(s, world, world.device, DEVICE)
        assert second.accepted
        stats = s.server.stats.snapshot()
        assert stats["accepted_after_lookup"] == 1  # cold: full lookup after the handshake
        assert stats["accepted_in_handshake"] == 1  # warm: decided in the verify callback
        assert [i.identity for i in s.seen] == [DEVICE, DEVICE]
        assert s.seen[0].record == "3 1 1"
        assert s.received == [b"ping\n", b"ping\n"]

    run_with_server(world, scenario)


@pytest.mark.parametrize("cached", [False, True])
def test_refusals_counted_and_server_keeps_serving(world: World, cached: bool) -> None:
    async def scenario(s: Served) -> None:
        if cached:  # warm the TLSA cache so refusals happen inside the handshake
            await good_still_served(s, world)
            await try_client(s, world, world.other, OTHER)
        cases = [
            ("no-match", world.impostor, DEVICE),  # wrong key for the name
            ("no-match", world.device, OTHER),  # wrong name for the key
            ("dns-secure-absent", world.device, UNPUBLISHED),
            ("extension-absent", world.device, None),
            ("no-certificate", None, None),
        ]
        for reason, files, name in cases:
            r = await try_client(s, world, files, name)
            assert not r.accepted, (reason, r)
            assert r.reply == b""
            assert s.server.stats.get(f"rejected_{reason}") >= 1, (reason, s.server.stats)
        await good_still_served(s, world)
        assert all(i.identity in (DEVICE, OTHER) for i in s.seen)
        assert b"ping\n" in s.received or not s.received
        # the handler never saw a refused client
        assert len([i for i in s.seen if i.identity == DEVICE]) == (2 if cached else 1)

    run_with_server(world, scenario)


def test_outside_allow_list_makes_no_dns_query(world: World) -> None:
    async def scenario(s: Served) -> None:
        before = s.res.stats()["queries"]
        r = await try_client(s, world, world.device, OUTSIDE)
        assert not r.accepted
        assert s.res.stats()["queries"] == before
        assert s.server.stats.get("rejected_not-allowed") == 1
        await good_still_served(s, world)

    run_with_server(world, scenario)


@pytest.mark.parametrize(
    ("label", "raw", "reason"),
    [
        ("zero-length", b"\x00", "empty-client-name"),
        ("length mismatch (truncated)", b"\x05a", "malformed-extension"),
        ("trailing bytes", b"\x03abc\x00", "malformed-extension"),
        ("empty extension_data", b"", "malformed-extension"),
        ("non-ascii", b"\x05\xc3\xbcber", "malformed-input"),
        ("u-label", bytes([22]) + "bücher._device.example.test".encode()[:22], "malformed-input"),
        (
            "wire form over 255",
            bytes([254]) + b".".join([b"a" * 63] * 3 + [b"a" * 62]),
            "malformed-input",
        ),
        ("trailing dot", bytes([29]) + (DEVICE + ".").encode(), "malformed-input"),
        ("wildcard", bytes([22]) + b"*._device.example.test", "malformed-input"),
    ],
)
def test_malformed_extensions_refused(world: World, label: str, raw: bytes, reason: str) -> None:
    async def scenario(s: Served) -> None:
        before = s.res.stats()["queries"]
        r = await try_client(s, world, world.device, DEVICE, raw_extension=raw)
        assert not r.accepted, label
        assert s.server.stats.get(f"rejected_{reason}") == 1, (label, s.server.stats)
        assert s.res.stats()["queries"] == before  # refused before any DNS query
        await good_still_served(s, world)

    run_with_server(world, scenario)


def test_bogus_dnssec_refused(world: World) -> None:
    async def scenario(s: Served) -> None:
        with world.zones.inject(Fault("bad-signature", DEVICE)):
            r = await try_client(s, world, world.device, DEVICE)
        assert not r.accepted
        assert s.server.stats.get("rejected_dns-bogus") == 1
        s.auth.flush()  # the bogus answer is cached for a while: forget it
        await good_still_served(s, world)

    run_with_server(world, scenario)


def test_revoked_record_refused(world: World) -> None:
    async def scenario(s: Served) -> None:
        await good_still_served(s, world)
        world.devices.remove("sensor7", "TLSA")
        world.resign()
        try:
            s.auth.flush()  # as if the TTL had passed
            r = await try_client(s, world, world.device, DEVICE)
            assert not r.accepted
            assert s.server.stats.get("rejected_dns-secure-absent") == 1
        finally:
            world.devices.add("sensor7", "TLSA", world.records[DEVICE])
            world.resign()
            s.auth.flush()
        await good_still_served(s, world)

    run_with_server(world, scenario)


def test_no_resumption(world: World) -> None:
    async def scenario(s: Served) -> None:
        ctx = ctx_for(world, world.device, DEVICE)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", s.server.port, ssl=ctx, server_hostname="localhost"
        )
        assert await reader.readline()
        obj = writer.get_extra_info("ssl_object")
        session = obj.session
        writer.write(b"x")
        writer.close()
        assert session is None or not session.has_ticket  # the server issues no tickets
        kwargs: dict[str, Any] = {}
        if session is not None:
            kwargs["ssl"] = ctx
        reader2, writer2 = await asyncio.open_connection(
            "127.0.0.1", s.server.port, ssl=ctx, server_hostname="localhost"
        )
        assert await reader2.readline()
        assert not writer2.get_extra_info("ssl_object").session_reused
        writer2.write(b"x")
        writer2.close()
        assert s.server.context.num_tickets == 0
        assert s.server.stats.get("accepted") == 2  # both authenticated in full

    run_with_server(world, scenario)


def test_truncated_handshake_and_tls12_refused(world: World) -> None:
    async def scenario(s: Served) -> None:
        loop = asyncio.get_running_loop()

        def half_hello() -> None:
            with socket.create_connection(("127.0.0.1", s.server.port)) as sock:
                sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20)

        await loop.run_in_executor(None, half_hello)
        for _ in range(50):  # counted when the connection object is released
            gc.collect()
            if s.server.stats.get("rejected_truncated"):
                break
            await asyncio.sleep(0.02)
        assert s.server.stats.get("rejected_truncated") == 1

        ctx12 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx12.load_verify_locations(world.ca)
        ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx12.load_cert_chain(world.device.cert, world.device.key)
        r = await probe("127.0.0.1", s.server.port, context=ctx12, server_hostname="localhost")
        assert not r.accepted
        assert s.server.stats.get("rejected_protocol-version") == 1
        await good_still_served(s, world)

    run_with_server(world, scenario)


def test_slow_lookup_bounded(world: World) -> None:
    """Cold lookups are bounded: above max_pending, clients are refused as overloaded."""

    async def scenario(s: Served) -> None:
        with world.zones.inject(Fault("slow", DEVICE, delay=1.0)):
            results = await asyncio.gather(
                *(try_client(s, world, world.device, DEVICE) for _ in range(3))
            )
        accepted = [r for r in results if r.accepted]
        assert len(accepted) >= 1
        assert s.server.stats.get("rejected_overloaded") >= 1
        assert s.server.pending == 0

    run_with_server(world, scenario, max_pending=1)


def test_lookup_timeout_delivers_nothing(world: World) -> None:
    async def scenario(s: Served) -> None:
        with world.zones.inject(Fault("silent", DEVICE)):
            r = await try_client(s, world, world.device, DEVICE)
        assert not r.accepted
        assert s.seen == [] and s.received == []
        assert s.server.stats.get("rejected") == 1

    run_with_server(world, scenario, lookup_timeout=0.5)


def test_san_fallback(world: World) -> None:
    async def scenario(s: Served) -> None:
        r = await try_client(s, world, world.san_device, None)  # no extension, SAN = DEVICE
        assert r.accepted, r
        assert s.seen[-1].identity == DEVICE
        r = await try_client(s, world, world.two_sans, None)  # two SANs: ambiguous
        assert not r.accepted
        assert s.server.stats.get("rejected_no-single-san") == 1
        # the extension, when present, still wins over the SAN
        r = await try_client(s, world, world.device, OTHER)
        assert not r.accepted

    run_with_server(world, scenario, san_fallback=True)


def test_codepoint_must_match(world: World) -> None:
    async def scenario(s: Served) -> None:
        r = await try_client(s, world, world.device, DEVICE, codepoint=0xFFDD)
        assert not r.accepted
        assert r.negotiated.get("clientid_requested") is False
        assert s.server.stats.get("rejected_extension-absent") == 1
        r = await try_client(s, world, world.device, DEVICE, codepoint=0xFF42)
        assert r.accepted

    run_with_server(world, scenario, codepoint=0xFF42)


def test_bad_codepoints_rejected(world: World, tmp_path: Path) -> None:
    for bad in (0xFF01, 0, 0x10000, -1):
        with pytest.raises(ValueError):
            ctx_for(world, world.device, DEVICE, codepoint=bad)
    with pytest.raises(ValueError, match="refused"):
        ctx_for(world, world.device, DEVICE, codepoint=0x000D)  # signature_algorithms


def test_exception_in_decision_fails_closed(world: World) -> None:
    """A Python error inside the verify callback refuses the client; nothing reaches C."""
    import asyncio as _asyncio

    from dance.tls import bridge as br

    async def main() -> None:
        stats = br.TLSStats()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.num_tickets = 0
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(world.server.cert, world.server.key)
        calls: list[int] = []

        def decide(state: br.ConnectionState) -> bool:
            calls.append(1)
            raise RuntimeError("boom")

        br.configure_server(ctx, codepoint=br.DEFAULT_CODEPOINT, decide=decide, stats=stats)
        served: list[bytes] = []

        async def on(reader: _asyncio.StreamReader, writer: _asyncio.StreamWriter) -> None:
            served.append(b"x")
            writer.write(b"data\n")
            writer.close()

        server = await _asyncio.start_server(on, "127.0.0.1", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        async with server:
            for _ in range(2):
                r = await probe(
                    "127.0.0.1",
                    port,
                    context=ctx_for(world, world.device, DEVICE),
                    server_hostname="localhost",
                )
                assert not r.accepted
        assert len(calls) == 2 and served == []

    _asyncio.run(main())
