"""Nothing published is lost (issue 13, item 5): ``kill -9`` of ``dance authority`` while a
publisher sends dynamic updates in a loop (single records, bulk updates of 20 records, and
TLSA rollovers that add the new record and delete the old one in one update). After each
restart the zone is consistent (every rollover name holds exactly one record), the serial has
grown past every serial served before the kill, every acknowledged update is there, and the
signed zone validates with kzonecheck and ldns-verify-zone (from a TSIG AXFR) and through
Unbound. The authority has no DNSSEC key rollover to interrupt (its keys never change).

Three rounds here; ``python bench/bench_authority.py --kill-rounds N`` runs more."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest

from dance.authority import Authority, Limits, TSIGKey, generate_tsig_key
from dance.authority.serial import serial_gt
from dance.testkit.authority import ZONE, make_zone_dir
from dance.testkit.crash import CrashCheckFailed, Ledger, check_zone, crash_rounds, transfer
from tests.integration.servers import require_binary


@pytest.mark.integration
def test_kill_9_loses_no_acknowledged_update(tmp_path: Path) -> None:
    result = crash_rounds(tmp_path, rounds=3)
    print(f"\n{result.as_dict()} serials {result.serials} checked by {result.checkers}")
    assert result.acknowledged_updates >= 10  # the rounds really published
    assert result.records >= result.acknowledged_updates // 3  # and records were added
    assert len(result.serials) == 3 and all(serial_gt(a, b) for b, a in result.serials)
    assert result.checkers  # kzonecheck and/or ldns-verify-zone ran every round
    assert result.validated_names >= 2  # Unbound answered a sample with AD


# The checks themselves catch what they are there for (a crash test that cannot fail proves
# nothing): a signed zone taken by AXFR from an in-process authority, then damaged.


@pytest.fixture
def signed(tmp_path: Path) -> Iterator[tuple[dns.zone.Zone, TSIGKey]]:
    zone_dir, _ = make_zone_dir(tmp_path, "nsec3")
    key = generate_tsig_key("dance-update")
    authority = Authority(zone_dir, tsig_keys=[key], limits=Limits(rate=0)).start()
    try:
        yield transfer(authority.port, key), key
    finally:
        authority.stop()


def _ledger(published: dict[str, set[str]], rollover: dict[str, str] | None = None) -> Ledger:
    return Ledger(published=published, rollover=rollover or {})


SENSOR = f"sensor7._device.{ZONE}"
SENSOR_DATA = "3 1 1 " + "ab" * 32


def test_check_zone_accepts_the_acknowledged_records(
    signed: tuple[dns.zone.Zone, TSIGKey], tmp_path: Path
) -> None:
    zone, _ = signed
    checkers = check_zone(zone, _ledger({SENSOR: {SENSOR_DATA}}), tmp_path / "z.zone")
    assert checkers  # the independent checkers really ran on the AXFR


def test_check_zone_reports_a_lost_name_and_lost_data(
    signed: tuple[dns.zone.Zone, TSIGKey], tmp_path: Path
) -> None:
    zone, _ = signed
    with pytest.raises(CrashCheckFailed, match="gone") as lost:
        check_zone(zone, _ledger({f"lost._device.{ZONE}": {SENSOR_DATA}}), tmp_path / "a")
    assert lost.value.reason == "acknowledged-lost"
    other = "3 1 1 " + "ef" * 32
    with pytest.raises(CrashCheckFailed, match="ef" * 32) as data:
        check_zone(zone, _ledger({SENSOR: {SENSOR_DATA, other}}), tmp_path / "b")
    assert data.value.reason == "acknowledged-data-lost"


def test_check_zone_reports_a_rollover_name_without_its_record(
    signed: tuple[dns.zone.Zone, TSIGKey], tmp_path: Path
) -> None:
    zone, _ = signed
    ledger = _ledger({}, {f"roll0._device.{ZONE}": SENSOR_DATA})
    with pytest.raises(CrashCheckFailed) as failed:
        check_zone(zone, ledger, tmp_path / "z.zone")
    assert failed.value.reason == "rollover-not-one"


@pytest.mark.parametrize("checker", ["kzonecheck", "ldns-verify-zone"])
def test_check_zone_reports_a_broken_signature(
    signed: tuple[dns.zone.Zone, TSIGKey], tmp_path: Path, checker: str
) -> None:
    path = require_binary(checker)
    zone, _ = signed
    node = zone.find_node(f"www.{ZONE}")
    rrsig = node.find_rdataset(dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.A)
    good = rrsig[0]
    broken = good.replace(signature=bytes(len(good.signature)))
    rrsig.remove(good)
    rrsig.add(broken)
    with pytest.raises(CrashCheckFailed) as failed:
        check_zone(zone, _ledger({}), tmp_path / "z.zone", {checker: path})
    assert failed.value.reason == checker
