"""Update policy: an identity zone that accepts only TLSA (architecture 6.2), per-key scopes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dance.authority import Authority, Limits, generate_tsig_key
from dance.authority.update import UpdatePolicy, check_policy
from dance.cli import main
from dance.dns import Outcome
from tests.authority.conftest import H1, H2, ZONE, Env, make_zone_dir, rcode


@pytest.fixture
def policed(tmp_path: Path) -> Iterator[tuple[Env, Env]]:
    """An authority with two keys: `devices` may only touch _device names; both only TLSA."""
    zone_dir, anchor = make_zone_dir(tmp_path)
    admin = generate_tsig_key("admin")
    devices = generate_tsig_key("devices")
    policy = UpdatePolicy.parse("TLSA", [f"devices=_device.{ZONE}"])
    authority = Authority(
        zone_dir, tsig_keys=[admin, devices], limits=Limits(rate=0), update_policy=policy
    ).start()
    try:
        yield Env(zone_dir, admin, anchor, authority), Env(zone_dir, devices, anchor, authority)
    finally:
        authority.stop()


def test_only_tlsa_accepted(policed: tuple[Env, Env]) -> None:
    admin, _ = policed
    before = admin.zone_text()
    update = admin.update()
    update.add("www", 300, "A", "192.0.2.66")  # a web site record: not in an identity zone
    assert rcode(admin.send(update)) == "REFUSED"
    update = admin.update()
    update.add("new._device", 300, "TLSA", f"3 1 1 {H2}")
    update.add("evil", 300, "CNAME", "attacker.example.")  # one bad record spoils the update
    assert rcode(admin.send(update)) == "REFUSED"
    update = admin.update()
    update.delete("www")  # deleting a whole name could remove other types
    assert rcode(admin.send(update)) == "REFUSED"
    assert admin.zone_text() == before
    assert admin.lookup(f"new._device.{ZONE}").outcome is Outcome.SECURE_ABSENT
    update = admin.update()
    update.add("new._device", 300, "TLSA", f"3 1 1 {H2}")
    assert rcode(admin.send(update)) == "NOERROR"
    assert admin.lookup(f"new._device.{ZONE}").outcome is Outcome.SECURE


def test_key_scope(policed: tuple[Env, Env]) -> None:
    admin, devices = policed
    update = devices.update()
    update.add("_user", 300, "TLSA", f"2 0 1 {H2}")  # outside _device: refused for this key
    assert rcode(devices.send(update)) == "REFUSED"
    update = devices.update()
    update.add("sensor9._device", 300, "TLSA", f"3 1 1 {H2}")
    assert rcode(devices.send(update)) == "NOERROR"
    update = admin.update()  # no scope entry: the whole zone (still TLSA only)
    update.add("_user", 300, "TLSA", f"2 0 1 {H1}")
    assert rcode(admin.send(update)) == "NOERROR"
    assert devices.lookup(f"_user.{ZONE}").outcome is Outcome.SECURE


def test_policy_parse_and_check() -> None:
    with pytest.raises(ValueError):
        UpdatePolicy.parse(None, ["no-equals-sign"])
    with pytest.raises(ValueError):
        UpdatePolicy.parse(None, ["key="])
    policy = UpdatePolicy.parse("tlsa, ds", ["k=_device.example.test"])
    assert policy.types is not None and len(policy.types) == 2
    import dns.update

    assert check_policy(None, None, dns.update.UpdateMessage(ZONE)) is None


def test_cli_rejects_bad_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zone_dir, _ = make_zone_dir(tmp_path)
    code = main(
        [
            "authority",
            "--zone-dir",
            str(zone_dir),
            "--listen",
            "127.0.0.1:0",
            "--update-types",
            "NOTATYPE",
        ]
    )
    assert code == 2
    assert "bad update policy" in capsys.readouterr().err
