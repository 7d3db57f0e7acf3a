"""Fuzz the PROXY protocol v2 encoder against an independent decoder written here from the
HAProxy specification (proxy-protocol.txt, section 2.2), not from dance's encoder:

    12-byte signature \\r\\n\\r\\n\\0\\r\\nQUIT\\n
    ver_cmd  high nibble version (2), low nibble command (0 LOCAL, 1 PROXY)
    fam      high nibble family (1 INET, 2 INET6, 3 UNIX), low nibble transport (1 STREAM)
    len      16-bit big-endian length of what follows
    addr     INET: src(4) dst(4) sport(2) dport(2); INET6: src(16) dst(16) sport dport
    TLVs     type(1) length(2, big-endian) value, until ``len`` is used up exactly

Properties: decode(encode(x)) == x for every address pair, port, identity and TLV type the
encoder accepts; what cannot be encoded (types, families, ports, non-ASCII, oversized TLV)
is refused with ProxyV2Error, never encoded wrongly and never another exception."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dance.tls.proxyv2 import ProxyV2Error, encode_header
from tests.fuzz.common import fuzz_settings, hit, time_limit

DOOR = "proxyv2"
SIG = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])


class DecodeError(Exception):
    pass


@dataclass(frozen=True)
class Header:
    command: int
    family: int
    transport: int
    src: tuple[str, int]
    dst: tuple[str, int]
    tlvs: tuple[tuple[int, bytes], ...]
    size: int  # bytes consumed


def decode(data: bytes) -> Header:
    """An independent PROXY v2 decoder (strict: any inconsistency is a DecodeError)."""
    if len(data) < 16 or data[:12] != SIG:
        raise DecodeError("signature")
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2 or command not in (0, 1):
        raise DecodeError("version/command")
    family, transport = data[13] >> 4, data[13] & 0x0F
    length = int.from_bytes(data[14:16], "big")
    if len(data) < 16 + length:
        raise DecodeError("truncated")
    body = data[16 : 16 + length]
    if family == 1:
        size, width = 12, 4
    elif family == 2:
        size, width = 36, 16
    else:
        raise DecodeError("family")
    if transport != 1 or len(body) < size:
        raise DecodeError("transport/addresses")
    src = ipaddress.ip_address(body[:width])
    dst = ipaddress.ip_address(body[width : 2 * width])
    sport = int.from_bytes(body[2 * width : 2 * width + 2], "big")
    dport = int.from_bytes(body[2 * width + 2 : 2 * width + 4], "big")
    tlvs = []
    pos = size
    while pos < len(body):
        if pos + 3 > len(body):
            raise DecodeError("TLV header truncated")
        kind = body[pos]
        tlen = int.from_bytes(body[pos + 1 : pos + 3], "big")
        if pos + 3 + tlen > len(body):
            raise DecodeError("TLV value truncated")
        tlvs.append((kind, body[pos + 3 : pos + 3 + tlen]))
        pos += 3 + tlen
    return Header(
        command, family, transport, (str(src), sport), (str(dst), dport), tuple(tlvs), 16 + length
    )


def expect(src: tuple[str, int], dst: tuple[str, int], identity: str, tlv: int) -> str | None:
    """Why the encoder must refuse this input (None: it must encode it)."""
    if not 0xE0 <= tlv <= 0xEF:
        return "tlv type"
    if not identity.isascii():
        return "non-ascii identity"
    try:
        s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    except ValueError:
        return "address"
    if s.version != d.version:
        return "family"
    if not (0 <= src[1] <= 65535 and 0 <= dst[1] <= 65535):
        return "port"
    if (12 if s.version == 4 else 36) + 3 + len(identity) > 65535:
        return "too long"
    return None


def roundtrip(src: tuple[str, int], dst: tuple[str, int], identity: str, tlv: int) -> None:
    hit(DOOR)
    with time_limit():
        why = expect(src, dst, identity, tlv)
        try:
            header = encode_header(src, dst, identity, tlv_type=tlv)
        except ProxyV2Error as exc:
            assert why is not None, f"refused an encodable header: {exc}"
            return
        assert why is None, f"encoded what cannot be encoded ({why})"
        got = decode(header)
        assert got.size == len(header), "bytes after the header"
        s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
        assert got.command == 1 and got.transport == 1
        assert got.family == (1 if s.version == 4 else 2)
        assert got.src == (str(s), src[1]) and got.dst == (str(d), dst[1])
        assert got.tlvs == ((tlv, identity.encode("ascii")),)
        # Every strict prefix is incomplete for the decoder: the length field frames it.
        cut = len(header) // 2
        with pytest.raises(DecodeError):
            decode(header[:cut])


V4 = st.ip_addresses(v=4).map(str)
V6 = st.ip_addresses(v=6).map(str)
ADDRESS = (
    V4
    | V6
    | st.sampled_from(
        [
            "::ffff:127.0.0.1",
            "::1",
            "0.0.0.0",
            "255.255.255.255",
            "fe80::1%eth0",
            "1.2.3",
            "01.2.3.4",
            "1.2.3.4 ",
            " ::1",
            "::1/128",
            "localhost",
            "",
            "1.2.3.256",
            "::g",
            "1.2.3.4\x00",
            "١.٢.٣.٤",
        ]
    )
)
PORT = st.integers(0, 65535) | st.integers(-(2**20), 2**20)
IDENTITY = st.text(max_size=40) | st.sampled_from(["sensor7._device.example.test", "", "\x00"])
TLV = st.integers(0xE0, 0xEF) | st.integers(0, 255)


@fuzz_settings(300)
@given(ADDRESS, PORT, ADDRESS, PORT, IDENTITY, TLV)
@example("1.2.3.4", 0, "5.6.7.8", 65535, "a._device.example.com", 0xE0)
@example("1.2.3.4", 1, "::1", 2, "x", 0xE0)
@example("1.2.3.4", 65536, "5.6.7.8", 1, "x", 0xE0)
@example("1.2.3.4", -1, "5.6.7.8", 1, "x", 0xE0)
@example("1.2.3.4", 1, "5.6.7.8", 1, "x", 0xDF)
@example("1.2.3.4", 1, "5.6.7.8", 1, "x", 0xF0)
@example("::1", 1, "::2", 1, "x", 0xEF)
def test_encoder_roundtrip(
    s_addr: str, s_port: int, d_addr: str, d_port: int, identity: str, tlv: int
) -> None:
    if "%" in s_addr or "%" in d_addr:
        # A scoped IPv6 address: PROXY v2 has no field for the zone; the encoder drops it.
        # Compare without it (the remaining 16 octets must still round-trip).
        s_addr, d_addr = s_addr.split("%", maxsplit=1)[0], d_addr.split("%", maxsplit=1)[0]
    roundtrip((s_addr, s_port), (d_addr, d_port), identity, tlv)


@fuzz_settings(60)
@given(st.sampled_from([4, 6]), st.integers(-3, 3), st.sampled_from(["a", "\x00", "\x7f"]))
def test_oversized_tlv_boundary(version: int, delta: int, fill: str) -> None:
    """The largest identity that fits the 16-bit length, and one octet more (refused)."""
    fixed = 12 if version == 4 else 36
    size = 65535 - fixed - 3 + delta
    addr = ("10.0.0.1", "10.0.0.2") if version == 4 else ("2001:db8::1", "2001:db8::2")
    roundtrip((addr[0], 1), (addr[1], 2), fill * size, 0xE0)


@fuzz_settings(200)
@given(st.binary(max_size=120))
def test_independent_decoder_is_strict(junk: bytes) -> None:
    """The reference decoder itself refuses garbage with DecodeError only (so a round-trip
    failure means the encoder, not the decoder)."""
    hit(DOOR)
    for data in (junk, SIG + junk):
        try:
            got = decode(data)
        except DecodeError:
            continue
        assert got.size <= len(data)


# Found by fuzzing (and fixed): encode_header checked values, not types, so an int or
# packed-bytes address or a bool port was encoded as something else (0.0.0.1, port 1).


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ((1, 80), ("1.2.3.4", 80)),  # an integer is not an address text
        ((b"\x01\x02\x03\x04", 80), ("1.2.3.4", 80)),  # nor packed bytes
        (("1.2.3.4", "80"), ("1.2.3.4", 80)),  # a port must be an integer
        (("1.2.3.4", 80.0), ("1.2.3.4", 80)),
        (("1.2.3.4", True), ("1.2.3.4", 80)),
        (("1.2.3.4", None), ("1.2.3.4", 80)),
    ],
)
def test_wrong_types_are_refused(src: tuple[object, object], dst: tuple[str, int]) -> None:
    """Values of the wrong type (a peername from an unexpected socket family, a caller's
    mistake) are refused with ProxyV2Error, never encoded as something else."""
    with pytest.raises(ProxyV2Error):
        encode_header(src, dst, "x.example", tlv_type=0xE0)  # type: ignore[arg-type]


@pytest.mark.parametrize("tlv", [0xE0 + 0.0, "0xe0", None])
def test_wrong_tlv_type_types(tlv: object) -> None:
    with pytest.raises(ProxyV2Error):
        encode_header(("1.2.3.4", 1), ("1.2.3.4", 2), "x.example", tlv_type=tlv)  # type: ignore[arg-type]


def test_bool_tlv_type_refused() -> None:
    with pytest.raises(ProxyV2Error):
        encode_header(("1.2.3.4", 1), ("1.2.3.4", 2), "x.example", tlv_type=True)
