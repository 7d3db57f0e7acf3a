"""Publishing and revoking TLSA records with RFC 2136 dynamic updates signed with TSIG.

A generic client: it works with any authoritative server that accepts TSIG-signed updates and
signs online (Knot ``dnssec-signing: on``, BIND ``dnssec-policy`` + ``inline-signing``, PowerDNS
with a DNSSEC-enabled backend, dance's embedded authority).

Every change is one UPDATE message, which RFC 2136 section 3.4 makes atomic: when the server
refuses (REFUSED, NOTAUTH, a failed prerequisite, ...) nothing in the zone changes, and the
server's RCODE is reported in :class:`UpdateError`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update
from cryptography import x509

from dance.credentials import Cert
from dance.dns import LookupResult, Outcome, TLSAResolver, TrustAnchors
from dance.names import ClientName, parse_client_name
from dance.tlsa import TLSARecord, make_record
from dance.tsig import TSIGKey

__all__ = [
    "Change",
    "MismatchError",
    "UpdateError",
    "Updater",
    "check_record_matches",
    "wait_visible",
    "zone_lines",
]

log = logging.getLogger(__name__)

MAX_MESSAGE = 60_000  # stay below the 65,535-octet TCP message limit
_POLL_BATCH = 256


class UpdateError(Exception):
    """An update was not applied. ``rcode`` is the server's RCODE text (``NOTAUTH``...) or a
    local reason (``timeout``, ``network-error``, ``notzone``)."""

    def __init__(self, rcode: str, message: str) -> None:
        super().__init__(message)
        self.rcode = rcode


class MismatchError(ValueError):
    """The record does not match the certificate or key it should publish."""


@dataclasses.dataclass(frozen=True)
class Change:
    """Records to add to or remove from one owner name."""

    owner: str  # client name, no trailing dot
    records: tuple[TLSARecord, ...]


def check_record_matches(
    record: TLSARecord, *, certificate: x509.Certificate | None = None, spki: bytes | None = None
) -> None:
    """Raise :class:`MismatchError` unless ``record`` is the association of the given cert/key.

    DANE-TA (0, 2) records must be made from a CA certificate; selector 0 needs a certificate.
    """
    if certificate is None and spki is None:
        raise MismatchError("nothing to check the record against")
    if certificate is not None:
        cert = Cert.from_certificate(certificate)
        try:
            data = cert.digest(record.selector, record.mtype)
        except ValueError as exc:
            raise MismatchError(str(exc)) from None
        if record.usage in (0, 2):
            try:
                bc = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
                is_ca = bc.ca
            except x509.ExtensionNotFound:
                is_ca = False
            if not is_ca:
                raise MismatchError(
                    f"usage {record.usage} (trust anchor) needs a CA certificate, not an end entity"
                )
    else:
        assert spki is not None
        if record.selector != 1:
            raise MismatchError("a bare public key can only match selector 1 (SPKI)")
        data = make_record(spki, record.usage, 1, record.mtype).data
    if data != record.data:
        raise MismatchError(
            f"record {record.to_text()[:40]}... does not match the given certificate/key"
        )


def zone_lines(changes: Iterable[Change], ttl: int) -> list[str]:
    """Presentation-format RRs for a manual deployment (zone file or nsupdate input)."""
    return [r.to_zone_line(c.owner, ttl) for c in changes for r in c.records]


def _rdata(record: TLSARecord) -> dns.rdata.Rdata:
    return dns.rdata.from_wire(
        dns.rdataclass.IN, dns.rdatatype.TLSA, record.to_wire(), 0, len(record.to_wire())
    )


def _relative_check(owner: str, zone: dns.name.Name) -> dns.name.Name:
    name = dns.name.from_text(owner + ".")
    if not name.is_subdomain(zone):
        raise UpdateError("notzone", f"{owner} is not in zone {zone.to_text(True)}")
    return name


class Updater:
    """Sends TSIG-signed RFC 2136 updates for one zone to one primary server (over TCP)."""

    def __init__(
        self,
        server: tuple[str, int],
        zone: str,
        key: TSIGKey | None,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.server = server
        self.zone = dns.name.from_text(zone.rstrip(".") + ".")
        self.key = key
        self.timeout = timeout
        self.messages_sent = 0
        self.records_changed = 0

    # -- building -------------------------------------------------------------------------
    def _message(self) -> dns.update.UpdateMessage:
        if self.key is None:
            return dns.update.UpdateMessage(self.zone)
        return dns.update.UpdateMessage(
            self.zone,
            keyring={self.key.dns_name: self.key.to_dnspython()},
            keyname=self.key.dns_name,
            keyalgorithm=self.key.to_dnspython().algorithm,
        )

    def build(
        self,
        add: Sequence[Change] = (),
        remove: Sequence[Change] = (),
        *,
        ttl: int = 300,
        replace: bool = False,
        remove_all: Sequence[str] = (),
        require_present: Sequence[str] = (),
    ) -> dns.update.UpdateMessage:
        msg = self._message()
        for owner in require_present:
            msg.present(_relative_check(owner, self.zone), dns.rdatatype.TLSA)
        for owner in remove_all:
            msg.delete(_relative_check(owner, self.zone), dns.rdatatype.TLSA)
        for change in remove:
            name = _relative_check(change.owner, self.zone)
            for record in change.records:
                msg.delete(name, _rdata(record))
        for change in add:
            name = _relative_check(change.owner, self.zone)
            if replace:
                msg.delete(name, dns.rdatatype.TLSA)
            for record in change.records:
                msg.add(name, ttl, _rdata(record))
        return msg

    # -- sending --------------------------------------------------------------------------
    def send(self, msg: dns.update.UpdateMessage) -> None:
        """Send one UPDATE; raise :class:`UpdateError` with the RCODE unless NOERROR."""
        host, port = self.server
        try:
            response = dns.query.tcp(msg, host, port=port, timeout=self.timeout)
        except dns.tsig.PeerError as exc:
            what = {
                dns.tsig.PeerBadKey: "BADKEY",
                dns.tsig.PeerBadSignature: "BADSIG",
                dns.tsig.PeerBadTime: "BADTIME",
            }.get(type(exc), str(exc) or "TSIG error")
            raise UpdateError("NOTAUTH", f"server refused the update: NOTAUTH ({what})") from None
        except dns.exception.Timeout:
            raise UpdateError("timeout", f"no answer from {host}:{port}") from None
        except dns.message.UnknownTSIGKey:
            raise UpdateError("NOTAUTH", "server answered with an unknown TSIG key") from None
        except (dns.tsig.BadSignature, dns.tsig.BadTime) as exc:
            raise UpdateError("bad-response", f"response TSIG did not verify: {exc}") from None
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            raise UpdateError("network-error", f"update to {host}:{port} failed: {exc}") from None
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            text = dns.rcode.to_text(rcode)
            raise UpdateError(text, f"server refused the update: {text}")
        if self.key is not None and not response.had_tsig:
            raise UpdateError("bad-response", "server's NOERROR answer was not TSIG-signed")
        self.messages_sent += 1

    def apply(
        self,
        add: Sequence[Change] = (),
        remove: Sequence[Change] = (),
        *,
        ttl: int = 300,
        replace: bool = False,
        remove_all: Sequence[str] = (),
        require_present: Sequence[str] = (),
    ) -> None:
        """One atomic UPDATE with all the given changes."""
        msg = self.build(
            add,
            remove,
            ttl=ttl,
            replace=replace,
            remove_all=remove_all,
            require_present=require_present,
        )
        self.send(msg)
        changed = sum(len(c.records) for c in (*add, *remove)) + len(remove_all)
        self.records_changed += changed
        log.info("update to %s: %d records changed", self.zone.to_text(True), changed)

    def publish(self, changes: Sequence[Change], *, ttl: int = 300, replace: bool = False) -> None:
        self.apply(changes, ttl=ttl, replace=replace)

    def revoke(self, changes: Sequence[Change] = (), *, owners: Sequence[str] = ()) -> None:
        """Remove the given records, or every TLSA record of ``owners``; the owner must have
        TLSA records (prerequisite), else the server answers NXRRSET and nothing changes."""
        present = [c.owner for c in changes] + list(owners)
        self.apply(remove=changes, remove_all=owners, require_present=present)

    def publish_batched(
        self, changes: Sequence[Change], *, ttl: int = 300, batch: int = 400
    ) -> int:
        """Many RRs per UPDATE; each message stays below 60 kB. Returns messages sent."""
        sent = 0
        start = 0
        while start < len(changes):
            size = min(batch, len(changes) - start)
            while True:
                chunk = changes[start : start + size]
                msg = self.build(chunk, ttl=ttl)
                # Upper bound without compression: owner + type/class/TTL/length + RDATA.
                bound = 512 + sum(
                    (len(c.owner) + 12 + len(r.to_wire())) for c in chunk for r in c.records
                )
                if size == 1 or bound <= MAX_MESSAGE or len(msg.to_wire()) <= MAX_MESSAGE:
                    break
                size //= 2
            self.send(msg)
            self.records_changed += sum(len(c.records) for c in chunk)
            sent += 1
            start += size
        return sent

    # -- reading back (unvalidated, for idempotency) -------------------------------------
    async def _existing(self, owners: Sequence[str], concurrency: int) -> dict[str, set[bytes]]:
        host, port = self.server
        sem = asyncio.Semaphore(concurrency)
        out: dict[str, set[bytes]] = {}

        async def one(owner: str) -> None:
            query = dns.message.make_query(owner + ".", dns.rdatatype.TLSA)
            async with sem:
                for _ in range(3):
                    try:
                        resp = await dns.asyncquery.udp_with_fallback(
                            query, host, port=port, timeout=2.0
                        )
                        break
                    except dns.exception.Timeout:
                        continue
                else:
                    raise UpdateError("timeout", f"no answer for {owner} from {host}:{port}")
            message = resp[0]
            found: set[bytes] = set()
            for rrset in message.answer:
                if rrset.rdtype == dns.rdatatype.TLSA:
                    found |= {rd.to_wire() for rd in rrset}
            out[owner] = found

        await asyncio.gather(*(one(o) for o in owners))
        return out

    def existing(self, owners: Sequence[str], *, concurrency: int = 64) -> dict[str, set[bytes]]:
        """The TLSA RDATA (wire) the primary serves now for each owner (no validation)."""
        return asyncio.run(self._existing(owners, concurrency))


async def _poll(
    resolver: TLSAResolver,
    owners: Sequence[str],
    expect: dict[str, set[bytes] | None],
    deadline: float,
    interval: float,
) -> dict[str, LookupResult]:
    pending = list(owners)
    last: dict[str, LookupResult] = {}
    while True:
        resolver.flush()
        results: list[LookupResult] = []
        # Bounded batches: a lookup's own deadline must not be spent queueing behind thousands.
        for start in range(0, len(pending), _POLL_BATCH):
            part = pending[start : start + _POLL_BATCH]
            results += await asyncio.gather(*(resolver.lookup_tlsa(o) for o in part))
        still = []
        for owner, result in zip(pending, results, strict=True):
            last[owner] = result
            if not _satisfied(result, expect[owner]):
                still.append(owner)
        pending = still
        if not pending or time.monotonic() >= deadline:
            return last
        await asyncio.sleep(interval)


def _satisfied(result: LookupResult, want: set[bytes] | None) -> bool:
    """``want`` None: the records must be gone (securely absent or securely without them is
    decided by the caller passing the removed set as negative); a set: all must be present."""
    if want is None:
        return result.outcome is Outcome.SECURE_ABSENT
    if not want:
        return result.outcome in (Outcome.SECURE, Outcome.SECURE_ABSENT)
    return result.outcome is Outcome.SECURE and want <= set(result.records)


def wait_visible(
    server: tuple[str, int],
    anchors: TrustAnchors,
    expect: dict[str, set[bytes] | None],
    *,
    deadline: float = 30.0,
    interval: float = 0.5,
    gone: dict[str, set[bytes]] | None = None,
) -> tuple[bool, dict[str, LookupResult]]:
    """Poll DNSSEC-validated lookups until every owner in ``expect`` shows its records securely
    (set) or is securely absent (None), and no owner in ``gone`` still shows those records.

    Returns (all satisfied, last result per owner).
    """
    gone = gone or {}
    owners = sorted(set(expect) | set(gone))
    merged: dict[str, set[bytes] | None] = {o: expect.get(o, set()) for o in owners}

    async def run() -> tuple[bool, dict[str, LookupResult]]:
        end = time.monotonic() + deadline
        resolver = TLSAResolver(server, anchors=anchors, timeout=2.0, deadline=5.0)
        try:
            while True:
                last = await _poll(resolver, owners, merged, end, interval)
                bad = [
                    o
                    for o in owners
                    if not _satisfied(last[o], merged[o])
                    or (o in gone and gone[o] & set(last[o].records))
                ]
                if not bad:
                    return True, last
                if time.monotonic() >= end:
                    return False, last
                await asyncio.sleep(interval)
        finally:
            await resolver.aclose()

    return asyncio.run(run())


def owner_of(name: str | ClientName) -> str:
    return parse_client_name(name).text if not isinstance(name, ClientName) else name.text
