"""Unit tests of the OpenSSL bridge: self-checks, codepoints, extension encoding."""

from __future__ import annotations

import ssl

import pytest

from dance.tls import bridge
from dance.tls.bridge import (
    BridgeError,
    ExtensionDecodeError,
    check_codepoint,
    decode_client_name,
    encode_client_name,
    load_libssl,
    ssl_ctx_pointer,
)


def test_libssl_found_and_ctx_confirmed() -> None:
    lib = load_libssl()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.options |= ssl.OP_NO_TICKET
    assert ssl_ctx_pointer(lib, ctx) != 0


def test_layout_check_refuses_a_wrong_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = load_libssl()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    monkeypatch.setattr(bridge, "SSL_CTX_OFFSET", 24)  # not where SSL_CTX* lives
    with pytest.raises(BridgeError):
        ssl_ctx_pointer(lib, ctx)


def test_statically_linked_python_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_maps(*args: object, **kwargs: object) -> object:
        raise OSError("no /proc")

    monkeypatch.setattr(bridge, "open", no_maps, raising=False)
    with pytest.raises(BridgeError):
        load_libssl()


def test_ssl_pointer_checked_per_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    bridge.configure_client(ctx, "sensor7._device.example.test")
    ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())  # fine
    monkeypatch.setattr(bridge, "SSL_OFFSET", 16)
    with pytest.raises(BridgeError):
        ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())


def test_codepoints() -> None:
    assert check_codepoint(0xFFDC) == 0xFFDC
    for bad in (0xFF01, 0, 0x10000, -1, True):
        with pytest.raises(ValueError):
            check_codepoint(bad)


def test_client_name_encoding_vectors() -> None:
    # TV-EXT-2 and TV-EXT-5 (digest section 8.1)
    assert encode_client_name("sensor7._device.example.com").hex() == (
        "1b73656e736f72372e5f6465766963652e6578616d706c652e636f6d"
    )
    assert encode_client_name("device73.example.com").hex() == (
        "1464657669636537332e6578616d706c652e636f6d"
    )
    assert decode_client_name(bytes.fromhex("0361626300")[:4]) == b"abc"
    for bad in (b"", b"\x05a", b"\x03abc\x00"):  # TC-P4, TC-P2, TC-P3
        with pytest.raises(ExtensionDecodeError):
            decode_client_name(bad)
    assert decode_client_name(b"\x00") == b""  # zero-length: refused later (TC-P1)
    with pytest.raises(ValueError):
        encode_client_name("a" * 256)
