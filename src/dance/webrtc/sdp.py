"""Strict reading of what DANCE needs from an SDP offer or answer: the one DTLS fingerprint
(RFC 8122 ``a=fingerprint``) and the ICE candidate addresses.

Full SDP parsing is left to aiortc (which applies the description); this module only decides,
before aiortc sees the text, whether the description is acceptable. Anything ambiguous is refused,
never normalized: no fingerprint; several fingerprints in one section (session level, or one
``m=`` section), even identical ones or with other hash functions; sections naming different
certificates (a bundled offer repeats the same fingerprint in each ``m=`` section: that is one
certificate, accepted); a hash function other than SHA-256, a malformed value, NUL or bare CR
characters, an oversized description, or a candidate outside the allowed host addresses.

Pure: no I/O.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from dataclasses import dataclass

__all__ = ["MAX_SDP_LENGTH", "SdpError", "SdpReason", "SdpSummary", "read_sdp"]

MAX_SDP_LENGTH = 64 * 1024
_FINGERPRINT_RE = re.compile(r"sha-256 ((?:[0-9A-F]{2}:){31}[0-9A-F]{2})\Z", re.IGNORECASE)
# RFC 8839 candidate-attribute: foundation component transport priority address port "typ" type
_CANDIDATE_RE = re.compile(
    r"[A-Za-z0-9+/]{1,32} [0-9]{1,3} (?i:udp) [0-9]{1,10} (\S{1,255}) [0-9]{1,5} typ "
    r"(host|srflx|prflx|relay)(?: .*)?\Z"
)


class SdpReason(enum.StrEnum):
    """Stable reason codes for a refused session description."""

    MALFORMED = "sdp-malformed"
    NO_FINGERPRINT = "sdp-no-fingerprint"
    SEVERAL_FINGERPRINTS = "sdp-several-fingerprints"
    BAD_FINGERPRINT = "sdp-bad-fingerprint"
    BAD_CANDIDATE = "sdp-bad-candidate"


class SdpError(ValueError):
    """A session description DANCE refuses; ``reason`` is stable, the message for operators."""

    def __init__(self, reason: SdpReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SdpSummary:
    """The one SHA-256 certificate fingerprint (32 bytes) and the candidate addresses."""

    fingerprint: bytes
    candidates: tuple[str, ...]

    def matches(self, certificate_der: bytes) -> bool:
        """Whether the fingerprint is the SHA-256 of this DER certificate (constant time)."""
        return hmac.compare_digest(self.fingerprint, hashlib.sha256(certificate_der).digest())


def read_sdp(text: str, *, allowed_hosts: frozenset[str] | None = None) -> SdpSummary:
    """Check ``text`` and return its fingerprint and candidate addresses, or raise `SdpError`.

    ``allowed_hosts``: when given, every ``a=candidate`` address must be one of them (the
    adapter passes ``{"127.0.0.1"}`` by default: loopback only, no STUN/TURN)."""
    if not isinstance(text, str):
        raise SdpError(SdpReason.MALFORMED, "not text")
    if len(text) > MAX_SDP_LENGTH:
        raise SdpError(SdpReason.MALFORMED, f"longer than {MAX_SDP_LENGTH} characters")
    if "\0" in text or not text.isascii():
        raise SdpError(SdpReason.MALFORMED, "NUL or non-ASCII character")
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0] != "v=0":
        raise SdpError(SdpReason.MALFORMED, "does not start with v=0")
    fingerprints: list[str] = []
    candidates: list[str] = []
    in_section = 0  # fingerprints in the current section (session level, then each m=)
    for line in lines:
        if "\r" in line or "\n" in line:
            raise SdpError(SdpReason.MALFORMED, "mixed line endings")
        if len(line) < 2 or line[1] != "=" or not line[0].islower():
            raise SdpError(SdpReason.MALFORMED, "a line is not type=value")
        if line.startswith("m="):
            in_section = 0
        if line.lower().startswith("a=fingerprint:"):
            in_section += 1
            if in_section > 1:
                raise SdpError(
                    SdpReason.SEVERAL_FINGERPRINTS,
                    "several a=fingerprint lines in one section (exactly one is accepted)",
                )
            fingerprints.append(line[len("a=fingerprint:") :])
        elif line.lower().startswith("a=candidate:"):
            match = _CANDIDATE_RE.match(line[len("a=candidate:") :])
            if match is None:
                raise SdpError(SdpReason.BAD_CANDIDATE, "malformed a=candidate line")
            candidates.append(match.group(1))
    if not fingerprints:
        raise SdpError(SdpReason.NO_FINGERPRINT, "no a=fingerprint line")
    values: set[bytes] = set()
    for fingerprint in fingerprints:
        match = _FINGERPRINT_RE.match(fingerprint)
        if match is None:
            raise SdpError(
                SdpReason.BAD_FINGERPRINT, "a=fingerprint must be 'sha-256' and 32 hex octet pairs"
            )
        values.add(bytes.fromhex(match.group(1).replace(":", "")))
    if len(values) > 1:
        raise SdpError(
            SdpReason.SEVERAL_FINGERPRINTS,
            f"{len(values)} different certificate fingerprints (exactly one is accepted)",
        )
    if allowed_hosts is not None:
        for host in candidates:
            if host not in allowed_hosts:
                raise SdpError(SdpReason.BAD_CANDIDATE, f"candidate address {host!r} not allowed")
    return SdpSummary(values.pop(), tuple(candidates))
