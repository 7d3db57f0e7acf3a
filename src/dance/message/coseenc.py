"""Encryption to a DANCE identity in COSE (RFC 9052/9053).

COSE_Encrypt0 has no recipient structure, so it cannot carry an ephemeral key: a key agreement
needs COSE_Encrypt (tag 96) with one recipient. This module produces exactly that:

* P-256 recipient: ECDH-ES + HKDF-256 (alg -25, direct key agreement), content A256GCM (3);
  the ephemeral key (COSE_Key, -1) and the recipient's name (kid) in the recipient's
  unprotected header; COSE_KDF_Context with the content algorithm, 256 bits and the recipient's
  protected header (RFC 9053 section 5.2).
* RSA recipient: RSAES-OAEP w/ SHA-256 (alg -41) wraps a random A256GCM key.

Ed25519 identities cannot receive (a signing key; X25519 keys are not published as TLSA).
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dance.message import cbor
from dance.message.cose import check_header_types
from dance.message.errors import MessageError, MessageReason
from dance.message.keys import PrivateKey, PublicKey, signer_name
from dance.message.model import DEFAULT_LIMITS, Limits

__all__ = ["decrypt_cose", "encrypt_cose"]

TAG_ENCRYPT = 96
A256GCM = 3
ECDH_ES_HKDF_256 = -25
RSA_OAEP_256 = -41
ALG, KID, IV, EPK = 1, 4, 5, -1


def _kdf(shared: bytes, recipient_protected: bytes) -> bytes:
    context = cbor.encode(
        [A256GCM, [None, None, None], [None, None, None], [256, recipient_protected]]
    )
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=context).derive(shared)


def _aad(protected: bytes) -> bytes:
    return cbor.encode(["Encrypt", protected, b""])


def encrypt_cose(plaintext: bytes, recipient: PublicKey, name: str) -> bytes:
    """A COSE_Encrypt of ``plaintext`` to ``recipient`` (the key published for ``name``)."""
    kid = signer_name(name).encode("ascii")
    protected = cbor.encode({ALG: A256GCM})
    if isinstance(recipient, ec.EllipticCurvePublicKey) and isinstance(
        recipient.curve, ec.SECP256R1
    ):
        eph = ec.generate_private_key(ec.SECP256R1())
        nums = eph.public_key().public_numbers()
        r_protected = cbor.encode({ALG: ECDH_ES_HKDF_256})
        cek = _kdf(eph.exchange(ec.ECDH(), recipient), r_protected)
        epk = {1: 2, -1: 1, -2: nums.x.to_bytes(32, "big"), -3: nums.y.to_bytes(32, "big")}
        recipient_struct: list[Any] = [r_protected, {EPK: epk, KID: kid}, b""]
    elif isinstance(recipient, rsa.RSAPublicKey):
        cek = AESGCM.generate_key(bit_length=256)
        r_protected = cbor.encode({ALG: RSA_OAEP_256})
        wrapped = recipient.encrypt(cek, _oaep())
        recipient_struct = [r_protected, {KID: kid}, wrapped]
    else:
        raise MessageError(
            MessageReason.UNSUPPORTED_KEY,
            f"cannot encrypt to a {type(recipient).__name__}: use a P-256 or RSA identity",
        )
    iv = os.urandom(12)
    ciphertext = AESGCM(cek).encrypt(iv, plaintext, _aad(protected))
    return cbor.encode(cbor.Tag(TAG_ENCRYPT, [protected, {IV: iv}, ciphertext, [recipient_struct]]))


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _map(raw: object, what: str) -> dict[Any, Any]:
    if not isinstance(raw, bytes):
        raise MessageError(MessageReason.MALFORMED, f"{what} protected header is not a bstr")
    value = cbor.decode(raw) if raw else {}
    if not isinstance(value, dict):
        raise MessageError(MessageReason.MALFORMED, f"{what} protected header is not a map")
    return value


def decrypt_cose(data: bytes, key: PrivateKey, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Decrypt a COSE_Encrypt made by :func:`encrypt_cose` with the recipient's private key."""
    if not isinstance(data, bytes | bytearray):
        raise MessageError(MessageReason.MALFORMED, "COSE input is not bytes")
    if len(data) > limits.max_message:
        raise MessageError(MessageReason.TOO_LARGE, f"message of {len(data)} bytes")
    item = cbor.decode(bytes(data))
    if isinstance(item, cbor.Tag):
        if item.tag != TAG_ENCRYPT:
            raise MessageError(MessageReason.MALFORMED, f"CBOR tag {item.tag} is not COSE_Encrypt")
        item = item.value
    if not isinstance(item, list) or len(item) != 4:
        raise MessageError(MessageReason.MALFORMED, "COSE_Encrypt is an array of four")
    protected_raw, unprotected, ciphertext, recipients = item
    protected = _map(protected_raw, "content")
    if not isinstance(unprotected, dict) or not isinstance(ciphertext, bytes):
        raise MessageError(MessageReason.MALFORMED, "bad COSE_Encrypt fields")
    if set(protected) & set(unprotected):
        raise MessageError(MessageReason.DUPLICATE_HEADER, "label in both headers")
    check_header_types(protected, "content protected")
    check_header_types(unprotected, "content unprotected")
    if 2 in protected or 2 in unprotected:
        raise MessageError(MessageReason.CRIT_NOT_UNDERSTOOD, "crit header present")
    if protected.get(ALG) != A256GCM or isinstance(protected.get(ALG), bool):
        raise MessageError(MessageReason.UNKNOWN_ALGORITHM, f"content alg {protected.get(ALG)!r}")
    iv = unprotected.get(IV)
    if not isinstance(iv, bytes) or len(iv) != 12:
        raise MessageError(MessageReason.MALFORMED, "IV missing or not 12 bytes")
    if not isinstance(recipients, list) or len(recipients) != 1:
        raise MessageError(MessageReason.MALFORMED, "exactly one recipient is supported")
    rec = recipients[0]
    if not isinstance(rec, list) or len(rec) != 3 or not isinstance(rec[1], dict):
        raise MessageError(MessageReason.MALFORMED, "bad COSE_recipient")
    r_protected_raw, r_unprotected, r_cipher = rec
    r_protected = _map(r_protected_raw, "recipient")
    if set(r_protected) & set(r_unprotected):
        raise MessageError(MessageReason.DUPLICATE_HEADER, "label in both recipient headers")
    check_header_types(r_protected, "recipient protected")
    check_header_types(r_unprotected, "recipient unprotected")
    if 2 in r_protected or 2 in r_unprotected:
        raise MessageError(MessageReason.CRIT_NOT_UNDERSTOOD, "crit header present")
    alg = r_protected.get(ALG)
    if isinstance(alg, bool):
        raise MessageError(MessageReason.MALFORMED, "recipient alg is a boolean")
    if alg == ECDH_ES_HKDF_256:
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise MessageError(MessageReason.ALGORITHM_KEY_MISMATCH, "ECDH-ES needs a P-256 key")
        epk = r_unprotected.get(EPK)
        if (
            not isinstance(epk, dict)
            or type(epk.get(1)) is not int
            or type(epk.get(-1)) is not int
            or epk.get(1) != 2
            or epk.get(-1) != 1
        ):
            raise MessageError(MessageReason.MALFORMED, "ephemeral key is not a P-256 COSE_Key")
        x, y = epk.get(-2), epk.get(-3)
        if not isinstance(x, bytes) or not isinstance(y, bytes) or len(x) != 32 or len(y) != 32:
            raise MessageError(MessageReason.MALFORMED, "bad ephemeral key coordinates")
        try:
            peer = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            ).public_key()
        except ValueError:
            raise MessageError(MessageReason.MALFORMED, "ephemeral key not on P-256") from None
        cek = _kdf(key.exchange(ec.ECDH(), peer), r_protected_raw)
    elif alg == RSA_OAEP_256:
        if not isinstance(key, rsa.RSAPrivateKey) or not isinstance(r_cipher, bytes):
            raise MessageError(MessageReason.ALGORITHM_KEY_MISMATCH, "RSA-OAEP needs an RSA key")
        try:
            cek = key.decrypt(r_cipher, _oaep())
        except ValueError:
            raise MessageError(MessageReason.DECRYPT_FAILED, "key unwrap failed") from None
        if len(cek) != 32:
            raise MessageError(MessageReason.DECRYPT_FAILED, "wrapped key is not 256 bits")
    else:
        raise MessageError(MessageReason.UNKNOWN_ALGORITHM, f"recipient alg {alg!r}")
    try:
        return AESGCM(cek).decrypt(iv, ciphertext, _aad(protected_raw))
    except InvalidTag:
        raise MessageError(MessageReason.DECRYPT_FAILED, "authentication tag mismatch") from None
