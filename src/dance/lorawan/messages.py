"""LoRaWAN Backend Interfaces (TS002) JoinReq / JoinAns messages: a small, strict schema.

A message is one JSON object. It is refused (`MessageError` with a stable ``reason``) when:

- it is not UTF-8 JSON, is larger than ``MAX_MESSAGE`` bytes, has a duplicate key, a NaN or
  Infinity, or is not an object (``malformed-json``);
- ``MessageType`` is absent or not ``JoinReq``/``JoinAns`` (``unknown-message-type``);
- ``ProtocolVersion`` is not ``"1.0"`` (``bad-protocol-version``);
- a required field is missing (``missing-field``), a field is not in the schema of its message
  type (``unknown-field``), or has the wrong type, length or range (``bad-field``): hex fields
  have an exact number of hex digits (upper or lower case), integers are JSON integers (never
  booleans or floats);
- the JoinRequest PHY payload disagrees with the JSON fields (``payload-mismatch``): its MHDR is
  not a JoinRequest, or its JoinEUI/DevEUI (little-endian on air) are not ``ReceiverID`` /
  ``DevEUI``.

Nothing is normalized: a message is accepted as sent or refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "JOIN_ANS",
    "JOIN_REQ",
    "MAX_MESSAGE",
    "RESULT_CODES",
    "MessageError",
    "encode",
    "parse",
    "validate",
]

JOIN_REQ: Final = "JoinReq"
JOIN_ANS: Final = "JoinAns"
MAX_MESSAGE: Final = 16 * 1024

#: TS002 Table 24 result codes.
RESULT_CODES: Final = frozenset(
    {
        "Success",
        "MICFailed",
        "JoinReqFailed",
        "NoRoamingAgreement",
        "DevRoamingDisallowed",
        "RoamingActDisallowed",
        "ActivationDisallowed",
        "UnknownDevEUI",
        "UnknownDevAddr",
        "UnknownSender",
        "UnknownReceiver",
        "Deferred",
        "XmitFailed",
        "InvalidFPort",
        "InvalidProtocolVersion",
        "StaleDeviceProfile",
        "MalformedRequest",
        "FrameSizeError",
        "Other",
    }
)


class MessageError(ValueError):
    """A message refused; ``reason`` is stable (counted, logged, sent back)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _hex(*lengths: int) -> Any:
    """A hex string of exactly one of ``lengths`` bytes."""
    pattern = re.compile(r"[0-9A-Fa-f]*")

    def check(value: Any) -> str | None:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            return "not a hex string"
        if len(value) not in {2 * n for n in lengths}:
            return f"{len(value)} hex digits, expected {' or '.join(str(2 * n) for n in lengths)}"
        return None

    return check


def _int(low: int, high: int) -> Any:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "not an integer"
        if not low <= value <= high:
            return f"out of range {low}..{high}"
        return None

    return check


def _text(max_len: int, allowed: frozenset[str] | None = None) -> Any:
    def check(value: Any) -> str | None:
        if not isinstance(value, str) or len(value) > max_len:
            return f"not a string of at most {max_len} characters"
        if allowed is not None and value not in allowed:
            return "not an allowed value"
        return None

    return check


_MAC_VERSIONS: Final = frozenset({"1.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1"})


def _result(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "not an object"
    if set(value) - {"ResultCode", "Description"}:
        return "unknown member"
    code = value.get("ResultCode")
    if not isinstance(code, str) or code not in RESULT_CODES:
        return "unknown or missing ResultCode"
    if "Description" in value and _text(256)(value["Description"]):
        return "Description is not a short string"
    return None


def _key_envelope(value: Any) -> str | None:
    if not isinstance(value, dict) or set(value) != {"KEKLabel", "AESKey"}:
        return "not an object with exactly KEKLabel and AESKey"
    if _text(64)(value["KEKLabel"]):
        return "KEKLabel is not a short string"
    # plain 16-byte key (empty KEKLabel) or RFC 3394 wrapped (24 bytes)
    return _hex(24 if value["KEKLabel"] else 16)(value["AESKey"])  # type: ignore[no-any-return]


_COMMON: Final[dict[str, Any]] = {
    "ProtocolVersion": _text(8),
    "SenderID": None,  # by message type
    "ReceiverID": None,
    "TransactionID": _int(0, 2**32 - 1),
    "MessageType": _text(16),
}
_SCHEMAS: Final[dict[str, tuple[dict[str, Any], dict[str, Any]]]] = {
    # (required, optional)
    JOIN_REQ: (
        {
            **_COMMON,
            "SenderID": _hex(3),  # NetID of the network server
            "ReceiverID": _hex(8),  # JoinEUI of the join server
            "MACVersion": _text(8, _MAC_VERSIONS),
            "PHYPayload": _hex(23),  # the JoinRequest frame
            "DevEUI": _hex(8),
            "DevAddr": _hex(4),
            "DLSettings": _hex(1),
            "RxDelay": _int(0, 15),
        },
        {"CFList": _hex(16), "SenderNSID": _text(256)},
    ),
    JOIN_ANS: (
        {
            **_COMMON,
            "SenderID": _hex(8),  # JoinEUI
            "ReceiverID": _hex(3),  # NetID
            "Result": _result,
        },
        {
            "PHYPayload": _hex(17, 33),  # the JoinAccept frame (with or without CFList)
            "Lifetime": _int(0, 2**32 - 1),
            "NwkSKey": _key_envelope,
            "AppSKey": _key_envelope,
            "SessionKeyID": _hex(*range(1, 33)),
        },
    ),
}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MessageError("malformed-json", f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(text: str) -> Any:
    raise MessageError("malformed-json", f"{text} is not JSON")


def parse(data: bytes, *, expect: str | None = None) -> dict[str, Any]:
    """Decode and validate one message; ``expect`` also requires that MessageType."""
    if len(data) > MAX_MESSAGE:
        raise MessageError("malformed-json", f"{len(data)} bytes, at most {MAX_MESSAGE}")
    try:
        text = data.decode("utf-8", "strict")
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except MessageError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MessageError("malformed-json", str(exc)[:200]) from None
    return validate(obj, expect=expect)


def validate(obj: Any, *, expect: str | None = None) -> dict[str, Any]:
    """Check a decoded message against its schema; returns it unchanged."""
    if not isinstance(obj, dict):
        raise MessageError("malformed-json", "not a JSON object")
    kind = obj.get("MessageType")
    if not isinstance(kind, str) or kind not in _SCHEMAS:
        raise MessageError("unknown-message-type", repr(kind)[:64])
    if expect is not None and kind != expect:
        raise MessageError("unknown-message-type", f"{kind}, expected {expect}")
    if obj.get("ProtocolVersion") != "1.0":
        raise MessageError("bad-protocol-version", repr(obj.get("ProtocolVersion"))[:64])
    required, optional = _SCHEMAS[kind]
    for name in required:
        if name not in obj:
            raise MessageError("missing-field", name)
    for name, value in obj.items():
        check = required.get(name) or optional.get(name)
        if check is None:
            raise MessageError("unknown-field", repr(name)[:64])
        problem = check(value)
        if problem:
            raise MessageError("bad-field", f"{name}: {problem}")
    if kind == JOIN_REQ:
        _check_join_request_frame(obj)
    return obj


def _check_join_request_frame(obj: Mapping[str, Any]) -> None:
    frame = bytes.fromhex(obj["PHYPayload"])
    if frame[0] != 0x00:
        raise MessageError("payload-mismatch", "MHDR is not a JoinRequest")
    if frame[1:9][::-1] != bytes.fromhex(obj["ReceiverID"]):
        raise MessageError("payload-mismatch", "JoinEUI in PHYPayload is not ReceiverID")
    if frame[9:17][::-1] != bytes.fromhex(obj["DevEUI"]):
        raise MessageError("payload-mismatch", "DevEUI in PHYPayload is not DevEUI")


def encode(message: Mapping[str, Any]) -> bytes:
    """Validate and serialize a message (compact UTF-8 JSON)."""
    validate(dict(message))
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
