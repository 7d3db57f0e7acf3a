"""Key rollover for a DANE-EE identity (RFC 7671 section 8.1: "current + next").

1. create the next key and certificate (``NAME.next.key`` / ``NAME.next.pem``; resumable),
2. pre-publish the next key's ``3 1 1`` record next to the current one,
3. wait at least twice the TTL, so every cache that holds the old RRset has expired it and now
   sees both records,
4. switch: the next files atomically replace the current ones,
5. retire the old record (an update that fails leaves the zone unchanged and is reported).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from dance import certs
from dance.provision.identity import (
    IdentityError,
    load_private_key,
    new_identity,
    paths_for,
)
from dance.provision.publish import Change, UpdateError, Updater
from dance.tlsa import TLSARecord, make_record

__all__ = ["RolloverReport", "rollover"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RolloverReport:
    name: str
    old_record: TLSARecord
    new_record: TLSARecord
    waited: float
    steps: list[tuple[str, float]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "old_record": self.old_record.to_text(),
            "new_record": self.new_record.to_text(),
            "waited_seconds": round(self.waited, 3),
            "steps": [{"step": s, "at": round(t, 3)} for s, t in self.steps],
        }


def _current_record(name: str, directory: str | Path) -> TLSARecord:
    paths = paths_for(name, directory)
    if not paths.key.exists():
        raise IdentityError(f"no current identity: {paths.key} is missing", "missing")
    return make_record(load_private_key(paths.key).public_key(), 3, 1, 1)


def rollover(
    name: str,
    directory: str | Path,
    updater: Updater,
    *,
    ttl: int = 300,
    unsafe_wait_seconds: float | None = None,
    key_type: certs.KeyKind = "ec-p256",
    now: datetime.datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
    confirm: Callable[[str, TLSARecord, bool], bool] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> RolloverReport:
    """Roll ``name``'s key over; raises UpdateError (zone unchanged) or IdentityError.

    ``unsafe_wait_seconds`` replaces the 2 x TTL wait (tests only: shorter waits let clients
    with cached old RRsets fail authentication). ``confirm(name, record, present)`` may poll a
    validated lookup after each DNS change and returns whether it became visible.
    """
    start = time.monotonic()
    report_steps: list[tuple[str, float]] = []

    def step(what: str) -> None:
        report_steps.append((what, time.monotonic() - start))
        log.info("rollover %s: %s", name, what)
        if on_step is not None:
            on_step(what)

    pending = Path(directory) / f"{name}.retire"
    if pending.exists():
        # A previous run switched keys but did not retire the old record: finish that first.
        stale = TLSARecord.from_text(pending.read_text(encoding="ascii").strip())
        try:
            updater.revoke([Change(name, (stale,))])
        except UpdateError as exc:
            if exc.rcode != "NXRRSET":
                raise
        pending.unlink()
        step("retired the record left over by an interrupted rollover")
        current = _current_record(name, directory)
        if confirm is not None and not confirm(name, stale, False):
            raise IdentityError("the old record is still visible (validated lookup)", "wait")
        return RolloverReport(name, stale, current, 0.0, report_steps)
    old = _current_record(name, directory)
    nxt = paths_for(name, directory, suffix=".next")
    if nxt.key.exists() and nxt.cert.exists():
        new = make_record(load_private_key(nxt.key).public_key(), 3, 1, 1)
        step("resumed with the existing next key")
    else:
        ident = new_identity(name, directory, key_type=key_type, now=now, suffix=".next")
        new = ident.record
        step("created the next key")
    if new == old:
        raise IdentityError("next key equals the current key", "internal")
    updater.publish([Change(name, (new,))], ttl=ttl)
    step("pre-published the next record")
    if confirm is not None and not confirm(name, new, True):
        raise IdentityError("the next record did not become visible (validated lookup)", "wait")
    wait = 2.0 * ttl if unsafe_wait_seconds is None else max(0.0, unsafe_wait_seconds)
    if unsafe_wait_seconds is not None and wait < 2.0 * ttl:
        log.warning("rollover %s: waiting only %.1fs (< 2 x TTL = %ds)", name, wait, 2 * ttl)
    sleep(wait)
    step(f"waited {wait:.1f}s")
    cur = paths_for(name, directory)
    pending.write_text(old.to_text() + "\n", encoding="ascii")
    os.replace(nxt.cert, cur.cert)
    os.replace(nxt.key, cur.key)
    step("switched to the next key")
    updater.revoke([Change(name, (old,))])
    pending.unlink()
    step("retired the old record")
    if confirm is not None and not confirm(name, old, False):
        raise IdentityError("the old record is still visible (validated lookup)", "wait")
    return RolloverReport(name, old, new, wait, report_steps)


def certificate_of(path: str | Path) -> x509.Certificate:
    with open(path, "rb") as fh:
        return x509.load_pem_x509_certificate(fh.read())
