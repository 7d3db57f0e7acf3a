"""RadSec through the DANCE front to a real FreeRADIUS: accepted identities reach the server's
policy, refused ones never reach it, and bad packets are refused by reason."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from dance.radius import Attribute, RadiusError, RadsecClient, access_request
from dance.radius.packet import (
    ACCESS_ACCEPT,
    ACCESS_REJECT,
    ACCOUNTING_REQUEST,
    ACCOUNTING_RESPONSE,
    MESSAGE_AUTHENTICATOR,
    RADSEC_SECRET,
    STATUS_SERVER,
    encode,
    sign_request,
)
from dance.tls import connect
from tests.radius.conftest import DEVICE, OTHER, FreeRadius, Front, wait_for
from tests.tls.common import Files, World

pytestmark = pytest.mark.integration
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


async def open_client(port: int, world: World, files: Files, name: str | None) -> RadsecClient:
    reader, writer = await connect(
        "127.0.0.1", port, name=name, cert=files.cert, key=files.key, cafile=world.ca,
        server_hostname="localhost", timeout=10.0,
    )  # fmt: skip
    return RadsecClient(reader, writer)


async def session(
    front: Front,
    world: World,
    files: Files,
    name: str | None,
    body: Callable[[RadsecClient], Awaitable[T]],
) -> T:
    client = await open_client(front.port, world, files, name)
    try:
        return await body(client)
    finally:
        await client.close()


def reply_messages(packet: Any) -> list[str]:
    return [v.decode() for v in packet.get(18)]


def test_accept_with_identity_seen_by_freeradius(
    front: Front, world: World, freeradius: FreeRadius
) -> None:
    async def body(c: RadsecClient) -> Any:
        ok = await c.exchange(access_request(1, "bob", "hunter2"))
        bad = await c.exchange(access_request(2, "bob", "wrong"))
        return ok, bad

    before = len(freeradius.packets())
    ok, bad = run(session(front, world, world.device, DEVICE, body))
    assert ok.code == ACCESS_ACCEPT
    assert reply_messages(ok) == [f"client {DEVICE}"]
    assert bad.code == ACCESS_REJECT  # the password was re-hidden with the loopback secret
    seen = freeradius.packets()[before:]
    assert [p["User-Name"] for p in seen] == [['"bob"'], ['"bob"']]
    assert [p["DANCE-Client-Name"] for p in seen] == [[f'"{DEVICE}"']] * 2


def test_long_password_and_accounting_and_status(
    front: Front, world: World, freeradius: FreeRadius
) -> None:
    async def body(c: RadsecClient) -> Any:
        long = await c.exchange(access_request(7, "alice", "correct horse battery"))
        acct = sign_request(
            ACCOUNTING_REQUEST, 8,
            [Attribute(1, b"alice"), Attribute(40, (1).to_bytes(4, "big")), Attribute(44, b"s-1")],
            RADSEC_SECRET,
        )  # fmt: skip
        acct_reply = await c.exchange(acct)
        status = sign_request(
            STATUS_SERVER, 9, [Attribute(MESSAGE_AUTHENTICATOR, bytes(16))], RADSEC_SECRET,
            os.urandom(16),
        )  # fmt: skip
        status_reply = await c.exchange(status)
        return long, acct_reply, status_reply

    long, acct, status = run(session(front, world, world.device, DEVICE, body))
    assert long.code == ACCESS_ACCEPT
    assert acct.code == ACCOUNTING_RESPONSE
    assert status.code == ACCESS_ACCEPT
    assert any(p.get("Acct-Session-Id") == ['"s-1"'] for p in freeradius.packets())


def test_san_fallback_for_stock_clients(front: Front, world: World) -> None:
    async def body(c: RadsecClient) -> Any:
        return await c.exchange(access_request(3, "bob", "hunter2"))

    reply = run(session(front, world, world.san_device, None, body))
    assert reply.code == ACCESS_ACCEPT and reply_messages(reply) == [f"client {DEVICE}"]


async def refused_at_tls(port: int, world: World, files: Files, name: str | None) -> bool:
    """True when the front refuses the client: the handshake fails or the connection is closed
    before any answer."""
    try:
        client = await open_client(port, world, files, name)
    except (ssl.SSLError, OSError):
        return True
    try:
        await client.send_raw(access_request(1, "bob", "hunter2"))
        return await client.read_packet(10.0) is None
    except (ssl.SSLError, OSError):
        return True
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("label", "files", "name", "reason"),
    [
        ("wrong key", "impostor", DEVICE, "rejected_no-match"),
        ("outside the allow-list", "other", OTHER, "rejected_not-allowed"),
    ],
)
def test_refused_clients_never_reach_freeradius(
    front: Front,
    world: World,
    freeradius: FreeRadius,
    label: str,
    files: str,
    name: str,
    reason: str,
) -> None:
    before = len(freeradius.packets())
    stat_before = front.server.stats.get(reason)
    assert run(refused_at_tls(front.port, world, getattr(world, files), name)), label
    assert front.server.stats.get(reason) == stat_before + 1, front.server.stats.snapshot()
    assert len(freeradius.packets()) == before


def test_bogus_dns_refused(front: Front, world: World, freeradius: FreeRadius) -> None:
    from dance.zone.faults import Fault

    before = len(freeradius.packets())
    front.auth.flush()
    with world.zones.inject(Fault("bad-signature", DEVICE)):
        assert run(refused_at_tls(front.port, world, world.device, DEVICE))
    front.auth.flush()
    assert front.server.stats.get("rejected_dns-bogus") >= 1
    assert len(freeradius.packets()) == before


def _spoofed() -> bytes:
    vsa = Attribute(26, (32473).to_bytes(4, "big") + bytes((1, 2 + 9)) + b"boss.test")
    return access_request(4, "bob", "hunter2", extra=[vsa])


def _bad_ma() -> bytes:
    raw = bytearray(access_request(5, "bob", "hunter2"))
    raw[-1] ^= 1
    return bytes(raw)


def _header(code: int, ident: int, length: int, body: bytes = b"") -> bytes:
    return bytes((code, ident)) + length.to_bytes(2, "big") + os.urandom(16) + body


BAD: list[tuple[str, Callable[[], bytes], str]] = [
    ("spoofed identity", _spoofed, "spoofed-identity"),
    ("bad Message-Authenticator", _bad_ma, "bad-message-authenticator"),
    ("Length below 20", lambda: _header(1, 1, 19) + b"x", "bad-length"),
    ("Length above 4096", lambda: _header(1, 1, 5000), "bad-length"),
    (
        "attribute past the end",
        lambda: _header(1, 1, 26, bytes((1, 8)) + b"bob\0"),
        "attribute-overrun",
    ),
    (
        "oversized attribute",
        lambda: _header(1, 1, 24, bytes((1, 255)) + b"ab"),
        "attribute-overrun",
    ),
    ("empty attribute", lambda: _header(1, 1, 22, bytes((1, 2))), "attribute-length"),
    (
        "bad accounting authenticator",
        lambda: encode(ACCOUNTING_REQUEST, 2, os.urandom(16), [Attribute(44, b"x")]),
        "bad-request-authenticator",
    ),
    (
        "a response from a client",
        lambda: sign_request(2, 3, [], RADSEC_SECRET, os.urandom(16)),
        "unexpected-code",
    ),
    (
        "EAP without Message-Authenticator",
        lambda: sign_request(
            1, 3, [Attribute(79, b"\x02\x01\x00\x05\x01")], RADSEC_SECRET, os.urandom(16)
        ),
        "missing-message-authenticator",
    ),
    ("stream ends inside a packet", lambda: _header(1, 1, 40)[:30], "truncated"),
]


@pytest.mark.parametrize(("label", "make", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_packets_refused_and_counted(
    front: Front,
    world: World,
    freeradius: FreeRadius,
    label: str,
    make: Callable[[], bytes],
    reason: str,
) -> None:
    before = len(freeradius.packets())
    counted = front.proxy.stats.refused.get(reason, 0)

    async def body(c: RadsecClient) -> Any:
        if reason == "truncated":  # once the front serves the connection (DNS answered)
            assert (await c.exchange(access_request(8, "bob", "hunter2"))).code == ACCESS_ACCEPT
            await c.send_raw(make())
            await c.close()  # close_notify in the middle of a packet
            return None
        await c.send_raw(make())
        return await c.read_packet(10.0)

    assert run(session(front, world, world.device, DEVICE, body)) is None, label  # closed
    assert wait_for(lambda: front.proxy.stats.refused.get(reason, 0) == counted + 1), (
        front.proxy.stats.snapshot()
    )
    assert len(freeradius.packets()) == before + (reason == "truncated")  # its good request
    # the front keeps serving
    ok = run(session(front, world, world.device, DEVICE,
                     lambda c: c.exchange(access_request(9, "bob", "hunter2"))))  # fmt: skip
    assert ok.code == ACCESS_ACCEPT


def test_pipelined_requests_all_answered(front: Front, world: World) -> None:
    async def body(c: RadsecClient) -> Any:
        sent = [access_request(i, "bob", "hunter2") for i in range(40)]
        await c.send_raw(b"".join(sent))
        got = []
        for _ in sent:
            packet = await c.read_packet(20.0)
            assert packet is not None
            got.append(packet.identifier)
        return got

    got = run(session(front, world, world.device, DEVICE, body))
    assert sorted(got) == list(range(40))


def test_client_rejects_forged_response() -> None:
    from dance.radius.packet import check_response, parse_packet, sign_response

    request = parse_packet(access_request(1, "bob", "pw"))
    good = parse_packet(sign_response(2, 1, request.authenticator, [], RADSEC_SECRET))
    check_response(good, request, RADSEC_SECRET)
    forged = parse_packet(sign_response(2, 1, request.authenticator, [], b"other"))
    with pytest.raises(RadiusError, match="bad-response-authenticator"):
        check_response(forged, request, RADSEC_SECRET)


def test_silent_server_timeouts_and_in_flight_limit(world: World) -> None:
    """A server that never answers: at most max_in_flight requests wait, each is forgotten after
    backend_timeout (counted), the client is read again, and a client that leaves frees all."""
    import socket

    from dance.radius import RadsecProxyConfig
    from tests.radius.conftest import run_front

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    try:
        config = RadsecProxyConfig(
            sink.getsockname(), backend_secret=b"s", max_in_flight=2, backend_timeout=1.0
        )
        fronts = run_front(world, config, [DEVICE])
        f = next(fronts)
        try:

            async def body(c: RadsecClient) -> None:
                await c.send_raw(b"".join(access_request(i, "bob", "pw") for i in range(3)))
                assert await asyncio.to_thread(
                    wait_for, lambda: f.proxy.stats.backend_timeouts == 3, 30
                ), f.proxy.stats.snapshot()
                await c.send_raw(access_request(7, "bob", "pw"))  # still served

            run(session(f, world, world.device, DEVICE, body))
            # (in_flight is 0 too before the proxy has read the last request: wait for both)
            assert wait_for(lambda: f.proxy.stats.requests == 4 and f.proxy.stats.in_flight == 0), (
                f.proxy.stats.snapshot()
            )
            assert f.proxy.stats.requests == 4 and f.proxy.stats.responses == 0
            sink.settimeout(5)
            got = {parse(sink.recvfrom(4096)[0]) for _ in range(4)}
            assert got == {0, 1, 2, 7}  # each forwarded once
        finally:
            fronts.close()
    finally:
        sink.close()


def parse(raw: bytes) -> int:
    from dance.radius import parse_packet

    return parse_packet(raw).identifier
