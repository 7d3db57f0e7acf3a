"""Typed errors of dance.message, each with a stable reason code."""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["MessageError", "MessageReason", "MissingExtra"]


class MessageReason(enum.StrEnum):
    """Stable reason codes for refused messages. Values never change once released."""

    MALFORMED = "malformed"  # not a JWS/JWE/COSE object, bad base64/JSON/CBOR, missing fields
    TOO_LARGE = "too-large"  # token, header or nesting above the configured limits
    DUPLICATE_HEADER = "duplicate-header"  # a header parameter given twice (or in both buckets)
    CRIT_NOT_UNDERSTOOD = "crit-not-understood"  # a `crit` header parameter is present
    ALG_NONE = "alg-none"  # alg "none": unsecured messages are never accepted
    UNKNOWN_ALGORITHM = "unknown-algorithm"  # not one of ES256, EdDSA, RS256, PS256 (HS* too)
    ALGORITHM_KEY_MISMATCH = "algorithm-key-mismatch"  # alg not allowed for the signer's key type
    NO_SIGNER_NAME = "no-signer-name"  # no `kid` naming the signer
    BAD_SIGNER_NAME = "bad-signer-name"  # `kid` is not a valid ClientName
    KID_X5U_MISMATCH = "kid-x5u-mismatch"  # `x5u` is not dns:<kid>?type=TLSA
    BAD_SIGNATURE = "bad-signature"  # the signature does not verify with the signer's key(s)
    KEY_NOT_PUBLISHED = "key-not-published"  # the signing key/certificate matches no TLSA record
    NOT_ALLOWED = "not-allowed"  # signer name outside the allow-list (no DNS query made)
    DNS_INSECURE = "dns-insecure"  # the TLSA answer is not DNSSEC signed
    DNS_BOGUS = "dns-bogus"  # DNSSEC validation failed
    DNS_SECURE_ABSENT = "dns-secure-absent"  # proved: no TLSA records for the name
    DNS_INDETERMINATE = "dns-indeterminate"  # timeout, SERVFAIL, unreachable
    CERTIFICATE_REJECTED = "certificate-rejected"  # embedded chain refused (name, expiry, chain)
    UNSUPPORTED_KEY = "unsupported-key"  # key type cannot be used for the operation
    DECRYPT_FAILED = "decrypt-failed"  # wrong key, altered ciphertext or tag
    MISSING_EXTRA = "missing-extra"  # an optional dependency is not installed
    INTERNAL = "internal"  # an unexpected library failure (wrapped, logged)


class MessageError(Exception):
    """A refused or unusable message. ``reason`` is stable; ``detail`` is for operators."""

    def __init__(self, reason: MessageReason, detail: str = "", signer: str | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
        self.signer = signer

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": False,
            "reason": self.reason.value,
            "detail": self.detail,
            "signer": self.signer,
        }


class MissingExtra(MessageError):
    """An optional dependency of dance.message is missing: install ``dance-dane[messages]``."""

    def __init__(self, module: str) -> None:
        super().__init__(
            MessageReason.MISSING_EXTRA,
            f"the Python module {module!r} is needed: pip install 'dance-dane[messages]'",
        )
        self.module = module
