"""JWS (compact and JSON serializations) and JWE (compact) with DANCE identities, on joserfc.

Every token is first parsed here, strictly, before joserfc sees it: base64url without padding,
JSON objects without duplicate members, bounded sizes, no ``crit``, ``alg`` from the allow-list,
``kid`` a ClientName and ``x5u`` (when present) exactly ``dns:<kid>?type=TLSA``. joserfc then
does the cryptography with a key that dance chose (from DNS or the embedded certificate).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import warnings
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from dance.message.errors import MessageError, MessageReason, MissingExtra
from dance.message.keys import (
    PrivateKey,
    PublicKey,
    check_algorithm,
    check_key_algorithm,
    default_algorithm,
    dns_uri,
    parse_dns_uri,
    signer_name,
)
from dance.message.model import DEFAULT_LIMITS, Limits, ParsedMessage

__all__ = ["JWE_ALGORITHMS", "decrypt_jwe", "encrypt_jwe", "parse_jws", "sign_jws"]

log = logging.getLogger(__name__)

JWE_ALGORITHMS = ("ECDH-ES+A256KW", "ECDH-ES", "RSA-OAEP-256")
JWE_ENC = "A256GCM"
_B64URL = re.compile(rb"^[A-Za-z0-9_-]*$")


def _joserfc() -> Any:
    try:
        import joserfc.jwe
        import joserfc.jwk
        import joserfc.jws
    except ImportError:
        raise MissingExtra("joserfc") from None
    return joserfc


_REGISTRIES: dict[tuple[str, ...], Any] = {}


def _jws_registry(alg: str) -> Any:
    """A joserfc registry allowing exactly ``alg``, accepting dns: x5u and larger headers."""
    key = ("jws", alg)
    reg = _REGISTRIES.get(key)
    if reg is None:
        joserfc = _joserfc()
        from joserfc.registry import HeaderParameter, is_str

        reg = joserfc.jws.JWSRegistry(
            header_registry={"x5u": HeaderParameter("X.509 URL (dns: URI)", is_str)},
            algorithms=[alg],
            strict_check_header=False,
        )
        reg.max_header_length = DEFAULT_LIMITS.max_message
        reg.max_payload_length = DEFAULT_LIMITS.max_message
        _REGISTRIES[key] = reg
    return reg


def _jwe_registry(alg: str) -> Any:
    key = ("jwe", alg)
    reg = _REGISTRIES.get(key)
    if reg is None:
        joserfc = _joserfc()
        reg = joserfc.jwe.JWERegistry(algorithms=[alg, JWE_ENC], strict_check_header=False)
        _REGISTRIES[key] = reg
    return reg


_JWKS: dict[int, tuple[object, Any]] = {}
_ALG_MODELS: dict[str, Any] = {}


def _alg_model(alg: str) -> Any:
    """joserfc's algorithm object for ``alg`` (from a registry allowing only ``alg``)."""
    model = _ALG_MODELS.get(alg)
    if model is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joserfc flags EdDSA (RFC 9864 prefers "Ed25519")
            model = _ALG_MODELS[alg] = _jws_registry(alg).get_alg(alg)
    return model


def _jwk_cached(key: PublicKey) -> Any:
    """joserfc key objects for public keys that are used again and again (from DNS)."""
    hit = _JWKS.get(id(key))
    if hit is not None and hit[0] is key:
        return hit[1]
    jwk = _jwk(key)
    if len(_JWKS) >= 1024:
        _JWKS.clear()
    _JWKS[id(key)] = (key, jwk)  # holding the key keeps its id from being reused
    return jwk


def _jwk(key: PublicKey | PrivateKey) -> Any:
    jwk = _joserfc().jwk
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return jwk.ECKey.import_key(key)
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return jwk.RSAKey.import_key(key)
    return jwk.OKPKey.import_key(key)


# -- strict parsing helpers ------------------------------------------------------------------------


def b64d(value: object, what: str) -> bytes:
    if isinstance(value, str):
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError:
            raise MessageError(MessageReason.MALFORMED, f"{what}: not base64url") from None
    elif isinstance(value, bytes):
        raw = value
    else:
        raise MessageError(MessageReason.MALFORMED, f"{what}: not a string")
    if not _B64URL.match(raw) or len(raw) % 4 == 1:
        raise MessageError(MessageReason.MALFORMED, f"{what}: not unpadded base64url")
    try:
        out = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise MessageError(MessageReason.MALFORMED, f"{what}: bad base64url") from None
    if base64.urlsafe_b64encode(out).rstrip(b"=") != raw:  # pad bits, a final LF (RFC 4648 3.5)
        raise MessageError(MessageReason.MALFORMED, f"{what}: non-canonical base64url")
    return out


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise MessageError(MessageReason.DUPLICATE_HEADER, f"member {k!r} appears twice")
        out[k] = v
    return out


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259)")


def strict_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_not_json)
    except MessageError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MessageError(MessageReason.MALFORMED, f"{what}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise MessageError(MessageReason.MALFORMED, f"{what}: not a JSON object")
    return value


_JSON_TYPES = {str: "a string", int: "a number", float: "a number", bool: "a boolean",
               list: "an array", dict: "an object", type(None): "null"}  # fmt: skip
#: Registered JOSE header parameters (RFC 7515 4.1, RFC 7516 4.1, RFC 7518 4.6-4.8, RFC 7797)
#: and the JSON type of their value. ``kid``, ``x5u`` and ``alg`` are checked by their own
#: parsers (reasons ``bad-signer-name``, ``kid-x5u-mismatch``, ``malformed``).
_HEADER_TYPES: dict[str, tuple[type, ...]] = {
    "jku": (str,), "jwk": (dict,), "x5c": (list,), "x5t": (str,), "x5t#S256": (str,),
    "typ": (str,), "cty": (str,), "crit": (list,), "enc": (str,), "zip": (str,),
    "epk": (dict,), "apu": (str,), "apv": (str,), "iv": (str,), "tag": (str,),
    "p2s": (str,), "p2c": (int,), "b64": (bool,),
}  # fmt: skip


def check_header_types(header: dict[str, Any]) -> None:
    """Refuse a registered header parameter whose value has the wrong JSON type
    (``malformed``), before any value is used."""
    for name, wanted in _HEADER_TYPES.items():
        if name not in header:
            continue
        value = header[name]
        ok = isinstance(value, wanted) and not (bool not in wanted and isinstance(value, bool))
        if name == "crit":
            ok = ok and bool(value) and all(isinstance(v, str) for v in value)
        if not ok:
            got = _JSON_TYPES.get(type(value), type(value).__name__)
            raise MessageError(MessageReason.MALFORMED, f"header {name} is {got}")


def check_header(header: dict[str, Any], limits: Limits) -> tuple[str, str, tuple[bytes, ...]]:
    """(alg, canonical signer name, embedded DER chain) from a merged JOSE header."""
    check_header_types(header)
    if "crit" in header:
        raise MessageError(MessageReason.CRIT_NOT_UNDERSTOOD, f"crit {header['crit']!r}")
    if "b64" in header:
        raise MessageError(MessageReason.CRIT_NOT_UNDERSTOOD, "b64 (RFC 7797) is not supported")
    alg = check_algorithm(header.get("alg"))
    signer = signer_name(header.get("kid"))
    if "x5u" in header and parse_dns_uri(header["x5u"]) != signer:
        raise MessageError(MessageReason.KID_X5U_MISMATCH, "x5u names another signer", signer)
    chain: tuple[bytes, ...] = ()
    if "x5c" in header:
        x5c = header["x5c"]
        if not isinstance(x5c, list) or not x5c or not all(isinstance(c, str) for c in x5c):
            raise MessageError(MessageReason.MALFORMED, "x5c is not a list of strings")
        if len(x5c) > limits.max_certificates:
            raise MessageError(MessageReason.TOO_LARGE, "x5c has too many certificates")
        try:
            chain = tuple(base64.b64decode(c, validate=True) for c in x5c)
        except (binascii.Error, ValueError):
            raise MessageError(MessageReason.MALFORMED, "x5c is not base64") from None
    return alg, signer, chain


def _size(token: str | bytes, limits: Limits) -> bytes:
    if isinstance(token, str):
        try:
            token = token.encode("utf-8")
        except UnicodeEncodeError:
            raise MessageError(MessageReason.MALFORMED, "token is not UTF-8") from None
    if not isinstance(token, bytes | bytearray):
        raise MessageError(MessageReason.MALFORMED, "token is not text or bytes")
    if len(token) > limits.max_message:
        raise MessageError(MessageReason.TOO_LARGE, f"message of {len(token)} bytes")
    return bytes(token).strip()


# -- JWS -------------------------------------------------------------------------------------------


def sign_jws(
    payload: bytes,
    key: PrivateKey,
    name: str,
    *,
    alg: str | None = None,
    serialization: str = "compact",
    certificates: Sequence[x509.Certificate] = (),
    x5u: bool = True,
) -> str:
    """Sign ``payload`` as ``name``: kid = the ClientName, x5u = dns:NAME?type=TLSA, and the
    certificate chain in x5c when ``certificates`` is given (else the key comes from DNS)."""
    alg = alg or default_algorithm(key)
    check_algorithm(alg)
    check_key_algorithm(alg, key)
    signer = signer_name(name)
    protected: dict[str, Any] = {"alg": alg, "kid": signer}
    if x5u:
        protected["x5u"] = dns_uri(signer)
    if certificates:
        protected["x5c"] = [
            base64.b64encode(c.public_bytes(Encoding.DER)).decode("ascii") for c in certificates
        ]
    joserfc = _joserfc()
    reg = _jws_registry(alg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc flags EdDSA (RFC 9864 prefers "Ed25519")
        if serialization == "compact":
            return str(joserfc.jws.serialize_compact(protected, payload, _jwk(key), registry=reg))
        if serialization == "json":
            out = joserfc.jws.serialize_json(
                {"protected": protected}, payload, _jwk(key), registry=reg
            )
            return json.dumps(out, separators=(",", ":"))
    raise MessageError(MessageReason.MALFORMED, f"unknown serialization {serialization!r}")


def parse_jws(token: str | bytes, limits: Limits = DEFAULT_LIMITS) -> ParsedMessage:
    """Strictly parse a compact or (flattened / one-signature general) JSON JWS."""
    raw = _size(token, limits)
    if raw.startswith(b"{"):
        return _parse_json(raw, limits)
    parts = raw.split(b".")
    if len(parts) != 3:
        raise MessageError(MessageReason.MALFORMED, "a compact JWS has three parts")
    if len(parts[0]) > limits.max_header * 4 // 3 + 4:
        raise MessageError(MessageReason.TOO_LARGE, "protected header too large")
    header = strict_json(b64d(parts[0], "protected header"), "protected header")
    alg, signer, chain = check_header(header, limits)
    payload = b64d(parts[1], "payload")
    signature = b64d(parts[2], "signature")
    if not signature:
        raise MessageError(MessageReason.BAD_SIGNATURE, "empty signature", signer)
    signing_input = raw[: len(parts[0]) + 1 + len(parts[1])]

    def verify_with(key: PublicKey) -> bool:
        check_key_algorithm(alg, key)
        try:
            return bool(_alg_model(alg).verify(signing_input, signature, _jwk_cached(key)))
        except Exception as exc:
            log.debug("joserfc refused a JWS: %r", exc)
            return False

    return ParsedMessage("jws-compact", alg, signer, payload, chain, verify_with)


def _parse_json(raw: bytes, limits: Limits) -> ParsedMessage:
    doc = strict_json(raw, "JWS JSON")
    if "signatures" in doc:
        sigs = doc["signatures"]
        if not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], dict):
            raise MessageError(MessageReason.MALFORMED, "exactly one signature is supported")
        if {"protected", "header", "signature"} & set(doc):
            raise MessageError(MessageReason.MALFORMED, "mixed general and flattened members")
        member = sigs[0]
    else:
        member = doc
    if "payload" not in doc or "protected" not in member or "signature" not in member:
        raise MessageError(MessageReason.MALFORMED, "payload, protected and signature needed")
    if len(str(member["protected"])) > limits.max_header * 4 // 3 + 4:
        raise MessageError(MessageReason.TOO_LARGE, "protected header too large")
    protected = strict_json(b64d(member["protected"], "protected header"), "protected header")
    unprotected = member.get("header", {})
    if not isinstance(unprotected, dict):
        raise MessageError(MessageReason.MALFORMED, "header is not an object")
    both = set(protected) & set(unprotected)
    if both:
        raise MessageError(MessageReason.DUPLICATE_HEADER, f"in both headers: {sorted(both)}")
    for name in ("alg", "kid", "x5u", "x5c", "crit"):
        if name in unprotected:
            raise MessageError(MessageReason.MALFORMED, f"{name} must be integrity protected")
    alg, signer, chain = check_header({**unprotected, **protected}, limits)
    payload = b64d(doc["payload"], "payload")
    if not b64d(member["signature"], "signature"):
        raise MessageError(MessageReason.BAD_SIGNATURE, "empty signature", signer)
    flat = {"payload": doc["payload"], **{k: member[k] for k in ("protected", "signature")}}
    if unprotected:
        flat["header"] = unprotected

    def verify_with(key: PublicKey) -> bool:
        check_key_algorithm(alg, key)
        joserfc = _joserfc()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                joserfc.jws.deserialize_json(flat, _jwk(key), registry=_jws_registry(alg))
            return True
        except Exception as exc:
            log.debug("joserfc refused a JWS: %r", exc)
            return False

    return ParsedMessage("jws-json", alg, signer, payload, chain, verify_with)


# -- JWE -------------------------------------------------------------------------------------------


def jwe_algorithm(key: object, prefer: str | None = None) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise MessageError(MessageReason.UNSUPPORTED_KEY, "only P-256 EC keys")
        choices: tuple[str, ...] = ("ECDH-ES+A256KW", "ECDH-ES")
    elif isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        choices = ("RSA-OAEP-256",)
    else:
        raise MessageError(
            MessageReason.UNSUPPORTED_KEY,
            f"cannot encrypt to a {type(key).__name__}: use a P-256 or RSA identity",
        )
    if prefer is None:
        return choices[0]
    if prefer not in choices:
        raise MessageError(MessageReason.ALGORITHM_KEY_MISMATCH, f"{prefer} needs another key")
    return prefer


def encrypt_jwe(
    plaintext: bytes, recipient: PublicKey, name: str, *, alg: str | None = None
) -> str:
    """JWE compact, A256GCM, key management ECDH-ES+A256KW / ECDH-ES (P-256) or RSA-OAEP-256."""
    alg = jwe_algorithm(recipient, alg)
    kid = signer_name(name)
    protected = {"alg": alg, "enc": JWE_ENC, "kid": kid}
    joserfc = _joserfc()
    return str(
        joserfc.jwe.encrypt_compact(
            protected, plaintext, _jwk(recipient), registry=_jwe_registry(alg)
        )
    )


def decrypt_jwe(token: str | bytes, key: PrivateKey, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Decrypt a compact JWE with the recipient's private key (algorithms from the key type)."""
    raw = _size(token, limits)
    parts = raw.split(b".")
    if len(parts) != 5:
        raise MessageError(MessageReason.MALFORMED, "a compact JWE has five parts")
    header = strict_json(b64d(parts[0], "protected header"), "protected header")
    for i, what in enumerate(("encrypted key", "iv", "ciphertext", "tag"), 1):
        b64d(parts[i], what)
    check_header_types(header)
    if "alg" in header and not isinstance(header["alg"], str):
        raise MessageError(MessageReason.MALFORMED, "header alg is not a string")
    if "kid" in header:
        signer_name(header["kid"])  # bad-signer-name when not a ClientName
    if "crit" in header or "zip" in header:
        raise MessageError(MessageReason.CRIT_NOT_UNDERSTOOD, "crit/zip are not supported")
    alg = header.get("alg")
    if alg == "none":
        raise MessageError(MessageReason.ALG_NONE, "alg none")
    if alg not in JWE_ALGORITHMS:
        raise MessageError(MessageReason.UNKNOWN_ALGORITHM, f"JWE alg {alg!r} is not allowed")
    if header.get("enc") != JWE_ENC:
        raise MessageError(MessageReason.UNKNOWN_ALGORITHM, f"enc {header.get('enc')!r}")
    jwe_algorithm(key, alg)
    joserfc = _joserfc()
    try:
        obj = joserfc.jwe.decrypt_compact(raw, _jwk(key), registry=_jwe_registry(alg))
    except Exception as exc:
        raise MessageError(MessageReason.DECRYPT_FAILED, f"{type(exc).__name__}") from None
    return bytes(obj.plaintext or b"")
