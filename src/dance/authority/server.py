"""The embedded authority: DNSSEC-signed zones from a zone directory, served on UDP and TCP,
with TSIG-authenticated RFC 2136 dynamic updates signed online and persisted atomically.

In process::

    with Authority("zones/", tsig_keys=load_tsig_keys("update.key")).start() as auth:
        host, port = auth.address

or ``await Authority(...).serve(host, port)`` inside an event loop (the CLI does this).

The zone directory is locked (``.authority.lock``) when the object is made, before any key is
read or created, and stays locked until :meth:`Authority.stop` (or :meth:`Authority.close`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO, cast

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.update
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TSIG import TSIG

from dance.authority.errors import AuthorityError
from dance.authority.limits import Limits, is_loopback
from dance.authority.replay import ReplayCache
from dance.authority.serial import SerialPolicy, next_serial, serial_gt, with_serial
from dance.authority.signer import (
    DEFAULT_VALIDITY,
    OnlineZone,
    OwnerOrder,
    SignatureCache,
    SigningWindow,
    build_zone,
    caching_keys,
    patch_zone,
    sorted_owners,
)
from dance.authority.store import Denial, KeyPolicy, Records, ZoneDir, trust_anchor_text
from dance.authority.update import UpdatePolicy, apply_update, check_policy
from dance.service.ratelimit import RateLimiter
from dance.tsig import TSIGKey, keyring
from dance.zone.zones import Zone, ZoneKeys
from dance.zone.zoneset import ZoneSet

if TYPE_CHECKING:
    from dance.authority.xot import XoTConfig, XoTListener

__all__ = ["Authority", "Limits"]

log = logging.getLogger(__name__)

Name = dns.name.Name
RdataType = dns.rdatatype.RdataType
_TSIG_ERRORS = (
    dns.message.UnknownTSIGKey,
    dns.tsig.BadSignature,
    dns.tsig.BadKey,
    dns.tsig.BadAlgorithm,
    dns.tsig.BadTime,
)
_AXFR_CHUNK = 16000
_REFRESH_CHECK = 600.0
_NOTIFY_TRIES = 5
_NOTIFY_TIMEOUT = 1.0
#: A journal is merged into its master file once larger than this and than the master file.
_MERGE_MIN_BYTES = 1 << 20


@dataclass
class _ZoneState:
    origin: Name
    records: Records
    policy: KeyPolicy
    cache: SignatureCache
    keys: ZoneKeys
    window: SigningWindow
    zone: OnlineZone
    owners: OwnerOrder = field(default_factory=OwnerOrder)
    sign_seconds: float = 0.0
    incremental: bool = True
    axfr: tuple[object, list[bytes]] | None = None  # (snapshot, rendered messages without TSIG)
    axfr_lock: threading.Lock = field(default_factory=threading.Lock)
    merge: threading.Thread | None = None  # the journal being merged into the master file
    master_bytes: int = 0  # size of the master file when last written


@dataclass
class Stats:
    queries: int = 0
    updates: int = 0
    updates_applied: int = 0
    updates_refused: int = 0
    rate_limited: int = 0
    dropped: int = 0
    formerr: int = 0
    tcp_refused: int = 0  # connections refused at accept (either cap)
    transfers: int = 0
    replays: int = 0  # TSIG-signed updates refused by the replay cache
    notifies: int = 0  # NOTIFY messages answered by a secondary
    notify_failures: int = 0  # NOTIFY given up after every retry
    resigned: int = 0  # zones re-signed in full for a new signature window
    by_rcode: dict[str, int] = field(default_factory=dict)
    #: refusals and forced closes by reason: tcp-total, tcp-per-address, tcp-evicted,
    #: tcp-deadline, message-size, transfers-busy, replay, signed-before-floor
    refused: dict[str, int] = field(default_factory=dict)


@dataclass
class _Conn:
    """One TCP or DNS-over-TLS connection: who, and when it last made progress (a message
    read in full, or a reply taken by the peer)."""

    client: str
    transport: asyncio.WriteTransport
    started: float
    progress: float


@dataclass
class _Transfer:
    """A zone transfer decided by the dispatcher, produced by the connection handler."""

    state: _ZoneState
    snapshot: object
    query: dns.message.Message
    signed: bool
    soa_only: bool  # IXFR from a client that is up to date: the SOA alone (RFC 1995 2)


class _Zones(ZoneSet):
    """A ZoneSet whose zones can be swapped atomically (no REFUSED gap during an update)."""

    def replace(self, zone: Zone) -> None:
        with self._lock:
            self._zones = {**self._zones, zone.origin: zone}


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, authority: Authority) -> None:
        self.authority = authority
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            self.authority._on_datagram(data, addr)
        except Exception:  # never let one packet stop the server
            log.exception("UDP packet handling failed")

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


def _soa_serial(records: Records, origin: Name) -> int:
    soa = next(iter(records[origin][RdataType.SOA]))
    assert isinstance(soa, SOA)
    return int(soa.serial)


def _render_axfr(origin: Name, snapshot: object) -> list[bytes]:
    """The AXFR messages of ``snapshot`` (SOA, every RRset and signature, SOA), rendered once
    with message ID 0 and an AXFR question in the first; TSIG is added per transfer."""
    snap = cast("_Snapshot", snapshot)
    soa = snap.soa
    rrsets: list[dns.rrset.RRset] = [soa]
    soa_sig = snap.sigs.get(origin, {}).get(RdataType.SOA)
    if soa_sig is not None:
        rrsets.append(soa_sig)
    for owner in sorted(set(snap.rrsets) | set(snap.sigs)):
        for rdtype, rrset in snap.rrsets.get(owner, {}).items():
            if not (owner == origin and rdtype == RdataType.SOA):
                rrsets.append(rrset)
        for rdtype, sig in snap.sigs.get(owner, {}).items():
            if not (owner == origin and rdtype == RdataType.SOA):
                rrsets.append(sig)
    if snap.nsec3 is not None:
        rrsets.extend(cast(Any, snap.nsec3).rrsets.values())
    rrsets.append(soa)
    messages: list[bytes] = []
    batch: list[dns.rrset.RRset] = []
    size = 0

    def flush() -> None:
        nonlocal batch, size
        if messages:
            message = dns.message.Message(id=0)
        else:
            message = dns.message.make_query(origin, RdataType.AXFR)
            message.id = 0
        message.flags = dns.flags.QR | dns.flags.AA
        message.answer = batch
        messages.append(message.to_wire(max_size=65535))
        batch, size = [], 0

    for rrset in rrsets:
        length = sum(len(rd.to_wire()) + 12 for rd in rrset) + len(rrset.name.to_wire() or b"")
        if batch and size + length > _AXFR_CHUNK:
            flush()
        batch.append(rrset)
        size += length
    flush()
    return messages


if TYPE_CHECKING:  # the attributes of dance.testkit's SignedZone that transfers read
    from typing import Protocol

    class _Snapshot(Protocol):
        soa: dns.rrset.RRset
        rrsets: dict[Name, dict[RdataType, dns.rrset.RRset]]
        sigs: dict[Name, dict[RdataType, dns.rrset.RRset]]
        nsec3: object


def _tsig_sign(wire: bytes, query: dns.message.Message, ctx: object | None) -> tuple[bytes, object]:
    """``wire`` with a TSIG record for one message of a multi-message answer to ``query``
    (RFC 8945 5.3.1: the first covers the request MAC, the next ones the previous MAC)."""
    key = cast(dns.tsig.Key, query.keyring)
    keyname = cast(Name, query.keyname)
    rdata = TSIG(  # type: ignore[no-untyped-call]
        dns.rdataclass.ANY, dns.rdatatype.TSIG, key.algorithm, 0, 300, b"", query.id, 0, b""
    )
    tsig, new_ctx = dns.tsig.sign(  # type: ignore[no-untyped-call]
        wire, key, rdata, int(time.time()), query.mac or b"", ctx, True
    )
    rd = tsig.to_wire()
    arcount = int.from_bytes(wire[10:12], "big") + 1
    out = b"".join(
        (
            wire[:10],
            arcount.to_bytes(2, "big"),
            wire[12:],
            keyname.to_wire() or b"",
            struct.pack("!HHIH", dns.rdatatype.TSIG, dns.rdataclass.ANY, 0, len(rd)),
            rd,
        )
    )
    return out, new_ctx


class Authority:
    """Authoritative server for the zones of ``zone_dir`` (see :mod:`dance.authority.store`).

    Making the object locks the zone directory, removes temporary files of interrupted writes,
    loads the zones, creates missing keys (``algorithm``/``denial``), raises every zone's SOA
    serial (``serial_policy``) and signs; the new serials are persisted before anything is
    served. ``tsig_keys`` authorise dynamic updates (and zone transfers); without keys every
    update is REFUSED. ``notify`` lists the secondaries (host, port) told of every new serial
    (RFC 1996), signed with the TSIG key named ``notify_key`` when given. ``now`` is the
    signer's clock (signature windows, refresh, unixtime serials); TSIG keeps the real clock.
    """

    def __init__(
        self,
        zone_dir: str | Path,
        *,
        tsig_keys: Iterable[TSIGKey] = (),
        limits: Limits | None = None,
        algorithm: int = 13,
        denial: Denial = "nsec",
        validity: int = DEFAULT_VALIDITY,
        allow_non_loopback: bool = False,
        update_policy: UpdatePolicy | None = None,
        tls: XoTConfig | None = None,
        serial_policy: SerialPolicy = "unixtime",
        notify: Iterable[tuple[str, int]] = (),
        notify_key: str | None = None,
        now: Callable[[], float] | None = None,
        refresh_interval: float = _REFRESH_CHECK,
    ) -> None:
        self.store = ZoneDir(zone_dir)
        self.tls_config = tls
        self.tls: XoTListener | None = None
        self.update_policy = update_policy
        self.limits = limits or Limits()
        self.allow_non_loopback = allow_non_loopback
        self.tsig_keys = list(tsig_keys)
        self._keyring = keyring(self.tsig_keys)
        self.serial_policy: SerialPolicy = serial_policy
        self.notify_targets = [(str(h), int(p)) for h, p in notify]
        self._notify_keyring: dict[Name, dns.tsig.Key] | None = None
        self._notify_keyname: Name | None = None
        if notify_key is not None:
            wanted = dns.name.from_text(notify_key)
            if wanted not in self._keyring:
                raise AuthorityError("key-file", f"no TSIG key {notify_key} to sign NOTIFY with")
            self._notify_keyring = {wanted: self._keyring[wanted]}
            self._notify_keyname = wanted
        self._now: Callable[[], float] = now or time.time
        self.refresh_interval = refresh_interval
        self._algorithm = algorithm
        self._denial: Denial = denial
        self._validity = validity
        self.stats = Stats()
        self._rate = RateLimiter(
            self.limits.rate, self.limits.burst, max_clients=self.limits.max_clients
        )
        self._zones: dict[Name, _ZoneState] = {}
        self.zoneset = _Zones()
        self._lock = threading.Lock()  # serialises updates and re-signing
        self._replay = ReplayCache(max_entries=self.limits.max_replay_entries)
        self._dir_lock: TextIO | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: dict[asyncio.WriteTransport, _Conn] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._xfr_executor: ThreadPoolExecutor | None = None
        self._pending_updates = 0
        self._transfers = 0
        self._serving_loop: asyncio.AbstractEventLoop | None = None
        self._notifying: set[tuple[Name, tuple[str, int]]] = set()
        self._notify_again: set[tuple[Name, tuple[str, int]]] = set()
        self.host = "127.0.0.1"
        self.port = 0
        # thread mode
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._load()

    # ----------------------------------------------------------------- load

    def _load(self) -> None:
        """Lock the directory, then (and only then) clean it, read or create keys, raise the
        serials, sign and persist."""
        handle = self.store.lock()
        try:
            self.store.remove_temp_files()
            origins = self.store.zones()
            if not origins:
                raise AuthorityError("no-zones", f"no <zone>.zone files in {self.store.path}")
            zones = {origin: self._load_zone(origin) for origin in origins}
        except BaseException:
            handle.close()
            raise
        self._dir_lock = handle
        self._zones = zones
        self.zoneset = _Zones()
        for state in zones.values():
            self.zoneset.add(state.zone)
        # updates signed before this start are refused: no replay across a restart
        self._replay = ReplayCache(max_entries=self.limits.max_replay_entries)

    def _load_zone(self, origin: Name) -> _ZoneState:
        journaled = self.store.has_journal(origin)
        records = self.store.read_records(origin)
        policy = self.store.policy(origin, algorithm=self._algorithm, denial=self._denial)
        cache = SignatureCache()
        keys = caching_keys(policy.keys, cache)
        window = SigningWindow(validity=self._validity)
        now = self._now()
        old = _soa_serial(records, origin)
        records = with_serial(records, origin, next_serial(old, self.serial_policy, now))
        started = time.perf_counter()
        try:
            zone = build_zone(origin, records, policy, keys, window.current(now), now=now)
        except ValueError as exc:
            raise AuthorityError("zone-file", f"{origin}: {exc}") from None
        cache.commit()
        try:
            if journaled:  # after a crash: merge what was replayed
                self.store.write_records(origin, records)
            else:  # the new serial alone
                self.store.append_journal(origin, records, [origin])
        except OSError as exc:
            raise AuthorityError("zone-file", f"cannot persist {origin}: {exc}") from None
        state = _ZoneState(origin, records, policy, cache, keys, window, zone)
        with contextlib.suppress(OSError):
            state.master_bytes = self.store.zone_path(origin).stat().st_size
        state.owners = sorted_owners(zone.snapshot)
        state.sign_seconds = time.perf_counter() - started
        log.info(
            "loaded zone %s (%d names, %s, algorithm %d) signed in %.3f s, serial %d -> %d",
            origin,
            len(records),
            policy.denial,
            policy.algorithm,
            state.sign_seconds,
            old,
            _soa_serial(records, origin),
        )
        return state

    def close(self) -> None:
        """Release the zone directory without serving (``stop`` does this too)."""
        self._unlock_zone_dir()

    # ----------------------------------------------------------------- info

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def tls_address(self) -> tuple[str, int]:
        """The DNS-over-TLS listener's address (when ``tls`` was given)."""
        if self.tls is None:
            raise AuthorityError("no-tls", "the authority has no DNS-over-TLS listener")
        return (self.tls.host, self.tls.port)

    @property
    def origins(self) -> list[Name]:
        return sorted(self._zones)

    @property
    def connections(self) -> int:
        """Open TCP and DNS-over-TLS connections."""
        return len(self._conns)

    def records(self, origin: str | Name) -> Records:
        """The current unsigned records of a zone (do not modify)."""
        return self._state(origin).records

    def zone(self, origin: str | Name) -> Zone:
        """The signed zone being served."""
        return self._state(origin).zone

    def serial(self, origin: str | Name) -> int:
        return _soa_serial(self._state(origin).records, self._name(origin))

    def metrics(self) -> dict[str, dict[str, float]]:
        """Counters for a metrics collector: totals, updates by rcode, refusals by reason,
        and per zone its serial and the time its last signing took (read at scrape time)."""
        stats = self.stats
        totals = {k: float(v) for k, v in vars(stats).items() if isinstance(v, int | float)}
        totals["tcp_connections"] = float(self.connections)
        states = list(self._zones.values())
        return {
            "authority": totals,
            "authority_updates_by_rcode:rcode": {k: float(v) for k, v in stats.by_rcode.items()},
            "authority_refused:reason": {k: float(v) for k, v in stats.refused.items()},
            "zone_serial:zone": {
                s.origin.to_text(): float(_soa_serial(s.records, s.origin)) for s in states
            },
            "zone_sign_seconds:zone": {s.origin.to_text(): s.sign_seconds for s in states},
        }

    def trust_anchor(self, origin: str | Name | None = None) -> str:
        """DS and DNSKEY lines (``--trust-anchor`` file format) for one zone or all zones."""
        states = [self._state(origin)] if origin is not None else list(self._zones.values())
        return "".join(
            trust_anchor_text(s.origin, s.keys, s.zone.ttl)
            for s in sorted(states, key=lambda s: s.origin)
        )

    @staticmethod
    def _name(origin: str | Name) -> Name:
        return origin if isinstance(origin, Name) else dns.name.from_text(origin)

    def _state(self, origin: str | Name) -> _ZoneState:
        try:
            return self._zones[self._name(origin)]
        except KeyError:
            raise AuthorityError("unknown-zone", f"zone {origin} is not served") from None

    def _count_refusal(self, reason: str) -> None:
        self.stats.refused[reason] = self.stats.refused.get(reason, 0) + 1

    # ------------------------------------------------------------ lifecycle

    async def start_async(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind UDP and TCP on ``host``:``port`` (0 = a free port, the same for both)."""
        if not is_loopback(host) and not self.allow_non_loopback:
            self._unlock_zone_dir()
            raise AuthorityError(
                "non-loopback",
                f"refusing to listen on non-loopback address {host} "
                "(pass allow_non_loopback / --allow-non-loopback to do so)",
            )
        if self._dir_lock is None:  # stopped before: the directory may have changed
            self._load()
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dance-authority")
        self._xfr_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dance-xfr")
        last: OSError | None = None
        for _ in range(20 if port == 0 else 1):
            udp: asyncio.DatagramTransport | None = None
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Udp(self), local_addr=(host, port), family=family
                )
                udp = transport
                bound = transport.get_extra_info("sockname")[1]
                tcp = await asyncio.start_server(
                    self._on_connection,
                    host,
                    bound,
                    family=family,
                    reuse_address=True,
                    limit=self.limits.max_message_size + 2,
                )
            except OSError as exc:
                last = exc
                if udp is not None:
                    udp.close()
                continue
            self._udp, self._tcp = udp, tcp
            self.host, self.port = host, bound
            self._serving_loop = loop
            if self.tls_config is not None:
                await self._start_tls(host)
            self._spawn(self._refresh_loop())
            log.info("authority listening on %s port %d (UDP and TCP)", host, bound)
            for origin in self._zones:  # the serials were raised at start
                self._notify_soon(origin)
            return
        await self.stop_async()
        raise AuthorityError("bind", f"cannot listen on {host} port {port}: {last}")

    async def _start_tls(self, host: str) -> None:
        from dance.authority.xot import XoTListener

        assert self.tls_config is not None
        listener = XoTListener(
            self.tls_config,
            limits=self.limits,
            allow_non_loopback=self.allow_non_loopback,
            on_connection=self._on_connection,
        )
        try:
            await listener.start(host)
        except AuthorityError:
            await self.stop_async()
            raise
        except (OSError, ValueError) as exc:
            await self.stop_async()
            raise AuthorityError("bind", f"cannot start the DNS-over-TLS listener: {exc}") from None
        self.tls = listener

    def _unlock_zone_dir(self) -> None:
        if self._dir_lock is not None:
            self._merge_journals()
            self._dir_lock.close()  # closing releases the lock
            self._dir_lock = None

    # ------------------------------------------------------------- journal

    def _merge_journals(self) -> None:
        """Write every zone's master file with all its changes and drop the journals (when
        stopping: the directory is left with master files only)."""
        for state in self._zones.values():
            merge = state.merge
            if merge is not None:
                merge.join()
            with self._lock:
                if not self.store.has_journal(state.origin):
                    continue
                try:
                    self.store.write_records(state.origin, state.records)
                except OSError as exc:
                    log.error("cannot merge the journal of %s (kept: replayed at the next "
                              "start): %s", state.origin, exc)  # fmt: skip
        self.store.close_journals()

    def _persist(self, state: _ZoneState, records: Records, names: Iterable[Name]) -> None:
        """Make a change durable: one journal entry (with the update lock held); the journal
        is merged into the master file in the background once it outgrows it."""
        size = self.store.append_journal(state.origin, records, names)
        if size > max(_MERGE_MIN_BYTES, state.master_bytes) and state.merge is None:
            state.merge = threading.Thread(
                target=self._merge, args=(state,), name="dance-journal", daemon=True
            )
            state.merge.start()

    def _merge(self, state: _ZoneState) -> None:
        """In the background: the master file rewritten with the records as they are now,
        then the journal entries it covers dropped (updates go on meanwhile)."""
        started = time.perf_counter()
        try:
            with self._lock:
                self.store.rotate_journal(state.origin)
                records = state.records
            self.store.write_records(state.origin, records, drop="old")
            state.master_bytes = self.store.zone_path(state.origin).stat().st_size
            log.info("merged the journal of %s into its master file in %.3f s", state.origin,
                     time.perf_counter() - started)  # fmt: skip
        except Exception:
            log.exception("merging the journal of %s failed (kept; retried later)", state.origin)
        finally:
            state.merge = None

    async def stop_async(self) -> None:
        self._serving_loop = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
        if self.tls is not None:
            self.tls.close()
        for transport in list(self._conns):
            transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._tcp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 2.0)
            self._tcp = None
        if self.tls is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.tls.wait_closed(), 2.0)
            self.tls = None
        for executor in (self._executor, self._xfr_executor):
            if executor is not None:
                executor.shutdown(wait=True)
        self._executor = self._xfr_executor = None
        self._unlock_zone_dir()

    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, stop: asyncio.Event | None = None
    ) -> None:
        """Serve until ``stop`` is set (or the task is cancelled)."""
        await self.start_async(host, port)
        try:
            await (stop or asyncio.Event()).wait()
        finally:
            await self.stop_async()

    def start(self, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0) -> Authority:
        """Serve from a background thread; returns ``self`` (also a context manager)."""
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._thread_main(host, port)),
            name="dance-authority",
            daemon=True,
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            raise AuthorityError("bind", "authority did not start in time")
        if self._error is not None:
            if isinstance(self._error, AuthorityError):
                raise self._error
            raise AuthorityError("bind", f"authority failed to start: {self._error}")
        return self

    async def _thread_main(self, host: str, port: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        try:
            await self.start_async(host, port)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await self.stop_async()

    def stop(self, timeout: float = 10.0) -> None:
        loop, event, thread = self._loop, self._stop_event, self._thread
        if loop is not None and event is not None and thread is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
            thread.join(timeout)
        self._thread = None
        self._unlock_zone_dir()

    def __enter__(self) -> Authority:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----------------------------------------------------------- re-signing

    async def _refresh_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.refresh_interval)
            now = self._now()
            if any(s.window.needs_refresh(now) for s in self._zones.values()):
                await loop.run_in_executor(self._executor, self.refresh_signatures)

    def refresh_signatures(self, force: bool = False) -> int:
        """Re-sign zones whose signature window is half spent (all with ``force``): a new
        window, a new SOA serial, persisted, then served and NOTIFY sent. A zone that cannot be
        persisted keeps its current signatures (and is retried at the next check)."""
        changed = []
        with self._lock:
            for state in self._zones.values():
                now = self._now()
                if not (force or state.window.needs_refresh(now)):
                    continue
                saved = (state.window.inception, state.window.expiration)
                if force:
                    state.window.expiration = 0
                old = _soa_serial(state.records, state.origin)
                new = next_serial(old, self.serial_policy, now)
                records = with_serial(state.records, state.origin, new)
                try:
                    window = state.window.current(now)
                    zone = build_zone(
                        state.origin, records, state.policy, state.keys, window, now=now
                    )
                    self._persist(state, records, [state.origin])
                except Exception:
                    state.cache.rollback()
                    state.window.inception, state.window.expiration = saved
                    log.exception("re-signing %s failed; zone unchanged", state.origin)
                    continue
                state.cache.commit()
                state.zone = zone
                state.records = records
                state.owners = sorted_owners(zone.snapshot)
                self.zoneset.replace(zone)
                self.stats.resigned += 1
                changed.append(state.origin)
                log.info(
                    "re-signed zone %s (signature window refreshed), serial %d -> %d",
                    state.origin,
                    old,
                    new,
                )
        for origin in changed:
            self._notify_soon(origin)
        return len(changed)

    # --------------------------------------------------------------- notify

    def _notify_soon(self, origin: Name) -> None:
        """Tell the secondaries about ``origin``'s new serial (from any thread)."""
        loop = self._serving_loop
        if loop is None or not self.notify_targets:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self._notify_now, origin)

    def _notify_now(self, origin: Name) -> None:
        if self._serving_loop is None:
            return
        for target in self.notify_targets:
            key = (origin, target)
            if key in self._notifying:  # one NOTIFY in flight per zone and secondary
                self._notify_again.add(key)
                continue
            self._notifying.add(key)
            self._spawn(self._notify_task(origin, target))

    async def _notify_task(self, origin: Name, target: tuple[str, int]) -> None:
        key = (origin, target)
        try:
            while True:
                self._notify_again.discard(key)
                await self._send_notify(origin, target)
                if key not in self._notify_again:
                    return
        finally:
            self._notifying.discard(key)
            self._notify_again.discard(key)

    async def _send_notify(self, origin: Name, target: tuple[str, int]) -> bool:
        host, port = target
        for attempt in range(_NOTIFY_TRIES):
            state = self._zones.get(origin)
            if state is None:
                return False
            message = dns.message.make_query(origin, RdataType.SOA)
            message.flags = dns.flags.AA  # (the opcode lives in the flags: set it after)
            message.set_opcode(dns.opcode.NOTIFY)
            soa = state.zone.snapshot.soa
            message.answer.append(dns.rrset.from_rdata_list(origin, soa.ttl, list(soa)))
            if self._notify_keyring is not None:
                message.use_tsig(self._notify_keyring, keyname=self._notify_keyname)
            try:
                response = await dns.asyncquery.udp(
                    message, host, timeout=_NOTIFY_TIMEOUT * (attempt + 1), port=port
                )
            except (dns.exception.DNSException, OSError, ValueError) as exc:
                log.debug("NOTIFY %s to %s port %d: %r", origin, host, port, exc)
                continue
            if response.rcode() != dns.rcode.NOERROR:
                log.warning(
                    "NOTIFY %s to %s port %d answered %s",
                    origin,
                    host,
                    port,
                    dns.rcode.to_text(response.rcode()),
                )
                self.stats.notify_failures += 1
                return False
            self.stats.notifies += 1
            log.info("NOTIFY %s serial %d to %s port %d", origin, self.serial(origin), host, port)
            return True
        self.stats.notify_failures += 1
        log.warning("NOTIFY %s to %s port %d: no answer after %d tries", origin, host, port,
                    _NOTIFY_TRIES)  # fmt: skip
        return False

    # ------------------------------------------------------------- messages

    def _client_allowed(self, client: str) -> bool:
        if self._rate.allow(client):
            return True
        self.stats.rate_limited += 1
        return False

    def _refused_for(self, wire: bytes) -> bytes | None:
        """Header-only REFUSED reply (rate limiting with rate_action='refused')."""
        if len(wire) < 12 or wire[2] & 0x80:
            return None
        flags = dns.flags.QR | (int.from_bytes(wire[2:4], "big") & (0x7800 | dns.flags.RD))
        return wire[:2] + (flags | dns.rcode.REFUSED).to_bytes(2, "big") + b"\0" * 8

    def _on_datagram(self, data: bytes, addr: tuple[str | object, int]) -> None:
        client = str(addr[0])
        if len(data) > self.limits.max_message_size:
            self.stats.dropped += 1
            return
        if not self._client_allowed(client):
            if self.limits.rate_action == "refused" and self._udp is not None:
                reply = self._refused_for(data)
                if reply is not None:
                    self._udp.sendto(reply, addr)
            return
        if len(data) >= 12 and not data[2] & 0x80 and (data[2] >> 3) & 0xF == dns.opcode.UPDATE:
            self._spawn(self._udp_update(data, addr))
            return
        replies = self.handle(data, "udp")
        if replies and self._udp is not None:
            self._udp.sendto(replies[0], addr)

    async def _udp_update(self, data: bytes, addr: tuple[str | object, int]) -> None:
        replies = await self._handle_update_async(data)
        if replies and self._udp is not None:
            self._udp.sendto(replies[0], addr)

    async def _handle_update_async(self, data: bytes) -> list[bytes] | None:
        if self._pending_updates >= self.limits.max_pending_updates or self._executor is None:
            self.stats.dropped += 1
            return None
        self._pending_updates += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self.handle, data, "tcp")
        finally:
            self._pending_updates -= 1

    # ---------------------------------------------------------- connections

    def _admit(self, client: str, now: float) -> str | None:
        """None to accept a new connection from ``client``, else the refusal reason.

        At the total cap, room is made by closing one connection of an address that holds
        more than the newcomer's and that has made no progress (no message read, no reply
        taken) for a while: at least two more connections and a tenth of
        ``tcp_evict_after``, or one more and ``tcp_evict_after``. Connections without
        progress for ``tcp_evict_after`` go first, then those of the address holding the most.
        Clients with equal shares cannot displace each other (no churn among attackers), a
        client with few connections gets one from a client with many, idle or stalled
        connections make room first, and a connection at work (a transfer being read, queries
        being answered) is never closed. Deadlines close the others in time."""
        limits = self.limits
        counts: dict[str, int] = {}
        for conn in self._conns.values():
            counts[conn.client] = counts.get(conn.client, 0) + 1
        mine = counts.get(client, 0)
        if mine >= limits.max_tcp_per_client:
            return "tcp-per-address"
        if len(self._conns) >= limits.max_tcp_connections:
            after = limits.tcp_evict_after
            candidates = [
                c
                for c in self._conns.values()
                if (counts[c.client] >= mine + 2 and now - c.progress >= after / 10)
                or (counts[c.client] >= mine + 1 and now - c.progress >= after)
            ]
            if not candidates:
                return "tcp-total"
            victim = max(
                candidates,
                key=lambda c: (now - c.progress >= after, counts[c.client], now - c.progress),
            )
            del self._conns[victim.transport]
            victim.transport.abort()
            self._count_refusal("tcp-evicted")
            log.debug("evicted a TCP connection from %s to admit %s", victim.client, client)
        return None

    async def _on_connection(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tls: XoTListener | None = None,
    ) -> None:
        """One TCP (or DNS-over-TLS) connection. A single deadline covers everything it
        does: each message must arrive in full, and each reply be taken by the peer, within
        ``tcp_idle_timeout``, and the whole connection ends after ``tcp_lifetime``."""
        loop = asyncio.get_running_loop()
        transport = writer.transport
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else "?"
        now = loop.time()
        refusal = self._admit(client, now)
        if refusal is not None:
            self.stats.tcp_refused += 1
            self._count_refusal(refusal)
            transport.abort()
            return
        conn = _Conn(client, transport, now, now)
        self._conns[transport] = conn
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        with contextlib.suppress(Exception):
            transport.set_write_buffer_limits(high=self.limits.tcp_write_buffer)
        end = now + self.limits.tcp_lifetime
        graceful = False
        try:
            async with asyncio.timeout(None) as deadline:

                def arm(seconds: float) -> None:
                    deadline.reschedule(min(loop.time() + seconds, end))

                async def send(wire: bytes) -> None:
                    arm(self.limits.tcp_idle_timeout)
                    writer.write(len(wire).to_bytes(2, "big") + wire)
                    await writer.drain()
                    conn.progress = loop.time()

                access = None
                if tls is not None:  # DANCE decides before any DNS message is read
                    arm(tls.config.lookup_timeout + 1.0)
                    access = await tls.access(writer)
                    if access is None:
                        return
                while True:
                    arm(self.limits.tcp_idle_timeout)
                    try:
                        header = await reader.readexactly(2)
                    except asyncio.IncompleteReadError as exc:
                        graceful = not exc.partial  # the client closed between messages
                        return
                    length = int.from_bytes(header, "big")
                    if length == 0 or length > self.limits.max_message_size:
                        self.stats.dropped += 1
                        self._count_refusal("message-size")
                        return
                    data = await reader.readexactly(length)
                    conn.progress = loop.time()
                    await self._tcp_message(data, client, access, send, arm)
                    await asyncio.sleep(0)  # pipelined queries: let other clients in between
        except TimeoutError:
            self._count_refusal("tcp-deadline")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        except ssl.SSLError as exc:
            log.debug("TLS connection ended: %r", exc)
        except Exception:
            log.exception("TCP connection failed")
        finally:
            self._conns.pop(transport, None)
            if task is not None:
                self._tasks.discard(task)
            if graceful and not transport.is_closing():
                writer.close()  # let the last replies out, for a bounded time
                try:
                    async with asyncio.timeout(1.0):
                        await writer.wait_closed()
                except BaseException:
                    transport.abort()
            else:
                transport.abort()

    async def _tcp_message(
        self,
        data: bytes,
        client: str,
        access: object,
        send: Callable[[bytes], Coroutine[object, object, None]],
        arm: Callable[[float], None],
    ) -> None:
        from dance.authority.xot import TLSAccess

        tls_access = cast(TLSAccess | None, access)
        if not self._client_allowed(client):
            if self.limits.rate_action == "refused":
                reply = self._refused_for(data)
                if reply is not None:
                    await send(reply)
            return
        if len(data) >= 12 and (data[2] >> 3) & 0xF == dns.opcode.UPDATE:
            arm(self.limits.update_timeout)
            for reply in await self._handle_update_async(data) or ():
                await send(reply)
            return
        if tls_access is not None and not tls_access.query:
            reply = self._refused_for(data)
            if reply is not None:
                await send(reply)
            return
        result = self._dispatch(data, "tcp", tls_access is not None and tls_access.transfer)
        if isinstance(result, _Transfer):
            await self._stream_transfer(result, send, arm)
            return
        for reply in result or ():
            await send(reply)

    async def _stream_transfer(
        self,
        transfer: _Transfer,
        send: Callable[[bytes], Coroutine[object, object, None]],
        arm: Callable[[float], None],
    ) -> None:
        """Send a transfer: the messages are rendered off the event loop (once per zone
        version, then reused), each is signed and written only when the peer has taken the
        previous one (backpressure), within the connection's deadline."""
        if self._transfers >= self.limits.max_transfers:
            self._count_refusal("transfers-busy")
            response = self._sign_like(transfer.query, dns.message.make_response(transfer.query))
            response.set_rcode(dns.rcode.REFUSED)
            await send(response.to_wire())
            return
        self._transfers += 1
        try:
            if transfer.soa_only:
                chunks = None
            else:
                arm(self.limits.tcp_idle_timeout)
                loop = asyncio.get_running_loop()
                chunks = await loop.run_in_executor(
                    self._xfr_executor, self._axfr_chunks, transfer.state, transfer.snapshot
                )
            count = 0
            for wire in self._transfer_messages(transfer, chunks):
                await send(wire)
                count += 1
                await asyncio.sleep(0)  # one message at a time: other clients in between
            self._log_transfer(transfer, count)
        finally:
            self._transfers -= 1

    # ------------------------------------------------------------- dispatch

    def handle(
        self, wire: bytes, transport: str = "udp", *, xfr: bool = False
    ) -> list[bytes] | None:
        """Answer one wire message: the reply messages (several for AXFR), or None to drop.

        ``xfr`` allows unsigned zone transfers (a DANCE-authenticated DNS-over-TLS client in
        ``xfr_allow``). Never raises: unexpected failures are logged and dropped. (The TCP
        listener streams transfers instead of building them here.)"""
        result = self._dispatch(wire, transport, xfr)
        if not isinstance(result, _Transfer):
            return result
        try:
            chunks = None if result.soa_only else self._axfr_chunks(result.state, result.snapshot)
            messages = list(self._transfer_messages(result, chunks))
        except Exception:
            log.exception("failed to build a zone transfer")
            return None
        self._log_transfer(result, len(messages))
        return messages

    def _dispatch(self, wire: bytes, transport: str, xfr: bool) -> list[bytes] | _Transfer | None:
        try:
            return self._handle(wire, transport, xfr)
        except Exception:
            log.exception("failed to handle a message")
            return None

    def _handle(
        self, wire: bytes, transport: str, xfr: bool = False
    ) -> list[bytes] | _Transfer | None:
        if len(wire) < 12 or wire[2] & 0x80:
            self.stats.dropped += 1
            return None  # no header, or a response: never answer
        opcode = (wire[2] >> 3) & 0xF
        signed = False
        message: dns.message.Message | None = None
        try:
            message = dns.message.from_wire(wire, keyring=self._keyring)
            signed = message.had_tsig
        except _TSIG_ERRORS as exc:
            return self._tsig_error(wire, exc)
        except Exception:
            message = None
        if opcode == dns.opcode.UPDATE:
            self.stats.updates += 1
            if message is None:
                self.stats.formerr += 1
                return [self._formerr(wire)]
            return [self._update(cast(dns.update.UpdateMessage, message), signed)]
        self.stats.queries += 1
        if message is not None and len(message.question) == 1:
            qtype = message.question[0].rdtype
            if qtype in (RdataType.AXFR, RdataType.IXFR):
                return self._transfer(message, signed, transport, xfr)
        if message is not None and signed:
            response = self.zoneset.respond(message, transport=transport)  # type: ignore[arg-type]
            limit = 65535
            if transport == "udp":
                limit = min(max(512, message.payload), 1232) if message.edns >= 0 else 512
            signed_response = self._sign_like(message, response)
            try:
                return [signed_response.to_wire(max_size=limit)]
            except dns.exception.TooBig:
                signed_response.answer, signed_response.authority = [], []
                signed_response.additional = []
                signed_response.flags |= dns.flags.TC
                return [signed_response.to_wire(max_size=limit)]
        reply = self.zoneset.respond_wire(wire, transport=transport)  # type: ignore[arg-type]
        if reply.data is None:
            return None
        return [reply.data]

    def _formerr(self, wire: bytes) -> bytes:
        flags = dns.flags.QR | (int.from_bytes(wire[2:4], "big") & 0x7800)
        return wire[:2] + (flags | dns.rcode.FORMERR).to_bytes(2, "big") + b"\0" * 8

    def _sign_like(
        self, query: dns.message.Message, response: dns.message.Message
    ) -> dns.message.Message:
        if query.had_tsig and query.keyring:
            response.use_tsig(
                query.keyring,
                query.keyname,
                algorithm=query.keyalgorithm or dns.tsig.default_algorithm,
            )
            response.request_mac = query.mac or b""
        return response

    def _tsig_error(self, wire: bytes, exc: Exception) -> list[bytes] | None:
        """NOTAUTH with an unsigned TSIG carrying BADKEY/BADSIG/BADTIME (RFC 8945 5.3.2)."""
        try:
            query = dns.message.from_wire(wire, keyring=False)
        except Exception:
            self.stats.formerr += 1
            return [self._formerr(wire)]
        if isinstance(exc, dns.tsig.BadTime):
            error = dns.rcode.BADTIME
        elif isinstance(exc, dns.tsig.BadSignature):
            error = dns.rcode.BADSIG
        else:
            error = dns.rcode.BADKEY
        log.warning(
            "%s with TSIG key %s refused: %s",
            "update" if query.opcode() == dns.opcode.UPDATE else "query",
            query.keyname,
            {16: "BADSIG", 17: "BADKEY", 18: "BADTIME"}[int(error)],
        )
        if query.opcode() == dns.opcode.UPDATE:
            self.stats.updates += 1
            self.stats.updates_refused += 1
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NOTAUTH)
        tsig = query.tsig[0] if query.tsig else None
        if tsig is not None and query.keyname is not None:
            rd = TSIG(  # type: ignore[no-untyped-call]
                dns.rdataclass.ANY,
                dns.rdatatype.TSIG,
                tsig.algorithm,
                int(time.time()) if error == dns.rcode.BADTIME else tsig.time_signed,
                tsig.fudge,
                b"",
                query.id,
                error,
                b"",
            )
            response.tsig = dns.rrset.from_rdata(query.keyname, 0, rd)
        self._count(dns.rcode.NOTAUTH)
        return [response.to_wire()]

    def _count(self, rcode: int) -> None:
        text = dns.rcode.to_text(dns.rcode.Rcode.make(rcode))
        self.stats.by_rcode[text] = self.stats.by_rcode.get(text, 0) + 1

    # -------------------------------------------------------------- updates

    def _update(self, message: dns.update.UpdateMessage, signed: bool) -> bytes:
        response = dns.message.make_response(message)
        zone_name = message.zone[0].name if message.zone else None
        if not signed:
            log.warning("unsigned update for %s refused (TSIG required)", zone_name)
            self.stats.updates_refused += 1
            response.set_rcode(dns.rcode.REFUSED)
            self._count(dns.rcode.REFUSED)
            return response.to_wire()
        replayed = self._replayed(message)
        if replayed is not None:
            self.stats.updates_refused += 1
            self.stats.replays += 1
            self._count_refusal(replayed)
            log.warning(
                "update for %s with TSIG key %s refused: %s",
                zone_name,
                message.keyname,
                "an identical update was already processed (replay)"
                if replayed == "replay"
                else "signed before this authority started or before the replay-cache floor",
                extra={
                    "event": {
                        "event": "update",
                        "zone": str(zone_name),
                        "key": str(message.keyname),
                        "rcode": "REFUSED",
                        "reason": replayed,
                    }
                },
            )
            response.set_rcode(dns.rcode.REFUSED)
            self._count(dns.rcode.REFUSED)
            return response.to_wire()
        state = self._zones.get(zone_name) if zone_name is not None else None
        if state is None:
            response.set_rcode(dns.rcode.NOTAUTH)
            self.stats.updates_refused += 1
            self._count(dns.rcode.NOTAUTH)
            log.warning("update for %s refused: not authoritative", zone_name)
            return response.to_wire()
        rcode = dns.rcode.Rcode.make(self.apply(state, message))
        response.set_rcode(rcode)
        self._count(rcode)
        return response.to_wire()

    def _replayed(self, message: dns.message.Message) -> str | None:
        """None for an update seen for the first time (now remembered), else the reason it
        is refused: ``replay`` or ``signed-before-floor`` (see :class:`ReplayCache`)."""
        tsig = message.tsig[0] if message.tsig else None
        if tsig is None or message.keyname is None:
            return "replay"  # cannot happen for a verified message; fail closed
        return self._replay.check(
            message.keyname.to_text(), int(tsig.time_signed), int(tsig.fudge), message.mac or b""
        )

    def apply(self, state: _ZoneState, message: dns.update.UpdateMessage) -> int:
        """Apply an authenticated update to one zone: all or nothing. Returns the RCODE."""
        with self._lock:
            refused = check_policy(self.update_policy, message.keyname, message)
            now = self._now()
            result = refused or apply_update(
                state.records,
                state.origin,
                message,
                next_serial=lambda old: next_serial(old, self.serial_policy, now),
            )
            if result.rcode != dns.rcode.NOERROR or not result.changed:
                if result.rcode != dns.rcode.NOERROR:
                    self.stats.updates_refused += 1
                log.info(
                    "update %s key=%s rcode=%s %s",
                    state.origin,
                    message.keyname,
                    dns.rcode.to_text(result.rcode),
                    result.reason,
                    extra={
                        "event": {
                            "event": "update",
                            "zone": state.origin.to_text(),
                            "key": str(message.keyname),
                            "rcode": dns.rcode.to_text(result.rcode),
                            "reason": result.reason,
                        }
                    },
                )
                return int(result.rcode)
            assert result.records is not None
            started = time.perf_counter()
            misses = state.cache.misses
            owners = state.owners.copy()
            saved = (state.window.inception, state.window.expiration)
            window = state.window.current(now)
            patched = None
            try:
                if state.incremental:
                    patched = patch_zone(
                        state.zone.snapshot,
                        owners,
                        result.records,
                        set(result.touched),
                        state.keys,
                        window,
                    )
                if patched is None:
                    zone = build_zone(
                        state.origin, result.records, state.policy, state.keys, window, now=now
                    )
                    owners = sorted_owners(zone.snapshot)
                signed_at = time.perf_counter()
                self._persist(state, result.records, result.touched)
            except Exception:
                state.cache.rollback()
                state.window.inception, state.window.expiration = saved
                self.stats.updates_refused += 1
                log.exception("update of %s failed; zone unchanged", state.origin)
                return int(dns.rcode.SERVFAIL)
            if patched is None:
                state.cache.commit()
                state.zone = zone
                self.zoneset.replace(zone)
            else:
                state.zone.install(patched)
            state.owners = owners
            state.records = result.records
            state.sign_seconds = signed_at - started
            self.stats.updates_applied += 1
            new_signatures = state.cache.misses - misses
            persisted = time.perf_counter() - signed_at
            log.info(
                "update %s key=%s rcode=NOERROR +%d -%d serial=%d signed (%s) in %.3f s "
                "(%d new signatures), persisted in %.3f s",
                state.origin,
                message.keyname,
                result.added,
                result.deleted,
                self.serial(state.origin),
                "incremental" if patched is not None else "full",
                state.sign_seconds,
                new_signatures,
                persisted,
                extra={
                    "event": {
                        "event": "update",
                        "zone": state.origin.to_text(),
                        "key": str(message.keyname),
                        "rcode": "NOERROR",
                        "added": result.added,
                        "deleted": result.deleted,
                        "serial": self.serial(state.origin),
                        "signing": "incremental" if patched is not None else "full",
                        "sign_seconds": round(state.sign_seconds, 6),
                        "new_signatures": new_signatures,
                        "persist_seconds": round(persisted, 6),
                    }
                },
            )
        self._notify_soon(state.origin)
        return int(dns.rcode.NOERROR)

    # ------------------------------------------------------------ transfers

    def _transfer(
        self, query: dns.message.Message, signed: bool, transport: str, xfr: bool = False
    ) -> list[bytes] | _Transfer:
        """AXFR over TCP with TSIG, or over DANCE-authenticated TLS for ``xfr`` clients. IXFR
        is answered with a full transfer (RFC 1995 4), or with the SOA alone when the client
        already has the current serial (RFC 1995 2)."""
        qname = query.question[0].name
        state = self._zones.get(qname)
        if transport != "tcp" or not (signed or xfr) or state is None:
            response = self._sign_like(query, dns.message.make_response(query))
            response.set_rcode(dns.rcode.REFUSED if transport == "tcp" else dns.rcode.FORMERR)
            if not (signed or xfr):
                log.warning("unsigned zone transfer of %s refused (TSIG required)", qname)
            return [response.to_wire()]
        self.stats.transfers += 1
        snapshot = state.zone.snapshot
        soa_only = False
        if query.question[0].rdtype == RdataType.IXFR:
            theirs = [
                rd.serial
                for rrset in query.authority
                if rrset.rdtype == RdataType.SOA and rrset.name == qname
                for rd in rrset
            ]
            ours = _soa_serial(state.records, state.origin)
            soa_only = len(theirs) == 1 and not serial_gt(ours, int(theirs[0]))
        return _Transfer(state, snapshot, query, signed, soa_only)

    def _axfr_chunks(self, state: _ZoneState, snapshot: object) -> list[bytes]:
        """The rendered transfer of ``snapshot`` (cached until the zone changes)."""
        with state.axfr_lock:
            cached = state.axfr
            if cached is not None and cached[0] is snapshot:
                return cached[1]
            started = time.perf_counter()
            chunks = _render_axfr(state.origin, snapshot)
            state.axfr = (snapshot, chunks)
            log.debug(
                "rendered the transfer of %s: %d messages in %.3f s",
                state.origin,
                len(chunks),
                time.perf_counter() - started,
            )
            return chunks

    def _transfer_messages(
        self, transfer: _Transfer, chunks: list[bytes] | None
    ) -> Iterator[bytes]:
        """The messages of one transfer: the cached ones with this query's ID and question
        (and TSIG, each signed as the previous one has been sent)."""
        query = transfer.query
        if chunks is None:  # up-to-date IXFR client: the SOA alone
            response = self._sign_like(query, dns.message.make_response(query))
            response.flags |= dns.flags.AA
            soa = cast("_Snapshot", transfer.snapshot).soa
            response.answer = [soa]
            yield response.to_wire(max_size=65535)
            return
        question = query.question[0]
        qname = question.name.to_wire() or b""
        end = 12 + len(qname)
        flags = dns.flags.QR | dns.flags.AA | (query.flags & dns.flags.RD)
        ctx: object | None = None
        for index, chunk in enumerate(chunks):
            wire = bytearray(chunk)
            wire[0:4] = query.id.to_bytes(2, "big") + int(flags).to_bytes(2, "big")
            if index == 0:  # the question as asked (case, AXFR or IXFR)
                wire[12:end] = qname
                wire[end : end + 2] = int(question.rdtype).to_bytes(2, "big")
            if transfer.signed:
                signed_wire, ctx = _tsig_sign(bytes(wire), query, ctx)
                yield signed_wire
            else:
                yield bytes(wire)

    def _log_transfer(self, transfer: _Transfer, count: int) -> None:
        query = transfer.query
        log.info(
            "%s of %s to %s: %d messages",
            "IXFR (up to date)" if transfer.soa_only else "AXFR",
            transfer.state.origin,
            f"key {query.keyname}" if transfer.signed else "a DANCE-authenticated TLS client",
            count,
        )
