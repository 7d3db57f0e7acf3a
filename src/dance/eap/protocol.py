"""The EAP-TLS verify daemon's wire protocol: one request line, one reply line (sans I/O).

Request: ``DANCE-EAP-VERIFY/1 <TAB> identity <TAB> base64(DER certificate) <LF>``, where identity
is the EAP identity FreeRADIUS passes as ``%{User-Name}`` (``-`` when the hook was given none).
Reply: ``OK <TAB> ClientName <LF>`` (authenticated), ``NO <TAB> reason <LF>`` (refused, with a
stable reason code) or ``ERR <TAB> reason <LF>`` (the daemon could not decide; refused too).

Fields are printable ASCII without spaces or tabs: anything else is refused as malformed, never
cleaned up. Standard library only: the hook (``dance-eap-verify``) imports this module on its
fast path, for every certificate FreeRADIUS asks about.
"""

from __future__ import annotations

import binascii

from dance.service.lineproto import ProtocolError, printable, split_request

__all__ = [
    "MAGIC",
    "MAX_CERT",
    "MAX_IDENTITY",
    "MAX_REPLY",
    "MAX_REQUEST",
    "NO_IDENTITY",
    "ProtocolError",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "pem_body",
]

MAGIC = "DANCE-EAP-VERIFY/1"
MAX_CERT = 16384  # DER bytes: an RSA-8192 certificate with many extensions stays under 4 KiB
MAX_REQUEST = len(MAGIC) + 256 + 4 * (MAX_CERT // 3 + 1) + 4
MAX_REPLY = 1024
MAX_IDENTITY = 253
NO_IDENTITY = "-"
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"
_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def pem_body(text: str) -> str:
    """The base64 body of the one PEM certificate in ``text`` (what FreeRADIUS writes to its
    ``TLS-Client-Cert-Filename``). Anything but exactly one CERTIFICATE block is refused."""
    if text.count(_PEM_BEGIN) != 1 or text.count(_PEM_END) != 1 or text.count("-----") != 4:
        raise ProtocolError("not exactly one PEM certificate")
    start = text.index(_PEM_BEGIN) + len(_PEM_BEGIN)
    end = text.index(_PEM_END)
    if (
        end < start
        or text[: start - len(_PEM_BEGIN)].strip()
        or text[end + len(_PEM_END) :].strip()
    ):
        raise ProtocolError("not exactly one PEM certificate")
    body = "".join(text[start:end].split())
    if not body or not set(body) <= _B64 or len(body) % 4:
        raise ProtocolError("PEM body is not base64")
    if len(body) > 4 * (MAX_CERT // 3 + 1):
        raise ProtocolError("certificate too large")
    return body


def encode_request(identity: str | None, cert_b64: str) -> bytes:
    ident = NO_IDENTITY if identity is None else identity
    if not printable(ident) or len(ident) > MAX_IDENTITY:
        raise ProtocolError("identity must be printable ASCII without spaces, at most 253 bytes")
    if not printable(cert_b64) or not set(cert_b64) <= _B64:
        raise ProtocolError("certificate must be base64")
    line = f"{MAGIC}\t{ident}\t{cert_b64}\n".encode("ascii")
    if len(line) > MAX_REQUEST:
        raise ProtocolError("request too long")
    return line


def decode_request(line: bytes) -> tuple[str | None, bytes]:
    """``(identity or None, DER certificate)`` from one request line (with its LF)."""
    ident, blob = split_request(line, MAGIC, 2, MAX_REQUEST)
    if not printable(ident) or len(ident) > MAX_IDENTITY:
        raise ProtocolError("identity must be printable ASCII without spaces")
    if not printable(blob) or not set(blob) <= _B64:
        raise ProtocolError("certificate must be base64")
    try:
        der = binascii.a2b_base64(blob, strict_mode=True)
    except binascii.Error:
        raise ProtocolError("certificate is not canonical base64") from None
    if not der or len(der) > MAX_CERT:
        raise ProtocolError("certificate empty or too large")
    return (None if ident == NO_IDENTITY else ident), der


def encode_reply(kind: str, text: str) -> bytes:
    if kind not in ("OK", "NO", "ERR") or not printable(text):
        raise ProtocolError("bad reply")
    data = f"{kind}\t{text}\n".encode("ascii")
    if len(data) > MAX_REPLY:
        raise ProtocolError("reply too long")
    return data


def decode_reply(data: bytes) -> tuple[str, str]:
    """``("OK", client_name)``, ``("NO", reason)`` or ``("ERR", reason)``."""
    if len(data) > MAX_REPLY or not data.endswith(b"\n") or data.count(b"\n") != 1:
        raise ProtocolError("reply is not one line")
    try:
        text = data[:-1].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("reply is not ASCII") from None
    kind, sep, rest = text.partition("\t")
    if sep and kind in ("OK", "NO", "ERR") and printable(rest):
        return kind, rest
    raise ProtocolError("unknown reply")
