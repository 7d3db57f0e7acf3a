"""PROXY protocol v2 header (haproxy proxy-protocol.txt section 2.2) carrying a DANCE identity."""

from __future__ import annotations

import functools
import ipaddress
import struct

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
DEFAULT_TLV_TYPE = 0xE0


class ProxyV2Error(ValueError):
    """Invalid input for a PROXY v2 header."""


@functools.lru_cache(maxsize=4096)
def _packed(text: str) -> tuple[int, bytes]:
    """(IP version, packed address) of an address text (``ipaddress``'s strict parse; the
    same peers and the one local address come again and again: remembered)."""
    ip = ipaddress.ip_address(text)
    return ip.version, ip.packed


def encode_header(
    src: tuple[str, int], dst: tuple[str, int], identity: str, *, tlv_type: int = DEFAULT_TLV_TYPE
) -> bytes:
    """PROXY v2 PROXY command over TCP, with the identity in a custom TLV (0xE0-0xEF)."""
    if type(tlv_type) is not int:  # bool is an int subclass: refused too
        raise ProxyV2Error(f"TLV type must be an integer, not {type(tlv_type).__name__}")
    for what, address in (("source", src), ("destination", dst)):
        if (
            not isinstance(address, tuple)
            or len(address) < 2
            or not isinstance(address[0], str)
            or type(address[1]) is not int
        ):
            raise ProxyV2Error(f"{what} must be (address text, port number)")
    if not isinstance(identity, str):
        raise ProxyV2Error("the identity must be text")
    if not 0xE0 <= tlv_type <= 0xEF:
        raise ProxyV2Error(f"TLV type {tlv_type:#x} outside the custom range 0xE0-0xEF")
    try:
        value = identity.encode("ascii")
        s_version, s_packed = _packed(src[0])
        d_version, d_packed = _packed(dst[0])
    except (UnicodeEncodeError, ValueError) as exc:
        raise ProxyV2Error(str(exc)) from None
    if s_version != d_version:
        raise ProxyV2Error("source and destination address families differ")
    if not (0 <= src[1] <= 0xFFFF and 0 <= dst[1] <= 0xFFFF):
        raise ProxyV2Error("port out of range")
    family = 0x11 if s_version == 4 else 0x21
    addresses = s_packed + d_packed + struct.pack("!HH", src[1], dst[1])
    tlv = struct.pack("!BH", tlv_type, len(value)) + value
    body = addresses + tlv
    if len(body) > 0xFFFF:
        raise ProxyV2Error("header too long")
    return SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body
