"""LDAP messages (RFC 4511) decoded and encoded by pyasn1 with ldap3's ASN.1 schema.

A client's PDU, already cut and shape-checked by :mod:`dance.ldap.ber`, is decoded strictly
against ``LDAPMessage``; it is then encoded again and compared with the input (lengths in their
shortest form): a PDU whose canonical encoding differs (a BOOLEAN true other than ``FF``, an
INTEGER with leading zero octets, a constructed OCTET STRING, a DEFAULT value sent explicitly,
...) has more than one reading among BER decoders and is refused (``non-canonical``) rather
than normalized. What is relayed is then byte for byte what was checked.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from pyasn1.codec.ber import decoder as ber_decoder  # type: ignore[import-untyped]
from pyasn1.codec.ber import encoder as ber_encoder
from pyasn1.codec.cer import encoder as cer_encoder  # type: ignore[import-untyped]
from pyasn1.error import PyAsn1Error  # type: ignore[import-untyped]
from pyasn1.type import namedtype, univ  # type: ignore[import-untyped]

from dance.ldap.ber import BERError, minimal_lengths

# ldap3's package import (2.9.1) uses pyasn1 names deprecated since 0.6 (tagMap, typeMap): quiet
# here, where dance imports it, so that no command prints a warning users cannot act on.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "(tag|type)Map is deprecated", DeprecationWarning)
    from ldap3.protocol import rfc4511  # type: ignore[import-untyped]

__all__ = [
    "EXTERNAL",
    "NOTICE_OF_DISCONNECTION",
    "PROXIED_AUTHZ",
    "REQUESTS",
    "START_TLS",
    "WHO_AM_I",
    "LDAPProtocolError",
    "Request",
    "Result",
    "SaslBind",
    "bind_request",
    "bind_response",
    "decode_request",
    "decode_result",
    "extended_request",
    "extended_response",
    "notice_of_disconnection",
    "sasl_bind",
]

START_TLS = "1.3.6.1.4.1.1466.20037"
NOTICE_OF_DISCONNECTION = "1.3.6.1.4.1.1466.20036"
WHO_AM_I = "1.3.6.1.4.1.4203.1.11.3"
PROXIED_AUTHZ = "2.16.840.1.113730.3.4.18"  # RFC 4370
EXTERNAL = "EXTERNAL"

# result codes used by the proxy (RFC 4511 4.1.9)
SUCCESS = 0
OPERATIONS_ERROR = 1
PROTOCOL_ERROR = 2
AUTH_METHOD_NOT_SUPPORTED = 7
STRONGER_AUTH_REQUIRED = 8
CONFIDENTIALITY_REQUIRED = 13
INAPPROPRIATE_AUTHENTICATION = 48
INVALID_CREDENTIALS = 49
INSUFFICIENT_ACCESS = 50
UNAVAILABLE = 52
UNWILLING_TO_PERFORM = 53

REQUESTS = frozenset(
    {
        "bindRequest",
        "unbindRequest",
        "searchRequest",
        "modifyRequest",
        "addRequest",
        "delRequest",
        "modDNRequest",
        "compareRequest",
        "abandonRequest",
        "extendedReq",
    }
)


def _replace(types: Any, name: str, value: Any) -> Any:
    """A copy of the NamedTypes ``types`` with component ``name`` replaced by ``value``."""
    return namedtype.NamedTypes(
        *[type(nt)(nt.name, value if nt.name == name else nt.asn1Object) for nt in types.namedTypes]
    )


def _patch(obj: Any, attr: str, value: Any) -> None:
    # pyasn1 keeps construction-time attributes read-only (and copies them on clone())
    obj.__dict__[attr] = value
    obj._readOnly[attr] = value


class _Short:
    """A short repr: the filter schema is a cycle (pyasn1's repr would never end)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} schema>"


class _Filter(_Short, rfc4511.Filter):  # type: ignore[misc]
    pass


class _And(_Short, rfc4511.And):  # type: ignore[misc]
    pass


class _Or(_Short, rfc4511.Or):  # type: ignore[misc]
    pass


class _Not(_Short, rfc4511.Not):  # type: ignore[misc]
    pass


def _message_spec() -> Any:
    """ldap3's LDAPMessage with a recursive Filter that decodes at any depth.

    ldap3 (2.9.1) builds Filter before ``Not`` is complete and its and/or/not alternatives hold
    schema instances taken before their component types existed: enough for ldap3, which only
    encodes filters, but a nested filter does not decode. The filter schema is rebuilt here as
    a cycle (and/or/not refer back to the same Filter instance); the BER framer bounds the
    nesting before pyasn1 (recursive) sees it."""
    and_, or_, not_ = _And(), _Or(), _Not()
    types = rfc4511.Filter.componentType
    for name, value in (("and", and_), ("or", or_), ("notFilter", not_)):
        types = _replace(types, name, value)
    filt = _Filter(componentType=types)
    search = rfc4511.SearchRequest(
        componentType=_replace(rfc4511.SearchRequest.componentType, "filter", filt)
    )
    ops = rfc4511.ProtocolOp(
        componentType=_replace(rfc4511.ProtocolOp.componentType, "searchRequest", search)
    )
    message = rfc4511.LDAPMessage(
        componentType=_replace(rfc4511.LDAPMessage.componentType, "protocolOp", ops)
    )
    # close the cycle last (NamedTypes built above describe themselves eagerly)
    _patch(and_, "componentType", filt)
    _patch(or_, "componentType", filt)
    _patch(not_, "componentType", namedtype.NamedTypes(namedtype.NamedType("innerNotFilter", filt)))
    return message


_SPEC = _message_spec()

# BER as RFC 4511 5.1 restricts it: BOOLEAN true is FF (pyasn1's BER encoder writes 01); the
# rest of pyasn1's BER encoder (definite lengths, primitive strings, SET OF in the order given).
_TAGS = dict(ber_encoder.TAG_MAP)
_TYPES = dict(ber_encoder.TYPE_MAP)
_TAGS[univ.Boolean.tagSet] = cer_encoder.BooleanEncoder()
_TYPES[univ.Boolean.typeId] = cer_encoder.BooleanEncoder()
_encode = ber_encoder.Encoder(_TAGS, _TYPES)


class LDAPProtocolError(ValueError):
    """A PDU refused after framing; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Request:
    message_id: int
    op: str  # the protocolOp choice (``searchRequest``, ...)
    raw: bytes  # exactly the bytes that were checked
    message: Any  # the pyasn1 LDAPMessage

    def extended_name(self) -> str | None:
        if self.op != "extendedReq":
            return None
        return str(self.message["protocolOp"]["extendedReq"]["requestName"])

    def has_value(self) -> bool:
        return bool(self.message["protocolOp"]["extendedReq"]["requestValue"].isValue)


@dataclass(frozen=True)
class SaslBind:
    message_id: int
    version: int
    name: bytes
    method: str  # ``simple``, ``sasl``, ``sicily...``
    mechanism: str | None  # SASL mechanism
    credentials: bytes | None  # SASL credentials (EXTERNAL: the authzid), None: absent


def _decode(pdu: bytes) -> Any:
    try:
        message, rest = ber_decoder.decode(pdu, asn1Spec=_SPEC)
    except RecursionError:
        raise LDAPProtocolError("too-deep") from None
    except (PyAsn1Error, ValueError, TypeError, IndexError) as exc:
        raise LDAPProtocolError("undecodable", type(exc).__name__) from None
    if rest:
        raise LDAPProtocolError("trailing-garbage", f"{len(rest)} octets after the message")
    return message


def decode_request(pdu: bytes) -> Request:
    """One client PDU, decoded and checked canonical; raises LDAPProtocolError."""
    message = _decode(pdu)
    try:
        canonical = _encode(message)
        same = canonical == minimal_lengths(pdu)
    except (PyAsn1Error, BERError, ValueError, TypeError):
        same = False
    if not same:
        raise LDAPProtocolError("non-canonical", "a re-encoding differs from the input")
    op = message["protocolOp"].getName()
    if op not in REQUESTS:
        raise LDAPProtocolError("not-a-request", op)
    message_id = int(message["messageID"])
    if message_id == 0:
        raise LDAPProtocolError("message-id-zero")
    return Request(message_id, op, pdu, message)


def sasl_bind(request: Request) -> SaslBind:
    bind = request.message["protocolOp"]["bindRequest"]
    auth = bind["authentication"]
    method = auth.getName()
    mechanism: str | None = None
    credentials: bytes | None = None
    if method == "sasl":
        sasl = auth["sasl"]
        mechanism = bytes(sasl["mechanism"]).decode("utf-8", "replace")
        if sasl["credentials"].isValue:
            credentials = bytes(sasl["credentials"])
    return SaslBind(
        request.message_id,
        int(bind["version"]),
        bytes(bind["name"]),
        method,
        mechanism,
        credentials,
    )


def _message(message_id: int, op: str, value: Any, controls: Any = None) -> bytes:
    message = rfc4511.LDAPMessage()
    message["messageID"] = message_id
    choice = rfc4511.ProtocolOp()
    choice.setComponentByName(op, value)
    message["protocolOp"] = choice
    if controls is not None:
        message["controls"] = controls
    return bytes(_encode(message))


def _result(cls: Any, code: int, diagnostic: str) -> Any:
    value = cls()
    value["resultCode"] = code
    value["matchedDN"] = ""
    value["diagnosticMessage"] = diagnostic
    return value


def bind_response(message_id: int, code: int, diagnostic: str = "") -> bytes:
    return _message(message_id, "bindResponse", _result(rfc4511.BindResponse, code, diagnostic))


def extended_response(
    message_id: int, code: int, diagnostic: str = "", name: str | None = None
) -> bytes:
    value = _result(rfc4511.ExtendedResponse, code, diagnostic)
    if name is not None:
        value["responseName"] = name
    return _message(message_id, "extendedResp", value)


def notice_of_disconnection(code: int, diagnostic: str) -> bytes:
    """The unsolicited notification (RFC 4511 4.4.1) sent before the proxy closes a session."""
    return extended_response(0, code, diagnostic, NOTICE_OF_DISCONNECTION)


def bind_request(message_id: int, authzid: str) -> bytes:
    """A SASL EXTERNAL bind with ``authzid`` (``u:...``/``dn:...``; empty: none)."""
    bind = rfc4511.BindRequest()
    bind["version"] = 3
    bind["name"] = ""
    auth = rfc4511.AuthenticationChoice()
    sasl = auth.getComponentByName("sasl")
    sasl["mechanism"] = EXTERNAL
    sasl["credentials"] = authzid.encode("utf-8")
    auth.setComponentByName("sasl", sasl)
    bind["authentication"] = auth
    return _message(message_id, "bindRequest", bind)


def extended_request(message_id: int, oid: str, *, proxied_authzid: str | None = None) -> bytes:
    """An extended request without value, optionally carrying a critical RFC 4370 proxied
    authorization control for ``proxied_authzid``."""
    ext = rfc4511.ExtendedRequest()
    ext["requestName"] = oid
    controls = None
    if proxied_authzid is not None:
        controls = rfc4511.Controls()
        control = rfc4511.Control()
        control["controlType"] = PROXIED_AUTHZ
        control["criticality"] = True
        control["controlValue"] = proxied_authzid.encode("utf-8")
        controls.setComponentByPosition(0, control)
    return _message(message_id, "extendedReq", ext, controls)


@dataclass(frozen=True)
class Result:
    message_id: int
    op: str
    code: int
    diagnostic: str
    value: bytes | None  # an extended response's value


def decode_result(pdu: bytes) -> Result:
    """A server's response carrying an LDAPResult (bind, extended, ...)."""
    message = _decode(pdu)
    op = message["protocolOp"].getName()
    body = message["protocolOp"][op]
    try:
        code = int(body["resultCode"])
        diagnostic = bytes(body["diagnosticMessage"]).decode("utf-8", "replace")
    except (PyAsn1Error, KeyError, TypeError) as exc:
        raise LDAPProtocolError("not-a-result", op) from exc
    value = None
    if op == "extendedResp" and body["responseValue"].isValue:
        value = bytes(body["responseValue"])
    return Result(int(message["messageID"]), op, code, diagnostic, value)
