"""Fault injection for the test responder and server.

A :class:`Fault` says what goes wrong and where (a name, optionally its subtree, or a whole
zone). Faults live in a :class:`FaultSet` owned by a :class:`~dance.zone.ZoneSet`; they can
be added and removed while a server runs (thread-safe), and take effect on the next query.

Where a fault applies:

* RRSIG faults (``BAD_SIGNATURE``, ``EXPIRED_RRSIG``, ``STRIPPED_RRSIG``) apply to RRSIGs in a
  response whose owner matches ``name`` (or lies below it with ``subtree=True``), or whose
  signer is ``zone``; ``rdtype`` restricts them to RRSIGs covering one type.
* Delegation faults (``MISSING_DS``, ``WRONG_DS``, ``UNSIGNED_DELEGATION``) apply at the parent
  to the delegation point ``name`` (equivalently ``zone`` = the child zone).
* Message faults (``STRIPPED_DENIAL``, ``SLOW``, ``SILENT``, ``WRONG_ID``, ``WRONG_QUESTION``,
  ``TRUNCATED``, ``MALFORMED``, ``FORCE_TC``) apply to queries whose name matches ``name``
  (or subtree) or whose answering zone is ``zone``. A fault without name and zone applies
  everywhere.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Literal

import dns.name
import dns.rdatatype

__all__ = ["Fault", "FaultKind", "FaultSet", "Injection"]


class FaultKind(enum.StrEnum):
    #: Corrupt the signature bytes of matching RRSIGs (validators answer bogus).
    BAD_SIGNATURE = "bad-signature"
    #: Replace matching RRSIGs by ones signed with a validity period in the past.
    EXPIRED_RRSIG = "expired-rrsig"
    #: Remove matching RRSIGs from responses.
    STRIPPED_RRSIG = "stripped-rrsig"
    #: The parent publishes no DS: the delegation is provably insecure (re-signed proof).
    MISSING_DS = "missing-ds"
    #: The parent publishes a DS that matches no child key (properly signed): bogus.
    WRONG_DS = "wrong-ds"
    #: Missing DS at the parent and no RRSIG/NSEC/NSEC3 from the child zone.
    UNSIGNED_DELEGATION = "unsigned-delegation"
    #: Remove NSEC/NSEC3 records (and their RRSIGs) from the response: no denial proof.
    STRIPPED_DENIAL = "stripped-denial"
    #: Delay the answer by ``delay`` seconds (server only).
    SLOW = "slow"
    #: Never answer (server only).
    SILENT = "silent"
    #: Answer with a different message ID.
    WRONG_ID = "wrong-id"
    #: Answer with a different question section (name changed).
    WRONG_QUESTION = "wrong-question"
    #: Send only the first half of the response bytes (a cut, unparsable message).
    TRUNCATED = "truncated"
    #: Send a response whose header promises records that are garbage.
    MALFORMED = "malformed"
    #: Over UDP, answer TC=1 with empty sections (forces a retry over TCP).
    FORCE_TC = "force-tc"


RRSIG_FAULTS = frozenset(
    {FaultKind.BAD_SIGNATURE, FaultKind.EXPIRED_RRSIG, FaultKind.STRIPPED_RRSIG}
)
DS_FAULTS = frozenset({FaultKind.MISSING_DS, FaultKind.WRONG_DS, FaultKind.UNSIGNED_DELEGATION})
MESSAGE_FAULTS = frozenset(
    {
        FaultKind.STRIPPED_DENIAL,
        FaultKind.SLOW,
        FaultKind.SILENT,
        FaultKind.WRONG_ID,
        FaultKind.WRONG_QUESTION,
        FaultKind.TRUNCATED,
        FaultKind.MALFORMED,
        FaultKind.FORCE_TC,
    }
)

Transport = Literal["udp", "tcp"]


def _to_name(value: str | dns.name.Name | None) -> dns.name.Name | None:
    if value is None or isinstance(value, dns.name.Name):
        return value
    return dns.name.from_text(value)


class Fault:
    """One injected fault. ``Fault("bad-signature", "sensor7._device.example.test")``."""

    __slots__ = ("delay", "kind", "name", "rdtype", "subtree", "transport", "zone")

    def __init__(
        self,
        kind: FaultKind | str,
        name: str | dns.name.Name | None = None,
        *,
        zone: str | dns.name.Name | None = None,
        subtree: bool = False,
        rdtype: str | int | None = None,
        delay: float = 0.0,
        transport: Transport | None = None,
    ) -> None:
        self.kind = FaultKind(kind)
        self.name = _to_name(name)
        self.zone = _to_name(zone)
        self.subtree = subtree
        self.rdtype: dns.rdatatype.RdataType | None = (
            None
            if rdtype is None
            else dns.rdatatype.from_text(rdtype)
            if isinstance(rdtype, str)
            else dns.rdatatype.RdataType.make(rdtype)
        )
        self.delay = float(delay)
        self.transport = transport
        if self.kind == FaultKind.SLOW and self.delay <= 0:
            raise ValueError("a SLOW fault needs delay > 0")

    def __repr__(self) -> str:
        parts = [repr(self.kind.value)]
        if self.name is not None:
            parts.append(repr(self.name.to_text()))
        if self.zone is not None:
            parts.append(f"zone={self.zone.to_text()!r}")
        if self.subtree:
            parts.append("subtree=True")
        if self.rdtype is not None:
            parts.append(f"rdtype={self.rdtype.name!r}")
        if self.delay:
            parts.append(f"delay={self.delay}")
        if self.transport:
            parts.append(f"transport={self.transport!r}")
        return f"Fault({', '.join(parts)})"

    def _name_matches(self, name: dns.name.Name) -> bool:
        assert self.name is not None
        return name == self.name or (self.subtree and name.is_subdomain(self.name))

    def matches_rrsig(self, owner: dns.name.Name, signer: dns.name.Name, covered: int) -> bool:
        if self.kind not in RRSIG_FAULTS:
            return False
        if self.rdtype is not None and covered != self.rdtype:
            return False
        if self.name is not None and not self._name_matches(owner):
            return False
        return not (self.zone is not None and bool(signer != self.zone))

    def matches_delegation(self, cut: dns.name.Name) -> bool:
        if self.kind not in DS_FAULTS:
            return False
        if self.name is not None:
            return self._name_matches(cut)
        if self.zone is not None:
            return bool(cut == self.zone)
        return True

    def matches_query(
        self,
        qname: dns.name.Name,
        zone: dns.name.Name | None,
        transport: Transport | None,
    ) -> bool:
        if self.kind not in MESSAGE_FAULTS:
            return False
        if self.transport is not None and transport is not None and self.transport != transport:
            return False
        if self.name is not None and not self._name_matches(qname):
            return False
        return not (self.zone is not None and zone != self.zone)


class Injection:
    """Handle for injected faults; a context manager that removes them on exit."""

    def __init__(self, owner: FaultSet, faults: tuple[Fault, ...]) -> None:
        self._owner = owner
        self.faults = faults

    def remove(self) -> None:
        for fault in self.faults:
            self._owner.remove(fault)

    def __enter__(self) -> Injection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


class FaultSet:
    """Thread-safe set of active faults."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: tuple[Fault, ...] = ()

    def add(self, *faults: Fault) -> Injection:
        with self._lock:
            self._faults = self._faults + tuple(faults)
        return Injection(self, tuple(faults))

    def remove(self, fault: Fault) -> None:
        with self._lock:
            self._faults = tuple(f for f in self._faults if f is not fault)

    def clear(self) -> None:
        with self._lock:
            self._faults = ()

    def active(self) -> tuple[Fault, ...]:
        return self._faults

    def __iter__(self) -> Iterator[Fault]:
        return iter(self._faults)

    def __len__(self) -> int:
        return len(self._faults)

    def __bool__(self) -> bool:
        return bool(self._faults)
