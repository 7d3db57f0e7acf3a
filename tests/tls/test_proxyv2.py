import struct

import pytest

from dance.tls.proxyv2 import SIGNATURE, ProxyV2Error, encode_header


def test_ipv4_header_layout() -> None:
    h = encode_header(("127.0.0.1", 4000), ("127.0.0.2", 443), "a._device.example.com")
    assert h[:12] == SIGNATURE
    assert h[12] == 0x21 and h[13] == 0x11
    (length,) = struct.unpack("!H", h[14:16])
    assert length == len(h) - 16
    assert h[16:20] == bytes([127, 0, 0, 1]) and h[20:24] == bytes([127, 0, 0, 2])
    assert struct.unpack("!HH", h[24:28]) == (4000, 443)
    assert h[28] == 0xE0
    (tlen,) = struct.unpack("!H", h[29:31])
    assert h[31 : 31 + tlen] == b"a._device.example.com"


def test_ipv6_family() -> None:
    h = encode_header(("::1", 1), ("::1", 2), "x.example", tlv_type=0xEF)
    assert h[13] == 0x21 and h[16 + 36] == 0xEF


@pytest.mark.parametrize(
    ("src", "ident", "tlv"),
    [
        (("127.0.0.1", 1), "x", 0xF0),
        (("::1", 1), "x", 0xE0),
        (("127.0.0.1", 1), "bücher.example", 0xE0),
        (("127.0.0.1", 70000), "x", 0xE0),
        (("not-an-ip", 1), "x", 0xE0),
    ],
)
def test_bad_input_is_typed(src: tuple[str, int], ident: str, tlv: int) -> None:
    with pytest.raises(ProxyV2Error):
        encode_header(src, ("127.0.0.1", 2), ident, tlv_type=tlv)
