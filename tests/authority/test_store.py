"""Zone directory layout, master files, signing keys and TSIG key files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import dns.name
import pytest

from dance.authority import (
    AuthorityError,
    TSIGError,
    ZoneDir,
    generate_tsig_key,
    load_tsig_keys,
    parse_tsig_keys,
    tsig_key_from_env,
    write_tsig_key,
)
from dance.authority.store import format_records, parse_records
from dance.dns import TrustAnchors

ORIGIN = dns.name.from_text("example.test.")


def test_init_layout_modes_and_anchor(tmp_path: Path) -> None:
    store = ZoneDir(tmp_path / "z")
    policy = store.init_zone(ORIGIN, algorithm=15, denial="nsec3")
    assert (tmp_path / "z" / "example.test.zone").is_file()
    key_file = tmp_path / "z" / "keys" / "example.test.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "z" / "keys").stat().st_mode) == 0o700
    assert policy.algorithm == 15 and policy.denial == "nsec3"
    again = store.read_policy(ORIGIN)
    assert again is not None and again.keys.ksk.dnskey == policy.keys.ksk.dnskey
    assert again.keys.zsk.dnskey == policy.keys.zsk.dnskey
    assert store.zones() == [ORIGIN]
    with pytest.raises(AuthorityError) as err:
        store.init_zone(ORIGIN)
    assert err.value.reason == "zone-exists"


def test_world_readable_key_file_refused(tmp_path: Path) -> None:
    store = ZoneDir(tmp_path)
    store.init_zone(ORIGIN)
    os.chmod(store.key_path(ORIGIN), 0o644)
    with pytest.raises(AuthorityError) as err:
        store.read_policy(ORIGIN)
    assert err.value.reason == "key-file"


def test_anchor_format_accepted_by_trust_anchors(tmp_path: Path) -> None:
    from dance.authority import trust_anchor_text

    policy = ZoneDir(tmp_path).init_zone(ORIGIN)
    anchors = TrustAnchors.from_text(trust_anchor_text(ORIGIN, policy.keys, 300))
    zone = anchors.closest(dns.name.from_text("x._device.example.test."))
    assert zone is not None and zone.zone == ORIGIN
    assert len(zone.ds) == 1 and len(zone.dnskeys) == 1


def test_master_file_errors_name_the_line(tmp_path: Path) -> None:
    text = (
        "$ORIGIN example.test.\n"
        "@ 300 IN SOA ns1 hostmaster 1 3600 900 604800 60\n"
        "@ 300 IN NS ns1\n"
        "ns1 300 IN BOGUS 1\n"
        "www 300 IN A 192.0.2.1\n"
    )
    with pytest.raises(AuthorityError) as err:
        parse_records(text, ORIGIN, "zone.txt")
    assert err.value.reason == "zone-file"
    assert "zone.txt:4" in str(err.value)
    with pytest.raises(AuthorityError, match=r"zone\.txt:\d+"):
        parse_records(text.replace("BOGUS 1", "A not-an-address"), ORIGIN, "zone.txt")


def test_master_file_refuses_signer_records() -> None:
    text = (
        "$ORIGIN example.test.\n"
        "@ 300 IN SOA ns1 hostmaster 1 3600 900 604800 60\n"
        "@ 300 IN NS ns1\n"
        "@ 300 IN DNSKEY 256 3 13 aNB/S/sKzh746nzZRA8dRM5lzaC8T3MO3AgvY2o2Qnh6T0KoRZELU1MJ"
        "84niEaub02jkofF+Zx990MskhfvYXw==\n"
    )
    with pytest.raises(AuthorityError, match="signer records"):
        parse_records(text, ORIGIN, "zone.txt")


def test_master_file_round_trip() -> None:
    text = (
        "$ORIGIN example.test.\n"
        "@ 300 IN SOA ns1 hostmaster 7 3600 900 604800 60\n"
        "@ 300 IN NS ns1\n"
        "ns1 300 IN A 127.0.0.1\n"
        "a._device 60 IN TLSA 3 1 1 " + "ab" * 32 + "\n"
    )
    records = parse_records(text, ORIGIN, "z")
    again = parse_records(format_records(records, ORIGIN), ORIGIN, "z2")
    assert again == records
    assert all(again[n][t].ttl == records[n][t].ttl for n in records for t in records[n])


def test_tsig_formats(tmp_path: Path) -> None:
    key = generate_tsig_key("dance-update")
    bind = tmp_path / "bind.key"
    line = tmp_path / "line.key"
    write_tsig_key(bind, key)
    write_tsig_key(line, key, style="line")
    assert stat.S_IMODE(bind.stat().st_mode) == 0o600
    assert load_tsig_keys(bind) == [key]
    assert load_tsig_keys(line) == [key]
    assert "secret" not in repr(key) and key.to_line().split(":")[2].strip() not in repr(key)
    with pytest.raises(FileExistsError):
        write_tsig_key(bind, key)


def test_tsig_block_with_comments_and_two_keys() -> None:
    secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
    text = f"""# comment
key "one" {{ algorithm hmac-sha256; secret "{secret}"; }};
// another
key two {{
    algorithm hmac-sha512;
    secret "{secret}";
}};
"""
    keys = parse_tsig_keys(text)
    assert [k.name for k in keys] == ["one", "two"]
    assert keys[1].algorithm == "hmac-sha512"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hmac-md5:k:c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0\n", "bad-algorithm"),
        ("k:c2hvcnQ=\n", "weak-secret"),
        ("\nk:!!!notbase64\n", "bad-secret"),
        ("just-a-name\n", "malformed"),
        ('key "k" { algorithm hmac-sha256; };', "malformed"),
        ("", "empty"),
    ],
)
def test_tsig_bad_input(text: str, message: str) -> None:
    with pytest.raises(TSIGError) as err:
        parse_tsig_keys(text)
    assert err.value.reason == message


def test_tsig_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_tsig_key("env-key")
    monkeypatch.setenv("DANCE_TEST_TSIG", key.to_line().strip())
    assert tsig_key_from_env("DANCE_TEST_TSIG") == key
    monkeypatch.delenv("DANCE_TEST_TSIG")
    with pytest.raises(TSIGError, match="not set"):
        tsig_key_from_env("DANCE_TEST_TSIG")
