"""The key daemon's wire protocol: one request line, one reply line, then close (sans I/O).

Request: ``DANCE-SSH-KEYS/1 <TAB> user <TAB> keytype <TAB> base64 <LF>``.
Reply: ``OK <TAB> authorized_keys line <LF>`` (the key may log in), ``NO <LF>`` (it may not), or
``ERR <TAB> reason <LF>`` (the daemon could not decide; the hook then prints nothing).

Fields are printable ASCII without spaces or tabs (an account name, an SSH key type, base64):
anything else is refused as malformed, never cleaned up. Standard library only: the hook imports
this module on its fast path.
"""

from __future__ import annotations

from dance.service.lineproto import ProtocolError, printable, split_request

__all__ = [
    "MAGIC",
    "MAX_REPLY",
    "MAX_REQUEST",
    "ProtocolError",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
]

MAGIC = "DANCE-SSH-KEYS/1"
MAX_REQUEST = 16384  # bytes, LF included: an RSA-16384 blob in base64 is under 3 KiB
MAX_REPLY = 16384


def encode_request(user: str, keytype: str, blob: str) -> bytes:
    for field in (user, keytype, blob):
        if not printable(field):
            raise ProtocolError("fields must be printable ASCII without spaces")
    line = f"{MAGIC}\t{user}\t{keytype}\t{blob}\n".encode("ascii")
    if len(line) > MAX_REQUEST:
        raise ProtocolError("request too long")
    return line


def decode_request(line: bytes) -> tuple[str, str, str]:
    """``(user, keytype, blob)`` from one request line (with its LF)."""
    user, keytype, blob = split_request(line, MAGIC, 3, MAX_REQUEST)
    if not all(printable(f) for f in (user, keytype, blob)):
        raise ProtocolError("fields must be printable ASCII without spaces")
    return user, keytype, blob


def encode_reply(line: str | None, error: str | None = None) -> bytes:
    if error is not None:
        return f"ERR\t{error}\n".encode("ascii", "replace")
    if line is None:
        return b"NO\n"
    if "\n" in line or "\r" in line:
        raise ProtocolError("an authorized_keys line is one line")
    return f"OK\t{line}\n".encode()


def decode_reply(data: bytes) -> tuple[str, str]:
    """``("OK", line)``, ``("NO", "")`` or ``("ERR", reason)``."""
    if len(data) > MAX_REPLY or not data.endswith(b"\n") or data.count(b"\n") != 1:
        raise ProtocolError("reply is not one line")
    try:
        text = data[:-1].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("reply is not UTF-8") from None
    if text == "NO":
        return "NO", ""
    kind, sep, rest = text.partition("\t")
    if sep and kind in ("OK", "ERR") and rest:
        return kind, rest
    raise ProtocolError("unknown reply")
