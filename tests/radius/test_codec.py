"""The strict RADIUS codec: round trips, authenticators, hidden attributes re-encrypted for
another secret, stream framing in any chunking, and the refusals by reason."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dance.radius import IdentityAttribute, access_request
from dance.radius.packet import (
    ACCESS_ACCEPT,
    ACCESS_REQUEST,
    ACCOUNTING_REQUEST,
    MESSAGE_AUTHENTICATOR,
    RADSEC_SECRET,
    Attribute,
    RadiusError,
    StreamFramer,
    check_request,
    check_response,
    encode,
    hide_password,
    parse_packet,
    resign_request,
    resign_response,
    sign_request,
    sign_response,
    unhide_password,
)

attribute = st.builds(
    Attribute,
    st.integers(1, 255).filter(lambda t: t not in (2, 26, 69, 79, 80)),
    st.binary(min_size=1, max_size=253),
)


@settings(max_examples=200)
@given(st.integers(0, 255), st.lists(attribute, max_size=12))
def test_round_trip(identifier: int, attrs: list[Attribute]) -> None:
    raw = encode(ACCESS_REQUEST, identifier, os.urandom(16), attrs)
    packet = parse_packet(raw)
    assert packet.identifier == identifier and list(packet.attributes) == attrs
    assert packet.raw == raw


@settings(max_examples=100)
@given(st.lists(attribute, max_size=8), st.lists(st.integers(1, 60), max_size=20))
def test_framer_any_chunking(attrs: list[Attribute], cuts: list[int]) -> None:
    packets = [encode(1, i, bytes(16), attrs) for i in range(3)]
    stream = b"".join(packets)
    framer = StreamFramer()
    out: list[bytes] = []
    i = 0
    for n in cuts:
        out += framer.feed(stream[i : i + n])
        i += n
    out += framer.feed(stream[i:])
    framer.eof()
    assert out == packets


@settings(max_examples=100)
@given(st.text(min_size=0, max_size=100).map(str.encode).filter(lambda b: len(b) <= 128))
def test_password_recrypt(password: bytes) -> None:
    padded = password + bytes(-len(password) % 16 or (16 if not password else 0))
    ra = os.urandom(16)
    hidden = hide_password(padded, b"one", ra)
    assert unhide_password(hidden, b"one", ra) == padded
    request = parse_packet(
        sign_request(ACCESS_REQUEST, 1, [Attribute(1, b"u"), Attribute(2, hidden)], b"one", ra)
    )
    moved = parse_packet(resign_request(request, b"one", b"two"))
    assert unhide_password(moved.get(2)[0], b"two", ra) == padded


def test_password_vector_rfc2865() -> None:
    """RFC 2865 5.2 by hand: c1 = p1 xor MD5(S + RA)."""
    ra = bytes(range(16))
    padded = b"secret-pw".ljust(16, b"\0")
    expected = bytes(
        a ^ b for a, b in zip(padded, hashlib.md5(b"xyzzy5461" + ra).digest(), strict=True)
    )
    assert hide_password(padded, b"xyzzy5461", ra) == expected


def test_message_authenticator_and_accounting() -> None:
    raw = access_request(3, "bob", "pw")
    check_request(parse_packet(raw), RADSEC_SECRET)
    with pytest.raises(RadiusError, match="bad-message-authenticator"):
        check_request(parse_packet(raw), b"other")
    acct = sign_request(ACCOUNTING_REQUEST, 4, [Attribute(44, b"s"),
                        Attribute(MESSAGE_AUTHENTICATOR, bytes(16))], RADSEC_SECRET)  # fmt: skip
    check_request(parse_packet(acct), RADSEC_SECRET)
    with pytest.raises(RadiusError, match="bad-request-authenticator"):
        check_request(parse_packet(acct), b"other")
    moved = resign_request(parse_packet(acct), RADSEC_SECRET, b"loop")
    check_request(parse_packet(moved), b"loop")


def test_response_resigned_for_the_client() -> None:
    original = parse_packet(access_request(9, "bob", "pw"))
    sent = parse_packet(resign_request(original, RADSEC_SECRET, b"loop"))
    salt = b"\x80\x01"
    key = bytes(range(32))  # an MPPE key, salt-encrypted with the loopback secret
    block, last, enc = b"", sent.authenticator + salt, b""
    for i in range(0, 32, 16):
        pad = hashlib.md5(b"loop" + last).digest()
        block = bytes(a ^ b for a, b in zip(key[i : i + 16], pad, strict=True))
        enc += block
        last = block
    vsa = Attribute(26, (311).to_bytes(4, "big") + bytes((16, 2 + 2 + 32)) + salt + enc)
    attrs = [Attribute(18, b"hi"), vsa, Attribute(MESSAGE_AUTHENTICATOR, bytes(16))]
    response = parse_packet(sign_response(ACCESS_ACCEPT, 9, sent.authenticator, attrs, b"loop"))
    check_response(response, sent, b"loop")
    relayed = parse_packet(resign_response(response, sent, original, b"loop", RADSEC_SECRET))
    check_response(relayed, original, RADSEC_SECRET)
    sub = relayed.vendor_attributes(311)[0][1]
    assert sub[:2] == salt
    pad = hashlib.md5(RADSEC_SECRET + original.authenticator + salt).digest()
    assert bytes(a ^ b for a, b in zip(sub[2:18], pad, strict=True)) == key[:16]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x01\x01\x00\x14" + bytes(15), "short-packet"),
        (b"\x01\x01\x00\x15" + bytes(16), "length-mismatch"),
        (b"\x01\x01\x00\x16" + bytes(16) + b"\x01\x02", "attribute-length"),
        (b"\x01\x01\x00\x18" + bytes(16) + b"\x01\x03a", "length-mismatch"),
        (b"\x01\x01\x00\x15" + bytes(16) + b"\x01", "attribute-overrun"),
        (b"\x01\x01\x00\x18" + bytes(16) + b"\x50\x04ab", "message-authenticator-length"),
        (b"\x01\x01\x00\x18" + bytes(16) + b"\x02\x04ab", "user-password-length"),
        (b"\x01\x01\x00\x18" + bytes(16) + b"\x1a\x04ab", "vendor-specific-length"),
        (
            encode(1, 1, bytes(16), [Attribute(80, bytes(16))] * 2),
            "duplicate-message-authenticator",
        ),
    ],
)
def test_refusals(raw: bytes, reason: str) -> None:
    with pytest.raises(RadiusError) as info:
        parse_packet(raw)
    assert info.value.reason == reason


def test_too_large_and_framing() -> None:
    with pytest.raises(RadiusError, match="too-large"):
        encode(1, 1, bytes(16), [Attribute(1, b"x" * 253)] * 17)
    framer = StreamFramer()
    with pytest.raises(RadiusError) as info:
        framer.feed(b"\x01\x01\x10\x01")
    assert info.value.framing and info.value.reason == "bad-length"
    framer = StreamFramer()
    framer.feed(b"\x01\x01\x00\x20" + bytes(10))
    with pytest.raises(RadiusError, match="truncated"):
        framer.eof()


def test_identity_attribute() -> None:
    ident = IdentityAttribute.parse("32473:1")
    attr = ident.encode("sensor7._device.example.test")
    packet = parse_packet(encode(1, 1, bytes(16), [attr]))
    assert ident.present(packet) and ident.values(packet) == ["sensor7._device.example.test"]
    other_vendor = Attribute(26, (9).to_bytes(4, "big") + b"\x01\x03x")
    assert not ident.present(parse_packet(encode(1, 1, bytes(16), [other_vendor])))
    with pytest.raises(RadiusError, match="identity-too-long"):
        ident.encode("a" * 248)
    for bad in ("80", "26", "2", "0", "1:256", "x", "1:2:3", "-1"):
        with pytest.raises(ValueError):
            IdentityAttribute.parse(bad)
    assert str(IdentityAttribute.parse("126")) == "126"
