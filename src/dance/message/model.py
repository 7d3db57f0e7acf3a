"""The parsed form of a signed message, common to JWS and COSE_Sign1."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dance.identity import Identity

__all__ = ["Limits", "ParsedMessage", "VerifiedMessage"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits applied before any cryptography or DNS work (``too-large``)."""

    max_message: int = 256 * 1024  # whole token / COSE object, bytes
    max_header: int = 16 * 1024  # decoded protected header, bytes
    max_certificates: int = 8  # x5c / x5chain entries


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """A structurally valid signed message; its signature is not yet checked."""

    format: str  # "jws-compact", "jws-json" or "cose-sign1"
    alg: str
    signer: str  # canonical ClientName from kid (checked against x5u when present)
    payload: bytes
    x5c: tuple[bytes, ...]  # embedded certificate chain (DER), end entity first; () = name only
    verify_with: Callable[[Any], bool] = field(repr=False)  # checks the signature with a key


@dataclass(frozen=True, slots=True)
class VerifiedMessage:
    """An authenticated message: who signed it (``identity``) and what they signed."""

    identity: Identity
    payload: bytes
    format: str
    alg: str
    certificate_embedded: bool

    def __iter__(self):  # type: ignore[no-untyped-def]
        """Unpacks as ``identity, payload = result``."""
        yield self.identity
        yield self.payload

    def to_dict(self) -> dict[str, Any]:
        out = self.identity.to_dict()
        out.update(
            {
                "signer": self.identity.identity,
                "format": self.format,
                "alg": self.alg,
                "certificate_embedded": self.certificate_embedded,
                "payload_bytes": len(self.payload),
            }
        )
        return out
