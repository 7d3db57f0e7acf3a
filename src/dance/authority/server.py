"""The embedded authority: DNSSEC-signed zones from a zone directory, served on UDP and TCP,
with TSIG-authenticated RFC 2136 dynamic updates signed online and persisted atomically.

In process::

    with Authority("zones/", tsig_keys=load_tsig_keys("update.key")).start() as auth:
        host, port = auth.address

or ``await Authority(...).serve(host, port)`` inside an event loop (the CLI does this).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TextIO, cast

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
from dns.rdtypes.ANY.TSIG import TSIG

from dance.authority.errors import AuthorityError
from dance.authority.ratelimit import RateLimiter
from dance.authority.signer import (
    DEFAULT_VALIDITY,
    OnlineZone,
    SignatureCache,
    SigningWindow,
    build_zone,
    caching_keys,
    patch_zone,
    sorted_owners,
)
from dance.authority.store import Denial, KeyPolicy, Records, ZoneDir, trust_anchor_text
from dance.authority.update import UpdatePolicy, apply_update, check_policy
from dance.testkit.zones import Zone, ZoneKeys
from dance.testkit.zoneset import ZoneSet
from dance.tsig import TSIGKey, keyring

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


@dataclass(frozen=True)
class Limits:
    """Hardening knobs (defaults suit a laptop; tests lower them)."""

    rate: float = 200.0  # messages per second per client address (0 = no limit)
    burst: float = 400.0
    rate_action: str = "drop"  # or "refused"
    max_clients: int = 10000  # rate-limit table size
    max_message_size: int = 65535  # larger messages are dropped (UDP) / close (TCP)
    max_tcp_connections: int = 64
    max_tcp_per_client: int = 16
    tcp_idle_timeout: float = 10.0
    max_pending_updates: int = 256


@dataclass
class _ZoneState:
    origin: Name
    records: Records
    policy: KeyPolicy
    cache: SignatureCache
    keys: ZoneKeys
    window: SigningWindow
    zone: OnlineZone
    owners: list[Name] = field(default_factory=list)
    sign_seconds: float = 0.0
    incremental: bool = True


@dataclass
class Stats:
    queries: int = 0
    updates: int = 0
    updates_applied: int = 0
    updates_refused: int = 0
    rate_limited: int = 0
    dropped: int = 0
    formerr: int = 0
    tcp_refused: int = 0
    transfers: int = 0
    by_rcode: dict[str, int] = field(default_factory=dict)


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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Authority:
    """Authoritative server for the zones of ``zone_dir`` (see :mod:`dance.authority.store`).

    Zones are loaded, keys created if missing (``algorithm``/``denial`` for new keys) and
    signed when the object is made. ``tsig_keys`` authorise dynamic updates (and zone
    transfers); without keys every update is REFUSED.
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
    ) -> None:
        self.store = ZoneDir(zone_dir)
        self.tls_config = tls
        self.tls: XoTListener | None = None
        self.update_policy = update_policy
        self.limits = limits or Limits()
        self.allow_non_loopback = allow_non_loopback
        self.tsig_keys = list(tsig_keys)
        self._keyring = keyring(self.tsig_keys)
        self.stats = Stats()
        self._rate = RateLimiter(
            self.limits.rate, self.limits.burst, max_clients=self.limits.max_clients
        )
        self._zones: dict[Name, _ZoneState] = {}
        self.zoneset = _Zones()
        self._lock = threading.Lock()  # serialises updates and re-signing
        origins = self.store.zones()
        if not origins:
            raise AuthorityError("no-zones", f"no <zone>.zone files in {self.store.path}")
        for origin in origins:
            records = self.store.read_records(origin)
            policy = self.store.policy(origin, algorithm=algorithm, denial=denial)
            cache = SignatureCache()
            keys = caching_keys(policy.keys, cache)
            window = SigningWindow(validity=validity)
            started = time.perf_counter()
            try:
                zone = build_zone(origin, records, policy, keys, window.current())
            except ValueError as exc:
                raise AuthorityError("zone-file", f"{origin}: {exc}") from None
            cache.commit()
            state = _ZoneState(origin, records, policy, cache, keys, window, zone)
            state.owners = sorted_owners(zone.snapshot)
            state.sign_seconds = time.perf_counter() - started
            self._zones[origin] = state
            self.zoneset.add(zone)
            log.info(
                "loaded zone %s (%d names, %s, algorithm %d) signed in %.3f s",
                origin,
                len(records),
                policy.denial,
                policy.algorithm,
                state.sign_seconds,
            )
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._per_client: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._pending_updates = 0
        self._dir_lock: TextIO | None = None
        self.host = "127.0.0.1"
        self.port = 0
        # thread mode
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

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

    def records(self, origin: str | Name) -> Records:
        """The current unsigned records of a zone (do not modify)."""
        return self._state(origin).records

    def zone(self, origin: str | Name) -> Zone:
        """The signed zone being served."""
        return self._state(origin).zone

    def serial(self, origin: str | Name) -> int:
        soa = next(iter(self._state(origin).records[self._name(origin)][RdataType.SOA]))
        return int(soa.serial)

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

    # ------------------------------------------------------------ lifecycle

    async def start_async(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind UDP and TCP on ``host``:``port`` (0 = a free port, the same for both)."""
        if not _is_loopback(host) and not self.allow_non_loopback:
            raise AuthorityError(
                "non-loopback",
                f"refusing to listen on non-loopback address {host} "
                "(pass allow_non_loopback / --allow-non-loopback to do so)",
            )
        self._lock_zone_dir()
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dance-authority")
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
            if self.tls_config is not None:
                await self._start_tls(host)
            self._spawn(self._refresh_loop())
            log.info("authority listening on %s port %d (UDP and TCP)", host, bound)
            return
        self._unlock_zone_dir()
        raise AuthorityError("bind", f"cannot listen on {host} port {port}: {last}")

    async def _start_tls(self, host: str) -> None:
        from dance.authority.xot import XoTListener

        assert self.tls_config is not None
        listener = XoTListener(self, self.tls_config)
        try:
            await listener.start(host)
        except AuthorityError:
            await self.stop_async()
            raise
        except (OSError, ValueError) as exc:
            await self.stop_async()
            raise AuthorityError("bind", f"cannot start the DNS-over-TLS listener: {exc}") from None
        self.tls = listener

    def _lock_zone_dir(self) -> None:
        """One serving authority per zone directory (both would write the master files)."""
        path = self.store.path / ".authority.lock"
        handle = path.open("a")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise AuthorityError(
                "zone-dir-busy", f"another dance authority is serving {self.store.path}"
            ) from None
        self._dir_lock = handle

    def _unlock_zone_dir(self) -> None:
        if self._dir_lock is not None:
            self._dir_lock.close()  # closing releases the lock
            self._dir_lock = None

    async def stop_async(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
        if self.tls is not None:
            self.tls.close()
        for writer in list(self._writers):
            writer.close()
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
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
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
            await asyncio.sleep(_REFRESH_CHECK)
            if any(s.window.needs_refresh() for s in self._zones.values()):
                await loop.run_in_executor(self._executor, self.refresh_signatures)

    def refresh_signatures(self, force: bool = False) -> int:
        """Re-sign zones whose signature window is half spent (all with ``force``)."""
        count = 0
        with self._lock:
            for state in self._zones.values():
                if not (force or state.window.needs_refresh()):
                    continue
                if force:
                    state.window.expiration = 0
                zone = build_zone(
                    state.origin, state.records, state.policy, state.keys, state.window.current()
                )
                state.cache.commit()
                state.zone = zone
                state.owners = sorted_owners(zone.snapshot)
                self.zoneset.replace(zone)
                count += 1
                log.info("re-signed zone %s (signature window refreshed)", state.origin)
        return count

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

    async def _on_connection(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tls: XoTListener | None = None,
    ) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else "?"
        if (
            len(self._writers) >= self.limits.max_tcp_connections
            or self._per_client.get(client, 0) >= self.limits.max_tcp_per_client
        ):
            self.stats.tcp_refused += 1
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        self._per_client[client] = self._per_client.get(client, 0) + 1
        try:
            access = None
            if tls is not None:  # DANCE decides before any DNS message is read
                async with asyncio.timeout(tls.config.lookup_timeout + 1.0):
                    access = await tls.access(writer)
                if access is None:
                    return
            while True:
                async with asyncio.timeout(self.limits.tcp_idle_timeout):
                    header = await reader.readexactly(2)
                    length = int.from_bytes(header, "big")
                    if length == 0 or length > self.limits.max_message_size:
                        self.stats.dropped += 1
                        return
                    data = await reader.readexactly(length)
                if not self._client_allowed(client):
                    if self.limits.rate_action != "refused":
                        continue
                    reply = self._refused_for(data)
                    replies = [reply] if reply is not None else None
                elif len(data) >= 12 and (data[2] >> 3) & 0xF == dns.opcode.UPDATE:
                    replies = await self._handle_update_async(data)
                elif access is not None and not access.query:
                    reply = self._refused_for(data)
                    replies = [reply] if reply is not None else None
                else:
                    replies = self.handle(data, "tcp", xfr=access is not None and access.transfer)
                for reply in replies or ():
                    writer.write(len(reply).to_bytes(2, "big") + reply)
                    await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass
        except ssl.SSLError as exc:
            log.debug("TLS connection ended: %r", exc)
        except Exception:
            log.exception("TCP connection failed")
        finally:
            self._writers.discard(writer)
            remaining = self._per_client.get(client, 1) - 1
            if remaining > 0:
                self._per_client[client] = remaining
            else:
                self._per_client.pop(client, None)
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # ------------------------------------------------------------- dispatch

    def handle(
        self, wire: bytes, transport: str = "udp", *, xfr: bool = False
    ) -> list[bytes] | None:
        """Answer one wire message: the reply messages (several for AXFR), or None to drop.

        ``xfr`` allows unsigned zone transfers (a DANCE-authenticated DNS-over-TLS client in
        ``xfr_allow``). Never raises: unexpected failures are logged and dropped."""
        try:
            return self._handle(wire, transport, xfr)
        except Exception:
            log.exception("failed to handle a message")
            return None

    def _handle(self, wire: bytes, transport: str, xfr: bool = False) -> list[bytes] | None:
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

    def apply(self, state: _ZoneState, message: dns.update.UpdateMessage) -> int:
        """Apply an authenticated update to one zone: all or nothing. Returns the RCODE."""
        with self._lock:
            refused = check_policy(self.update_policy, message.keyname, message)
            result = refused or apply_update(state.records, state.origin, message)
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
            owners = list(state.owners)
            window = state.window.current()
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
                        state.origin, result.records, state.policy, state.keys, window
                    )
                    owners = sorted_owners(zone.snapshot)
                signed_at = time.perf_counter()
                self.store.write_records(state.origin, result.records)
            except Exception:
                state.cache.rollback()
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
            return int(dns.rcode.NOERROR)

    # ------------------------------------------------------------ transfers

    def _transfer(
        self, query: dns.message.Message, signed: bool, transport: str, xfr: bool = False
    ) -> list[bytes] | None:
        """AXFR over TCP with TSIG, or over DANCE-authenticated TLS for ``xfr`` clients (IXFR
        is answered with a full transfer, RFC 1995 4)."""
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
        soa = snapshot.soa
        rrsets: list[dns.rrset.RRset] = [soa]
        soa_sig = snapshot.sigs.get(state.origin, {}).get(RdataType.SOA)
        if soa_sig is not None:
            rrsets.append(soa_sig)
        owners = sorted(set(snapshot.rrsets) | set(snapshot.sigs))
        for owner in owners:
            for rdtype, rrset in snapshot.rrsets.get(owner, {}).items():
                if owner == state.origin and rdtype == RdataType.SOA:
                    continue
                rrsets.append(rrset)
            for rdtype, sig in snapshot.sigs.get(owner, {}).items():
                if owner == state.origin and rdtype == RdataType.SOA:
                    continue
                rrsets.append(sig)
        if snapshot.nsec3 is not None:
            rrsets.extend(snapshot.nsec3.rrsets.values())
        rrsets.append(soa)
        messages: list[bytes] = []
        ctx = None
        batch: list[dns.rrset.RRset] = []
        size = 0

        def flush(first: bool) -> None:
            nonlocal ctx, batch, size
            response = dns.message.make_response(query)
            if not first:
                response.question = []
            response.flags |= dns.flags.AA
            response.answer = batch
            if not signed:  # DANCE-authenticated TLS: no TSIG
                messages.append(response.to_wire(max_size=65535))
                batch, size = [], 0
                return
            assert query.keyring is not None
            response.use_tsig(
                query.keyring,
                query.keyname,
                algorithm=query.keyalgorithm or dns.tsig.default_algorithm,
            )
            response.request_mac = query.mac or b""
            messages.append(response.to_wire(max_size=65535, multi=True, tsig_ctx=ctx))
            ctx = response.tsig_ctx
            batch, size = [], 0

        for rrset in rrsets:
            length = sum(len(rd.to_wire()) + 12 for rd in rrset) + len(rrset.name.to_wire() or b"")
            if batch and size + length > _AXFR_CHUNK:
                flush(not messages)
            batch.append(rrset)
            size += length
        flush(not messages)
        log.info(
            "AXFR of %s to %s: %d messages",
            qname,
            f"key {query.keyname}" if signed else "a DANCE-authenticated TLS client",
            len(messages),
        )
        return messages
