"""A strict CBOR decoder for untrusted COSE input (RFC 8949 subset), and encoding via cbor2.

Strict: definite lengths only, no duplicate map keys (reported as ``duplicate-header``), map keys
are integers or text, bounded depth and item count, valid UTF-8 text, the whole input consumed.
Anything else is :class:`MessageError` (``malformed``); nothing else is ever raised.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from dance.message.errors import MessageError, MessageReason

__all__ = ["Tag", "decode", "encode"]

MAX_DEPTH = 8
MAX_ITEMS = 4096


@dataclass(frozen=True, slots=True)
class Tag:
    tag: int
    value: Any


def encode(obj: object) -> bytes:
    """Deterministic CBOR (RFC 8949 section 4.2) through cbor2."""
    try:
        import cbor2
    except ImportError:
        from dance.message.errors import MissingExtra

        raise MissingExtra("cbor2") from None
    if isinstance(obj, Tag):
        return cbor2.dumps(cbor2.CBORTag(obj.tag, obj.value), canonical=True)
    return cbor2.dumps(obj, canonical=True)


def _bad(detail: str) -> MessageError:
    return MessageError(MessageReason.MALFORMED, f"CBOR: {detail}")


class _Reader:
    __slots__ = ("data", "items", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.items = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise _bad("truncated")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def head(self) -> tuple[int, int, int]:
        """(major type, additional info, argument)."""
        first = self.take(1)[0]
        major, info = first >> 5, first & 0x1F
        if info < 24:
            return major, info, info
        if info in (24, 25, 26, 27):
            size = 1 << (info - 24)
            return major, info, int.from_bytes(self.take(size), "big")
        raise _bad("indefinite length or reserved additional information")

    def item(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise MessageError(MessageReason.TOO_LARGE, "CBOR nested too deeply")
        self.items += 1
        if self.items > MAX_ITEMS:
            raise MessageError(MessageReason.TOO_LARGE, "too many CBOR items")
        major, info, arg = self.head()
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            return self.take(arg)
        if major == 3:
            try:
                return self.take(arg).decode("utf-8")
            except UnicodeDecodeError:
                raise _bad("invalid UTF-8 text") from None
        if major == 4:
            if arg > len(self.data) - self.pos:
                raise _bad("array longer than the input")
            return [self.item(depth + 1) for _ in range(arg)]
        if major == 5:
            if arg > len(self.data) - self.pos:
                raise _bad("map longer than the input")
            out: dict[int | str, Any] = {}
            for _ in range(arg):
                key = self.item(depth + 1)
                if not isinstance(key, int | str) or isinstance(key, bool):
                    raise _bad("map key is not an integer or text")
                if key in out:
                    raise MessageError(
                        MessageReason.DUPLICATE_HEADER, f"map key {key!r} appears twice"
                    )
                out[key] = self.item(depth + 1)
            return out
        if major == 6:
            return Tag(arg, self.item(depth + 1))
        # major 7: simple values and floats
        if info == 20:
            return False
        if info == 21:
            return True
        if info in (22, 23):
            return None
        if info == 25:
            return struct.unpack(">e", arg.to_bytes(2, "big"))[0]
        if info == 26:
            return struct.unpack(">f", arg.to_bytes(4, "big"))[0]
        if info == 27:
            return struct.unpack(">d", arg.to_bytes(8, "big"))[0]
        raise _bad("unsupported simple value")


def decode(data: bytes) -> Any:
    """Decode exactly one CBOR item from ``data`` (strict; see the module docstring)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _bad("input is not bytes")
    reader = _Reader(bytes(data))
    value = reader.item(0)
    if reader.pos != len(reader.data):
        raise _bad("trailing bytes after the item")
    return value
