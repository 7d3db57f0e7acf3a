"""Mutual DANE between a network server and a join server (architecture Example 5): a JoinReq /
JoinAns exchange where each side authenticates the other only through DNSSEC-validated TLSA
records, and every refusal case: wrong keys, names outside the allow-list, insecure, bogus and
absent DNS answers, bad HTTP and bad messages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import h11
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dance.lorawan import JoinError, JoinServer
from dance.lorawan.frames import session_keys
from dance.testkit import Fault
from dance.tls import client_context
from tests.lorawan.common import (
    APP_KEY,
    DEV_EUI,
    JOIN_EUI,
    JS,
    JS_LEGACY,
    JS_NONE,
    JS_PKIX,
    NETID1,
    NS1,
    NS2,
    NS_LEGACY,
    UNKNOWN_DEV,
    Running,
    World,
    join_req,
    make_world,
    ns_join,
    with_join_server,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("lorawan"))


def test_join_request_accepted_both_ways_by_dane(world: World) -> None:
    req = join_req(dev_nonce=1)

    async def scenario(run: Running) -> Any:
        return await ns_join(world, run.port, req)

    result = with_join_server(world, scenario)
    ans = result.answer
    assert ans["MessageType"] == "JoinAns"
    assert ans["Result"] == {"ResultCode": "Success"}
    assert (ans["SenderID"], ans["ReceiverID"], ans["TransactionID"]) == (JOIN_EUI, NETID1, 4711)
    # the join server was authenticated by its DANE-EE record at _443._tcp.js.example.test
    assert result.server.identity == "js.example.test"
    assert result.server.client_name == "_443._tcp.js.example.test"  # the TLSA owner
    assert result.server.record == "3 1 1"
    # the JoinAccept is what the device can decrypt and check with its AppKey
    frame = bytes.fromhex(ans["PHYPayload"])
    assert frame[0] == 0x20 and len(frame) == 17
    enc = Cipher(algorithms.AES128(APP_KEY), modes.ECB()).encryptor()
    plain = enc.update(frame[1:]) + enc.finalize()
    app_nonce, net_id = plain[:3], plain[3:6][::-1]
    assert net_id == bytes.fromhex(NETID1)
    assert plain[6:10][::-1] == bytes.fromhex("26011F2A")
    nwk, app = session_keys(APP_KEY, app_nonce, net_id, (1).to_bytes(2, "little"))
    assert ans["NwkSKey"] == {"KEKLabel": "", "AESKey": nwk.hex().upper()}
    assert ans["AppSKey"] == {"KEKLabel": "", "AESKey": app.hex().upper()}


def test_join_server_sees_the_dane_identity_of_the_network_server(world: World) -> None:
    async def scenario(run: Running) -> Any:
        await ns_join(world, run.port, join_req(dev_nonce=2))
        return run.server.stats.counters, dict(run.js.counters)

    stats, counters = with_join_server(world, scenario)
    assert counters == {"requests": 1, "joinans_Success": 1}
    assert stats.get("accepted") == 1


# -- the network server refuses the join server ----------------------------------------------------


def test_join_server_key_not_the_one_in_dns_nothing_sent(world: World) -> None:
    async def scenario(run: Running) -> tuple[JoinError, dict[str, int]]:
        with pytest.raises(JoinError) as info:
            await ns_join(world, run.port, join_req(dev_nonce=3))
        await asyncio.sleep(0.3)
        return info.value, dict(run.js.counters)

    err, counters = with_join_server(world, scenario, files=world.js_impostor)
    assert err.reason == "server-key-mismatch"
    assert not err.sent
    assert "_443._tcp.js.example.test" in err.detail
    # the network server was accepted by the impostor (it presented a valid identity) but never
    # sent a byte of its request: no request head reached the join server
    assert "requests" not in counters
    assert not any(k.startswith("joinans_") for k in counters)


@pytest.mark.parametrize(
    ("server_name", "reason"),
    [
        (JS_LEGACY, "server-dns-insecure"),
        (JS_NONE, "server-dns-absent"),
        (JS_PKIX, "server-dns-unusable"),
    ],
)
def test_join_server_without_secure_records_refused(
    world: World, server_name: str, reason: str
) -> None:
    async def scenario(run: Running) -> tuple[JoinError, Any]:
        with pytest.raises(JoinError) as info:
            await ns_join(world, run.port, join_req(dev_nonce=4), server_name=server_name)
        return info.value, run.server.stats.counters

    err, stats = with_join_server(world, scenario)
    assert err.reason == reason
    assert not err.sent
    assert not stats.get("accepted")  # no connection was even attempted


def test_join_server_bogus_records_refused(world: World) -> None:
    async def scenario(run: Running) -> tuple[JoinError, Any]:
        fault = Fault("bad-signature", "_443._tcp.js.example.test")
        with world.zones.inject(fault), pytest.raises(JoinError) as info:
            await ns_join(world, run.port, join_req(dev_nonce=5))
        return info.value, run.server.stats.counters

    err, stats = with_join_server(world, scenario)
    assert err.reason == "server-dns-bogus"
    assert not err.sent
    assert not stats.get("accepted")


# -- the join server refuses the network server ----------------------------------------------------


def _refused_by_join_server(world: World, **kw: Any) -> tuple[JoinError, Any, dict[str, int]]:
    async def scenario(run: Running) -> tuple[JoinError, Any, dict[str, int]]:
        with pytest.raises(JoinError) as info:
            await ns_join(world, run.port, join_req(dev_nonce=6), **kw)
        await asyncio.sleep(0.2)
        return info.value, dict(run.server.stats.counters), dict(run.js.counters)

    return with_join_server(world, scenario)


def test_network_server_wrong_key_refused(world: World) -> None:
    err, stats, counters = _refused_by_join_server(world, files=world.ns1_impostor)
    assert err.reason == "refused-by-server"
    assert stats.get("rejected_no-match") == 1, stats
    assert counters == {}  # the handler never ran: no JoinAns, nothing read


def test_network_server_outside_allow_list_refused(world: World) -> None:
    # NS2's record is published and matches: only the join server's allow-list refuses it
    err, stats, counters = _refused_by_join_server(world, files=world.ns2, name=NS2)
    assert err.reason == "refused-by-server"
    assert stats.get("rejected_not-allowed") == 1, stats
    assert counters == {}


def test_network_server_bogus_records_refused(world: World) -> None:
    with world.zones.inject(Fault("bad-signature", NS1)):
        err, stats, counters = _refused_by_join_server(world)
    assert err.reason == "refused-by-server"
    assert [k for k in stats if k.startswith("rejected_")] == ["rejected_dns-bogus"], stats
    assert counters == {}


def test_network_server_insecure_records_refused(world: World) -> None:
    err, stats, counters = _refused_by_join_server(world, files=world.ns_legacy, name=NS_LEGACY)
    assert err.reason == "refused-by-server"
    assert [k for k in stats if k.startswith("rejected_")] == ["rejected_dns-insecure"], stats
    assert counters == {}


# -- bad requests from an authenticated network server ---------------------------------------------


async def _raw_post(
    world: World, port: int, body: bytes, *, wire: bytes | None = None, **headers: str
) -> tuple[int, dict[str, Any]]:
    """POST ``body`` as NS1 (the test does not check the server: the refusal is the point)."""
    ctx = client_context(name=NS1, cert=world.ns1.cert, key=world.ns1.key, verify_server=False)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=JS)
    conn = h11.Connection(h11.CLIENT)
    fields = {"Host": JS, "Content-Type": "application/json", "Content-Length": str(len(body))}
    fields.update({k.replace("_", "-"): v for k, v in headers.items()})
    if wire is None:
        wire = conn.send(h11.Request(method="POST", target="/", headers=list(fields.items())))
        wire = (wire or b"") + (conn.send(h11.Data(data=body)) or b"")
    writer.write(wire)
    await writer.drain()
    data = b""
    while chunk := await reader.read(65536):
        data += chunk
    writer.close()
    reply = h11.Connection(h11.CLIENT)
    reply.send(h11.Request(method="POST", target="/", headers=[("Host", JS)]))
    reply.receive_data(data)
    reply.receive_data(b"")
    response = reply.next_event()
    assert isinstance(response, h11.Response)
    payload = reply.next_event()
    assert isinstance(payload, h11.Data)
    return response.status_code, json.loads(payload.data)


def _bad(world: World, body: bytes, **kw: Any) -> tuple[int, dict[str, Any], dict[str, int]]:
    async def scenario(run: Running) -> tuple[int, dict[str, Any], dict[str, int]]:
        status, answer = await _raw_post(world, run.port, body, **kw)
        return status, answer, dict(run.js.counters)

    return with_join_server(world, scenario)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "malformed-json"),
        (b'{"MessageType": "JoinReq", "MessageType": "JoinReq"}', "malformed-json"),
        (b"[]", "malformed-json"),
        (b"\xff\xfe", "malformed-json"),
        (b'{"TransactionID": NaN}', "malformed-json"),
        (json.dumps({**join_req(), "MessageType": "PRStartReq"}).encode(), "unknown-message-type"),
        (json.dumps({**join_req(), "MessageType": "JoinAns"}).encode(), "unknown-message-type"),
        (json.dumps({**join_req(), "TransactionID": True}).encode(), "bad-field"),
        (json.dumps({**join_req(), "DevEUI": "0004a30b001c05"}).encode(), "bad-field"),
        (json.dumps({**join_req(), "Extra": 1}).encode(), "unknown-field"),
        (json.dumps({k: v for k, v in join_req().items() if k != "DevAddr"}).encode(),
         "missing-field"),
        (json.dumps({**join_req(), "DevEUI": UNKNOWN_DEV}).encode(), "payload-mismatch"),
    ],
)  # fmt: skip
def test_bad_message_refused_without_join_answer(world: World, body: bytes, reason: str) -> None:
    status, answer, counters = _bad(world, body)
    assert (status, answer) == (400, {"error": reason})
    assert counters.get(f"refused_{reason}") == 1
    assert not any(k.startswith("joinans_") for k in counters)


def test_wrong_content_type_refused(world: World) -> None:
    body = json.dumps(join_req()).encode()
    status, answer, counters = _bad(world, body, Content_Type="text/plain")
    assert (status, answer) == (415, {"error": "unsupported-media-type"})
    assert not _joinans_of(counters)


def test_bare_lf_request_refused_by_the_strict_reader(world: World) -> None:
    wire = b"POST / HTTP/1.1\nHost: js.example.test\nContent-Length: 2\n\n{}"
    status, answer, counters = _bad(world, b"", wire=wire)
    assert (status, answer) == (400, {"error": "bare-lf"})
    assert not _joinans_of(counters)


def test_chunked_body_refused(world: World) -> None:
    wire = (
        b"POST / HTTP/1.1\r\nHost: js.example.test\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    )
    status, answer, _ = _bad(world, b"", wire=wire)
    assert (status, answer) == (411, {"error": "length-required"})


def _joinans_of(counters: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counters.items() if k.startswith("joinans_")}


# -- TS002 refusals inside a JoinAns -----------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (join_req(dev_nonce=7, sender="000042"), "UnknownSender"),  # another NetID than NS1's
        (join_req(dev_nonce=7, dev_eui=UNKNOWN_DEV), "UnknownDevEUI"),
        (join_req(dev_nonce=7, app_key=bytes(16)), "MICFailed"),
    ],
)
def test_join_answer_refusals(world: World, message: dict[str, Any], code: str) -> None:
    async def scenario(run: Running) -> Any:
        return (await ns_join(world, run.port, message)).answer

    ans = with_join_server(world, scenario)
    assert ans["Result"] == {"ResultCode": code}
    assert "PHYPayload" not in ans and "NwkSKey" not in ans


def test_replayed_join_request_refused(world: World) -> None:
    async def scenario(run: Running) -> tuple[str, str]:
        first = await ns_join(world, run.port, join_req(dev_nonce=8))
        again = await ns_join(world, run.port, join_req(dev_nonce=8, transaction_id=4712))
        return first.answer["Result"]["ResultCode"], again.answer["Result"]["ResultCode"]

    assert with_join_server(world, scenario) == ("Success", "JoinReqFailed")


def test_network_server_refuses_a_wrong_answer(world: World) -> None:
    class Lying(JoinServer):
        def answer(self, head: Any, body: bytes, identity: Any) -> tuple[int, dict[str, Any]]:
            status, ans = super().answer(head, body, identity)
            return status, {**ans, "TransactionID": ans["TransactionID"] + 1}

    lying = Lying(join_eui=JOIN_EUI, devices={DEV_EUI: APP_KEY}, network_servers={NS1: NETID1})

    async def scenario(run: Running) -> JoinError:
        with pytest.raises(JoinError) as info:
            await ns_join(world, run.port, join_req(dev_nonce=9))
        return info.value

    err = with_join_server(world, scenario, js=lying)
    assert err.reason == "bad-answer" and err.sent


def test_network_server_sends_only_valid_join_requests(world: World) -> None:
    async def scenario(run: Running) -> tuple[JoinError, Any]:
        with pytest.raises(JoinError) as info:
            await ns_join(world, run.port, {**join_req(), "RxDelay": 16})
        return info.value, run.server.stats.counters

    err, stats = with_join_server(world, scenario)
    assert err.reason == "bad-request-message" and not err.sent
    assert not stats.get("accepted")


@pytest.mark.parametrize(
    ("wire", "status", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: js.example.test\r\n\r\n", 405, "method-not-allowed"),
        (
            b"POST /join HTTP/1.1\r\nHost: js.example.test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}",
            404,
            "not-found",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: js.example.test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 16385\r\n\r\n",
            413,
            "body-too-large",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: js.example.test\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n",
            413,
            "head-too-large",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: js.example.test\r\nContent-Length: 2\r\n"
            b"Content-Length: 2\r\n\r\n{}",
            400,
            "several-content-length",
        ),
    ],
)
def test_bad_http_refused(world: World, wire: bytes, status: int, reason: str) -> None:
    got_status, answer, counters = _bad(world, b"", wire=wire)
    assert (got_status, answer) == (status, {"error": reason})
    assert counters.get(f"refused_{reason}") == 1
    assert not _joinans_of(counters)


def test_slow_request_times_out_and_a_vanished_client_is_released(world: World) -> None:
    js = JoinServer(
        join_eui=JOIN_EUI,
        devices={DEV_EUI: APP_KEY},
        network_servers={NS1: NETID1},
        request_timeout=0.5,
    )

    async def scenario(run: Running) -> tuple[bytes, dict[str, int], int]:
        ctx = client_context(name=NS1, cert=world.ns1.cert, key=world.ns1.key, verify_server=False)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", run.port, ssl=ctx, server_hostname=JS
        )
        writer.write(b"POST / HTTP/1.1\r\nHost: js")  # and nothing more
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        # a client that leaves in the middle of its request
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", run.port, ssl=ctx, server_hostname=JS
        )
        writer.write(b"POST / HTTP/1.1\r\n")
        await writer.drain()
        writer.transport.abort()
        for _ in range(100):
            if run.js.counters.get("refused_incomplete") or run.js.counters.get("client-gone"):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        return reply, dict(run.js.counters), len(run.server._tasks)

    reply, counters, tasks = with_join_server(world, scenario, js=js)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert b'{"error":"request-timeout"}' in reply
    assert counters.get("refused_request-timeout") == 1
    # the vanished client: its request counted as incomplete (or its connection as gone)
    assert "refused_incomplete" in counters or "client-gone" in counters
    assert tasks == 0  # nothing kept for either connection
    assert not _joinans_of(counters)


@pytest.mark.parametrize(
    ("servers", "devices", "eui"),
    [
        ({".example.test": NETID1}, {DEV_EUI: APP_KEY}, JOIN_EUI),
        ({"*.example.test": NETID1}, {DEV_EUI: APP_KEY}, JOIN_EUI),
        ({"bad name.example.test": NETID1}, {DEV_EUI: APP_KEY}, JOIN_EUI),
        ({NS1: "0013"}, {DEV_EUI: APP_KEY}, JOIN_EUI),
        ({NS1: NETID1}, {DEV_EUI: bytes(15)}, JOIN_EUI),
        ({NS1: NETID1}, {"0004a30b001c05": APP_KEY}, JOIN_EUI),
        ({NS1: NETID1}, {DEV_EUI: APP_KEY}, "70b3d57ed00000zz"),
    ],
)
def test_join_server_configuration_checked(
    servers: dict[str, str], devices: dict[str, bytes], eui: str
) -> None:
    with pytest.raises(ValueError):
        JoinServer(join_eui=eui, devices=devices, network_servers=servers)


def test_network_server_names_are_canonical_exact_names() -> None:
    js = JoinServer(
        join_eui=JOIN_EUI, devices={}, network_servers={"NS1.NetID-000013.Example.Test": NETID1}
    )
    assert js.allow_list() == [NS1]
