"""The running authority: validated answers, TSIG updates, persistence, hardening."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update
import dns.xfr
import dns.zone
import pytest

from dance.authority import Authority, Limits, TSIGKey, generate_tsig_key
from dance.authority.serial import serial_gt
from dance.dns import Outcome
from tests.authority.conftest import H2, ZONE, Env, make_zone_dir, rcode


def test_secure_answer_and_denial(env: Env) -> None:
    found = env.lookup("sensor7._device.example.test")
    assert found.outcome is Outcome.SECURE, found
    assert len(found.records) == 1
    missing = env.lookup("nobody._device.example.test")
    assert missing.outcome is Outcome.SECURE_ABSENT, missing
    nodata = env.lookup("www.example.test")
    assert nodata.outcome is Outcome.SECURE_ABSENT, nodata


def test_update_add_then_delete_is_seen_secure(env: Env) -> None:
    before = env.authority.serial(ZONE)
    update = env.update()
    update.add("sensor8._device", 300, "TLSA", f"3 1 1 {H2}")
    response = env.send(update)
    assert rcode(response) == "NOERROR"
    assert response.had_tsig  # the reply is signed with the same key
    middle = env.authority.serial(ZONE)
    assert serial_gt(middle, before)
    result = env.lookup("sensor8._device.example.test")
    assert result.outcome is Outcome.SECURE, result
    assert result.records[0].endswith(bytes.fromhex(H2))

    delete = env.update()
    delete.delete("sensor8._device", "TLSA")
    assert rcode(env.send(delete)) == "NOERROR"
    gone = env.lookup("sensor8._device.example.test")
    assert gone.outcome is Outcome.SECURE_ABSENT, gone
    assert gone.reason == "nxdomain"
    assert serial_gt(env.authority.serial(ZONE), middle)


def test_delete_one_of_two_leaves_nodata_elsewhere(nsec_env: Env) -> None:
    update = nsec_env.update()
    update.add("sensor7._device", 300, "A", "192.0.2.7")  # same name, other type
    update.delete("sensor7._device", "TLSA")
    assert rcode(nsec_env.send(update)) == "NOERROR"
    result = nsec_env.lookup("sensor7._device.example.test")
    assert result.outcome is Outcome.SECURE_ABSENT and result.reason == "nodata", result


def _raw_update(env: Env, key: TSIGKey | None) -> bytes:
    update = dns.update.UpdateMessage(ZONE)
    if key is not None:
        update.use_tsig({key.dns_name: key.to_dnspython()}, keyname=key.dns_name)
    update.add("evil._device", 300, "TLSA", f"3 1 1 {H2}")
    return update.to_wire()


def _send_raw(env: Env, wire: bytes) -> dns.message.Message:
    with socket.create_connection(("127.0.0.1", env.port), timeout=5) as sock:
        sock.sendall(len(wire).to_bytes(2, "big") + wire)
        length = int.from_bytes(_recv(sock, 2), "big")
        return dns.message.from_wire(_recv(sock, length), keyring=False)


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


@pytest.mark.parametrize(
    ("case", "expected_rcode", "tsig_error"),
    [
        ("wrong-secret", "NOTAUTH", dns.rcode.BADSIG),
        ("unknown-key", "NOTAUTH", dns.rcode.BADKEY),
        ("unsigned", "REFUSED", None),
    ],
)
def test_update_without_valid_tsig_changes_nothing(
    nsec_env: Env, case: str, expected_rcode: str, tsig_error: int | None
) -> None:
    env = nsec_env
    text_before = env.zone_text()
    serial = env.authority.serial(ZONE)
    if case == "wrong-secret":
        key: TSIGKey | None = TSIGKey(env.key.name, env.key.algorithm, b"x" * 32)
    elif case == "unknown-key":
        key = generate_tsig_key("stranger")
    else:
        key = None
    response = _send_raw(env, _raw_update(env, key))
    assert rcode(response) == expected_rcode
    if tsig_error is not None:
        assert response.tsig is not None and response.tsig[0].error == tsig_error
        assert response.tsig[0].mac == b""
    assert env.authority.serial(ZONE) == serial
    assert env.zone_text() == text_before
    assert env.lookup("evil._device.example.test").outcome is Outcome.SECURE_ABSENT


def test_tsig_time_outside_fudge_refused(nsec_env: Env) -> None:
    env = nsec_env
    update = dns.update.UpdateMessage(ZONE)
    update.use_tsig({env.key.dns_name: env.key.to_dnspython()}, keyname=env.key.dns_name, fudge=10)
    update.add("late._device", 300, "TLSA", f"3 1 1 {H2}")
    real_time = time.time
    try:
        time.time = lambda: real_time() - 3600  # sign an hour in the past
        wire = update.to_wire()
    finally:
        time.time = real_time
    response = _send_raw(env, wire)
    assert rcode(response) == "NOTAUTH"
    assert response.tsig is not None and response.tsig[0].error == dns.rcode.BADTIME
    assert env.lookup("late._device.example.test").outcome is Outcome.SECURE_ABSENT


def test_failed_prerequisite_returns_rcode_and_changes_nothing(nsec_env: Env) -> None:
    env = nsec_env
    text_before = env.zone_text()
    update = env.update()
    update.absent("sensor7._device")  # it exists: YXDOMAIN
    update.add("other._device", 300, "TLSA", f"3 1 1 {H2}")
    assert rcode(env.send(update)) == "YXDOMAIN"
    update = env.update()
    update.present("sensor7._device", "TLSA", f"3 1 1 {H2}")  # value differs: NXRRSET
    update.delete("sensor7._device")
    assert rcode(env.send(update)) == "NXRRSET"
    assert env.zone_text() == text_before
    assert env.lookup("sensor7._device.example.test").outcome is Outcome.SECURE
    assert env.lookup("other._device.example.test").outcome is Outcome.SECURE_ABSENT


def test_update_for_other_zone_notauth(nsec_env: Env) -> None:
    key = nsec_env.key
    update = dns.update.UpdateMessage(
        "other.test.", keyring={key.dns_name: key.to_dnspython()}, keyname=key.dns_name
    )
    update.add("x", 300, "A", "192.0.2.1")
    assert rcode(nsec_env.send(update)) == "NOTAUTH"


def test_dnssec_records_cannot_be_updated(nsec_env: Env) -> None:
    update = nsec_env.update()
    update.delete("@", "DNSKEY")
    assert rcode(nsec_env.send(update)) == "REFUSED"
    assert nsec_env.lookup("sensor7._device.example.test").outcome is Outcome.SECURE


def test_restart_keeps_changes_and_keys(tmp_path: Path) -> None:
    zone_dir, anchor = make_zone_dir(tmp_path, "nsec3")
    key = generate_tsig_key("dance-update")
    with Authority(zone_dir, tsig_keys=[key], limits=Limits(rate=0)).start() as first:
        env = Env(zone_dir, key, anchor, first)
        update = env.update()
        update.add("kept._device", 300, "TLSA", f"3 1 1 {H2}")
        update.delete("sensor7._device")
        assert rcode(env.send(update)) == "NOERROR"
        serial = first.serial(ZONE)
    leftovers = [p.name for p in zone_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert "kept._device.example.test." in (zone_dir / "example.test.zone").read_text()
    with Authority(zone_dir, tsig_keys=[key], limits=Limits(rate=0)).start() as second:
        env = Env(zone_dir, key, anchor, second)
        assert serial_gt(second.serial(ZONE), serial)  # re-signed at start: a new serial
        assert second.trust_anchor(ZONE) == anchor  # same keys after the restart
        assert env.lookup("kept._device.example.test").outcome is Outcome.SECURE
        assert env.lookup("sensor7._device.example.test").outcome is Outcome.SECURE_ABSENT


def test_failed_journal_write_changes_nothing(
    nsec_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while persisting an update (disk full) answers SERVFAIL and leaves the
    journal, the master file and the served zone as they were; the next update works and
    both survive a restart as they should."""
    env = nsec_env
    before = env.zone_text()
    journal = env.zone_dir / "example.test.journal"
    journal_before = journal.read_bytes()
    real_write = os.write

    def broken_write(fd: int, data: bytes) -> int:
        if fd in env.authority.store._journals.values():
            real_write(fd, bytes(data)[:7])  # a short write, then the disk is full
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", broken_write)
    update = env.update()
    update.add("lost._device", 300, "TLSA", f"3 1 1 {H2}")
    assert rcode(env.send(update)) == "SERVFAIL"
    monkeypatch.undo()
    assert journal.read_bytes() == journal_before  # the partial entry was taken back
    assert env.zone_text() == before
    assert env.lookup("lost._device.example.test").outcome is Outcome.SECURE_ABSENT
    update = env.update()
    update.add("saved._device", 300, "TLSA", f"3 1 1 {H2}")
    assert rcode(env.send(update)) == "NOERROR"
    assert env.lookup("saved._device.example.test").outcome is Outcome.SECURE
    env.authority.stop()
    with Authority(env.zone_dir, tsig_keys=[env.key], limits=Limits(rate=0)).start() as again:
        restarted = Env(env.zone_dir, env.key, env.anchor, again)
        assert restarted.lookup("saved._device.example.test").outcome is Outcome.SECURE
        assert restarted.lookup("lost._device.example.test").outcome is Outcome.SECURE_ABSENT


def test_master_file_merge_written_atomically(
    nsec_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while merging the journal into the master file (at stop) leaves the old
    master file and the journal: nothing acknowledged is lost at the next start."""
    env = nsec_env
    before = env.zone_text()
    update = env.update()
    update.add("kept._device", 300, "TLSA", f"3 1 1 {H2}")
    assert rcode(env.send(update)) == "NOERROR"

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    env.authority.stop()
    monkeypatch.undo()
    assert env.zone_text() == before
    assert [p for p in env.zone_dir.iterdir() if p.name.endswith(".tmp")] == []
    assert (env.zone_dir / "example.test.journal").stat().st_size > 0
    with Authority(env.zone_dir, tsig_keys=[env.key], limits=Limits(rate=0)).start() as again:
        restarted = Env(env.zone_dir, env.key, env.anchor, again)
        assert restarted.lookup("kept._device.example.test").outcome is Outcome.SECURE
    assert "kept._device.example.test." in env.zone_text()
    assert not (env.zone_dir / "example.test.journal").exists()
