"""COSE_Sign1 (RFC 9052) with DANCE identities, on cbor2 (encoding) and cryptography.

Headers: alg (1), kid (4) = the signer's ClientName in UTF-8, optionally x5u (35) =
``dns:NAME?type=TLSA`` and x5chain (33, RFC 9360) = the certificate chain. All of them are put in
the protected header. Decoding is strict (see ``dance.message.cbor``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dance.message import cbor
from dance.message.errors import MessageError, MessageReason
from dance.message.keys import (
    PrivateKey,
    PublicKey,
    check_algorithm,
    check_key_algorithm,
    default_algorithm,
    dns_uri,
    parse_dns_uri,
    raw_sign,
    raw_verify,
    signer_name,
)
from dance.message.model import DEFAULT_LIMITS, Limits, ParsedMessage

__all__ = ["COSE_ALGORITHMS", "parse_cose_sign1", "sign_cose"]

COSE_ALGORITHMS = {"ES256": -7, "EdDSA": -8, "PS256": -37, "RS256": -257}
_ALG_NAMES = {v: k for k, v in COSE_ALGORITHMS.items()}
_HMAC = {4, 5, 6, 7}  # HMAC 256/64, 256/256, 384/384, 512/512
ALG, CRIT, CTY, KID, IV, PARTIAL_IV, X5CHAIN, X5U = 1, 2, 3, 4, 5, 6, 33, 35
TAG_SIGN1 = 18


def sign_cose(
    payload: bytes,
    key: PrivateKey,
    name: str,
    *,
    alg: str | None = None,
    certificates: Sequence[x509.Certificate] = (),
    x5u: bool = False,
    tagged: bool = True,
) -> bytes:
    """A COSE_Sign1 of ``payload`` by ``name`` (kid); the chain in x5chain when given."""
    alg = alg or default_algorithm(key)
    check_algorithm(alg)
    check_key_algorithm(alg, key)
    signer = signer_name(name)
    header: dict[int, Any] = {ALG: COSE_ALGORITHMS[alg], KID: signer.encode("ascii")}
    if x5u:
        header[X5U] = dns_uri(signer)
    if certificates:
        ders = [c.public_bytes(serialization.Encoding.DER) for c in certificates]
        header[X5CHAIN] = ders[0] if len(ders) == 1 else ders
    protected = cbor.encode(header)
    to_sign = cbor.encode(["Signature1", protected, b"", payload])
    signature = raw_sign(alg, key, to_sign)
    body = [protected, {}, payload, signature]
    return cbor.encode(cbor.Tag(TAG_SIGN1, body) if tagged else body)


def _type_name(value: object) -> str:
    return {list: "an array", dict: "a map", bytes: "a byte string", str: "a text string",
            bool: "a boolean", float: "a float", int: "an integer"}.get(
        type(value), "a tag" if isinstance(value, cbor.Tag) else type(value).__name__
    )  # fmt: skip


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_header_types(header: dict[Any, Any], where: str) -> None:
    """Refuse a known COSE header parameter (RFC 9052 3.1, RFC 9360) whose value has the
    wrong CBOR type (``malformed``), before any value is used. ``kid`` and ``x5u`` keep their
    own reasons (``bad-signer-name``, ``kid-x5u-mismatch``); ``crit`` of the right type is
    ``crit-not-understood`` (checked by the caller)."""

    def bad(label: str, value: object, wanted: str) -> MessageError:
        return MessageError(
            MessageReason.MALFORMED,
            f"{where} header {label} is {_type_name(value)}, not {wanted}",
        )

    for label, value in header.items():
        if label == ALG and not (_is_int(value) or isinstance(value, str)):
            raise bad("alg", value, "an integer or text")
        if label == CRIT and not (
            isinstance(value, list)
            and value
            and all(_is_int(v) or isinstance(v, str) for v in value)
        ):
            raise bad("crit", value, "a non-empty array of labels")
        if label == CTY and not ((_is_int(value) and value >= 0) or isinstance(value, str)):
            raise bad("content type", value, "an unsigned integer or text")
        if label in (IV, PARTIAL_IV) and not isinstance(value, bytes):
            raise bad("IV" if label == IV else "partial IV", value, "a byte string")
        if label == X5CHAIN and not (
            isinstance(value, bytes)
            or (isinstance(value, list) and value and all(isinstance(c, bytes) for c in value))
        ):
            raise bad("x5chain", value, "a byte string or an array of them")


def _alg_name(value: object) -> str:
    if value is None:
        raise MessageError(MessageReason.MALFORMED, "no alg")
    if not (_is_int(value) or isinstance(value, str)):
        raise MessageError(MessageReason.MALFORMED, f"alg is {_type_name(value)}")
    if value in _HMAC or value == "none":
        raise MessageError(MessageReason.UNKNOWN_ALGORITHM, f"MAC algorithm {value!r} refused")
    if not isinstance(value, int) or value not in _ALG_NAMES:
        raise MessageError(MessageReason.UNKNOWN_ALGORITHM, f"COSE algorithm {value!r}")
    return _ALG_NAMES[value]


def parse_cose_sign1(data: bytes, limits: Limits = DEFAULT_LIMITS) -> ParsedMessage:
    """Strictly parse a (tagged or untagged) COSE_Sign1."""
    if not isinstance(data, bytes | bytearray):
        raise MessageError(MessageReason.MALFORMED, "COSE input is not bytes")
    if len(data) > limits.max_message:
        raise MessageError(MessageReason.TOO_LARGE, f"message of {len(data)} bytes")
    item = cbor.decode(bytes(data))
    if isinstance(item, cbor.Tag):
        if item.tag != TAG_SIGN1:
            raise MessageError(MessageReason.MALFORMED, f"CBOR tag {item.tag} is not COSE_Sign1")
        item = item.value
    if not isinstance(item, list) or len(item) != 4:
        raise MessageError(MessageReason.MALFORMED, "COSE_Sign1 is an array of four")
    protected_raw, unprotected, payload, signature = item
    if not isinstance(protected_raw, bytes) or not isinstance(unprotected, dict):
        raise MessageError(MessageReason.MALFORMED, "bad COSE_Sign1 headers")
    if not isinstance(payload, bytes):
        raise MessageError(MessageReason.MALFORMED, "detached or non-bstr payload")
    if not isinstance(signature, bytes) or not signature:
        raise MessageError(MessageReason.MALFORMED, "signature is not a bstr")
    if len(protected_raw) > limits.max_header:
        raise MessageError(MessageReason.TOO_LARGE, "protected header too large")
    protected = cbor.decode(protected_raw) if protected_raw else {}
    if not isinstance(protected, dict):
        raise MessageError(MessageReason.MALFORMED, "protected header is not a map")
    both = set(protected) & set(unprotected)
    if both:
        raise MessageError(
            MessageReason.DUPLICATE_HEADER, f"in both headers: {sorted(both, key=repr)}"
        )
    check_header_types(protected, "protected")
    check_header_types(unprotected, "unprotected")
    if CRIT in protected or CRIT in unprotected:
        raise MessageError(MessageReason.CRIT_NOT_UNDERSTOOD, "crit header present")
    for label in (ALG, KID, X5U, X5CHAIN):
        if label in unprotected:
            raise MessageError(MessageReason.MALFORMED, f"label {label} must be protected")
    alg = _alg_name(protected.get(ALG))
    signer = signer_name(protected.get(KID))
    if X5U in protected and parse_dns_uri(protected[X5U]) != signer:
        raise MessageError(MessageReason.KID_X5U_MISMATCH, "x5u names another signer", signer)
    chain: tuple[bytes, ...] = ()
    if X5CHAIN in protected:
        value = protected[X5CHAIN]
        items = [value] if isinstance(value, bytes) else value
        if not isinstance(items, list) or not items or not all(isinstance(c, bytes) for c in items):
            raise MessageError(MessageReason.MALFORMED, "x5chain is not bstr / [+ bstr]")
        if len(items) > limits.max_certificates:
            raise MessageError(MessageReason.TOO_LARGE, "x5chain has too many certificates")
        chain = tuple(items)
    to_sign = cbor.encode(["Signature1", protected_raw, b"", payload])

    def verify_with(key: PublicKey) -> bool:
        return raw_verify(alg, key, to_sign, signature)

    return ParsedMessage("cose-sign1", alg, signer, payload, chain, verify_with)
