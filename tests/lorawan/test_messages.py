"""The TS002 JoinReq/JoinAns schema (strict: types, hex lengths, required and unknown fields,
MessageType) and the LoRaWAN 1.0.x join frames."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dance.lorawan import MAX_MESSAGE, MessageError, encode, parse, validate
from dance.lorawan.frames import join_accept, join_request, join_request_mic_ok
from tests.lorawan.common import APP_KEY, JOIN_EUI, join_req


def _answer(**extra: Any) -> dict[str, Any]:
    return {
        "ProtocolVersion": "1.0",
        "SenderID": JOIN_EUI,
        "ReceiverID": "000013",
        "TransactionID": 1,
        "MessageType": "JoinAns",
        "Result": {"ResultCode": "Success"},
        **extra,
    }


def _reason(obj: Any) -> str:
    with pytest.raises(MessageError) as info:
        parse(json.dumps(obj).encode() if not isinstance(obj, bytes) else obj)
    return info.value.reason


def test_valid_messages_pass_unchanged() -> None:
    req = join_req()
    assert parse(encode(req)) == req
    ans = _answer(PHYPayload="20" + "00" * 16, NwkSKey={"KEKLabel": "", "AESKey": "ab" * 16})
    assert parse(encode(ans), expect="JoinAns") == ans
    assert validate({**req, "CFList": "00" * 16, "SenderNSID": "ns1"})["CFList"] == "00" * 16


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"null",
        b'"JoinReq"',
        b'{"a": 1, "a": 2}',
        b'{"TransactionID": Infinity}',
        b"\xc3\x28",
        b"[" * 100_000,
        b" " * (MAX_MESSAGE + 1),
    ],
)
def test_malformed_json(raw: bytes) -> None:
    assert _reason(raw) == "malformed-json"


@pytest.mark.parametrize("kind", [None, "", "joinreq", "PRStartReq", "JoinReq ", 1, ["JoinReq"]])
def test_unknown_message_type(kind: Any) -> None:
    req = join_req()
    if kind is None:
        del req["MessageType"]
    else:
        req["MessageType"] = kind
    assert _reason(req) == "unknown-message-type"


def test_expected_message_type() -> None:
    with pytest.raises(MessageError) as info:
        parse(encode(_answer()), expect="JoinReq")
    assert info.value.reason == "unknown-message-type"


@pytest.mark.parametrize("version", ["1.1", "1", 1.0, None])
def test_protocol_version(version: Any) -> None:
    assert _reason({**join_req(), "ProtocolVersion": version}) == "bad-protocol-version"


@pytest.mark.parametrize("field", sorted(join_req()))
def test_every_required_field(field: str) -> None:
    req = join_req()
    del req[field]
    expected = {"MessageType": "unknown-message-type", "ProtocolVersion": "bad-protocol-version"}
    assert _reason(req) == expected.get(field, "missing-field")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("TransactionID", True),
        ("TransactionID", 1.0),
        ("TransactionID", "1"),
        ("TransactionID", -1),
        ("TransactionID", 2**32),
        ("SenderID", "00001"),
        ("SenderID", "0000130"),
        ("SenderID", "00001g"),
        ("SenderID", 13),
        ("DevEUI", "0x04a30b001c0530"),
        ("DevEUI", " 004a30b001c0530"),
        ("DevAddr", "26011F2A00"),
        ("DLSettings", ""),
        ("RxDelay", 16),
        ("RxDelay", None),
        ("MACVersion", "2.0"),
        ("PHYPayload", "00"),
        ("CFList", "00" * 15),
    ],
)
def test_bad_field(field: str, value: Any) -> None:
    assert _reason({**join_req(), field: value}) == "bad-field"


@pytest.mark.parametrize(
    "extra",
    [
        {"Result": {"ResultCode": "Fine"}},
        {"Result": {"ResultCode": "Success", "Extra": 1}},
        {"Result": "Success"},
        {"NwkSKey": {"KEKLabel": "", "AESKey": "ab" * 24}},
        {"NwkSKey": {"KEKLabel": "kek1", "AESKey": "ab" * 16}},
        {"NwkSKey": {"AESKey": "ab" * 16}},
        {"PHYPayload": "20" + "00" * 17},
        {"Lifetime": False},
    ],
)
def test_bad_answer_fields(extra: dict[str, Any]) -> None:
    assert _reason(_answer(**extra)) == "bad-field"


def test_unknown_fields_refused() -> None:
    assert _reason({**join_req(), "DevEui": "00" * 8}) == "unknown-field"
    assert _reason(_answer(DevEUI="00" * 8)) == "unknown-field"  # a JoinReq field in a JoinAns


def test_join_request_frame_must_agree_with_the_fields() -> None:
    req = join_req()
    frame = bytearray.fromhex(req["PHYPayload"])
    frame[0] = 0x40
    assert _reason({**req, "PHYPayload": frame.hex()}) == "payload-mismatch"
    assert _reason({**req, "ReceiverID": "70b3d57ed0000002"}) == "payload-mismatch"
    assert _reason({**req, "DevEUI": "0004a30b001c0531"}) == "payload-mismatch"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_parse_never_raises_anything_else(raw: bytes) -> None:
    try:
        parse(raw)
    except MessageError as exc:
        assert exc.reason in {"malformed-json", "unknown-message-type"}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(sorted(join_req())),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=50)),
        max_size=6,
    )
)
def test_mutated_requests_refused_with_a_reason(changes: dict[str, Any]) -> None:
    req = {**join_req(), **changes}
    try:
        assert validate(req) is req
    except MessageError as exc:
        assert exc.reason in {
            "unknown-message-type",
            "bad-protocol-version",
            "bad-field",
            "payload-mismatch",
        }


def test_join_request_mic() -> None:
    frame = join_request(APP_KEY, bytes.fromhex(JOIN_EUI), bytes(8), b"\x01\x00")
    mac = CMAC(algorithms.AES128(APP_KEY))
    mac.update(frame[:19])
    assert frame[19:] == mac.finalize()[:4]
    assert frame[1:9] == bytes.fromhex(JOIN_EUI)[::-1]
    assert join_request_mic_ok(APP_KEY, frame)
    assert not join_request_mic_ok(bytes(16), frame)
    assert not join_request_mic_ok(APP_KEY, frame[:-1] + bytes([frame[-1] ^ 1]))


def test_join_accept_is_what_a_device_decrypts() -> None:
    frame = join_accept(APP_KEY, b"\x01\x02\x03", bytes.fromhex("000013"), bytes(4), b"\x00", 1)
    enc = Cipher(algorithms.AES128(APP_KEY), modes.ECB()).encryptor()
    plain = enc.update(frame[1:]) + enc.finalize()  # a device encrypts to decrypt (1.0.x)
    mac = CMAC(algorithms.AES128(APP_KEY))
    mac.update(b"\x20" + plain[:12])
    assert plain[12:] == mac.finalize()[:4]
    assert plain[:6] == b"\x01\x02\x03\x13\x00\x00"
