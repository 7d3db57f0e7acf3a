"""A strict, sans-I/O MQTT codec: bytes in, packets out (no sockets, no event loop).

What the DANCE front needs and nothing more: the fixed header and Remaining Length of every
packet (OASIS MQTT 3.1.1 section 2.2, MQTT 5.0 section 2.1.4: a Variable Byte Integer of at most
4 bytes, minimally encoded, and here also at most a configured maximum), the parsing of CONNECT
for protocol levels 4 (3.1.1) and 5 (5.0, with properties), and its re-encoding.

Anything ambiguous is refused with :class:`MQTTError` and a stable ``reason``; nothing is
normalized. No maintained Python library is a sans-I/O MQTT codec (paho-mqtt is a client with its
own socket loop), so CONNECT is parsed here, by hand, and fuzzed (tests/mqtt).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = [
    "CONNECT",
    "DEFAULT_MAX_REMAINING",
    "Connect",
    "MQTTError",
    "Packet",
    "PacketReader",
    "Property",
    "Will",
    "encode_connect",
    "encode_varint",
    "parse_connect",
]

CONNECT = 1
AUTH = 15
DEFAULT_MAX_REMAINING = 256 * 1024
VARINT_MAX = 268_435_455  # the largest 4-byte Variable Byte Integer

# MQTT 5 property identifiers and their value types, for CONNECT and for the will.
_BYTE, _TWO, _FOUR, _VARINT, _STRING, _BINARY, _PAIR = range(7)
_CONNECT_PROPS = {
    0x11: _FOUR,  # Session Expiry Interval
    0x15: _STRING,  # Authentication Method
    0x16: _BINARY,  # Authentication Data
    0x17: _BYTE,  # Request Problem Information
    0x19: _BYTE,  # Request Response Information
    0x21: _TWO,  # Receive Maximum
    0x22: _TWO,  # Topic Alias Maximum
    0x26: _PAIR,  # User Property
    0x27: _FOUR,  # Maximum Packet Size
}
_WILL_PROPS = {
    0x01: _BYTE,  # Payload Format Indicator
    0x02: _FOUR,  # Message Expiry Interval
    0x03: _STRING,  # Content Type
    0x08: _STRING,  # Response Topic
    0x09: _BINARY,  # Correlation Data
    0x18: _FOUR,  # Will Delay Interval
    0x26: _PAIR,  # User Property
}
_USER_PROPERTY = 0x26
_AUTH_METHOD = 0x15


class MQTTError(ValueError):
    """A packet the front refuses; ``reason`` is a stable code (metrics, logs, tests)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Packet:
    """One framed packet: its type (1-15), the fixed header's low 4 bits, and its bytes."""

    type: int
    flags: int
    raw: bytes  # the whole packet, fixed header included (relayed as is)
    header_len: int

    @property
    def body(self) -> bytes:
        return self.raw[self.header_len :]


def encode_varint(value: int) -> bytes:
    """A Variable Byte Integer (1 to 4 bytes)."""
    if not 0 <= value <= VARINT_MAX:
        raise MQTTError("varint-range", str(value))
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _decode_varint(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(value, position after it), None when more bytes are needed; refuses a fifth byte and a
    non-minimal encoding (a trailing 0x00 continuation, e.g. 0x80 0x00)."""
    value = 0
    for i in range(4):
        if pos + i >= len(data):
            return None
        byte = data[pos + i]
        value += (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i and byte == 0:
                raise MQTTError("remaining-length-not-minimal")
            return value, pos + i + 1
    raise MQTTError("remaining-length-overlong", "more than 4 bytes")


class PacketReader:
    """Frames a byte stream into packets. ``feed`` returns the complete packets so far; a
    Remaining Length over ``max_remaining`` is refused as soon as it is read (the body is never
    buffered), and :meth:`eof` refuses a stream that ends inside a packet."""

    def __init__(self, max_remaining: int = DEFAULT_MAX_REMAINING) -> None:
        if not 0 < max_remaining <= VARINT_MAX:
            raise ValueError(f"max_remaining must be 1 to {VARINT_MAX}, not {max_remaining!r}")
        self.max_remaining = max_remaining
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet]:
        self._buf += data
        packets: list[Packet] = []
        while self._buf:
            first = self._buf[0]
            decoded = _decode_varint(self._buf, 1)
            if decoded is None:
                break
            remaining, start = decoded
            if remaining > self.max_remaining:
                raise MQTTError("packet-too-large", f"{remaining} > {self.max_remaining} bytes")
            end = start + remaining
            if len(self._buf) < end:
                break
            packet_type = first >> 4
            if packet_type == 0:
                raise MQTTError("reserved-packet-type", "type 0")
            packets.append(Packet(packet_type, first & 0x0F, bytes(self._buf[:end]), start))
            del self._buf[:end]
        return packets

    def eof(self) -> None:
        """The stream ended: refuses a partial packet (truncated header, length or body)."""
        if self._buf:
            raise MQTTError("truncated", f"{len(self._buf)} bytes of an unfinished packet")


@dataclass(frozen=True)
class Property:
    id: int
    value: int | str | bytes | tuple[str, str]


@dataclass(frozen=True)
class Will:
    qos: int
    retain: bool
    topic: str
    payload: bytes
    properties: tuple[Property, ...] = ()


@dataclass(frozen=True)
class Connect:
    """A parsed CONNECT. ``level`` 4 is MQTT 3.1.1, 5 is MQTT 5.0 (``properties`` only then)."""

    level: int
    clean_start: bool
    keep_alive: int
    client_id: str
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    properties: tuple[Property, ...] = field(default=())

    def as_identity(self, username: str) -> Connect:
        """This CONNECT with ``username`` as its username and no password."""
        return replace(self, username=username, password=None)


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise MQTTError("malformed-connect", f"truncated {what}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "big")

    def binary(self, what: str) -> bytes:
        return self.take(self.u16(what), what)

    def string(self, what: str) -> str:
        raw = self.binary(what)
        try:
            text = raw.decode("utf-8")  # strict: no surrogates, no overlong forms
        except UnicodeDecodeError:
            raise MQTTError("bad-utf8", f"{what} is not UTF-8") from None
        if "\x00" in text:
            raise MQTTError("bad-utf8", f"{what} contains U+0000")
        return text

    def varint(self, what: str) -> int:
        decoded = _decode_varint(self.data, self.pos)
        if decoded is None:
            raise MQTTError("malformed-connect", f"truncated {what}")
        value, self.pos = decoded
        return value


def _properties(cur: _Cursor, allowed: dict[int, int], what: str) -> tuple[Property, ...]:
    length = cur.varint(f"{what} length")
    end = cur.pos + length
    if end > len(cur.data):
        raise MQTTError("malformed-connect", f"truncated {what}")
    sub = _Cursor(cur.data[:end])
    sub.pos = cur.pos
    props: list[Property] = []
    seen: set[int] = set()
    while sub.pos < end:
        ident = sub.varint("property identifier")
        kind = allowed.get(ident)
        if kind is None:
            raise MQTTError("bad-property", f"{what}: identifier {ident:#x} not allowed")
        if ident in seen and ident != _USER_PROPERTY:
            raise MQTTError("bad-property", f"{what}: identifier {ident:#x} twice")
        seen.add(ident)
        value: int | str | bytes | tuple[str, str]
        if kind == _BYTE:
            value = sub.byte("property")
            if value not in (0, 1):
                raise MQTTError("bad-property", f"{what}: {ident:#x} must be 0 or 1")
        elif kind == _TWO:
            value = sub.u16("property")
            if value == 0 and ident == 0x21:
                raise MQTTError("bad-property", "Receive Maximum 0")
        elif kind == _FOUR:
            value = sub.u32("property")
            if value == 0 and ident == 0x27:
                raise MQTTError("bad-property", "Maximum Packet Size 0")
        elif kind == _STRING:
            value = sub.string("property")
        elif kind == _BINARY:
            value = sub.binary("property")
        else:
            value = (sub.string("user property name"), sub.string("user property value"))
        props.append(Property(ident, value))
    if sub.pos != end:  # pragma: no cover - sub is bounded by end
        raise MQTTError("malformed-connect", f"{what} overruns its length")
    cur.pos = end
    return tuple(props)


def parse_connect(packet: Packet) -> Connect:
    """Parse a CONNECT strictly (3.1.1 or 5.0); refuses anything else with a reason."""
    if packet.type != CONNECT:
        raise MQTTError("not-connect", f"packet type {packet.type}")
    if packet.flags != 0:
        raise MQTTError("reserved-flag", "CONNECT fixed-header flags must be 0")
    cur = _Cursor(packet.body)
    name = cur.binary("protocol name")
    level = cur.byte("protocol level")
    if name != b"MQTT":
        raise MQTTError("bad-protocol", f"protocol name {name!r}")
    if level not in (4, 5):
        raise MQTTError("bad-protocol", f"protocol level {level}")
    flags = cur.byte("connect flags")
    if flags & 0x01:
        raise MQTTError("reserved-flag", "CONNECT reserved flag set")
    has_user, has_pass = bool(flags & 0x80), bool(flags & 0x40)
    will_retain, will_qos, has_will = bool(flags & 0x20), (flags >> 3) & 0x03, bool(flags & 0x04)
    if has_will and will_qos == 3:
        raise MQTTError("bad-will", "will QoS 3")
    if not has_will and (will_qos or will_retain):
        raise MQTTError("bad-will", "will QoS or retain without a will")
    if level == 4 and has_pass and not has_user:
        raise MQTTError("malformed-connect", "password without username (3.1.1)")
    keep_alive = cur.u16("keep alive")
    props: tuple[Property, ...] = ()
    if level == 5:
        props = _properties(cur, _CONNECT_PROPS, "CONNECT properties")
        if any(p.id == _AUTH_METHOD for p in props):
            raise MQTTError("enhanced-auth", "MQTT 5 enhanced authentication is not relayed")
        if any(p.id == 0x16 for p in props):
            raise MQTTError("bad-property", "Authentication Data without a method")
    client_id = cur.string("client identifier")
    will = None
    if has_will:
        will_props = _properties(cur, _WILL_PROPS, "will properties") if level == 5 else ()
        topic = cur.string("will topic")
        if not topic or "+" in topic or "#" in topic:
            raise MQTTError("bad-will", "will topic empty or with a wildcard")
        will = Will(will_qos, will_retain, topic, cur.binary("will payload"), will_props)
    username = cur.string("username") if has_user else None
    password = cur.binary("password") if has_pass else None
    if cur.pos != len(cur.data):
        raise MQTTError("malformed-connect", f"{len(cur.data) - cur.pos} trailing bytes")
    return Connect(
        level=level,
        clean_start=bool(flags & 0x02),
        keep_alive=keep_alive,
        client_id=client_id,
        will=will,
        username=username,
        password=password,
        properties=props,
    )


def _bin(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise MQTTError("field-too-long", f"{len(data)} bytes")
    return len(data).to_bytes(2, "big") + data


def _str(text: str) -> bytes:
    if "\x00" in text:
        raise MQTTError("bad-utf8", "U+0000")
    return _bin(text.encode("utf-8"))


def _encode_properties(props: tuple[Property, ...], allowed: dict[int, int]) -> bytes:
    out = bytearray()
    for p in props:
        kind = allowed[p.id]
        out += encode_varint(p.id)
        v = p.value
        if kind == _BYTE and isinstance(v, int):
            out += bytes([v])
        elif kind == _TWO and isinstance(v, int):
            out += v.to_bytes(2, "big")
        elif kind == _FOUR and isinstance(v, int):
            out += v.to_bytes(4, "big")
        elif kind == _STRING and isinstance(v, str):
            out += _str(v)
        elif kind == _BINARY and isinstance(v, bytes):
            out += _bin(v)
        elif kind == _PAIR and isinstance(v, tuple):
            out += _str(v[0]) + _str(v[1])
        else:
            raise MQTTError("bad-property", f"value of {p.id:#x} has the wrong type")
    return encode_varint(len(out)) + bytes(out)


def encode_connect(c: Connect) -> bytes:
    """The CONNECT packet for ``c`` (the inverse of :func:`parse_connect`)."""
    if c.level not in (4, 5):
        raise MQTTError("bad-protocol", f"protocol level {c.level}")
    flags = 0x02 if c.clean_start else 0
    if c.will is not None:
        flags |= 0x04 | (c.will.qos << 3) | (0x20 if c.will.retain else 0)
    if c.username is not None:
        flags |= 0x80
    if c.password is not None:
        flags |= 0x40
    body = bytearray(_bin(b"MQTT") + bytes([c.level, flags]) + c.keep_alive.to_bytes(2, "big"))
    if c.level == 5:
        body += _encode_properties(c.properties, _CONNECT_PROPS)
    body += _str(c.client_id)
    if c.will is not None:
        if c.level == 5:
            body += _encode_properties(c.will.properties, _WILL_PROPS)
        body += _str(c.will.topic) + _bin(c.will.payload)
    if c.username is not None:
        body += _str(c.username)
    if c.password is not None:
        body += _bin(c.password)
    return bytes([CONNECT << 4]) + encode_varint(len(body)) + bytes(body)
