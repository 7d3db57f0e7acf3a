"""The Authenticator: the one place where policy, lookup and matching meet.

    authenticator = Authenticator(resolver, allow=["sensor7._device.example.com", ".example.net"])
    result = await authenticator.authenticate(client_name, chain_or_raw_key)

Order (architecture 4.1.1 and 6.4; client-auth-13 section 8.2):

1. parse the ClientName (strict); malformed -> `malformed-input`, no query;
2. the allow-list, BEFORE any DNS query: a name outside it -> `not-allowed`, no query;
3. the DNSSEC-validated TLSA lookup: only a `secure` answer with records goes on; `secure-absent`,
   `insecure`, `bogus` and `indeterminate` are rejections that carry the DNS outcome;
4. matching (`dance.tlsa.verify`) at the current time.

Decisions are cached by (ClientName, digest of the presented credential) no longer than the TLSA
answer may be cached, and never past the notAfter of the end entity or the certificates it was
checked against; `authenticate_cached` answers synchronously from caches only (for use inside a
TLS handshake) and returns None when a lookup is needed.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from dance.credentials import CertificateChain, Presented, RawPublicKey
from dance.identity import Identity, Reason, Rejection, Result
from dance.names import ClientName, InvalidName, parse_client_name
from dance.tlsa.match import DEFAULT_POLICY, MatchPolicy, verify

__all__ = ["AllowList", "Authenticator", "TLSASource"]

_R = TypeVar("_R", Identity, Rejection, Result)

log = logging.getLogger(__name__)


class _Lookup(Protocol):
    """What the Authenticator needs from a lookup result (dance.dns.LookupResult)."""

    @property
    def records(self) -> tuple[bytes, ...]: ...

    @property
    def ttl(self) -> float: ...

    @property
    def reason(self) -> str: ...

    @property
    def outcome(self) -> object: ...


class TLSASource(Protocol):
    """A DNSSEC-validating TLSA source, e.g. `dance.dns.TLSAResolver`."""

    async def lookup_tlsa(self, name: str) -> _Lookup: ...

    def cached(self, name: str) -> _Lookup | None: ...


_DNS_REASONS = {
    "secure-absent": Reason.DNS_SECURE_ABSENT,
    "insecure": Reason.DNS_INSECURE,
    "bogus": Reason.DNS_BOGUS,
    "indeterminate": Reason.DNS_INDETERMINATE,
}


@dataclass(frozen=True, slots=True)
class AllowList:
    """Exact names and suffixes. ``.example.com`` (or ``*.example.com``) allows every name
    strictly below example.com; ``example.com`` allows exactly that name."""

    exact: frozenset[str]
    suffixes: tuple[tuple[str, ...], ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        exact: set[str] = set()
        suffixes: list[tuple[str, ...]] = []
        for raw in entries:
            entry = raw.strip()
            below = entry.startswith(".") or entry.startswith("*.")
            body = entry[2:] if entry.startswith("*.") else entry.lstrip(".")
            try:
                name = parse_client_name(body)
            except InvalidName as exc:
                raise ValueError(f"bad allow-list entry {raw!r}: {exc}") from None
            if below:
                suffixes.append(name.labels)
            else:
                exact.add(name.text)
        return cls(frozenset(exact), tuple(suffixes))

    def allows(self, name: ClientName) -> bool:
        if name.text in self.exact:
            return True
        labels = name.labels
        for suffix in self.suffixes:
            if len(labels) > len(suffix) and labels[-len(suffix) :] == suffix:
                return True
        return False


def _fingerprint(presented: Presented) -> bytes:
    h = hashlib.sha256()
    if isinstance(presented, RawPublicKey):
        h.update(b"rpk\0")
        h.update(presented.spki)
    else:
        for cert in presented.certs:
            h.update(len(cert.der).to_bytes(4, "big"))
            h.update(cert.der)
    return h.digest()


def _validity_bound(presented: Presented) -> datetime.datetime | None:
    """The earliest notAfter among the presented certificates (None for raw keys)."""
    if isinstance(presented, CertificateChain):
        return min(c.certificate.not_valid_after_utc for c in presented.certs)
    return None


class Authenticator:
    """Policy (allow-list first), DNSSEC-validated lookup and matching, with counters."""

    def __init__(
        self,
        source: TLSASource,
        *,
        allow: AllowList | Iterable[str],
        policy: MatchPolicy = DEFAULT_POLICY,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        monotonic: Callable[[], float] = time.monotonic,
        max_decisions: int = 100_000,
    ) -> None:
        self.source = source
        self.allow = allow if isinstance(allow, AllowList) else AllowList.parse(allow)
        self.policy = policy
        self.clock = clock
        self.monotonic = monotonic
        self.max_decisions = max_decisions
        self._decisions: OrderedDict[tuple[str, bytes], tuple[float, Result]] = OrderedDict()
        self.counters: dict[str, int] = {
            "authentications": 0,
            "accepted": 0,
            "rejected": 0,
            "decision_cache_hits": 0,
            "decision_cache_misses": 0,
            "dns_lookups": 0,
        }

    # -- public API ----------------------------------------------------------------------------

    async def authenticate(
        self, client_name: str | bytes | ClientName, presented: Presented
    ) -> Result:
        """Authenticate ``presented`` as ``client_name``. Never raises for bad input."""
        first = self._precheck(client_name, presented)
        if not isinstance(first, ClientName):
            return first
        name = first
        fingerprint = _fingerprint(presented)
        hit = self._cached_decision(name.text, fingerprint)
        if hit is not None:
            return hit
        self.counters["dns_lookups"] += 1
        try:
            lookup = await self.source.lookup_tlsa(name.text)
        except Exception as exc:  # a source must not raise; if it does, fail closed
            log.warning("TLSA lookup for %s raised", name.text, exc_info=True)
            return self._count(Rejection(Reason.DNS_INDETERMINATE, str(exc), name.text))
        return self._decide(name, presented, fingerprint, lookup)

    def authenticate_cached(
        self, client_name: str | bytes | ClientName, presented: Presented
    ) -> Result | None:
        """Decide from caches only (no I/O, no waiting); None when a DNS lookup is needed.

        Policy rejections (malformed name, not allowed) are answered at once."""
        first = self._precheck(client_name, presented)
        if not isinstance(first, ClientName):
            return first
        fingerprint = _fingerprint(presented)
        hit = self._cached_decision(first.text, fingerprint)
        if hit is not None:
            return hit
        lookup = self.source.cached(first.text)
        if lookup is None:
            return None
        return self._decide(first, presented, fingerprint, lookup)

    async def lookup(self, client_name: str | bytes | ClientName) -> _Lookup | Rejection:
        """The validated TLSA answer for an allowed name: the allow-list first (no query for a
        name outside it), then the source. For callers that need the published records
        themselves, e.g. the key of a name-only signed message; whether a credential is accepted
        is still :meth:`authenticate`'s decision. Never raises for bad input."""
        name = self.admit(client_name)
        if isinstance(name, Rejection):
            return name
        self.counters["dns_lookups"] += 1
        try:
            return await self.source.lookup_tlsa(name.text)
        except Exception as exc:  # a source must not raise; if it does, fail closed
            log.warning("TLSA lookup for %s raised", name.text, exc_info=True)
            return self._count(Rejection(Reason.DNS_INDETERMINATE, str(exc), name.text))

    def lookup_cached(self, client_name: str | bytes | ClientName) -> _Lookup | Rejection | None:
        """:meth:`lookup` from the source's cache only; None when a query is needed."""
        name = self.admit(client_name)
        if isinstance(name, Rejection):
            return name
        return self.source.cached(name.text)

    def admit(self, client_name: str | bytes | ClientName) -> ClientName | Rejection:
        """Policy only, no I/O: the parsed name if the allow-list admits it, else a Rejection
        (counted). For adapters that must refuse before any other work."""
        try:
            name = parse_client_name(client_name)
        except InvalidName as exc:
            return self._count(Rejection(Reason.MALFORMED_INPUT, f"client name: {exc}"))
        if not self.allow.allows(name):
            log.info("client name %s is not in the allow-list; no DNS query", name.text)
            return self._count(
                Rejection(Reason.NOT_ALLOWED, "name outside the allow-list", name.text)
            )
        return name

    def flush(self) -> None:
        """Forget every cached decision, and the source's cached answers if it has a flush()."""
        self._decisions.clear()
        flush = getattr(self.source, "flush", None)
        if callable(flush):
            flush()

    def stats(self) -> dict[str, int]:
        out = dict(self.counters)
        out["decision_cache_entries"] = len(self._decisions)
        return out

    # -- internals -------------------------------------------------------------------------------

    def _count(self, result: _R) -> _R:
        self.counters["authentications"] += 1
        if isinstance(result, Identity):
            self.counters["accepted"] += 1
        else:
            self.counters["rejected"] += 1
            key = f"rejected_{result.reason.value}"
            self.counters[key] = self.counters.get(key, 0) + 1
        return result

    def _precheck(
        self, client_name: str | bytes | ClientName, presented: Presented
    ) -> ClientName | Rejection:
        try:
            name = parse_client_name(client_name)
        except InvalidName as exc:
            return self._count(Rejection(Reason.MALFORMED_INPUT, f"client name: {exc}"))
        if not isinstance(presented, CertificateChain | RawPublicKey):
            return self._count(
                Rejection(Reason.MALFORMED_INPUT, "no certificate or key presented", name.text)
            )
        if not self.allow.allows(name):
            log.info("client name %s is not in the allow-list; no DNS query", name.text)
            return self._count(
                Rejection(Reason.NOT_ALLOWED, "name outside the allow-list", name.text)
            )
        return name

    def _cached_decision(self, name: str, fingerprint: bytes) -> Result | None:
        key = (name, fingerprint)
        entry = self._decisions.get(key)
        if entry is not None:
            expires, result = entry
            if self.monotonic() < expires:
                self._decisions.move_to_end(key)
                self.counters["decision_cache_hits"] += 1
                return self._count(result)
            del self._decisions[key]
        self.counters["decision_cache_misses"] += 1
        return None

    def _decide(
        self, name: ClientName, presented: Presented, fingerprint: bytes, lookup: _Lookup
    ) -> Result:
        outcome = getattr(lookup.outcome, "value", str(lookup.outcome))
        if outcome != "secure" or not lookup.records:
            reason = _DNS_REASONS.get(outcome, Reason.DNS_INDETERMINATE)
            if outcome == "secure":
                reason = Reason.NO_RECORDS
            return self._count(
                Rejection(reason, f"DNS {outcome}: {lookup.reason}", name.text, dns_outcome=outcome)
            )
        now = self.clock()
        result = verify(name, presented, lookup.records, now=now, policy=self.policy)
        if isinstance(result, Rejection):
            result = Rejection(result.reason, result.detail, name.text, dns_outcome=outcome)
        self._remember(name.text, fingerprint, presented, result, lookup.ttl, now)
        return self._count(result)

    def _remember(
        self,
        name: str,
        fingerprint: bytes,
        presented: Presented,
        result: Result,
        ttl: float,
        now: datetime.datetime,
    ) -> None:
        if ttl <= 0:
            return
        lifetime = ttl
        bound = _validity_bound(presented)
        if bound is not None:
            lifetime = min(lifetime, (bound - now).total_seconds())
        if lifetime <= 0:
            return
        self._decisions[(name, fingerprint)] = (self.monotonic() + lifetime, result)
        self._decisions.move_to_end((name, fingerprint))
        while len(self._decisions) > self.max_decisions:
            self._decisions.popitem(last=False)
