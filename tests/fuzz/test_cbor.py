"""Fuzz the strict CBOR decoder under COSE (`dance.message.cbor.decode`).

Properties: only MessageError (``malformed``, ``too-large``, ``duplicate-header``), quickly,
for any bytes; nesting deeper than ``MAX_DEPTH`` and more than ``MAX_ITEMS`` items are
``too-large`` whatever the shape (arrays, maps, tags, keys); huge and indefinite lengths are
refused without allocating; whatever is accepted is well-formed CBOR that cbor2 (an independent
decoder) reads to the same value, with no duplicate map key even when the same key is spelled
in two encodings; the value survives a canonical re-encoding."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

import cbor2
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dance.message.cbor import MAX_DEPTH, MAX_ITEMS, Tag, decode
from dance.message.errors import MessageError, MessageReason
from tests.fuzz.common import fuzz_settings, hit, time_limit

DOOR = "cbor"
# Tags cbor2 gives no meaning to (it decodes them as CBORTag): the comparison is then exact.
PLAIN_TAGS = [16, 17, 18, 61, 96, 97, 98, 1000, 40000, 2**32 + 7]


def head(major: int, arg: int) -> bytes:
    """The shortest head for ``arg`` (RFC 8949 section 3)."""
    if arg < 24:
        return bytes([major << 5 | arg])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if arg < 1 << (8 * size):
            return bytes([major << 5 | info]) + arg.to_bytes(size, "big")
    raise ValueError(arg)


def long_head(major: int, arg: int, size: int) -> bytes:
    """A non-shortest head (well-formed, not preferred serialization)."""
    info = {1: 24, 2: 25, 4: 26, 8: 27}[size]
    return bytes([major << 5 | info]) + arg.to_bytes(size, "big")


def normal(value: Any) -> Any:
    """cbor2's reading in our terms (CBORTag -> Tag, undefined -> None)."""
    if isinstance(value, cbor2.CBORTag):
        return Tag(value.tag, normal(value.value))
    if value is cbor2.undefined:
        return None
    if isinstance(value, list | tuple):  # cbor2 freezes what is inside a tag
        return [normal(v) for v in value]
    if isinstance(value, Mapping):
        return {normal(k): normal(v) for k, v in value.items()}
    return value


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, Tag) and isinstance(b, Tag):
        return a.tag == b.tag and same(a.value, b.value)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def depth_of(value: Any) -> int:
    """The level of the deepest item (the top item is at level 0)."""
    if isinstance(value, Tag):
        return 1 + depth_of(value.value)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=-1)
    if isinstance(value, dict):
        return 1 + max((max(depth_of(k), depth_of(v)) for k, v in value.items()), default=-1)
    return 0


def _semantic_tags(value: Any) -> bool:
    if isinstance(value, Tag):
        return value.tag not in PLAIN_TAGS or _semantic_tags(value.value)
    if isinstance(value, list):
        return any(_semantic_tags(v) for v in value)
    if isinstance(value, dict):
        return any(_semantic_tags(k) or _semantic_tags(v) for k, v in value.items())
    return False


def check(data: bytes) -> Any:
    """Decode ``data`` through the door and check the outcome; the value or the error."""
    hit(DOOR)
    with time_limit():
        try:
            value = decode(data)
        except MessageError as exc:
            assert exc.reason in (
                MessageReason.MALFORMED,
                MessageReason.TOO_LARGE,
                MessageReason.DUPLICATE_HEADER,
            ), exc
            return exc
    assert depth_of(value) <= MAX_DEPTH
    if not _semantic_tags(value):
        theirs = normal(cbor2.loads(data))
        assert same(value, theirs), (value, theirs)
    # Canonical re-encoding decodes to the same value (floats may shrink, values may not move).
    again = cbor2.dumps(_to_cbor2(value), canonical=True)
    assert same(decode(again), value)
    return value


def _to_cbor2(value: Any) -> Any:
    if isinstance(value, Tag):
        return cbor2.CBORTag(value.tag, _to_cbor2(value.value))
    if isinstance(value, list):
        return [_to_cbor2(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_cbor2(v) for k, v in value.items()}
    return value


# -- values --------------------------------------------------------------------------------------

LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False, width=16)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
VALUE = st.recursive(
    LEAF,
    lambda c: (
        st.lists(c, max_size=4)
        | st.dictionaries(st.integers(-30, 30) | st.text(max_size=3), c, max_size=4)
        | st.builds(cbor2.CBORTag, st.sampled_from(PLAIN_TAGS), c)
    ),
    max_leaves=24,
)


@fuzz_settings(250)
@given(VALUE, st.booleans())
def test_values_roundtrip_and_match_cbor2(value: Any, canonical: bool) -> None:
    data = cbor2.dumps(value, canonical=canonical)
    got = check(data)
    if isinstance(got, MessageError):  # only depth or items may stop a valid encoding
        assert got.reason is MessageReason.TOO_LARGE, got
        assert depth_of(normal(value)) > MAX_DEPTH
    else:
        assert same(got, normal(value))


@fuzz_settings(250)
@given(st.binary(max_size=200))
@example(b"\x9f\x01\xff")  # indefinite array
@example(b"\x5f\x41a\xff")  # indefinite byte string
@example(b"\x7f\x61a\xff")
@example(b"\xbf\x01\x02\xff")
@example(b"\xff")
@example(b"\x1c")  # reserved additional information
@example(b"\xf8\x20")  # simple value in one byte
@example(b"\xa2\x01\x01\x18\x01\x02")  # key 1 twice, in two encodings
def test_random_bytes(data: bytes) -> None:
    check(data)


@fuzz_settings(250)
@given(
    VALUE,
    st.lists(
        st.tuples(st.integers(0, 500), st.integers(0, 2), st.integers(0, 255)),
        min_size=1,
        max_size=5,
    ),
)
def test_mutated_encodings(value: Any, edits: list[tuple[int, int, int]]) -> None:
    buf = bytearray(cbor2.dumps(value))
    for pos, kind, byte in edits:
        at = pos % (len(buf) + 1)
        if kind == 0 and buf:
            buf[at % len(buf)] = byte
        elif kind == 1:
            buf[at:at] = bytes([byte])
        elif buf:
            del buf[at % len(buf)]
    check(bytes(buf))


# -- nesting ------------------------------------------------------------------------------------

SHAPES = st.lists(
    st.sampled_from(["array", "map-value", "map-key", "tag"]), min_size=0, max_size=40
)


def nest(shape: list[str], leaf: bytes = b"\x00") -> bytes:
    data = leaf
    for kind in reversed(shape):
        if kind == "array":
            data = b"\x81" + data
        elif kind == "map-value":
            data = b"\xa1\x01" + data
        elif kind == "map-key":
            data = b"\xa1" + data + b"\x01"  # a container as a map key: malformed at any depth
        else:
            data = b"\xd8\x12" + data
    return data


@fuzz_settings(300)
@given(SHAPES)
def test_nesting_depth(shape: list[str]) -> None:
    """Any mix of arrays, maps and tags: refused as too-large exactly when the leaf lies
    deeper than MAX_DEPTH (the deepest item is reached before anything else is judged); a
    container used as a map key is malformed."""
    got = check(nest(shape))
    if len(shape) > MAX_DEPTH:
        assert isinstance(got, MessageError) and got.reason is MessageReason.TOO_LARGE, got
    elif "map-key" in shape[:-1]:
        assert isinstance(got, MessageError) and got.reason is MessageReason.MALFORMED, got
    else:
        assert not isinstance(got, MessageError), got
        assert depth_of(got) == len(shape)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100, 10_000, 1_000_000])
def test_very_deep_nesting_is_refused_quickly(depth: int) -> None:
    for prefix in (b"\x81", b"\xa1\x01", b"\xd8\x12", b"\x82\x00"):
        got = check(prefix * depth + b"\x00")
        assert isinstance(got, MessageError) and got.reason is MessageReason.TOO_LARGE


def test_item_count_limit() -> None:
    ok = head(4, MAX_ITEMS - 1) + b"\x00" * (MAX_ITEMS - 1)
    assert check(ok) == [0] * (MAX_ITEMS - 1)
    over = head(4, MAX_ITEMS) + b"\x00" * MAX_ITEMS
    got = check(over)
    assert isinstance(got, MessageError) and got.reason is MessageReason.TOO_LARGE


# -- lengths ------------------------------------------------------------------------------------


@fuzz_settings(300)
@given(
    st.sampled_from([2, 3, 4, 5, 6]),
    st.integers(0, 2**64 - 1) | st.sampled_from([2**64 - 1, 2**63, 2**32, 2**31 - 1, 65536]),
    st.binary(max_size=16),
)
def test_huge_lengths(major: int, arg: int, rest: bytes) -> None:
    """Byte/text strings, arrays and maps claiming up to 2^64-1 elements: refused at once
    (no allocation, no loop over the claimed count), unless the input really holds them."""
    got = check(head(major, arg) + rest)
    if major in (2, 3, 4, 5) and arg > len(rest):
        assert isinstance(got, MessageError)


@fuzz_settings(200)
@given(
    st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7]), st.integers(0, 2**16), st.sampled_from([1, 2, 4, 8])
)
def test_non_preferred_heads(major: int, arg: int, size: int) -> None:
    """Non-shortest heads are well-formed CBOR (RFC 8949 4.2 makes preferred serialization a
    profile, not a rule): the decoder reads them as cbor2 does."""
    if arg >= 1 << (8 * size):
        arg %= 1 << (8 * size)
    if major in (4, 5):
        arg %= 300
    body = {
        2: b"\x00" * arg,
        3: b"a" * arg,
        4: b"\x00" * arg,
        5: b"".join(head(0, i) + b"\x00" for i in range(arg)),
        6: b"\x00",
    }.get(major, b"")
    got = check(long_head(major, arg, size) + body)
    if major != 7 or size != 1:  # f8 xx (simple values) is the only refusal here
        assert not isinstance(got, MessageError) or got.reason is MessageReason.TOO_LARGE, got


@fuzz_settings(200)
@given(
    st.integers(0, 2**32),
    st.sampled_from([1, 2, 4, 8]),
    st.sampled_from([1, 2, 4, 8]),
    st.booleans(),
)
def test_duplicate_keys_in_two_encodings(key: int, size1: int, size2: int, negative: bool) -> None:
    """The same key spelled in two head widths is still a duplicate."""
    if key >= 1 << (8 * min(size1, size2)):
        key %= 1 << (8 * min(size1, size2))
    major = 1 if negative else 0
    data = b"\xa2" + long_head(major, key, size1) + b"\x00" + long_head(major, key, size2) + b"\x01"
    got = check(data)
    assert isinstance(got, MessageError) and got.reason is MessageReason.DUPLICATE_HEADER


@pytest.mark.parametrize(
    "data",
    [
        b"\x9f\xff",
        b"\x5f\xff",
        b"\x7f\xff",
        b"\xbf\xff",
        b"\x1f",
        b"\x3f",
        b"\xdf\x00",
        b"\x1c",
        b"\x1d",
        b"\x1e",
        b"\xfc",
        b"\xfd",
        b"\xfe",
        b"\xf8\x00",
        b"\xf8\xff",
    ],
)
def test_indefinite_and_reserved_are_malformed(data: bytes) -> None:
    got = check(data)
    assert isinstance(got, MessageError) and got.reason is MessageReason.MALFORMED


def test_floats_of_every_width() -> None:
    for data, value in (
        (b"\xf9" + struct.pack(">e", 1.5), 1.5),
        (b"\xfa" + struct.pack(">f", -2.25), -2.25),
        (b"\xfb" + struct.pack(">d", 1e300), 1e300),
    ):
        assert check(data) == value
