"""Fleet provisioning (architecture section 6.5.1): many devices, tree-structured owner names.

* input: one device label per line, or CSV whose first column is the label (an optional header
  row ``name``/``device``); ``#`` comments and blank lines are ignored; every bad line is
  reported with its line number;
* owner names: ``dance.names.tree_device_name`` (``sensor7.<h2>.<h1>._device.D``), so the
  records can be spread over delegated shard zones (``tree_shard_zone``);
* identities are created in a process pool (key generation and signing are CPU bound);
* records are published in batched UPDATE messages (hundreds of RRs each, one per shard zone);
* re-running is idempotent: existing identity files are reused, records the primary already
  serves are not sent again.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import datetime
import io
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from cryptography import x509

from dance import certs
from dance.names import InvalidName, tree_device_name, tree_shard_zone
from dance.provision.identity import new_identity, paths_for, remove_stale_temp_files
from dance.provision.publish import Change, Updater
from dance.tlsa import TLSARecord, make_record

__all__ = [
    "FleetEntry",
    "FleetIdentity",
    "FleetInputError",
    "PublishStats",
    "create_identities",
    "parse_fleet",
    "publish_fleet",
]

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
_HEADERS = {"name", "device", "device_name", "devicename", "hostname", "label"}
MAX_REPORTED_ERRORS = 20


class FleetInputError(ValueError):
    """Malformed fleet file. ``errors`` holds (line number, message) for every bad line."""

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        shown = [f"line {n}: {m}" for n, m in errors[:MAX_REPORTED_ERRORS]]
        more = len(errors) - len(shown)
        super().__init__("; ".join(shown) + (f"; and {more} more" if more > 0 else ""))
        self.errors = errors
        self.reason = "malformed-fleet-file"


@dataclasses.dataclass(frozen=True)
class FleetEntry:
    line: int
    device: str
    owner: str
    zone: str  # the shard zone (parent of owner)


@dataclasses.dataclass(frozen=True)
class FleetIdentity:
    owner: str
    zone: str
    record: TLSARecord
    created: bool


@dataclasses.dataclass
class PublishStats:
    published: int = 0
    skipped: int = 0
    messages: int = 0
    zones: int = 0


def parse_fleet(text: str, domain: str, *, depth: int = 2, width: int = 1) -> list[FleetEntry]:
    """Parse a fleet file; raise :class:`FleetInputError` listing every bad line."""
    entries: list[FleetEntry] = []
    errors: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    first = True
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "," in line or '"' in line:
            try:
                cells = next(csv.reader(io.StringIO(line)))
            except (csv.Error, StopIteration) as exc:
                errors.append((number, f"bad CSV: {exc}"))
                first = False
                continue
            device = cells[0].strip() if cells else ""
        else:
            device = line
        if first and device.lower() in _HEADERS:
            first = False
            continue
        first = False
        if not device:
            errors.append((number, "empty device name"))
            continue
        try:
            owner = tree_device_name(device, domain, depth=depth, width=width).text
            zone = tree_shard_zone(device, domain, depth=depth, width=width)
        except (InvalidName, ValueError) as exc:
            errors.append((number, f"bad device name {device[:40]!r}: {exc}"))
            continue
        if owner in seen:
            errors.append((number, f"duplicate device {device!r} (first on line {seen[owner]})"))
            continue
        seen[owner] = number
        entries.append(FleetEntry(number, device.lower(), owner, zone))
    if errors:
        raise FleetInputError(errors)
    return entries


class FleetInterrupted(Exception):
    """Ctrl-C stopped a fleet run: ``done`` of ``total`` items of ``stage`` were completed."""

    def __init__(self, stage: str, done: int, total: int) -> None:
        super().__init__(f"interrupted during {stage}: {done} of {total} done")
        self.stage, self.done, self.total = stage, done, total


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl-C is the parent's to handle (it cancels what is queued)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT during a step that writes files, and deliver it after (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[bool] = []
    previous = signal.signal(signal.SIGINT, lambda *_: pending.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


def _make_chunk(
    owners: Sequence[str], out_dir: str, key_type: certs.KeyKind, now: datetime.datetime
) -> list[tuple[str, bytes, bool]]:
    """Worker: create (or reuse) the identities of ``owners``; return (owner, TLSA wire, new)."""
    out: list[tuple[str, bytes, bool]] = []
    for owner in owners:
        paths = paths_for(owner, out_dir)
        if paths.key.exists() and paths.cert.exists():
            cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
            out.append((owner, make_record(cert.public_key(), 3, 1, 1).to_wire(), False))
            continue
        # A key without its certificate is what an interrupted run leaves (the key is written
        # first, each file atomically): never published, since publication follows creation.
        interrupted = paths.key.exists() and not paths.cert.exists()
        ident = new_identity(owner, out_dir, key_type=key_type, now=now, force=interrupted)
        out.append((owner, ident.record.to_wire(), True))
    return out


def create_identities(
    entries: Sequence[FleetEntry],
    out_dir: str | Path,
    *,
    key_type: certs.KeyKind = "ec-p256",
    workers: int | None = None,
    now: datetime.datetime | None = None,
    chunk: int = 100,
    progress: Progress | None = None,
) -> list[FleetIdentity]:
    """Create missing identities in parallel (processes); reuse existing ones."""
    when = now or datetime.datetime.now(datetime.UTC)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    stale = remove_stale_temp_files(Path(out_dir))
    if stale:
        log.info("removed %d temporary files of an interrupted run", stale)
    zone_of = {e.owner: e.zone for e in entries}
    owners = [e.owner for e in entries]
    chunks = [owners[i : i + chunk] for i in range(0, len(owners), chunk)]
    results: list[tuple[str, bytes, bool]] = []
    n = workers if workers is not None else (os.cpu_count() or 1)
    if n <= 1 or len(chunks) <= 1:
        try:
            for owner in owners:
                # Ctrl-C lands between two identities, never inside one (files stay whole)
                with _signals_deferred():
                    results += _make_chunk([owner], str(out_dir), key_type, when)
                if progress:
                    progress("identities", len(results), len(owners))
        except KeyboardInterrupt:
            raise FleetInterrupted("identities", len(results), len(owners)) from None
    else:
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=n, initializer=_ignore_sigint)
        try:
            futures = [
                pool.submit(_make_chunk, part, str(out_dir), key_type, when) for part in chunks
            ]
            for future in futures:
                results += future.result()
                if progress:
                    progress("identities", len(results), len(owners))
        except KeyboardInterrupt:
            # stop at once: queued chunks are dropped; chunks already running finish whole
            pool.shutdown(wait=True, cancel_futures=True)
            finished = sum(
                len(f.result())
                for f in futures
                if f.done() and not f.cancelled() and not f.exception()
            )
            raise FleetInterrupted("identities", finished, len(owners)) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return [
        FleetIdentity(owner, zone_of[owner], TLSARecord.from_wire(wire), created)
        for owner, wire, created in results
    ]


def publish_fleet(
    identities: Sequence[FleetIdentity],
    updater_for: Callable[[str], Updater],
    *,
    ttl: int = 300,
    batch: int = 400,
    skip_existing: bool = True,
    single_zone: str | None = None,
    progress: Progress | None = None,
) -> PublishStats:
    """Publish every identity's record in batched updates, grouped per target zone; skip
    records the primary already serves. A refused batch raises UpdateError (that batch changed
    nothing). ``updater_for(zone)`` returns the Updater of a zone: each name's shard zone, or
    ``single_zone`` for all names when given."""
    stats = PublishStats()
    groups: dict[str, tuple[Updater, list[FleetIdentity]]] = {}
    for ident in identities:
        zone = single_zone or ident.zone
        if zone not in groups:
            groups[zone] = (updater_for(zone), [])
        groups[zone][1].append(ident)
    stats.zones = len(groups)
    total = len(identities)
    done = 0
    for updater, members in groups.values():
        todo = members
        if skip_existing:
            # A key generated in this run cannot be published yet: only reused identities are
            # looked up at the primary.
            reused = [m.owner for m in members if not m.created]
            have = updater.existing(reused) if reused else {}
            todo = [m for m in members if m.record.to_wire() not in have.get(m.owner, set())]
            stats.skipped += len(members) - len(todo)
            done += len(members) - len(todo)
        changes = [Change(m.owner, (m.record,)) for m in todo]
        for start in range(0, len(changes), batch):
            part = changes[start : start + batch]
            try:
                stats.messages += updater.publish_batched(part, ttl=ttl, batch=batch)
            except KeyboardInterrupt:
                raise FleetInterrupted("publication", done, total) from None
            stats.published += len(part)
            done += len(part)
            if progress:
                progress("published", done, total)
        if progress and not changes:
            progress("published", done, total)
    return stats
