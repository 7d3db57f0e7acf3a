"""Typed outcomes of a DNSSEC-validated TLSA lookup."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["LookupResult", "Outcome", "Reason"]


class Outcome(enum.Enum):
    """What DNSSEC validation concluded about a name.

    Only ``SECURE`` with records can ever authenticate a client.
    """

    SECURE = "secure"  # validated positive answer
    SECURE_ABSENT = "secure-absent"  # non-existence (NXDOMAIN or NODATA) proved
    INSECURE = "insecure"  # proved unsigned (or not under any trust anchor)
    BOGUS = "bogus"  # validation failed
    INDETERMINATE = "indeterminate"  # no usable answer (timeout, SERVFAIL, malformed, ...)


class Reason:
    """Stable reason strings carried by ``LookupResult.reason``."""

    OK = "ok"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    # insecure
    NO_ANCHOR = "no-trust-anchor"
    UNSIGNED_DELEGATION = "unsigned-delegation"
    OPT_OUT = "nsec3-opt-out"
    UNSUPPORTED_ALGORITHM = "unsupported-algorithm"
    NSEC3_ITERATIONS = "nsec3-iterations-too-high"
    AD_CLEAR = "ad-bit-clear"
    # bogus
    BAD_SIGNATURE = "bad-signature"
    EXPIRED_SIGNATURE = "expired-signature"
    NOT_YET_VALID = "signature-not-yet-valid"
    NO_SIGNATURE = "no-signature"
    BAD_SIGNER = "bad-signer"
    NO_DS_MATCH = "no-ds-match"
    NO_DNSKEY = "no-dnskey"
    BAD_DENIAL = "bad-denial"
    BAD_WILDCARD = "bad-wildcard"
    BAD_CNAME = "bad-cname"
    CNAME_LOOP = "cname-chain-too-long"
    TOO_LARGE = "rrset-too-large"
    TOO_MANY_QUERIES = "too-many-queries"
    TOO_MUCH_WORK = "too-many-signature-checks"
    BAD_CHAIN = "bad-chain"
    # indeterminate
    TIMEOUT = "timeout"
    SERVFAIL = "servfail"
    REFUSED = "refused"
    BAD_RCODE = "unexpected-rcode"
    NETWORK = "network-error"
    MALFORMED = "malformed"
    TRUNCATED = "truncated"
    WRONG_ZONE = "wrong-zone"
    REFERRAL = "referral"
    INTERNAL = "internal-error"


@dataclass(frozen=True, slots=True)
class LookupResult:
    """The decision for one TLSA owner name.

    ``records`` holds the TLSA RDATA in wire form (only for ``SECURE``, possibly also for a
    trusted resolver's answer); ``ttl`` is how many seconds the decision may be cached (for
    ``SECURE`` at most min(TTL, time to the earliest RRSIG expiration in the chain, configured
    maximum)); ``reason`` is a stable code from :class:`Reason`; ``name`` is the queried owner
    name in canonical lowercase text without the trailing dot.
    """

    outcome: Outcome
    records: tuple[bytes, ...] = ()
    ttl: float = 0.0
    reason: str = Reason.OK
    name: str = ""

    @property
    def authenticates(self) -> bool:
        """True only for a secure answer that carries records."""
        return self.outcome is Outcome.SECURE and bool(self.records)
