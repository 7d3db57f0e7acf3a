"""Asynchronous DNSSEC-validated TLSA lookups.

:class:`TLSAResolver` sends queries (DO and CD set) to one configured server, a recursive
resolver or an authoritative server for every zone of the chain, walks the chain of trust from
the closest trust anchor down to the zone that signed the answer (asking for the DS and DNSKEY of
each zone in between), and judges the answer with :mod:`dance.dns.validator`.

In trusted-resolver mode (``trust_ad=True``) no local validation is done; the AD bit is accepted
only from a loopback resolver or over DNS-over-TLS with an authenticated server.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.RRSIG import RRSIG

from dance.dns.anchors import TrustAnchors, ZoneAnchor
from dance.dns.cache import DecisionCache, TTLCache
from dance.dns.result import LookupResult, Outcome, Reason
from dance.dns.transport import (
    MalformedResponse,
    StreamTransport,
    Transport,
    UdpExchange,
    UdpTransport,
    answers,
    clear_templates,
    is_loopback,
    make_query,
)
from dance.dns.validator import (
    Answer,
    Budget,
    DsResult,
    Limits,
    Stop,
    ZoneKeys,
    check_rcode,
    classify_ds,
    keys_from_anchor,
    keys_from_ds,
    required_zone,
    validate_answer,
)
from dance.dns.validator import clear_shared_memos as _clear_validator_memos

__all__ = ["ConfigurationError", "TLSAResolver", "clear_shared_memos"]

log = logging.getLogger(__name__)

TLSA = dns.rdatatype.TLSA
DS = dns.rdatatype.DS
DNSKEY = dns.rdatatype.DNSKEY
CNAME = dns.rdatatype.CNAME
_random = random.SystemRandom()


def clear_shared_memos() -> None:
    """Forget what every resolver of the process shares (parsed public keys, signatures already
    verified, query wire templates): the next lookup then does all the work a new process
    would. For benchmarks ("cold process") and tests."""
    _clear_validator_memos()
    clear_templates()


class ConfigurationError(ValueError):
    """The resolver configuration is unsafe or inconsistent."""


class _HasToDns(Protocol):
    def to_dns(self) -> dns.name.Name: ...


NameLike = dns.name.Name | str | _HasToDns


@dataclass(frozen=True, slots=True)
class _NotCut:
    pass


@dataclass(frozen=True, slots=True)
class _Insecure:
    reason: str


@dataclass(frozen=True, slots=True)
class _Failed:
    outcome: Outcome
    reason: str


_ZoneEntry = ZoneKeys | _NotCut | _Insecure | _Failed


class _Lookup:
    """Per-lookup state: the time, the signature budget, the query count, the queries
    sent ahead for the chain of trust (by name and type) and, with the UDP transport, the
    socket the lookup's queries share."""

    __slots__ = ("budget", "exchange", "finished", "now", "prefetched", "queries")

    def __init__(self, now: float, limits: Limits) -> None:
        self.now = now
        self.budget = Budget(limits)
        self.queries = 0
        self.prefetched: dict[tuple[dns.name.Name, int], asyncio.Future[dns.message.Message]] = {}
        self.exchange: UdpExchange | None = None
        self.finished = False

    def finish(self) -> None:
        """Cancel the queries sent ahead and not used; release the socket."""
        self.finished = True
        for fut in self.prefetched.values():
            if fut.done():
                if not fut.cancelled():
                    fut.exception()  # mark retrieved
            else:
                fut.cancel()
        if self.exchange is not None:
            self.exchange.release()


#: The chain of trust is asked for ahead of the answer only this many zone levels below the
#: anchor (a DS and a DNSKEY query per level): deeper names get it level by level.
_EARLY_LEVELS = 4


class TLSAResolver:
    """Look up TLSA records and decide with DNSSEC validation from configured trust anchors.

    ``server`` is (address, port) of a recursive resolver or of an authoritative server for all
    zones between the anchor and the TLSA owner. ``transport`` is ``"udp"`` (TCP fallback on
    truncation), ``"tcp"``, ``"tls"`` or any :class:`Transport` object. ``timeout`` bounds each
    query, ``deadline`` each lookup. ``anchors`` defaults to the built-in root KSKs.
    ``lookup_tlsa`` never raises for network or data problems.
    """

    def __init__(
        self,
        server: tuple[str, int] = ("127.0.0.1", 53),
        *,
        anchors: TrustAnchors | None = None,
        transport: str | Transport = "udp",
        timeout: float = 2.0,
        deadline: float = 5.0,
        trust_ad: bool = False,
        cache: DecisionCache | None = None,
        server_name: str | None = None,
        spki_pins: Iterable[str] = (),
        ssl_context: ssl.SSLContext | None = None,
        max_concurrency: int = 64,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
        recursion_desired: bool = True,
    ) -> None:
        self.server = server
        self.anchors = anchors if anchors is not None else TrustAnchors.builtin_root()
        self.timeout = timeout
        self.deadline = deadline
        self.trust_ad = trust_ad
        self.cache_config = cache if cache is not None else DecisionCache()
        self.limits = limits if limits is not None else Limits()
        self.clock = clock
        self.recursion_desired = recursion_desired
        pins = tuple(spki_pins)
        if isinstance(transport, str):
            if transport not in ("udp", "tcp", "tls"):
                raise ConfigurationError(f"unknown transport {transport!r}")
            if transport != "tls" and (server_name or pins):
                raise ConfigurationError("server_name and spki_pins need transport='tls'")
            if transport == "tls" and not (server_name or pins):
                raise ConfigurationError("transport='tls' needs server_name or spki_pins")
            if trust_ad and transport != "tls" and not is_loopback(server[0]):
                raise ConfigurationError(
                    "trust_ad=True accepts the AD bit only from a loopback resolver or over "
                    "DNS-over-TLS with an authenticated server (server_name or spki_pins); "
                    f"{transport} to {server[0]} is not a secure channel"
                )
            self.transport: Transport
            if transport == "udp":
                self.transport = UdpTransport(server, timeout)
            else:
                self.transport = StreamTransport(
                    server,
                    timeout,
                    tls=transport == "tls",
                    server_name=server_name,
                    spki_pins=pins,
                    ssl_context=ssl_context,
                )
        else:
            self.transport = transport
        self._max_concurrency = max_concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._decisions: TTLCache[str, LookupResult] = TTLCache(self.cache_config.max_entries)
        self._zones: TTLCache[dns.name.Name, _ZoneEntry] = TTLCache(self.cache_config.max_zones)
        # lookups and queries in flight, with when they started: a new lookup joins one only
        # while it is young (`_join_window`); an older one is probably waiting out a lost
        # answer, and after a DNS fault ends new clients must not inherit its timeout
        self._inflight: dict[str, tuple[asyncio.Future[LookupResult], float]] = {}
        self._inflight_queries: dict[
            tuple[dns.name.Name, int], tuple[asyncio.Future[dns.message.Message], float]
        ] = {}
        self._join_window = max(0.25, timeout / 4)
        self._counters: dict[str, int] = {
            "lookups": 0,
            "queries": 0,
            "deduplicated_lookups": 0,
            "deduplicated_queries": 0,
            **{f"outcome_{o.value}": 0 for o in Outcome},
        }

    # -- public API ---------------------------------------------------------------------
    async def lookup_tlsa(self, name: NameLike) -> LookupResult:
        """The DNSSEC decision and the TLSA records for ``name``. Never raises for DNS problems."""
        return await self.lookup(name, TLSA)

    async def lookup(self, name: NameLike, rdtype: int | str = TLSA) -> LookupResult:
        """Like :meth:`lookup_tlsa` for any record type (e.g. SSHFP, OPENPGPKEY, SMIMEA)."""
        self._counters["lookups"] += 1
        now = self.clock()
        if rdtype != TLSA:
            try:
                rdtype = dns.rdatatype.RdataType.make(rdtype)
            except (ValueError, dns.exception.DNSException):
                return LookupResult(Outcome.INDETERMINATE, reason=Reason.MALFORMED, name=str(name))
            if dns.rdatatype.is_metatype(rdtype) or rdtype in _VALIDATION_TYPES:
                return LookupResult(Outcome.INDETERMINATE, reason=Reason.MALFORMED, name=str(name))
        qtype = int(rdtype)
        key = _quick_key(name)
        if key is not None:
            hit = self._decisions.get(_cache_key(key, qtype), now)
            if hit is not None:
                return _with_ttl(hit[0], hit[1] - now)
        try:
            qname = _to_name(name)
        except (ValueError, dns.exception.DNSException):
            return LookupResult(Outcome.INDETERMINATE, reason=Reason.MALFORMED, name=str(name))
        canonical = qname.to_text(omit_final_dot=True).lower()
        ckey = _cache_key(canonical, qtype)
        if canonical != key:
            hit = self._decisions.get(ckey, now)
            if hit is not None:
                return _with_ttl(hit[0], hit[1] - now)
        self._bind_loop()
        started = time.monotonic()
        entry = self._inflight.get(ckey)
        if entry is None or started - entry[1] > self._join_window:
            fut: asyncio.Future[LookupResult] = asyncio.ensure_future(
                self._lookup_and_cache(qname, qtype, canonical, ckey)
            )
            self._inflight[ckey] = (fut, started)

            def forget(f: asyncio.Future[LookupResult]) -> None:
                if self._inflight.get(ckey, (None,))[0] is f:
                    del self._inflight[ckey]

            fut.add_done_callback(forget)
        else:
            fut = entry[0]
            self._counters["deduplicated_lookups"] += 1
        return await asyncio.shield(fut)

    def _bind_loop(self) -> None:
        """Per-loop state: a resolver may be used from successive event loops (asyncio.run)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._semaphore = asyncio.Semaphore(self._max_concurrency)
            self._inflight = {}
            self._inflight_queries = {}

    def cached(self, name: NameLike, rdtype: int | str = TLSA) -> LookupResult | None:
        """The cached decision for ``name``, if fresh; never queries."""
        now = self.clock()
        key = _quick_key(name)
        if key is None:
            try:
                key = _to_name(name).to_text(omit_final_dot=True).lower()
            except (ValueError, dns.exception.DNSException):
                return None
        try:
            qtype = int(dns.rdatatype.RdataType.make(rdtype))
        except (ValueError, dns.exception.DNSException):
            return None
        hit = self._decisions.get(_cache_key(key, qtype), now)
        return None if hit is None else _with_ttl(hit[0], hit[1] - now)

    def stats(self) -> dict[str, int]:
        """Counters: lookups, queries, de-duplications, outcomes and cache statistics."""
        out = dict(self._counters)
        for prefix, cache in (("cache", self._decisions), ("zone_cache", self._zones)):
            for k, v in cache.stats.as_dict().items():
                out[f"{prefix}_{k}"] = v
        out["cache_entries"] = len(self._decisions)
        out["zone_cache_entries"] = len(self._zones)
        return out

    def flush(self) -> None:
        """Forget every cached decision and zone key."""
        self._decisions.clear()
        self._zones.clear()

    async def aclose(self) -> None:
        close = getattr(self.transport, "aclose", None)
        if close is not None:
            await close()

    async def __aenter__(self) -> TLSAResolver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- lookup -------------------------------------------------------------------------
    async def _lookup_and_cache(
        self, qname: dns.name.Name, qtype: int, canonical: str, key: str
    ) -> LookupResult:
        now = self.clock()
        try:
            async with asyncio.timeout(self.deadline):
                if self.trust_ad:
                    resolved = await self._resolve_trusted(qname, qtype, now)
                else:
                    resolved = await self._resolve(qname, qtype, now)
                outcome, reason, rrset, expires = resolved
        except TimeoutError:
            outcome, reason, rrset, expires = Outcome.INDETERMINATE, Reason.TIMEOUT, None, now
        except Exception:  # never raise for data problems; log what should not happen
            log.exception("internal error looking up %s", canonical)
            outcome, reason, rrset, expires = Outcome.INDETERMINATE, Reason.INTERNAL, None, now
        config = self.cache_config
        if outcome is Outcome.SECURE and rrset is not None:
            expires = min(expires, now + config.max_ttl)
            records = tuple(_rdata_wire(rd) for rd in rrset)
        else:
            records = ()
            if outcome is Outcome.SECURE:  # a secure answer without records cannot happen
                outcome, reason = Outcome.BOGUS, Reason.INTERNAL
            if outcome in (Outcome.SECURE_ABSENT, Outcome.INSECURE) and expires > now:
                expires = min(expires, now + config.negative_ttl)
            else:  # bogus, indeterminate, or no expiry known
                expires = now + config.failure_ttl
        expires = max(expires, now)
        result = LookupResult(outcome, records, expires - now, reason, canonical)
        self._counters[f"outcome_{outcome.value}"] += 1
        log.debug("%s: %s (%s), ttl %.1f", canonical, outcome.value, reason, expires - now)
        self._decisions.put(key, result, expires, now)
        return result

    async def _resolve(
        self, qname: dns.name.Name, qtype: int, now: float
    ) -> tuple[Outcome, str, dns.rrset.RRset | None, float]:
        ctx = _Lookup(now, self.limits)
        name = qname
        expires = math.inf
        seen = {qname}
        try:
            for hop in range(self.limits.max_cname_chain + 1):
                anchor = self.anchors.closest(name)
                if anchor is None:
                    raise Stop(Outcome.INSECURE, Reason.NO_ANCHOR, now + self.cache_config.max_ttl)
                query = self._query(ctx, name, qtype)
                if hop == 0:
                    self._ask_chain_early(ctx, anchor, name)
                msg = await query
                answer = await self._judge(ctx, name, qtype, msg)
                expires = min(expires, answer.expires)
                if answer.cname_target is None:
                    return answer.outcome, answer.reason, answer.rrset, expires
                name = answer.cname_target
                if name in seen:
                    return Outcome.BOGUS, Reason.CNAME_LOOP, None, now
                seen.add(name)
            return Outcome.BOGUS, Reason.CNAME_LOOP, None, now
        except Stop as stop:
            return stop.outcome, stop.reason, None, stop.expires or now
        finally:
            ctx.finish()

    def _ask_chain_early(self, ctx: _Lookup, anchor: ZoneAnchor, name: dns.name.Name) -> None:
        """Send, with the query for the answer, the DNSKEY and DS queries the chain of trust
        will need: the path from the anchor to ``name`` is known before any answer. Every zone
        candidate (each ancestor of ``name`` not yet in the zone cache) gets both; answers for
        names that turn out not to be zones are not used. Limited to :data:`_EARLY_LEVELS`
        levels and to a third of the query budget."""
        now = ctx.now
        top = len(anchor.zone)
        depth = len(name) - 1 - top
        if depth > _EARLY_LEVELS or not name.is_subdomain(anchor.zone):
            return
        wanted: list[tuple[dns.name.Name, int]] = []
        hit = self._zones.get(anchor.zone, now)
        if hit is None:
            wanted.append((anchor.zone, DNSKEY))
        elif not isinstance(hit[0], ZoneKeys):
            return  # cached as insecure or failed: decided without more queries
        for i in range(1, depth + 1):
            zone = name.split(top + i)[1]
            cached = self._zones.get(zone, now)
            if cached is None:
                wanted.append((zone, DS))
                wanted.append((zone, DNSKEY))
            elif not isinstance(cached[0], ZoneKeys | _NotCut):
                return
        if 3 * len(wanted) > self.limits.max_queries:
            return
        for key in wanted:
            if key not in ctx.prefetched:
                ctx.prefetched[key] = self._query(ctx, *key)

    async def _judge(
        self, ctx: _Lookup, qname: dns.name.Name, qtype: int, msg: dns.message.Message
    ) -> Answer:
        check_rcode(msg)
        anchor = self.anchors.closest(qname)
        if anchor is None:
            raise Stop(Outcome.INSECURE, Reason.NO_ANCHOR, ctx.now + self.cache_config.max_ttl)
        zone = required_zone(qname, qtype, msg)
        if zone is not None and not zone.is_subdomain(anchor.zone):
            raise Stop(Outcome.BOGUS, Reason.BAD_SIGNER)
        if zone is None:
            target = qname
        elif len(qname) > len(zone) + 1:
            # Data signed by an ancestor zone: make sure no zone cut lies between the signer and
            # the owner (a parent must not speak for names inside a delegated child).
            target = qname.parent()
        else:
            target = zone
        keys = await self._zone_keys(ctx, anchor, target, zone)
        if zone is not None and keys.zone != zone:
            raise Stop(Outcome.BOGUS, Reason.BAD_SIGNER)
        return validate_answer(qname, qtype, msg, keys, ctx.now, self.limits, ctx.budget)

    # -- chain of trust -----------------------------------------------------------------
    async def _zone_keys(
        self,
        ctx: _Lookup,
        anchor: ZoneAnchor,
        target: dns.name.Name,
        signer: dns.name.Name | None,
    ) -> ZoneKeys:
        """Validated keys of the deepest zone at or above ``target`` (below ``anchor``).

        Raises Stop(INSECURE) when an unsigned delegation is found on the way.
        """
        now = ctx.now
        depth = len(target) - len(anchor.zone)
        if depth > self.limits.max_depth:
            raise Stop(Outcome.BOGUS, Reason.TOO_LARGE)
        path = [target.split(len(anchor.zone) + i)[1] for i in range(depth + 1)]  # top-down
        # The deepest cached zone on the path is a valid starting point; a cached insecure or
        # failed entry decides at once.
        start = 0
        start_keys: ZoneKeys | None = None
        for i in range(len(path) - 1, -1, -1):
            hit = self._zones.get(path[i], now)
            if hit is None:
                continue
            entry, expires = hit
            if isinstance(entry, ZoneKeys):
                start, start_keys = i, entry
                break
            if isinstance(entry, _Insecure):
                raise Stop(Outcome.INSECURE, entry.reason, expires)
            if isinstance(entry, _Failed):
                raise Stop(entry.outcome, entry.reason, expires)
        if start_keys is not None and start == len(path) - 1:
            return start_keys
        todo = [n for n in path[start + 1 :] if self._zones.get(n, now) is None]
        # Ask for everything that may be needed at once; most answers are used.
        tasks: dict[tuple[dns.name.Name, int], asyncio.Future[dns.message.Message]] = {}

        def prefetch(name: dns.name.Name, rdtype: int) -> asyncio.Future[dns.message.Message]:
            fut = tasks.get((name, rdtype))
            if fut is None:
                fut = ctx.prefetched.get((name, rdtype))  # asked for with the answer
                if fut is None:
                    fut = self._query(ctx, name, rdtype)
                tasks[(name, rdtype)] = fut
            return fut

        try:
            if start_keys is None:
                prefetch(anchor.zone, DNSKEY)
            for name in todo:
                prefetch(name, DS)
            if signer is not None and signer != path[start]:
                prefetch(signer, DNSKEY)
            keys = start_keys
            if keys is None:
                try:
                    msg = await prefetch(anchor.zone, DNSKEY)
                    keys = keys_from_anchor(anchor, msg, now, self.limits, ctx.budget)
                except Stop as stop:
                    self._remember_failure(anchor.zone, stop, now)
                    raise
                self._zones.put(anchor.zone, keys, keys.expires, now)
            for name in path[start + 1 :]:
                hit = self._zones.get(name, now)
                if hit is not None and isinstance(hit[0], _NotCut):
                    continue
                try:
                    ds = classify_ds(
                        name, keys, await prefetch(name, DS), now, self.limits, ctx.budget
                    )
                except Stop as stop:
                    self._remember_failure(name, stop, now)
                    raise
                if ds.kind == "not-cut":
                    self._zones.put(name, _NotCut(), ds.expires, now)
                    continue
                if ds.kind == "absent":
                    break
                if ds.kind == "insecure":
                    self._zones.put(name, _Insecure(ds.reason), ds.expires, now)
                    raise Stop(Outcome.INSECURE, ds.reason, ds.expires)
                keys = await self._child_keys(ctx, name, ds, prefetch(name, DNSKEY))
            return keys
        finally:
            for fut in tasks.values():
                if fut.done():
                    if not fut.cancelled():
                        fut.exception()  # mark retrieved
                else:
                    fut.cancel()

    async def _child_keys(
        self,
        ctx: _Lookup,
        name: dns.name.Name,
        ds: DsResult,
        dnskey: asyncio.Future[dns.message.Message],
    ) -> ZoneKeys:
        try:
            keys = keys_from_ds(name, ds, await dnskey, ctx.now, self.limits, ctx.budget)
        except Stop as stop:
            self._remember_failure(name, stop, ctx.now)
            raise
        self._zones.put(name, keys, keys.expires, ctx.now)
        return keys

    def _remember_failure(self, name: dns.name.Name, stop: Stop, now: float) -> None:
        if stop.reason in (Reason.TOO_MUCH_WORK, Reason.TOO_MANY_QUERIES):
            return  # a property of this lookup, not of the zone
        if stop.outcome is Outcome.BOGUS:
            expires = now + self.cache_config.failure_ttl
            self._zones.put(name, _Failed(stop.outcome, stop.reason), expires, now)
        elif stop.outcome is Outcome.INSECURE:
            expires = min(stop.expires or now, now + self.cache_config.max_ttl)
            self._zones.put(name, _Insecure(stop.reason), expires, now)

    # -- trusted-resolver mode ----------------------------------------------------------
    async def _resolve_trusted(
        self, qname: dns.name.Name, qtype: int, now: float
    ) -> tuple[Outcome, str, dns.rrset.RRset | None, float]:
        ctx = _Lookup(now, self.limits)
        try:
            msg = await self._query(ctx, qname, qtype)
            check_rcode(msg)
        except Stop as stop:
            return stop.outcome, stop.reason, None, now
        finally:
            ctx.finish()
        if not msg.flags & dns.flags.AD:
            return Outcome.INSECURE, Reason.AD_CLEAR, None, now
        name = qname
        expires = math.inf
        for _ in range(self.limits.max_cname_chain + 1):
            rrset = _find_rrset(msg.answer, name, qtype)
            if rrset is not None:
                if len(rrset) > self.limits.max_rrset_size:
                    return Outcome.BOGUS, Reason.TOO_LARGE, None, now
                expires = min(expires, _trusted_expiry(msg, rrset, now))
                return Outcome.SECURE, Reason.OK, rrset, expires
            cname = _find_rrset(msg.answer, name, CNAME)
            if cname is None:
                break
            expires = min(expires, _trusted_expiry(msg, cname, now))
            name = cname[0].target
        else:
            return Outcome.BOGUS, Reason.CNAME_LOOP, None, now
        if msg.answer and name == qname:
            return Outcome.INDETERMINATE, Reason.MALFORMED, None, now
        reason = Reason.NXDOMAIN if msg.rcode() == dns.rcode.NXDOMAIN else Reason.NODATA
        return Outcome.SECURE_ABSENT, reason, None, now + self.cache_config.negative_ttl

    # -- queries ------------------------------------------------------------------------
    def _query(
        self, ctx: _Lookup, qname: dns.name.Name, rdtype: int
    ) -> asyncio.Future[dns.message.Message]:
        """A future for the response (a query in flight for the same name and type joined while
        young); it raises :class:`Stop` for what the lookup must stop at."""
        ctx.queries += 1
        if ctx.queries > self.limits.max_queries:
            over: asyncio.Future[dns.message.Message] = asyncio.get_running_loop().create_future()
            over.set_exception(Stop(Outcome.BOGUS, Reason.TOO_MANY_QUERIES))
            return over
        key = (qname, rdtype)
        started = time.monotonic()
        entry = self._inflight_queries.get(key)
        if entry is None or started - entry[1] > self._join_window:
            fut: asyncio.Future[dns.message.Message] = asyncio.ensure_future(
                self._send(ctx, qname, rdtype)
            )
            self._inflight_queries[key] = (fut, started)

            def done(f: asyncio.Future[dns.message.Message]) -> None:
                if self._inflight_queries.get(key, (None,))[0] is f:
                    del self._inflight_queries[key]
                if not f.cancelled():
                    f.exception()  # retrieved: every waiter may have gone away

            fut.add_done_callback(done)
        else:
            fut = entry[0]
            self._counters["deduplicated_queries"] += 1
        return asyncio.shield(fut)

    async def _send(self, ctx: _Lookup, qname: dns.name.Name, rdtype: int) -> dns.message.Message:
        flags = dns.flags.RD if self.recursion_desired else 0
        flags |= dns.flags.AD if self.trust_ad else dns.flags.CD
        self._counters["queries"] += 1
        transport = self.transport
        try:
            async with self._semaphore:
                if isinstance(transport, UdpTransport):
                    # the query wire from a template, over the lookup's own socket
                    if ctx.exchange is None:
                        ctx.exchange = transport.exchange()
                        if ctx.finished:  # the lookup ended before this query started
                            ctx.exchange.release()  # closed once its query is over
                    qid, response = await transport.query_name(ctx.exchange, qname, rdtype, flags)
                else:
                    query = make_query(qname, rdtype, flags, _random.randrange(65536))
                    response = await transport.query(query)
                    qid = query.id
        except TimeoutError:
            raise Stop(Outcome.INDETERMINATE, Reason.TIMEOUT) from None
        except MalformedResponse:
            raise Stop(Outcome.INDETERMINATE, Reason.MALFORMED) from None
        except (OSError, EOFError, ssl.SSLError, ConnectionError):
            raise Stop(Outcome.INDETERMINATE, Reason.NETWORK) from None
        except dns.exception.DNSException:
            raise Stop(Outcome.INDETERMINATE, Reason.MALFORMED) from None
        if not isinstance(response, dns.message.Message) or not answers(
            qid, qname, rdtype, response
        ):
            raise Stop(Outcome.INDETERMINATE, Reason.MALFORMED)
        if response.flags & dns.flags.TC:
            raise Stop(Outcome.INDETERMINATE, Reason.TRUNCATED)
        return response


# ---------------------------------------------------------------------------------------------


_VALIDATION_TYPES = frozenset(
    {dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3, dns.rdatatype.CNAME}
)


def _cache_key(name: str, qtype: int) -> str:
    return name if qtype == TLSA else f"{name}\x00{qtype}"


def _quick_key(name: NameLike) -> str | None:
    if isinstance(name, str):
        if "\\" in name:
            return None
        return name.lower().rstrip(".") if name != "." else ""
    text = getattr(name, "text", None)
    if isinstance(text, str):
        return text.lower()
    return None


def _to_name(name: NameLike) -> dns.name.Name:
    if isinstance(name, dns.name.Name):
        qname = name
    elif isinstance(name, str):
        qname = dns.name.from_text(name)
    else:
        qname = name.to_dns()
    if not qname.is_absolute():
        qname = qname.concatenate(dns.name.root)
    return qname


def _with_ttl(result: LookupResult, ttl: float) -> LookupResult:
    return LookupResult(result.outcome, result.records, max(ttl, 0.0), result.reason, result.name)


def _rdata_wire(rd: dns.rdata.Rdata) -> bytes:
    return rd.to_digestable()


def _find_rrset(
    section: list[dns.rrset.RRset], name: dns.name.Name, rdtype: int
) -> dns.rrset.RRset | None:
    for rrset in section:
        if rrset.rdtype == rdtype and rrset.name == name and rrset.rdclass == dns.rdataclass.IN:
            return rrset
    return None


def _trusted_expiry(msg: dns.message.Message, rrset: dns.rrset.RRset, now: float) -> float:
    expires = now + rrset.ttl
    for sigset in msg.answer:
        if sigset.rdtype == dns.rdatatype.RRSIG and sigset.covers == rrset.rdtype:
            if sigset.name != rrset.name:
                continue
            for sig in sigset:
                if isinstance(sig, RRSIG):
                    expires = min(expires, float(sig.expiration), now + sig.original_ttl)
    return expires
