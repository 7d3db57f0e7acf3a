"""Fleet publication spread over delegated shard zones (tree_shard_zone) on one Knot primary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dance.provision.fleet import create_identities, parse_fleet, publish_fleet
from dance.provision.publish import Updater
from tests.integration.servers import knotc
from tests.provision.knot import Primary, start_primary

pytestmark = pytest.mark.integration
ORG = "example.test"
SHARDS = [f"{h:x}._device.{ORG}" for h in range(16)]


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Primary]:
    p = start_primary(tmp_path_factory.mktemp("knot-shards"), ORG, more_zones=SHARDS)
    try:
        yield p
    finally:
        p.server.stop()


def test_fleet_per_shard_zone(primary: Primary, tmp_path: Path) -> None:
    entries = parse_fleet("\n".join(f"s{i}" for i in range(40)), ORG, depth=1)
    assert {e.zone for e in entries} <= set(SHARDS)
    updaters: dict[str, Updater] = {}

    def updater_for(zone: str) -> Updater:
        return updaters.setdefault(zone, Updater(primary.address, zone, primary.key))

    idents = create_identities(entries, tmp_path, workers=1)
    stats = publish_fleet(idents, updater_for, ttl=60)
    assert stats.published == 40 and stats.zones == len({e.zone for e in entries})
    assert stats.messages == stats.zones  # one batched UPDATE per shard zone
    for zone, updater in updaters.items():
        owners = [i.owner for i in idents if i.zone == zone]
        have = updater.existing(owners)
        assert all(i.record.to_wire() in have[i.owner] for i in idents if i.zone == zone), zone
    # the parent zone got nothing: the names live in their shard zones only
    assert "TLSA" not in knotc(primary.server, "zone-read", ORG + ".")
    assert "TLSA" in knotc(primary.server, "zone-read", entries[0].zone + ".")
    again = create_identities(entries, tmp_path, workers=1)
    stats2 = publish_fleet(again, updater_for)
    assert (stats2.published, stats2.skipped, stats2.messages) == (0, 40, 0)
