"""The strict MQTT codec: framing, Remaining Length, CONNECT parsing and re-encoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dance.mqtt.codec import (
    Connect,
    MQTTError,
    PacketReader,
    Property,
    Will,
    encode_connect,
    encode_varint,
    parse_connect,
)


def one(raw: bytes, limit: int = 256 * 1024) -> Connect:
    packets = PacketReader(limit).feed(raw)
    assert len(packets) == 1
    return parse_connect(packets[0])


def reason(raw: bytes, limit: int = 256 * 1024) -> str:
    with pytest.raises(MQTTError) as info:
        reader = PacketReader(limit)
        for p in reader.feed(raw):
            parse_connect(p)
        reader.eof()
    return info.value.reason


def body(level: int, flags: int, rest: bytes, props: bytes = b"\x00") -> bytes:
    head = b"\x00\x04MQTT" + bytes([level, flags]) + b"\x00\x3c"
    b = head + (props if level == 5 else b"") + rest
    return b"\x10" + encode_varint(len(b)) + b


CID = b"\x00\x03dev"


def test_minimal_connects_both_levels() -> None:
    for level in (4, 5):
        c = one(body(level, 0x02, CID))
        assert (c.level, c.client_id, c.username, c.password) == (level, "dev", None, None)
        assert c.clean_start and c.keep_alive == 60


def test_rewrite_sets_username_and_drops_password() -> None:
    raw = body(4, 0xC2, CID + b"\x00\x0cother-device\x00\x06secret")
    c = one(raw)
    assert (c.username, c.password) == ("other-device", b"secret")
    again = one(encode_connect(c.as_identity("sensor7._device.example.test")))
    assert again.username == "sensor7._device.example.test"
    assert again.password is None
    assert again.client_id == "dev"


def test_v5_properties_and_will_survive_reencoding() -> None:
    c = Connect(
        level=5,
        clean_start=False,
        keep_alive=30,
        client_id="d",
        will=Will(1, True, "devices/x/status", b"gone", (Property(0x18, 5),)),
        username="u",
        password=b"p",
        properties=(Property(0x11, 3600), Property(0x26, ("a", "b")), Property(0x26, ("a", "c"))),
    )
    assert one(encode_connect(c)) == c


def test_encoding_is_the_inverse_of_parsing() -> None:
    raw = body(
        5, 0xEE, CID + b"\x00" + b"\x00\x01t\x00\x01p" + b"\x00\x01u", b"\x05\x11\x00\x00\x00\x10"
    )
    # flags 0xEE: user, password(no: 0x40 set), will retain, qos 1, will, clean
    with pytest.raises(MQTTError):  # password flag set but no password bytes
        one(raw)
    raw = body(
        5, 0xAE, CID + b"\x00" + b"\x00\x01t\x00\x01p" + b"\x00\x01u", b"\x05\x11\x00\x00\x00\x10"
    )
    assert encode_connect(one(raw)) == raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\x10\x80\x80\x80\x80\x01", "remaining-length-overlong"),
        (b"\x10\xff\xff\xff", "truncated"),
        (b"\x10\x80\x00", "remaining-length-not-minimal"),
        (b"\x10\x05\x00\x04MQ", "truncated"),
        (b"\x00\x00", "reserved-packet-type"),
        (b"\x30\x00", "not-connect"),
        (b"\x11" + body(4, 2, CID)[1:], "reserved-flag"),
        (body(4, 0x03, CID), "reserved-flag"),
        (body(4, 0x02, CID).replace(b"MQTT", b"MQTX"), "bad-protocol"),
        (body(3, 0x02, CID), "bad-protocol"),
        (body(6, 0x02, CID), "bad-protocol"),
        (body(4, 0x08, CID), "bad-will"),  # will QoS without a will
        (body(4, 0x20, CID), "bad-will"),  # will retain without a will
        (body(4, 0x1C, CID + b"\x00\x01t\x00\x00"), "bad-will"),  # will QoS 3
        (body(4, 0x04, CID + b"\x00\x01#\x00\x00"), "bad-will"),  # wildcard will topic
        (body(4, 0x42, CID + b"\x00\x01p"), "malformed-connect"),  # password, no username
        (body(4, 0x02, b"\x00\x03d\x00v"), "bad-utf8"),
        (body(4, 0x02, b"\x00\x02\xc0\x80"), "bad-utf8"),  # overlong NUL
        (body(4, 0x02, b"\x00\x03\xed\xa0\x80"), "bad-utf8"),  # a surrogate
        (body(4, 0x02, CID + b"x"), "malformed-connect"),  # trailing byte
        (body(4, 0x82, CID), "malformed-connect"),  # username flag, no username
        (body(5, 0x02, CID, b"\x02\x02\x00"), "bad-property"),  # a will-only property
        (body(5, 0x02, CID, b"\x0a\x11\x00\x00\x00\x01\x11\x00\x00\x00\x02"), "bad-property"),
        (body(5, 0x02, CID, b"\x05\x15\x00\x02XY"), "enhanced-auth"),
        (body(5, 0x02, CID, b"\x09"), "malformed-connect"),  # properties overrun
    ],
)
def test_refusals(raw: bytes, expected: str) -> None:
    assert reason(raw) == expected


def test_limit_is_checked_before_the_body_arrives() -> None:
    reader = PacketReader(1024)
    with pytest.raises(MQTTError) as info:
        reader.feed(b"\x30" + encode_varint(1025))
    assert info.value.reason == "packet-too-large"
    assert PacketReader(1024).feed(b"\x30" + encode_varint(2) + b"\x00\x00")[0].type == 3


def test_framing_byte_by_byte() -> None:
    raw = body(5, 0x02, CID) + b"\xc0\x00" + b"\x30\x03\x00\x01t"
    reader = PacketReader()
    got = []
    for i in range(len(raw)):
        got += reader.feed(raw[i : i + 1])
    reader.eof()
    assert [p.type for p in got] == [1, 12, 3]
    assert b"".join(p.raw for p in got) == raw


@given(st.integers(0, 268_435_455))
def test_varint_round_trip(n: int) -> None:
    enc = encode_varint(n)
    assert 1 <= len(enc) <= 4
    packets = PacketReader(268_435_455).feed(b"\x30" + enc)
    assert packets == [] if n else packets[0].body == b""


_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
)
_props = st.lists(
    st.one_of(
        st.builds(Property, st.just(0x11), st.integers(0, 2**32 - 1)),
        st.builds(Property, st.just(0x26), st.tuples(_text, _text)),
    ),
    max_size=3,
    unique_by=lambda p: p.id if p.id != 0x26 else object(),
).map(tuple)


@st.composite
def connects(draw: st.DrawFn) -> Connect:
    level = draw(st.sampled_from([4, 5]))
    will = None
    if draw(st.booleans()):
        will = Will(
            draw(st.integers(0, 2)),
            draw(st.booleans()),
            draw(_text.filter(lambda t: t and "+" not in t and "#" not in t)),
            draw(st.binary(max_size=20)),
            draw(_props.map(lambda ps: tuple(p for p in ps if p.id == 0x26))) if level == 5 else (),
        )
    username = draw(st.none() | _text)
    password = draw(st.none() | st.binary(max_size=10))
    if level == 4 and username is None:
        password = None
    return Connect(
        level=level,
        clean_start=draw(st.booleans()),
        keep_alive=draw(st.integers(0, 65535)),
        client_id=draw(_text),
        will=will,
        username=username,
        password=password,
        properties=draw(_props) if level == 5 else (),
    )


@given(connects())
def test_connect_round_trip(c: Connect) -> None:
    raw = encode_connect(c)
    assert one(raw) == c
    assert encode_connect(one(raw)) == raw
    rewritten = one(encode_connect(c.as_identity("sensor7._device.example.test")))
    assert rewritten.username == "sensor7._device.example.test" and rewritten.password is None


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(1, 300))
def test_arbitrary_bytes_parse_or_refuse_with_a_reason(data: bytes, limit: int) -> None:
    reader = PacketReader(limit)
    try:
        for p in reader.feed(data):
            assert len(p.body) <= limit
            if p.type == 1:
                c = parse_connect(p)
                assert encode_connect(c) == p.raw  # strict: only canonical forms are accepted
    except MQTTError as exc:
        assert exc.reason


@settings(max_examples=300)
@given(connects(), st.data())
def test_mutated_connects_never_crash(c: Connect, data: st.DataObject) -> None:
    raw = bytearray(encode_connect(c))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    try:
        for p in PacketReader().feed(bytes(raw)):
            parse_connect(p)
    except MQTTError as exc:
        assert exc.reason
