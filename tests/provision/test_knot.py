"""Publishing, revocation, rollover and fleets against a real Knot DNS primary (online signing,
TSIG-authenticated RFC 2136 updates), checked with dance's own DNSSEC-validated lookups."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

from dance.cli import main
from dance.dns import LookupResult, Outcome, TLSAResolver, TrustAnchors
from dance.provision.ca import issue, new_ca_files
from dance.provision.fleet import create_identities, parse_fleet, publish_fleet
from dance.provision.identity import load_private_key, new_identity
from dance.provision.publish import Change, UpdateError, Updater, wait_visible
from dance.provision.rollover import rollover
from dance.tlsa import TLSARecord, make_record
from dance.tsig import TSIGKey
from tests.provision.knot import Primary, start_primary

pytestmark = pytest.mark.integration
ZONE = "example.test"


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Primary]:
    p = start_primary(tmp_path_factory.mktemp("knot-provision"), ZONE)
    try:
        yield p
    finally:
        p.server.stop()


def _lookup(p: Primary, name: str) -> LookupResult:
    async def go() -> LookupResult:
        resolver = TLSAResolver(p.address, anchors=TrustAnchors.from_file(p.anchor_file))
        try:
            return await resolver.lookup_tlsa(name)
        finally:
            await resolver.aclose()

    return asyncio.run(go())


def _serial(p: Primary) -> int:
    answer = dns.query.tcp(
        dns.message.make_query(ZONE + ".", "SOA"), "127.0.0.1", port=p.server.port
    )
    return int(answer.answer[0][0].serial)


def _updater(p: Primary) -> Updater:
    return Updater(p.address, ZONE, p.key)


def test_publish_then_validated_lookup_then_revoke(primary: Primary, tmp_path: Path) -> None:
    ident = new_identity("pub1._device.example.test", tmp_path)
    before = _lookup(primary, ident.name)
    assert before.outcome is Outcome.SECURE_ABSENT
    _updater(primary).publish([Change(ident.name, (ident.record,))], ttl=60)
    ok, _ = wait_visible(
        primary.address,
        TrustAnchors.from_file(primary.anchor_file),
        {ident.name: {ident.record.to_wire()}},
        deadline=10,
    )
    assert ok
    result = _lookup(primary, ident.name)
    assert result.outcome is Outcome.SECURE and ident.record.to_wire() in result.records
    _updater(primary).revoke([Change(ident.name, (ident.record,))])
    gone = _lookup(primary, ident.name)
    assert gone.outcome is Outcome.SECURE_ABSENT  # secure denial, not just "no answer"
    # revoking again: the prerequisite fails, the server says NXRRSET, nothing changes
    serial = _serial(primary)
    with pytest.raises(UpdateError) as info:
        _updater(primary).revoke([Change(ident.name, (ident.record,))])
    assert info.value.rcode == "NXRRSET"
    assert _serial(primary) == serial


@pytest.mark.parametrize(
    ("key", "detail"),
    [
        (TSIGKey("dance-update", "hmac-sha256", b"\x01" * 32), "BADSIG"),
        (TSIGKey("someone-else", "hmac-sha256", bytes(range(32))), "BADKEY"),
        (None, ""),
    ],
)
def test_wrong_tsig_refused_notauth_zone_unchanged(
    primary: Primary, tmp_path: Path, key: TSIGKey | None, detail: str
) -> None:
    ident = new_identity("evil._device.example.test", tmp_path)
    serial = _serial(primary)
    with pytest.raises(UpdateError) as info:
        Updater(primary.address, ZONE, key).publish([Change(ident.name, (ident.record,))])
    assert info.value.rcode in ("NOTAUTH", "REFUSED")
    assert detail in str(info.value)
    assert _serial(primary) == serial
    assert _lookup(primary, ident.name).outcome is Outcome.SECURE_ABSENT


def test_atomic_batch_all_or_nothing(primary: Primary, tmp_path: Path) -> None:
    """One bad change in a batch (outside the zone) fails the whole message at the server."""
    a = new_identity("atomic-a._device.example.test", tmp_path)
    updater = _updater(primary)
    msg = updater.build([Change(a.name, (a.record,))], ttl=60)
    # a prerequisite that cannot hold: the whole UPDATE must be rejected
    msg.present(dns.name.from_text("never-existed.example.test."), dns.rdatatype.TLSA)
    serial = _serial(primary)
    with pytest.raises(UpdateError) as info:
        updater.send(msg)
    assert info.value.rcode == "NXRRSET"
    assert _serial(primary) == serial
    assert _lookup(primary, a.name).outcome is Outcome.SECURE_ABSENT


def test_cli_publish_wait_and_revoke(
    primary: Primary, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ident = new_identity("cli1._device.example.test", tmp_path)
    assert ident.cert_path is not None
    common = [
        "--server",
        primary.hostport,
        "--zone",
        ZONE,
        "--tsig-key-file",
        str(primary.key_file),
    ]
    wait = ["--wait", "--deadline", "10", "--trust-anchor", str(primary.anchor_file)]
    code = main(
        [
            "publish",
            ident.name,
            "--cert",
            str(ident.cert_path),
            *common,
            "--ttl",
            "30",
            *wait,
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert json.loads(out.strip().splitlines()[-1])["ok"] is True
    assert _lookup(primary, ident.name).authenticates
    code = main(["revoke", ident.name, "--cert", str(ident.cert_path), *common, *wait])
    assert code == 0, capsys.readouterr()
    assert _lookup(primary, ident.name).outcome is Outcome.SECURE_ABSENT
    # a wrong key file: exit 1 with the RCODE, the zone unchanged
    bad = tmp_path / "bad.key"
    bad.write_text('key "dance-update" { algorithm hmac-sha256; secret "' + "A" * 43 + '="; };\n')
    capsys.readouterr()
    serial = _serial(primary)
    code = main(
        [
            "publish",
            ident.name,
            "--cert",
            str(ident.cert_path),
            "--server",
            primary.hostport,
            "--zone",
            ZONE,
            "--tsig-key-file",
            str(bad),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "NOTAUTH" in captured.err + captured.out
    assert _serial(primary) == serial


def test_ca_published_as_dane_ta_authenticates_issued_device(
    primary: Primary, tmp_path: Path
) -> None:
    from cryptography import x509

    from dance.credentials import CertificateChain
    from dance.tlsa import verify

    ca = new_ca_files("device", ZONE, tmp_path)
    _updater(primary).publish([Change(ca.owner, (ca.record,))], ttl=60)
    dev = issue(
        ca.certificate, load_private_key(ca.key_path), tmp_path, name="cadev._device.example.test"
    )
    result = _lookup(primary, dev.name)  # answered from the wildcard, validated
    assert result.outcome is Outcome.SECURE
    records = [TLSARecord.from_wire(r) for r in result.records]
    chain = CertificateChain.from_certificates(
        x509.load_pem_x509_certificates(dev.cert_path.read_bytes())
    )
    assert verify(dev.name, chain, records, now=datetime.datetime.now(datetime.UTC)).accepted
    _updater(primary).revoke(owners=[ca.owner])
    after = _lookup(primary, dev.name)
    assert after.outcome is Outcome.SECURE_ABSENT


def test_rollover_end_to_end(primary: Primary, tmp_path: Path) -> None:
    name = "roll1._device.example.test"
    ident = new_identity(name, tmp_path)
    updater = _updater(primary)
    updater.publish([Change(name, (ident.record,))], ttl=2)
    anchors = TrustAnchors.from_file(primary.anchor_file)
    seen_both: list[bool] = []

    def confirm(owner: str, record: TLSARecord, present: bool) -> bool:
        want: dict[str, set[bytes] | None] = {owner: {record.to_wire()}} if present else {}
        ok, last = wait_visible(
            primary.address,
            anchors,
            want,
            gone={} if present else {owner: {record.to_wire()}},
            deadline=10,
        )
        if present:  # during the overlap both the old and the next key authenticate
            seen_both.append(ident.record.to_wire() in last[owner].records)
        return ok

    report = rollover(name, tmp_path, updater, ttl=2, unsafe_wait_seconds=0.2, confirm=confirm)
    assert seen_both == [True]
    assert report.old_record == ident.record and report.new_record != ident.record
    result = _lookup(primary, name)
    assert result.outcome is Outcome.SECURE
    assert set(result.records) == {report.new_record.to_wire()}
    # the identity files now hold the next key; no leftover .next files
    assert make_record(load_private_key(tmp_path / f"{name}.key").public_key()) == report.new_record
    assert not (tmp_path / f"{name}.next.key").exists()


def test_fleet_publish_and_idempotent_rerun(primary: Primary, tmp_path: Path) -> None:
    entries = parse_fleet("\n".join(f"unit{i}" for i in range(36)), ZONE)
    idents = create_identities(entries, tmp_path / "ids", workers=2, chunk=10)
    updater = _updater(primary)
    stats = publish_fleet(idents, lambda zone: updater, single_zone=ZONE, batch=16, ttl=60)
    assert (stats.published, stats.skipped) == (36, 0)
    assert stats.messages == 3  # 16 + 16 + 4 RRs per UPDATE
    ok, last = wait_visible(
        primary.address,
        TrustAnchors.from_file(primary.anchor_file),
        {i.owner: {i.record.to_wire()} for i in idents},
        deadline=15,
    )
    assert ok, {o: r.outcome for o, r in last.items() if not r.authenticates}
    serial = _serial(primary)
    again = create_identities(entries, tmp_path / "ids", workers=2, chunk=10)
    assert not any(i.created for i in again)
    stats2 = publish_fleet(again, lambda zone: updater, single_zone=ZONE, batch=16)
    assert (stats2.published, stats2.skipped, stats2.messages) == (0, 36, 0)
    assert _serial(primary) == serial
    # one more device: only it is created and sent
    more = parse_fleet("\n".join(f"unit{i}" for i in range(37)), ZONE)
    third = create_identities(more, tmp_path / "ids", workers=1)
    assert sum(i.created for i in third) == 1
    stats3 = publish_fleet(third, lambda zone: updater, single_zone=ZONE)
    assert (stats3.published, stats3.skipped) == (1, 36)


def test_cli_fleet_provision(
    primary: Primary, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "fleet.csv"
    f.write_text("name,serial\n" + "".join(f"cli-unit{i},{i}\n" for i in range(24)))
    args = [
        "fleet",
        "provision",
        str(f),
        "--domain",
        ZONE,
        "--out-dir",
        str(tmp_path / "ids"),
        "--server",
        primary.hostport,
        "--zone",
        ZONE,
        "--tsig-key-file",
        str(primary.key_file),
        "--json",
    ]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["identities_created"] == 24 and first["records_published"] == 24
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["identities_created"] == 0 and second["records_published"] == 0
    assert second["records_already_published"] == 24


class _FlakyUpdater(Updater):
    """Fails the first revoke (as if the network went away after the key switch)."""

    failed = False

    def revoke(self, changes: Sequence[Change] = (), *, owners: Sequence[str] = ()) -> None:
        if not self.failed:
            self.failed = True
            raise UpdateError("timeout", "simulated network failure")
        super().revoke(changes, owners=owners)


def test_interrupted_rollover_is_finished_by_rerun(primary: Primary, tmp_path: Path) -> None:
    name = "roll2._device.example.test"
    ident = new_identity(name, tmp_path)
    _updater(primary).publish([Change(name, (ident.record,))], ttl=1)
    flaky = _FlakyUpdater(primary.address, ZONE, primary.key)
    with pytest.raises(UpdateError):
        rollover(name, tmp_path, flaky, ttl=1, unsafe_wait_seconds=0)
    both = _lookup(primary, name)
    assert ident.record.to_wire() in both.records and len(both.records) == 2
    assert (tmp_path / f"{name}.retire").exists()
    report = rollover(name, tmp_path, flaky, ttl=1, unsafe_wait_seconds=0)
    assert report.old_record == ident.record
    after = _lookup(primary, name)
    assert set(after.records) == {report.new_record.to_wire()}
    assert not (tmp_path / f"{name}.retire").exists()
