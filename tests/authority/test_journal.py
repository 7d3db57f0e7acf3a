"""The zone directory's journal and the fast master-file parser: same records as the slow
paths, nothing acknowledged lost at any crash point, damage refused."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.zone
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dance.authority import Authority, AuthorityError, Limits
from dance.authority import server as server_module
from dance.authority.store import (
    JournalError,
    Records,
    ZoneDir,
    _parse_simple,
    encode_entry,
    format_records,
    parse_records,
    replay_journal,
)
from dance.dns import Outcome
from dance.tsig import generate_tsig_key
from dance.zone.signing import HashedName, hashed
from tests.authority.conftest import ZONE, Env, make_zone_dir, rcode

ORIGIN = dns.name.from_text(ZONE)
IN = dns.rdataclass.IN
HEAD = (
    f"$ORIGIN {ZONE}\n{ZONE} 300 IN SOA ns1.{ZONE} hostmaster.{ZONE} 1 3600 900 604800 60\n"
    f"{ZONE} 300 IN NS ns1.{ZONE}\nns1.{ZONE} 300 IN A 127.0.0.1\n"
)


def _slow(text: str) -> Records:
    """What dnspython's zone-file parser gives (the reference for the fast path)."""
    zone = dns.zone.from_text(text, origin=ORIGIN, relativize=False, check_origin=True)
    records: Records = {}
    for name, rdataset in zone.iterate_rdatasets():
        copy = dns.rdataset.Rdataset(IN, rdataset.rdtype)
        copy.update(rdataset)
        records.setdefault(name, {})[dns.rdatatype.RdataType.make(rdataset.rdtype)] = copy
    return records


def _same(a: Records, b: Records) -> bool:
    if set(a) != set(b):
        return False
    for name in a:
        if set(a[name]) != set(b[name]):
            return False
        for rdtype, rds in a[name].items():
            other = b[name][rdtype]
            if set(rds) != set(other) or rds.ttl != other.ttl:
                return False
    return True


H = "ab" * 32


@pytest.mark.parametrize(
    "body",
    [
        f"d1._device.{ZONE} 300 IN TLSA 3 1 1 {H}\n"
        f"D1._Device.{ZONE} 60 IN TLSA 3 1 1 {H.upper()}\n",
        f"a.{ZONE} 300 IN TLSA 3 1 1 {H}\na.{ZONE} 200 IN TLSA 3 1 1 {'cd' * 32}\n",
        f"$TTL 120\nx.{ZONE} 300 IN A 192.0.2.1\nx.{ZONE} 300 IN AAAA 2001:db8::1\n",
        f"$ORIGIN sub.{ZONE}\nm.sub.{ZONE} 300 IN MX 10 mail\n; a comment line\n",
        f't.{ZONE} 300 IN TXT "hello world" "two"\n',
        f"w.{ZONE} 300 IN TLSA 2 0 1 {H}\n\n   \n",
        f"s.{ZONE} 300 IN SSHFP 4 2 {H}\n",
    ],
)
def test_fast_parse_equals_dnspython(body: str) -> None:
    text = HEAD + body
    fast = _parse_simple(text, ORIGIN)
    assert fast is not None
    assert _same(fast, _slow(text))


@pytest.mark.parametrize(
    "body",
    [
        f"a.{ZONE} 300 IN TLSA ( 3 1 1\n {H} )\n",  # parentheses
        f"a.{ZONE} 300 IN TXT 1\n 300 IN TXT 2\n",  # inherited owner
        f"a.{ZONE} 300 IN TXT x ; comment\n",
        "a 300 IN TXT x\n",  # relative owner
        f"a.{ZONE} IN 300 TXT x\n",  # class before TTL
        f"c.{ZONE} 300 IN CNAME a.{ZONE}\n",  # node rules applied by dnspython
        "other.test. 300 IN TXT x\n",  # outside the zone: dnspython skips it
        f"a.{ZONE} 300 IN TXT caf\u00e9\n",  # not ASCII
        "$INCLUDE other\n",
        f"a\\.b.{ZONE} 300 IN TXT x\n",  # escape
    ],
)
def test_fast_parse_leaves_anything_else_to_dnspython(body: str) -> None:
    assert _parse_simple(HEAD + body, ORIGIN) is None


def test_bad_records_in_simple_form_are_reported_by_dnspython() -> None:
    for body in (
        f"a.{ZONE} 300 IN TLSA 3 1 1 abc\n",  # odd hex
        f"a.{ZONE} 300 IN TLSA 3 1 1 ab\n",  # SHA-256 of 1 octet
        f"a.{ZONE} 300 IN TLSA 256 1 1 {H}\n",
        f"a.{ZONE} 300 IN RRSIG A 13 2 300 20300101000000 20200101000000 1 {ZONE} AA==\n",
    ):
        with pytest.raises(AuthorityError) as caught:
            parse_records(HEAD + body, ORIGIN, "z.zone")
        assert caught.value.reason == "zone-file"


_labels = st.text(alphabet="abcXYZ019-_", min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(_labels, min_size=1, max_size=3),
            st.sampled_from(["TLSA", "A", "TXT"]),
            st.integers(0, 2**31 - 1),
            st.integers(0, 3),
        ),
        max_size=12,
    )
)
def test_written_files_take_the_fast_path(entries: list[tuple[list[str], str, int, int]]) -> None:
    """What format_records writes is parsed by the fast path, with dnspython's result."""
    records = parse_records(HEAD, ORIGIN, "head")
    for labels, rdtype, ttl, seed in entries:
        owner = dns.name.from_text(".".join(labels), ORIGIN)
        text = {"TLSA": f"3 1 1 {seed:064x}", "A": f"192.0.2.{seed}", "TXT": f'"t {seed}"'}
        rd = dns.rdata.from_text(IN, rdtype, text[rdtype], origin=ORIGIN)
        node = records.setdefault(owner, {})
        rds = node.setdefault(rd.rdtype, dns.rdataset.Rdataset(IN, rd.rdtype))
        rds.add(rd, ttl)
    written = format_records(records, ORIGIN)
    fast = _parse_simple(written, ORIGIN)
    assert fast is not None
    assert _same(fast, _slow(written))
    assert _same(fast, records)


# ------------------------------------------------------------------------------- journal


def _records() -> Records:
    return parse_records(HEAD + f"a.{ZONE} 300 IN TLSA 3 1 1 {H}\n", ORIGIN, "z")


def _with(records: Records, owner: str, rdata: str | None) -> tuple[Records, list[dns.name.Name]]:
    out = dict(records)
    name = dns.name.from_text(owner, ORIGIN)
    if rdata is None:
        out.pop(name, None)
    else:
        rds = dns.rdataset.Rdataset(IN, dns.rdatatype.TLSA)
        rds.add(dns.rdata.from_text(IN, "TLSA", rdata), 300)
        out[name] = {dns.rdatatype.TLSA: rds}
    return out, [name]


def _entries() -> tuple[Records, list[bytes], Records]:
    base = _records()
    r1, n1 = _with(base, "b", f"3 1 1 {'01' * 32}")
    r2, n2 = _with(r1, "a", None)
    r3, n3 = _with(r2, "b", f"3 1 1 {'02' * 32}")
    return base, [encode_entry(r1, n1), encode_entry(r2, n2), encode_entry(r3, n3)], r3


def test_journal_replay_gives_the_last_records_and_is_idempotent() -> None:
    base, entries, final = _entries()
    records = dict(base)
    assert replay_journal(b"".join(entries), records, ORIGIN, "j") == (3, 0)
    assert _same(records, final)
    assert replay_journal(b"".join(entries), records, ORIGIN, "j") == (3, 0)  # again
    assert _same(records, final)


def test_journal_cut_short_anywhere_in_the_last_entry_keeps_the_others() -> None:
    base, entries, _ = _entries()
    whole = b"".join(entries)
    expected = dict(base)
    replay_journal(b"".join(entries[:2]), expected, ORIGIN, "j")
    start = len(whole) - len(entries[2])
    for cut in range(start + 1, len(whole)):
        records = dict(base)
        applied, ignored = replay_journal(whole[:cut], records, ORIGIN, "j")
        assert (applied, ignored) == (2, cut - start)
        assert _same(records, expected)


def test_journal_damage_followed_by_entries_is_refused() -> None:
    base, entries, _ = _entries()
    damaged = bytearray(b"".join(entries))
    damaged[len(entries[0]) - 1] ^= 0xFF  # the first entry's last payload byte
    with pytest.raises(JournalError) as caught:
        replay_journal(bytes(damaged), dict(base), ORIGIN, "j")
    assert caught.value.reason == "journal"
    last = bytearray(b"".join(entries))
    last[-1] ^= 0xFF  # the last entry damaged: a write cut short, never acknowledged
    assert replay_journal(bytes(last), dict(base), ORIGIN, "j")[0] == 2


def test_journal_entries_outside_the_zone_are_refused() -> None:
    base = _records()
    other = dns.name.from_text("other.test.")
    rds = dns.rdataset.Rdataset(IN, dns.rdatatype.A)
    rds.add(dns.rdata.from_text(IN, "A", "192.0.2.1"), 300)
    entry = encode_entry({**base, other: {dns.rdatatype.A: rds}}, [other])
    with pytest.raises(JournalError):
        replay_journal(entry, dict(base), ORIGIN, "j")
    no_apex = encode_entry({k: v for k, v in base.items() if k != ORIGIN}, [ORIGIN])
    with pytest.raises(JournalError):
        replay_journal(no_apex, dict(base), ORIGIN, "j")


def test_store_journal_then_merge(tmp_path: Path) -> None:
    store = ZoneDir(tmp_path)
    store.init_zone(ORIGIN, denial="nsec3")
    base = store.read_records(ORIGIN)
    r1, n1 = _with(base, "b", f"3 1 1 {'01' * 32}")
    size = store.append_journal(ORIGIN, r1, n1)
    assert size == store.journal_path(ORIGIN).stat().st_size
    assert _same(store.read_records(ORIGIN), r1)  # master + journal
    assert store.rotate_journal(ORIGIN)
    r2, n2 = _with(r1, "c", f"3 1 1 {'02' * 32}")
    store.append_journal(ORIGIN, r2, n2)  # goes to a new journal
    assert _same(store.read_records(ORIGIN), r2)  # old journal, then the new one
    store.write_records(ORIGIN, r1, drop="old")  # a merge of what the old journal held
    assert not store.old_journal_path(ORIGIN).exists()
    assert _same(store.read_records(ORIGIN), r2)
    store.write_records(ORIGIN, r2)
    assert not store.has_journal(ORIGIN)
    assert _same(store.read_records(ORIGIN), r2)
    store.close_journals()


# ----------------------------------------------------------------- authority with journal


def test_updates_are_journaled_and_merged_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "_MERGE_MIN_BYTES", 1)
    zone_dir, anchor = make_zone_dir(tmp_path, "nsec3")
    key = generate_tsig_key("dance-update")
    authority = Authority(zone_dir, tsig_keys=[key], limits=Limits(rate=0)).start()
    try:
        env = Env(zone_dir, key, anchor, authority)
        state = authority._zones[ORIGIN]
        state.master_bytes = 10**9  # no merge yet
        journal = zone_dir / "example.test.journal"
        master = env.zone_text()
        update = env.update()
        update.add("first._device", 300, "TLSA", f"3 1 1 {H}")
        assert rcode(env.send(update)) == "NOERROR"
        assert env.zone_text() == master  # the master file is not rewritten per update
        assert b"first" in journal.read_bytes()
        state.master_bytes = 0  # the next update starts a merge
        update = env.update()
        update.add("second._device", 300, "TLSA", f"3 1 1 {H}")
        assert rcode(env.send(update)) == "NOERROR"
        deadline = time.monotonic() + 30
        while "second._device" not in env.zone_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        text = env.zone_text()
        assert "first._device" in text and "second._device" in text
        assert env.lookup("second._device.example.test").outcome is Outcome.SECURE
    finally:
        authority.stop()
    assert not (zone_dir / "example.test.journal").exists()
    assert not (zone_dir / "example.test.journal.old").exists()


def test_restart_after_a_crash_replays_the_journal(tmp_path: Path) -> None:
    """The state a kill -9 leaves (journal entries not merged, a merge interrupted after the
    rotation): everything acknowledged is served after the restart."""
    zone_dir, anchor = make_zone_dir(tmp_path, "nsec3")
    key = generate_tsig_key("dance-update")
    first = Authority(zone_dir, tsig_keys=[key], limits=Limits(rate=0)).start()
    env = Env(zone_dir, key, anchor, first)
    update = env.update()
    update.add("one._device", 300, "TLSA", f"3 1 1 {H}")
    assert rcode(env.send(update)) == "NOERROR"
    first.store.rotate_journal(ORIGIN)  # as if a merge had started
    update = env.update()
    update.add("two._device", 300, "TLSA", f"3 1 1 {H}")
    update.delete("sensor7._device")
    assert rcode(env.send(update)) == "NOERROR"
    serial = first.serial(ZONE)
    # crash: the process is gone without merging (its lock is released by the kernel)
    first._merge_journals = lambda: None  # type: ignore[method-assign]
    first.stop()
    assert (zone_dir / "example.test.journal.old").exists()
    second = Authority(zone_dir, tsig_keys=[key], limits=Limits(rate=0)).start()
    try:
        env = Env(zone_dir, key, anchor, second)
        assert second.serial(ZONE) != serial
        assert env.lookup("one._device.example.test").outcome is Outcome.SECURE
        assert env.lookup("two._device.example.test").outcome is Outcome.SECURE
        assert env.lookup("sensor7._device.example.test").outcome is Outcome.SECURE_ABSENT
        assert not (zone_dir / "example.test.journal.old").exists()  # merged at start
    finally:
        second.stop()


def test_damaged_journal_stops_the_start(tmp_path: Path) -> None:
    zone_dir, _ = make_zone_dir(tmp_path, "nsec")
    _base, entries, _ = _entries()
    store = ZoneDir(zone_dir)
    damaged = bytearray(b"".join(entries))
    damaged[20] ^= 0xFF
    store.journal_path(ORIGIN).write_bytes(bytes(damaged))
    with pytest.raises(AuthorityError) as caught:
        Authority(zone_dir, limits=Limits(rate=0))
    assert caught.value.reason == "journal"


# ------------------------------------------------------------------- names with a hash


def test_hashed_names_equal_and_find_plain_names() -> None:
    plain = dns.name.from_text("Sensor7._device.Example.TEST.")
    same = HashedName(dns.name.from_text("sensor7._DEVICE.example.test.").labels)
    assert same == plain and plain == same
    assert not same.__ne__(plain)
    assert hash(same) == hash(plain)
    assert {plain: 1}[same] == 1 and {same: 2}[plain] == 2
    assert same != dns.name.from_text("sensor7._device.example.test", None)  # relative
    assert same != dns.name.from_text("sensor8._device.example.test.")
    assert hashed(plain) == plain and hashed(same) is same
    restored = pickle.loads(pickle.dumps(same))
    assert restored == plain and hash(restored) == hash(plain)
    assert os.fspath(str(same)) == "sensor7._DEVICE.example.test."
