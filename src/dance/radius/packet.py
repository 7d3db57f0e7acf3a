"""A strict RADIUS packet codec (RFC 2865 section 3 and 5, RFC 2866, RFC 3579, RFC 6613/6614).

Sans-I/O: bytes in, checked packets or a `RadiusError` out. Only the simple TLV format of
RFC 2865 is parsed (RFC 6929 extended attributes are opaque values); anything ambiguous is
refused rather than normalized:

- the Length field must be 20..4096 and equal to the packet's size (on a stream, the framer takes
  the Length field as the boundary; see `StreamFramer`);
- every attribute is at least 3 octets (an empty value is refused, RFC 6929 section 2.1) and the
  attributes fill the packet exactly;
- Message-Authenticator at most once, 16 octets, and correct (HMAC-MD5, RFC 3579 section 3.2);
  required with EAP-Message and in Status-Server (RFC 5997);
- User-Password at most once, 16..128 octets in steps of 16 (RFC 2865 section 5.2);
- the Request Authenticator of an Accounting-Request (RFC 2866 section 3) and the Response
  Authenticator of every response are checked.

The secret-dependent parts are recomputed for another shared secret by `resign_request` and
`resign_response`: User-Password (RFC 2865 5.2), Tunnel-Password (RFC 2868 3.5) and the
Microsoft MPPE keys (RFC 2548 2.4.2-3, salt-encrypted like Tunnel-Password) are decrypted with
one secret and encrypted again with the other; Message-Authenticator and the authenticators are
recomputed. Any other attribute is copied octet for octet.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ACCESS_ACCEPT",
    "ACCESS_CHALLENGE",
    "ACCESS_REJECT",
    "ACCESS_REQUEST",
    "ACCOUNTING_REQUEST",
    "ACCOUNTING_RESPONSE",
    "MAX_LENGTH",
    "MIN_LENGTH",
    "RADSEC_SECRET",
    "STATUS_SERVER",
    "Attribute",
    "Packet",
    "RadiusError",
    "StreamFramer",
    "check_request",
    "check_response",
    "encode",
    "hide_password",
    "parse_packet",
    "resign_request",
    "resign_response",
    "sign_request",
    "sign_response",
    "unhide_password",
]

ACCESS_REQUEST = 1
ACCESS_ACCEPT = 2
ACCESS_REJECT = 3
ACCOUNTING_REQUEST = 4
ACCOUNTING_RESPONSE = 5
ACCESS_CHALLENGE = 11
STATUS_SERVER = 12
REQUEST_CODES = frozenset({ACCESS_REQUEST, ACCOUNTING_REQUEST, STATUS_SERVER})
RESPONSE_CODES = frozenset({ACCESS_ACCEPT, ACCESS_REJECT, ACCOUNTING_RESPONSE, ACCESS_CHALLENGE})
# which responses answer which request
ANSWERS = {
    ACCESS_REQUEST: frozenset({ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_CHALLENGE}),
    ACCOUNTING_REQUEST: frozenset({ACCOUNTING_RESPONSE}),
    STATUS_SERVER: frozenset({ACCESS_ACCEPT, ACCOUNTING_RESPONSE}),
}

USER_PASSWORD = 2
VENDOR_SPECIFIC = 26
TUNNEL_PASSWORD = 69
EAP_MESSAGE = 79
MESSAGE_AUTHENTICATOR = 80
MICROSOFT = 311
MS_MPPE_SEND_KEY = 16
MS_MPPE_RECV_KEY = 17

MIN_LENGTH = 20
MAX_LENGTH = 4096
RADSEC_SECRET = b"radsec"  # RFC 6614 section 2.3, item 4
_ZERO16 = bytes(16)


class RadiusError(ValueError):
    """A packet refused, with a stable reason code. ``framing``: the stream's packet boundaries
    are lost (or cannot be trusted), so the connection must be closed."""

    def __init__(self, reason: str, detail: str = "", *, framing: bool = False) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.framing = framing


@dataclass(frozen=True)
class Attribute:
    type: int
    value: bytes

    def encode(self) -> bytes:
        if not 1 <= len(self.value) <= 253:
            raise RadiusError("attribute-length", f"type {self.type}: {len(self.value)} octets")
        return bytes((self.type, len(self.value) + 2)) + self.value


@dataclass(frozen=True)
class Packet:
    code: int
    identifier: int
    authenticator: bytes
    attributes: tuple[Attribute, ...]
    raw: bytes

    def get(self, type_: int) -> list[bytes]:
        return [a.value for a in self.attributes if a.type == type_]

    def vendor_attributes(self, vendor: int) -> list[tuple[int, bytes]]:
        """The (vendor-type, value) pairs of this vendor's Vendor-Specific attributes, in the
        RFC 2865 recommended format; a VSA of this vendor in any other shape is refused."""
        out: list[tuple[int, bytes]] = []
        for value in self.get(VENDOR_SPECIFIC):
            if len(value) >= 4 and int.from_bytes(value[:4], "big") == vendor:
                out += _sub_attributes(vendor, value[4:])
        return out


def _sub_attributes(vendor: int, data: bytes) -> list[tuple[int, bytes]]:
    out = []
    i = 0
    while i < len(data):
        if len(data) - i < 2 or data[i + 1] < 3 or data[i + 1] > len(data) - i:
            raise RadiusError("vendor-attribute-length", f"vendor {vendor}")
        out.append((data[i], data[i + 2 : i + data[i + 1]]))
        i += data[i + 1]
    return out


def parse_packet(data: bytes) -> Packet:
    """One whole packet, checked for structure (not yet for its authenticators)."""
    if len(data) < MIN_LENGTH:
        raise RadiusError("short-packet", f"{len(data)} octets", framing=True)
    code, identifier, length = struct.unpack_from("!BBH", data)
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise RadiusError("bad-length", f"Length field {length}", framing=True)
    if length != len(data):
        raise RadiusError("length-mismatch", f"Length {length}, {len(data)} octets", framing=True)
    attributes = []
    i = MIN_LENGTH
    seen_ma = seen_pw = False
    while i < length:
        if length - i < 2:
            raise RadiusError("attribute-overrun", f"1 octet left at offset {i}")
        type_, alen = data[i], data[i + 1]
        if alen < 3:
            raise RadiusError("attribute-length", f"type {type_} length {alen} at offset {i}")
        if alen > length - i:
            raise RadiusError("attribute-overrun", f"type {type_} length {alen} at offset {i}")
        value = data[i + 2 : i + alen]
        if type_ == MESSAGE_AUTHENTICATOR:
            if seen_ma:
                raise RadiusError("duplicate-message-authenticator")
            if len(value) != 16:
                raise RadiusError("message-authenticator-length", f"{len(value)} octets")
            seen_ma = True
        elif type_ == USER_PASSWORD:
            if seen_pw:
                raise RadiusError("duplicate-user-password")
            if len(value) % 16 or not 16 <= len(value) <= 128:
                raise RadiusError("user-password-length", f"{len(value)} octets")
            seen_pw = True
        elif type_ == VENDOR_SPECIFIC and len(value) < 5:
            raise RadiusError("vendor-specific-length", f"{len(value)} octets")
        attributes.append(Attribute(type_, value))
        i += alen
    return Packet(code, identifier, bytes(data[4:20]), tuple(attributes), bytes(data))


def encode(
    code: int, identifier: int, authenticator: bytes, attributes: Iterable[Attribute]
) -> bytes:
    body = b"".join(a.encode() for a in attributes)
    length = MIN_LENGTH + len(body)
    if length > MAX_LENGTH:
        raise RadiusError("too-large", f"{length} octets")
    if len(authenticator) != 16 or not 0 <= identifier <= 255:
        raise ValueError("bad header")
    return struct.pack("!BBH", code, identifier, length) + authenticator + body


def _md5(*parts: bytes) -> bytes:
    return hashlib.md5(b"".join(parts), usedforsecurity=False).digest()


def _with_authenticator(raw: bytes, authenticator: bytes) -> bytes:
    return raw[:4] + authenticator + raw[20:]


def _zero_ma(raw: bytes) -> tuple[bytes, bytes | None]:
    """The packet with its Message-Authenticator value zeroed, and that value (None: absent)."""
    i = MIN_LENGTH
    while i < len(raw):
        if raw[i] == MESSAGE_AUTHENTICATOR:
            return raw[: i + 2] + _ZERO16 + raw[i + 18 :], raw[i + 2 : i + 18]
        i += raw[i + 1]
    return raw, None


def _hmac(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, hashlib.md5).digest()


def _check_ma(packet: Packet, secret: bytes, authenticator: bytes) -> None:
    zeroed, value = _zero_ma(packet.raw)
    if value is None:
        if packet.get(EAP_MESSAGE) or packet.code == STATUS_SERVER:
            raise RadiusError("missing-message-authenticator")
        return
    expected = _hmac(secret, _with_authenticator(zeroed, authenticator))
    if not hmac.compare_digest(expected, value):
        raise RadiusError("bad-message-authenticator")


def check_request(packet: Packet, secret: bytes) -> None:
    """A request from a client: its code, Message-Authenticator and (accounting) Request
    Authenticator, all with ``secret``."""
    if packet.code not in REQUEST_CODES:
        raise RadiusError("unexpected-code", f"code {packet.code} from a client")
    if packet.code == ACCOUNTING_REQUEST:
        if packet.get(USER_PASSWORD) or packet.get(TUNNEL_PASSWORD):
            raise RadiusError("unexpected-attribute", "a password in an Accounting-Request")
        expected = _md5(_with_authenticator(packet.raw, _ZERO16), secret)
        if not hmac.compare_digest(expected, packet.authenticator):
            raise RadiusError("bad-request-authenticator")
        _check_ma(packet, secret, _ZERO16)
    else:
        _check_ma(packet, secret, packet.authenticator)


def check_response(packet: Packet, request: Packet, secret: bytes) -> None:
    """A response to ``request`` (as it was sent), checked with ``secret``."""
    if packet.code not in ANSWERS.get(request.code, frozenset()):
        raise RadiusError("unexpected-code", f"code {packet.code} answering {request.code}")
    if packet.identifier != request.identifier:
        raise RadiusError("identifier-mismatch")
    expected = _md5(_with_authenticator(packet.raw, request.authenticator), secret)
    if not hmac.compare_digest(expected, packet.authenticator):
        raise RadiusError("bad-response-authenticator")
    _check_ma(packet, secret, request.authenticator)


def _sign(raw: bytes, secret: bytes, ma_authenticator: bytes) -> bytes:
    zeroed, value = _zero_ma(raw)
    if value is None:
        return raw
    i = MIN_LENGTH  # walk the attributes to the Message-Authenticator
    while zeroed[i] != MESSAGE_AUTHENTICATOR:
        i += zeroed[i + 1]
    mac = _hmac(secret, _with_authenticator(zeroed, ma_authenticator))
    return zeroed[: i + 2] + mac + zeroed[i + 18 :]


def sign_request(
    code: int,
    identifier: int,
    attributes: Iterable[Attribute],
    secret: bytes,
    authenticator: bytes | None = None,
) -> bytes:
    """A request with its authenticators: ``authenticator`` (16 random octets) for Access-Request
    and Status-Server, computed for Accounting-Request. A Message-Authenticator attribute in
    ``attributes`` (any 16-octet value) gets its HMAC."""
    attrs = list(attributes)
    if code == ACCOUNTING_REQUEST:
        raw = _sign(encode(code, identifier, _ZERO16, attrs), secret, _ZERO16)
        return _with_authenticator(raw, _md5(raw, secret))
    if authenticator is None or len(authenticator) != 16:
        raise ValueError("an Access-Request needs a 16-octet Request Authenticator")
    raw = encode(code, identifier, authenticator, attrs)
    return _sign(raw, secret, authenticator)


def sign_response(
    code: int,
    identifier: int,
    request_authenticator: bytes,
    attributes: Iterable[Attribute],
    secret: bytes,
) -> bytes:
    raw = _sign(encode(code, identifier, request_authenticator, attributes), secret,
                request_authenticator)  # fmt: skip
    return _with_authenticator(raw, _md5(raw, secret))


# -- hidden attributes ---------------------------------------------------------------------------


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def unhide_password(value: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """RFC 2865 5.2, padding kept (the receiver strips trailing NULs)."""
    out = []
    last = authenticator
    for i in range(0, len(value), 16):
        chunk = value[i : i + 16]
        out.append(_xor(chunk, _md5(secret, last)))
        last = chunk
    return b"".join(out)


def hide_password(padded: bytes, secret: bytes, authenticator: bytes) -> bytes:
    if len(padded) % 16 or not padded:
        raise ValueError("the password must be padded to a multiple of 16 octets")
    out = []
    last = authenticator
    for i in range(0, len(padded), 16):
        last = _xor(padded[i : i + 16], _md5(secret, last))
        out.append(last)
    return b"".join(out)


def _salt_recrypt(value: bytes, old: bytes, old_ra: bytes, new: bytes, new_ra: bytes) -> bytes:
    """RFC 2868 3.5 / RFC 2548 2.4.2: ``salt(2) + ciphertext`` decrypted with the old secret and
    Request Authenticator, encrypted again with the new ones (same salt)."""
    if len(value) < 18 or (len(value) - 2) % 16:
        raise RadiusError("salted-attribute-length", f"{len(value)} octets")
    salt, cipher = value[:2], value[2:]
    plain = []
    last = old_ra + salt
    for i in range(0, len(cipher), 16):
        chunk = cipher[i : i + 16]
        plain.append(_xor(chunk, _md5(old, last)))
        last = chunk
    out = []
    last = new_ra + salt
    for block in plain:
        last = _xor(block, _md5(new, last))
        out.append(last)
    return salt + b"".join(out)


def _recrypt(
    attributes: Iterable[Attribute], old: bytes, old_ra: bytes, new: bytes, new_ra: bytes
) -> list[Attribute]:
    out = []
    for a in attributes:
        value = a.value
        if a.type == USER_PASSWORD:
            value = hide_password(unhide_password(value, old, old_ra), new, new_ra)
        elif a.type == TUNNEL_PASSWORD:
            if len(value) < 19:
                raise RadiusError("salted-attribute-length", "Tunnel-Password")
            value = value[:1] + _salt_recrypt(value[1:], old, old_ra, new, new_ra)
        elif a.type == VENDOR_SPECIFIC and int.from_bytes(value[:4], "big") == MICROSOFT:
            subs = []
            for sub_type, sub in _sub_attributes(MICROSOFT, value[4:]):
                plain = sub
                if sub_type in (MS_MPPE_SEND_KEY, MS_MPPE_RECV_KEY):
                    plain = _salt_recrypt(sub, old, old_ra, new, new_ra)
                subs.append(bytes((sub_type, len(plain) + 2)) + plain)
            value = value[:4] + b"".join(subs)
        out.append(Attribute(a.type, value))
    return out


def resign_request(
    packet: Packet,
    old: bytes,
    new: bytes,
    *,
    add: Iterable[Attribute] = (),
    identifier: int | None = None,
) -> bytes:
    """``packet`` (checked with ``old``) for a server that shares ``new``: hidden attributes
    re-encrypted, ``add`` appended, authenticators recomputed. The Request Authenticator of an
    Access-Request or Status-Server is kept; an Accounting-Request gets its computed one."""
    ident = packet.identifier if identifier is None else identifier
    attrs = [*packet.attributes, *add]
    if packet.code == ACCOUNTING_REQUEST:
        return sign_request(packet.code, ident, attrs, new)
    ra = packet.authenticator
    return sign_request(packet.code, ident, _recrypt(attrs, old, ra, new, ra), new, ra)


def resign_response(
    response: Packet,
    sent: Packet,
    original: Packet,
    old: bytes,
    new: bytes,
    *,
    drop: Iterable[int] = (),
) -> bytes:
    """``response`` to the request ``sent`` (checked with ``old``) as the answer to
    ``original`` (the client's request) under ``new``; attribute types in ``drop`` removed."""
    skip = set(drop)
    attrs = [a for a in response.attributes if a.type not in skip]
    attrs = _recrypt(attrs, old, sent.authenticator, new, original.authenticator)
    return sign_response(response.code, original.identifier, original.authenticator, attrs, new)


class StreamFramer:
    """RADIUS packets out of a byte stream (RFC 6613 section 2.6): the Length field of each
    header is the boundary. A Length outside 20..4096 loses the framing (`RadiusError` with
    ``framing=True``); the connection must then be closed."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out = []
        while len(self._buffer) >= 4:
            length = int.from_bytes(self._buffer[2:4], "big")
            if not MIN_LENGTH <= length <= MAX_LENGTH:
                raise RadiusError("bad-length", f"Length field {length}", framing=True)
            if len(self._buffer) < length:
                break
            out.append(bytes(self._buffer[:length]))
            del self._buffer[:length]
        return out

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def eof(self) -> None:
        if self._buffer:
            raise RadiusError("truncated", f"{len(self._buffer)} octets at the end", framing=True)
