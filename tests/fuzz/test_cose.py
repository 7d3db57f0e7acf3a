"""Fuzz COSE objects as a whole (tests/message/test_fuzz.py covers header value types): byte
mutations of real COSE_Sign1 (tagged, untagged, with the certificate chain) and COSE_Encrypt,
deep nesting and huge lengths inside the headers, duplicate labels in two encodings.

Properties: only MessageError, never ``internal``; a mutated COSE_Sign1 that still parses and
verifies with the signer's key carries the same protected header bytes, payload and signature
(its outer framing may be spelled differently: CBOR allows non-preferred heads, and nothing
signed depends on them), the same signer and alg; a mutated COSE_Encrypt either fails or
decrypts to the same plaintext."""

from __future__ import annotations

import datetime
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given
from hypothesis import strategies as st

from dance import certs
from dance.message import (
    MessageError,
    MessageReason,
    decrypt_cose,
    encrypt_cose,
    parse_message,
    sign_cose,
)
from dance.message.cbor import MAX_DEPTH
from tests.fuzz.common import fuzz_settings, hit, time_limit

DOOR = "cose"
NAME = "sensor7._device.example.test"
EC = ec.generate_private_key(ec.SECP256R1())
ED = ed25519.Ed25519PrivateKey.generate()
CERT = certs.self_signed(EC, NAME, now=datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC))
PAYLOAD = b'{"t":21.5}'
SIGN1 = {
    "es256-tagged": (sign_cose(PAYLOAD, EC, NAME), EC),
    "es256-untagged-x5u": (sign_cose(PAYLOAD, EC, NAME, tagged=False, x5u=True), EC),
    "eddsa": (sign_cose(PAYLOAD, ED, NAME), ED),
    "es256-x5chain": (sign_cose(PAYLOAD, EC, NAME, certificates=[CERT]), EC),
}
ENCRYPT = encrypt_cose(PAYLOAD, EC.public_key(), NAME)


def _signed_parts(data: bytes) -> tuple[bytes, bytes, bytes]:
    item = cbor2.loads(data)
    body = item.value if isinstance(item, cbor2.CBORTag) else item
    return bytes(body[0]), bytes(body[2]), bytes(body[3])


def through_the_door(data: bytes, original: bytes, key: Any) -> bool:
    hit(DOOR)
    with time_limit():
        try:
            msg = parse_message(data)
            verified = msg.verify_with(key.public_key())
        except MessageError as exc:
            assert exc.reason is not MessageReason.INTERNAL, exc
            return False
    if not verified:
        return False
    assert msg.signer == NAME and msg.payload == PAYLOAD and msg.format == "cose-sign1"
    assert _signed_parts(data) == _signed_parts(original), "another COSE_Sign1 verified"
    return True


def decrypt(data: bytes) -> None:
    hit(DOOR)
    with time_limit():
        try:
            plain = decrypt_cose(data, EC)
        except MessageError as exc:
            assert exc.reason is not MessageReason.INTERNAL, exc
            return
    assert plain == PAYLOAD


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for pos, kind, value in edits:
        at = pos % (len(buf) + 1)
        if kind == 0 and buf:
            buf[at % len(buf)] = value
        elif kind == 1:
            buf[at:at] = bytes([value])
        elif kind == 2 and buf:
            del buf[at % len(buf) : at % len(buf) + 1 + value % 8]
        elif kind == 3 and buf:  # flip one bit
            buf[at % len(buf)] ^= 1 << (value % 8)
        elif kind == 4:  # a CBOR head byte with a large argument
            buf[at:at] = bytes([value & 0xE0 | 0x1B]) + b"\xff" * 8
        elif buf:  # duplicate a slice
            i = at % len(buf)
            buf[i:i] = buf[i : i + 1 + value % 16]
    return bytes(buf)


EDITS = st.lists(
    st.tuples(st.integers(0, 4000), st.integers(0, 5), st.integers(0, 255)), min_size=1, max_size=4
)


@fuzz_settings(400)
@given(st.sampled_from(sorted(SIGN1)), EDITS)
def test_mutated_sign1(which: str, edits: list[tuple[int, int, int]]) -> None:
    data, key = SIGN1[which]
    through_the_door(mutate(data, edits), data, key)


@fuzz_settings(200)
@given(EDITS)
def test_mutated_encrypt(edits: list[tuple[int, int, int]]) -> None:
    decrypt(mutate(ENCRYPT, edits))


def _rebuild(protected: dict[Any, Any] | bytes, unprotected: Any, tagged: bool = True) -> bytes:
    raw = protected if isinstance(protected, bytes) else cbor2.dumps(protected)
    body = [raw, unprotected, PAYLOAD, b"\x01" * 64]
    return cbor2.dumps(cbor2.CBORTag(18, body) if tagged else body)


def _nested(depth: int, kind: str) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = (
            [value]
            if kind == "array"
            else {1: value}
            if kind == "map"
            else cbor2.CBORTag(61, value)
        )
    return value


@fuzz_settings(150)
@given(
    st.integers(0, 3 * MAX_DEPTH),
    st.sampled_from(["array", "map", "tag"]),
    st.sampled_from(["protected", "unprotected", "payload-slot"]),
)
def test_nesting_inside_cose(depth: int, kind: str, where: str) -> None:
    """Nested values in a header (a private label) or in place of the payload: too-large
    when deeper than the limit (counted from the top of the COSE object), otherwise parsed or
    refused for what they are, never internal."""
    value = _nested(depth, kind)
    base = {1: -7, 4: NAME.encode()}
    if where == "protected":
        data = _rebuild({**base, -70000: value}, {})
    elif where == "unprotected":
        data = _rebuild(base, {-70000: value})
    else:
        data = cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps(base), {}, value, b"\x01" * 64]))
    # The level of the innermost item: a protected header is decoded on its own (its map at 0,
    # values at 1); in the object, the tag is at 0, the array at 1, its members at 2.
    too_deep = {"protected": 1, "unprotected": 3, "payload-slot": 2}[where] + depth > MAX_DEPTH
    hit(DOOR)
    try:
        parse_message(data)
    except MessageError as exc:
        assert exc.reason is not MessageReason.INTERNAL, exc
        if too_deep:
            assert exc.reason is MessageReason.TOO_LARGE, exc
        else:  # only a payload that is not a byte string is wrong here
            assert where == "payload-slot" and exc.reason is MessageReason.MALFORMED, exc
    else:
        assert not too_deep and where != "payload-slot"


@pytest.mark.parametrize(
    "data",
    [
        b"\xd2\x9f\xff",  # indefinite array
        b"\xd2\x84\x5f\xff\xa0\x40\x40",  # indefinite bstr for the protected header
        b"\xd2\x84\x40\xbf\xff\x40\x41\x00",  # indefinite map
        b"\xd2\x84\x5b" + b"\xff" * 8,  # protected header of 2^64-1 bytes
        b"\xd2\x9b" + b"\xff" * 8,  # array of 2^64-1 items
        b"\xd2\xbb" + b"\xff" * 8,  # map of 2^64-1 pairs
        b"\xd2\x84\x40\xa0\x5a\xff\xff\xff\xff",  # payload of 4 GiB
        b"\xd2" * 100_000 + b"\x80",  # 100,000 nested tags
        b"\x84" * 100_000,  # 100,000 nested arrays
    ],
)
def test_hostile_framing(data: bytes) -> None:
    hit(DOOR)
    with time_limit(), pytest.raises(MessageError) as info:
        parse_message(data)
    assert info.value.reason in (MessageReason.MALFORMED, MessageReason.TOO_LARGE)
    with time_limit(), pytest.raises(MessageError):
        decrypt_cose(b"\xd8\x60" + data[1:], EC)


@fuzz_settings(100)
@given(st.sampled_from([1, 4, 33, 35]), st.sampled_from([1, 2, 4, 8]), st.booleans())
def test_duplicate_labels_in_two_encodings(label: int, size: int, across: bool) -> None:
    """alg / kid / x5chain / x5u twice in the protected header with the second label in a
    wider head, or in both buckets: duplicate-header (when the wide head is the same
    encoding as the short one, still a duplicate)."""
    value = {1: b"\x26", 4: b"\x58\x1c" + NAME.encode(), 33: b"\x41\x00", 35: b"\x61x"}[label]
    short = cbor2.dumps(label)
    wide = bytes([0x18 + {1: 0, 2: 1, 4: 2, 8: 3}[size]]) + label.to_bytes(size, "big")
    if across:
        protected = b"\xa1" + short + value
        unprotected_raw = b"\xa1" + wide + value
        data = b"\xd2\x84" + cbor2.dumps(protected) + unprotected_raw + cbor2.dumps(PAYLOAD)
    else:
        protected = b"\xa2" + short + value + wide + value
        data = b"\xd2\x84" + cbor2.dumps(protected) + b"\xa0" + cbor2.dumps(PAYLOAD)
    data += cbor2.dumps(b"\x01" * 64)
    hit(DOOR)
    with pytest.raises(MessageError) as info:
        parse_message(data)
    assert info.value.reason is MessageReason.DUPLICATE_HEADER


def test_untouched_objects_verify() -> None:
    for data, key in SIGN1.values():
        assert through_the_door(data, data, key)
    decrypt(ENCRYPT)
    assert decrypt_cose(ENCRYPT, EC) == PAYLOAD
