"""Results of authentication: who was authenticated (`Identity`) or why not (`Rejection`).

Both are immutable values. A `Rejection` carries a stable, machine-readable `Reason` (safe to log,
count and match on) and a human `detail` (for operators' logs, not for the remote peer).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Identity", "Reason", "Rejection", "Result"]


class Reason(enum.StrEnum):
    """Stable rejection codes. Values never change once released."""

    # Input
    MALFORMED_INPUT = "malformed-input"  # unparseable certificate, key, record or name
    # Records
    NO_RECORDS = "no-records"  # the record set was empty
    NO_USABLE_RECORDS = "no-usable-records"  # records exist, none usable (RFC 7671 section 4.1)
    NO_MATCH = "no-match"  # usable records, none matches the presented credential
    # Certificate checks (DANE-TA / PKIX)
    NAME_MISMATCH = "name-mismatch"  # ClientName (or user domain) not a SAN dNSName of the EE
    EXPIRED = "expired"  # EE or intermediate outside its validity period at `now`
    BAD_CHAIN = "bad-chain"  # signature, CA flag, path length, name constraints, critical ext.
    BAD_EKU = "bad-eku"  # EKU present without clientAuth / anyExtendedKeyUsage
    # User profile
    NO_USER_ID = "no-user-id"  # no uid otherName nor mailbox in the user's domain
    AMBIGUOUS_USER_ID = "ambiguous-user-id"  # more than one distinct user id
    BAD_USER_ID = "bad-user-id"  # a user id outside the comparison profile (docs/matching.md)
    # Policy and discovery (used by dance.auth)
    NOT_ALLOWED = "not-allowed"  # name outside the allow-list: no DNS query was made
    DNS_SECURE_ABSENT = "dns-secure-absent"  # no TLSA records (proved)
    DNS_INSECURE = "dns-insecure"  # the zone is not signed: never authenticates
    DNS_BOGUS = "dns-bogus"  # DNSSEC validation failed
    DNS_INDETERMINATE = "dns-indeterminate"  # timeout, SERVFAIL, unreachable


@dataclass(frozen=True, slots=True)
class Identity:
    """A successfully authenticated client.

    ``identity`` is what applications should use: the canonical ClientName (A-labels, lowercase),
    or ``uid@domain`` for the ``_user`` profile (uid per the ``dance-uid`` profile, U-label domain).
    ``usage``, ``selector`` and ``mtype`` describe the TLSA record that matched; ``depth`` is the
    position in the presented chain of the certificate that matched it (0 = end entity; for a
    trust anchor taken from DNS, the depth it takes above the top of the presented chain).
    """

    identity: str
    client_name: str
    usage: int
    selector: int
    mtype: int
    depth: int
    raw_public_key: bool = False
    user_id: str | None = None
    domain: str | None = None

    accepted = True

    @property
    def record(self) -> str:
        """The matching record's parameters, e.g. ``"3 1 1"``."""
        return f"{self.usage} {self.selector} {self.mtype}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": True,
            "identity": self.identity,
            "client_name": self.client_name,
            "usage": self.usage,
            "selector": self.selector,
            "mtype": self.mtype,
            "depth": self.depth,
            "raw_public_key": self.raw_public_key,
            "user_id": self.user_id,
            "domain": self.domain,
        }


@dataclass(frozen=True, slots=True)
class Rejection:
    """A failed authentication with a stable reason code and an operator-facing detail."""

    reason: Reason
    detail: str = ""
    client_name: str | None = None
    dns_outcome: str | None = field(default=None)

    accepted = False

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": False,
            "reason": self.reason.value,
            "detail": self.detail,
            "client_name": self.client_name,
            "dns_outcome": self.dns_outcome,
        }


Result = Identity | Rejection
