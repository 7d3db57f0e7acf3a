"""Fuzz the RADIUS codec (dance.radius.packet) against an independent decoder written here from
RFC 2865 section 3 and 5, not from dance's code:

    Code(1) Identifier(1) Length(2, big-endian, 20..4096, = the packet's size) Authenticator(16)
    Attributes: Type(1) Length(1, >= 3 here: dance refuses empty values) Value, filling the
    packet exactly

Properties: for any bytes, ``parse_packet`` returns exactly the attributes the reference finds
or raises RadiusError (never another exception, never a different reading); the stream framer
cuts any concatenation of packets, in any chunking, into the same packets, and anything else
only with RadiusError."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dance.radius.packet import RadiusError, StreamFramer, parse_packet
from tests.fuzz.common import fuzz_settings, hit, time_limit

DOOR = "radius"


def reference(data: bytes) -> list[tuple[int, bytes]] | None:
    """The attributes, or None for a packet RFC 2865 (with dance's strictness) rejects."""
    if len(data) < 20:
        return None
    length = data[2] * 256 + data[3]
    if length < 20 or length > 4096 or length != len(data):
        return None
    out = []
    rest = data[20:]
    while rest:
        if len(rest) < 2 or rest[1] < 3 or rest[1] > len(rest):
            return None
        out.append((rest[0], rest[2 : rest[1]]))
        rest = rest[rest[1] :]
    return out


# extra checks dance makes on some attribute types (RFC 2865 5.2, RFC 3579 3.2, RFC 2865 5.26)
def _extra_ok(attrs: list[tuple[int, bytes]]) -> bool:
    ma = [v for t, v in attrs if t == 80]
    pw = [v for t, v in attrs if t == 2]
    vsa = [v for t, v in attrs if t == 26]
    return (
        len(ma) <= 1
        and all(len(v) == 16 for v in ma)
        and len(pw) <= 1
        and all(len(v) % 16 == 0 and 16 <= len(v) <= 128 for v in pw)
        and all(len(v) >= 5 for v in vsa)
    )


def _packet(attrs: list[tuple[int, bytes]], code: int = 1) -> bytes:
    body = b"".join(bytes((t, len(v) + 2)) + v for t, v in attrs)
    return bytes((code, 7)) + (20 + len(body)).to_bytes(2, "big") + bytes(16) + body


attr = st.tuples(st.integers(0, 255), st.binary(min_size=0, max_size=40))


@fuzz_settings(300)
@given(st.one_of(st.binary(max_size=200), st.lists(attr, max_size=8).map(_packet)))
def test_parse_matches_reference(data: bytes) -> None:
    hit(DOOR)
    with time_limit():
        expected = reference(data)
        try:
            packet = parse_packet(data)
        except RadiusError:
            assert expected is None or not _extra_ok(expected)
            return
        assert expected is not None and _extra_ok(expected)
        assert [(a.type, a.value) for a in packet.attributes] == expected


@fuzz_settings(100)
@given(
    st.lists(st.lists(attr.filter(lambda a: a[1] != b""), max_size=5).map(_packet), max_size=4),
    st.binary(max_size=30),
    st.lists(st.integers(1, 50), max_size=10),
)
def test_framer(packets: list[bytes], tail: bytes, cuts: list[int]) -> None:
    hit(DOOR)
    with time_limit():
        stream = b"".join(packets) + tail
        framer = StreamFramer()
        out: list[bytes] = []
        i = 0
        try:
            for n in [*cuts, len(stream)]:
                out += framer.feed(stream[i : i + n])
                i += n
            framer.eof()
        except RadiusError:
            assert tail, "valid packets only: no refusal"
            assert out == packets[: len(out)]
            return
        assert out[: len(packets)] == packets
        assert b"".join(out) == stream
