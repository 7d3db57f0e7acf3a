"""Keys and algorithms: which signature algorithm a key may use, raw sign/verify, dns: URIs.

The algorithm allow-list is derived from the key type, never from the message:
ES256 for P-256, EdDSA for Ed25519, RS256/PS256 for RSA (2048 bits or more). HMAC (HS*) and
``none`` are always refused.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from dance.credentials import brief_error
from dance.message.errors import MessageError, MessageReason
from dance.names import InvalidName, parse_client_name

__all__ = [
    "SIGNATURE_ALGORITHMS",
    "PrivateKey",
    "PublicKey",
    "allowed_algorithms",
    "default_algorithm",
    "dns_uri",
    "load_private_key",
    "parse_dns_uri",
    "raw_sign",
    "raw_verify",
    "spki_of",
]

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

SIGNATURE_ALGORITHMS = ("ES256", "EdDSA", "RS256", "PS256")
MIN_RSA_BITS = 2048


def allowed_algorithms(key: object) -> tuple[str, ...]:
    """The signature algorithms a (public or private) key may be used with."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return ("ES256",) if isinstance(key.curve, ec.SECP256R1) else ()
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return ("EdDSA",)
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return ("RS256", "PS256") if key.key_size >= MIN_RSA_BITS else ()
    return ()


def default_algorithm(key: object) -> str:
    algs = allowed_algorithms(key)
    if not algs:
        raise MessageError(
            MessageReason.UNSUPPORTED_KEY,
            f"no signature algorithm for a {type(key).__name__} (use P-256, Ed25519 or RSA)",
        )
    return algs[0]


def check_algorithm(alg: object) -> str:
    """Refuse ``none``, HMAC and anything outside the supported set (the reason says which)."""
    if not isinstance(alg, str):
        raise MessageError(MessageReason.MALFORMED, "alg missing or not a string")
    if alg.lower() == "none":
        raise MessageError(MessageReason.ALG_NONE, "unsecured (alg none) messages are refused")
    if alg not in SIGNATURE_ALGORITHMS:
        raise MessageError(MessageReason.UNKNOWN_ALGORITHM, f"algorithm {alg!r} is not allowed")
    return alg


def check_key_algorithm(alg: str, key: object) -> None:
    if alg not in allowed_algorithms(key):
        raise MessageError(
            MessageReason.ALGORITHM_KEY_MISMATCH,
            f"algorithm {alg} cannot be used with a {type(key).__name__}",
        )


def load_private_key(path: str | Path, password: bytes | None = None) -> PrivateKey:
    """Read a PEM or DER private key (P-256, Ed25519 or RSA) from a file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise MessageError(MessageReason.MALFORMED, f"cannot read key file: {exc}") from None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password)
        else:
            key = serialization.load_der_private_key(data, password)
    except (ValueError, TypeError) as exc:
        raise MessageError(
            MessageReason.MALFORMED, f"not a private key ({brief_error(exc)})"
        ) from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    ):
        raise MessageError(MessageReason.UNSUPPORTED_KEY, f"unsupported key {type(key).__name__}")
    return key


def spki_of(key: PublicKey | PrivateKey) -> bytes:
    public = key.public_key() if isinstance(key, PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def raw_sign(alg: str, key: PrivateKey, data: bytes) -> bytes:
    """Sign as JOSE/COSE do: ECDSA as fixed-length r||s, RSA PKCS#1 v1.5 or PSS, Ed25519."""
    check_key_algorithm(alg, key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if alg == "PS256":
        return key.sign(data, _pss(), hashes.SHA256())
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def raw_verify(alg: str, key: PublicKey, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` over ``data`` verifies; the algorithm must fit the key."""
    check_key_algorithm(alg, key)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            if len(signature) != 64:
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            key.verify(der, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        elif alg == "PS256":
            key.verify(signature, data, _pss(), hashes.SHA256())
        else:
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def dns_uri(name: str) -> str:
    """The RFC 4501 style URI naming the signer's TLSA RRset: ``dns:NAME?type=TLSA``."""
    return f"dns:{parse_client_name(name).text}?type=TLSA"


def parse_dns_uri(uri: object) -> str:
    """The canonical ClientName in a ``dns:NAME?type=TLSA`` URI (class IN optional)."""
    if not isinstance(uri, str) or not uri[:4].lower() == "dns:" or len(uri) > 300:
        raise MessageError(MessageReason.KID_X5U_MISMATCH, "x5u is not a dns: URI")
    rest = uri[4:]
    if rest.startswith("//"):
        raise MessageError(MessageReason.KID_X5U_MISMATCH, "x5u names a DNS server")
    path, _, query = rest.partition("?")
    params: dict[str, str] = {}
    for part in query.split(";") if query else []:
        k, sep, v = part.partition("=")
        if not sep or k.lower() in params:
            raise MessageError(MessageReason.KID_X5U_MISMATCH, "bad dns: URI query")
        params[k.lower()] = v.upper()
    if (
        params.get("type") != "TLSA"
        or params.get("class", "IN") != "IN"
        or set(params)
        - {
            "type",
            "class",
        }
    ):
        raise MessageError(MessageReason.KID_X5U_MISMATCH, "x5u must be dns:NAME?type=TLSA")
    try:
        return parse_client_name(urllib.parse.unquote(path).rstrip(".")).text
    except InvalidName as exc:
        raise MessageError(MessageReason.KID_X5U_MISMATCH, f"x5u name: {exc}") from None


def signer_name(kid: object) -> str:
    """The canonical ClientName in a ``kid`` (str or UTF-8 bytes)."""
    if kid is None:
        raise MessageError(MessageReason.NO_SIGNER_NAME, "no kid naming the signer")
    if isinstance(kid, bytes):
        try:
            kid = kid.decode("ascii")
        except UnicodeDecodeError:
            raise MessageError(MessageReason.BAD_SIGNER_NAME, "kid is not ASCII") from None
    if not isinstance(kid, str) or len(kid) > 300:
        raise MessageError(MessageReason.BAD_SIGNER_NAME, "kid is not a name")
    try:
        return parse_client_name(kid).text
    except InvalidName as exc:
        raise MessageError(MessageReason.BAD_SIGNER_NAME, f"kid: {exc}") from None
