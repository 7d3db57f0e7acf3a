"""Fuzz the dane_clientid extension bytes: ``decode_client_name`` (the ``extension_data`` of
a client's Certificate) and the ClientName parser that runs on what it returns.

Properties: decoding raises nothing but ExtensionDecodeError and agrees with an independent
reading of ``opaque ClientName<1..2^8-1>``; valid names round-trip; whatever
``parse_client_name`` accepts from the wire passes an independent syntax check and is
canonical (lowercase, idempotent, re-encodable to the same octets)."""

from __future__ import annotations

import re

import dns.name
import idna
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dance.names import ClientName, InvalidName, parse_client_name
from dance.tls.bridge import ExtensionDecodeError, decode_client_name, encode_client_name
from tests.fuzz.common import fuzz_settings, hit, time_limit

DOOR = "clientid"
_LABEL = re.compile(rb"[a-z0-9_-]{1,63}")


def oracle_decode(data: bytes) -> bytes | None:
    """RFC 8446 presentation of ``opaque ClientName<1..2^8-1>`` inside extension_data: one
    length octet, then exactly that many octets, nothing after (a zero length is the server's
    empty request, which the decoder hands on as an empty name)."""
    if len(data) < 1 or data[0] != len(data) - 1:
        return None
    return data[1:]


def valid_name(raw: bytes) -> bool:
    """An independent statement of the ClientName syntax (client-auth-13 section 2)."""
    if not raw or not raw.isascii() or raw != raw.strip() or raw.endswith(b"."):
        return False
    labels = raw.lower().split(b".")
    if any(not _LABEL.fullmatch(label) for label in labels):
        return False
    if sum(len(label) + 1 for label in labels) + 1 > 255:
        return False
    for label in labels:
        if label.startswith(b"xn--"):
            try:
                if idna.encode(idna.decode(label)) != label:
                    return False
            except (idna.IDNAError, UnicodeError, ValueError):
                return False
    return True


def check_canonical(name: ClientName, raw: bytes) -> None:
    assert name.text == raw.decode("ascii").lower()
    assert name.text == name.text.lower() and name.text.isascii()
    assert parse_client_name(name.text) == name  # idempotent
    assert parse_client_name(name.text.upper()).text == name.text  # case-insensitive
    wire = name.to_wire()
    assert len(wire) <= 255
    assert dns.name.from_wire(wire, 0)[0] == name.to_dns()
    assert name.to_dns().to_text(omit_final_dot=True) == name.text  # no escapes needed
    assert decode_client_name(encode_client_name(name.text)) == name.text.encode("ascii")


def through_the_door(data: bytes) -> None:
    """What the server does with extension_data: decode, then parse; check every outcome."""
    hit(DOOR)
    with time_limit():
        try:
            raw = decode_client_name(data)
        except ExtensionDecodeError:
            assert oracle_decode(data) is None
            return
        assert raw == oracle_decode(data)
        try:
            name = parse_client_name(raw)
        except InvalidName as exc:
            assert exc.reason
            assert not valid_name(raw), f"valid name {raw!r} refused ({exc.reason})"
            return
        assert valid_name(raw), f"invalid name {raw!r} accepted"
        check_canonical(name, raw)


_label_chars = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
LABEL = (
    st.text(_label_chars, min_size=1, max_size=63)
    | st.sampled_from(
        ["_device", "_user", "_smtp-client", "xn--bcher-kva", "xn--nxasmq6b", "a" * 63]
    )
    | st.text(st.characters(min_codepoint=0xA1, max_codepoint=0x2FFF), min_size=1, max_size=8).map(
        lambda u: _a_label(u)
    )
)


def _a_label(text: str) -> str:
    try:
        return str(idna.encode(text, uts46=True).decode("ascii"))
    except (idna.IDNAError, UnicodeError):
        return "xn--" + text.encode("punycode").decode("ascii")[:59]  # often not a valid A-label


NAME = st.lists(LABEL, min_size=1, max_size=8).map(".".join)


@fuzz_settings(400)
@given(st.binary(max_size=300))
@example(b"")
@example(b"\x00")
@example(b"\x01")
@example(b"\xff" + b"a" * 255)
@example(b"\x05a.b.c")
def test_random_extension_data(data: bytes) -> None:
    through_the_door(data)


@fuzz_settings(400)
@given(NAME)
def test_generated_names(text: str) -> None:
    raw = text.encode("ascii")
    if not 0 < len(raw) <= 255:
        with pytest.raises(ValueError):
            encode_client_name(text)
        hit(DOOR)
        return
    data = encode_client_name(text)
    assert data[0] == len(raw) and data[1:] == raw
    through_the_door(data)
    if valid_name(raw):  # valid names round-trip
        assert parse_client_name(decode_client_name(data)).text == text.lower()


_SPECIAL = st.sampled_from(
    [
        b".",
        b"..",
        b"\x00",
        b"*",
        b"\\",
        b" ",
        b"\t",
        b"\r\n",
        b"\x80",
        b"\xff",
        b"\xc3\xbc",
        b"A",
        b"Z",
        b"_",
        b"-",
        b"xn--",
        b"XN--",
        b"@",
        b"/",
        b"%2e",
        b"\\046",
        b"a" * 64,
    ]
)
_EDIT = st.tuples(st.integers(0, 300), st.sampled_from(["insert", "replace", "delete"]), _SPECIAL)


@fuzz_settings(500)
@given(NAME, st.lists(_EDIT, min_size=1, max_size=4), st.integers(-2, 2))
def test_mutated_names(text: str, edits: list[tuple[int, str, bytes]], skew: int) -> None:
    """Valid encodings with characters inserted, replaced or deleted, and the length octet
    left as it was, fixed up, or off by a little."""
    buf = bytearray(text.encode("ascii")[:255])
    for pos, how, piece in edits:
        at = pos % (len(buf) + 1)
        if how == "insert":
            buf[at:at] = piece
        elif how == "replace":
            buf[at : at + len(piece)] = piece
        else:
            del buf[at : at + len(piece)]
    body = bytes(buf[:255])
    for length in {len(text) % 256, len(body), (len(body) + skew) % 256}:
        through_the_door(bytes([length]) + body)


def test_counted_door_boundaries() -> None:
    """The edges the generators hit only by chance: 255 octets, 63-octet labels, 256 refused."""
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 chars, 255 on the wire
    through_the_door(encode_client_name(name))
    assert parse_client_name(decode_client_name(encode_client_name(name))).text == name
    too_long = name + "e"
    assert len(too_long) == 254
    data = encode_client_name(too_long)
    with pytest.raises(InvalidName):
        parse_client_name(decode_client_name(data))
    with pytest.raises(ValueError):
        encode_client_name("a" * 256)
    with pytest.raises(ExtensionDecodeError):
        decode_client_name(b"\xff" + b"a" * 256)
