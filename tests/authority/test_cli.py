"""The `dance authority` commands."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.update
import pytest

from dance.authority import load_tsig_keys
from dance.cli import main
from dance.dns import TrustAnchors


def test_init_prints_anchor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "anchor.txt"
    zone_dir = str(tmp_path / "z")
    args = ["--denial", "nsec3", "--algorithm", "ed25519", "--trust-anchor-out", str(out_file)]
    code = main(["authority", "init", "--zone-dir", zone_dir, "--zone", "example.test", *args])
    assert code == 0
    out = capsys.readouterr().out
    assert "example.test. 300 IN DS " in out and " IN DNSKEY 257 3 15 " in out
    assert TrustAnchors.from_file(out_file).closest(dns.name.from_text("example.test."))
    assert main(["authority", "anchor", "--zone-dir", str(tmp_path / "z")]) == 0
    assert capsys.readouterr().out == out_file.read_text()
    code = main(["authority", "init", "--zone-dir", str(tmp_path / "z"), "--zone", "example.test"])
    assert code == 2
    assert "already exists" in capsys.readouterr().err


def test_init_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["authority", "init", "--zone-dir", str(tmp_path), "--zone", "a.test", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["zone"] == "a.test." and data["denial"] == "nsec" and data["algorithm"] == 13
    assert len(data["trust_anchor"]) == 2


def test_tsig_key_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "k.key"
    assert main(["authority", "tsig-key", "dance-update", "--out", str(path)]) == 0
    assert (path.stat().st_mode & 0o777) == 0o600
    secret = load_tsig_keys(path)[0].to_line().split(":")[2].strip()
    assert secret not in capsys.readouterr().out  # never printed
    assert main(["authority", "tsig-key", "dance-update", "--out", str(path)]) == 2


@pytest.mark.parametrize(
    ("listen", "message"),
    [("0.0.0.0:0", "non-loopback"), ("nonsense", "bad --listen"), ("127.0.0.1:99999", "bad")],
)
def test_serve_bad_listen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], listen: str, message: str
) -> None:
    main(["authority", "init", "--zone-dir", str(tmp_path), "--zone", "a.test"])
    capsys.readouterr()
    assert main(["authority", "--zone-dir", str(tmp_path), "--listen", listen]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_serve_missing_zone_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["authority"]) == 2
    assert "--zone-dir" in capsys.readouterr().err


def test_serve_process_updates_and_json_log(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    assert main(["authority", "init", "--zone-dir", str(zones), "--zone", "example.test"]) == 0
    key_path = tmp_path / "update.key"
    assert main(["authority", "tsig-key", "dance-update", "--out", str(key_path)]) == 0
    key = load_tsig_keys(key_path)[0]
    process = subprocess.Popen(
        [sys.executable, "-m", "dance.cli", "authority", "--zone-dir", str(zones),
         "--listen", "127.0.0.1:0", "--tsig-key-file", str(key_path), "--json-log"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"port (\d+)", line)
        assert match, line
        port = int(match.group(1))
        update = dns.update.UpdateMessage(
            "example.test.", keyring={key.dns_name: key.to_dnspython()}, keyname=key.dns_name
        )
        update.add("cli._device", 300, "TLSA", "3 1 1 " + "ab" * 32)
        response = dns.query.tcp(update, "127.0.0.1", port=port, timeout=5)
        assert response.rcode() == dns.rcode.NOERROR
        answer = dns.query.udp(
            dns.message.make_query("cli._device.example.test", "TLSA"), "127.0.0.1", port=port,
            timeout=5,
        )  # fmt: skip
        assert answer.answer
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    entries = [json.loads(line) for line in err.splitlines() if line.strip()]
    updates = [e for e in entries if e.get("event") == "update"]
    assert updates and updates[0]["rcode"] == "NOERROR" and updates[0]["added"] == 1
    assert updates[0]["zone"] == "example.test." and updates[0]["key"] == "dance-update."
    assert key.to_line().split(":")[2].strip() not in err  # the secret is never logged
    assert "cli._device.example.test." in (zones / "example.test.zone").read_text()
