"""The provisioning commands end to end against a real Knot primary (online signing, TSIG
updates): CA publication and `dance check`, revocation refusals, env-var keys, CLI rollover."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

from dance.cli import main
from tests.provision.knot import Primary, start_primary

pytestmark = pytest.mark.integration
ZONE = "cli.test"


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Primary]:
    p = start_primary(tmp_path_factory.mktemp("knot-cli"), ZONE)
    try:
        yield p
    finally:
        p.server.stop()


def _serial(p: Primary) -> int:
    answer = dns.query.tcp(
        dns.message.make_query(ZONE + ".", "SOA"), "127.0.0.1", port=p.server.port
    )
    return int(answer.answer[0][0].serial)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _update(p: Primary) -> list[str]:
    return ["--server", p.hostport, "--zone", ZONE, "--tsig-key-file", str(p.key_file)]


def _lookup(p: Primary) -> list[str]:
    return ["--server", p.hostport, "--trust-anchor", str(p.anchor_file)]


def _wait(p: Primary) -> list[str]:
    return ["--wait", "--deadline", "10", "--trust-anchor", str(p.anchor_file)]


def test_device_and_user_cas_published_then_check_then_revoked(
    primary: Primary, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cas: dict[str, dict[str, object]] = {}
    for kind in ("device", "user"):
        code, out, _ = _run(
            capsys,
            "ca",
            "new",
            "--kind",
            kind,
            "--domain",
            ZONE,
            "--out-dir",
            str(tmp_path),
            "--json",
        )
        assert code == 0
        ca = json.loads(out)
        cas[kind] = ca
        owner = ca["records"][0]["owner"]
        code, out, err = _run(
            capsys,
            "publish",
            owner,
            "--cert",
            str(ca["certificate"]),
            "--ttl",
            "30",
            *_update(primary),
            *_wait(primary),  # a wildcard owner is observed through a synthesized name
            "--json",
        )
        assert code == 0, err
        assert json.loads(out)["records"] == [ca["records"][0]["rdata"]]  # 2 0 1
        assert json.loads(out)["visible"] is True
    dev = cas["device"]
    code, out, _ = _run(
        capsys,
        "ca",
        "issue",
        "--ca-cert",
        str(dev["certificate"]),
        "--ca-key",
        str(dev["key"]),
        "--name",
        f"pump4._device.{ZONE}",
        "--out-dir",
        str(tmp_path / "issued"),
        "--json",
    )
    device_cert = json.loads(out)["certificate"]
    user = cas["user"]
    code, out, _ = _run(
        capsys,
        "ca",
        "issue",
        "--ca-cert",
        str(user["certificate"]),
        "--ca-key",
        str(user["key"]),
        "--name",
        f"_user.{ZONE}",
        "--user",
        "carol",
        "--out-dir",
        str(tmp_path / "issued"),
        "--json",
    )
    user_cert = json.loads(out)["certificate"]

    code, out, _ = _run(
        capsys, "check", f"pump4._device.{ZONE}", "--cert", device_cert, *_lookup(primary)
    )
    assert code == 0 and "authenticated" in out
    code, out, _ = _run(capsys, "check", f"_user.{ZONE}", "--cert", user_cert, *_lookup(primary))
    assert code == 0 and "authenticated" in out
    # the device certificate does not authenticate as a user, nor as another device
    assert _run(capsys, "check", f"_user.{ZONE}", "--cert", device_cert, *_lookup(primary))[0] == 1
    assert (
        _run(capsys, "check", f"other._device.{ZONE}", "--cert", device_cert, *_lookup(primary))[0]
        == 1
    )

    # revoking the device CA's record: the issued device is refused, securely
    code, out, err = _run(
        capsys,
        "revoke",
        f"*._device.{ZONE}",
        "--cert",
        str(dev["certificate"]),
        *_update(primary),
        *_wait(primary),
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["gone"] is True
    code, out, _ = _run(
        capsys, "check", f"pump4._device.{ZONE}", "--cert", device_cert, *_lookup(primary)
    )
    assert code == 1 and "rejected" in out
    # the user CA is untouched
    assert _run(capsys, "check", f"_user.{ZONE}", "--cert", user_cert, *_lookup(primary))[0] == 0


def test_revoke_of_absent_record_is_refused_with_rcode_and_changes_nothing(
    primary: Primary, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"ghost._device.{ZONE}"
    _run(capsys, "identity", "new", name, "--out-dir", str(tmp_path))
    serial = _serial(primary)
    code, out, _ = _run(capsys, "revoke", name, "--all", *_update(primary), "--json")
    assert code == 1
    result = json.loads(out)
    assert result["ok"] is False and result["rcode"] == "NXRRSET"
    code, _, err = _run(
        capsys, "revoke", name, "--cert", str(tmp_path / f"{name}.pem"), *_update(primary)
    )
    assert code == 1 and "NXRRSET" in err and "zone unchanged" in err
    assert _serial(primary) == serial
    # a name outside --zone is unusable input, detected before anything is sent
    code, _, err = _run(capsys, "revoke", "x._device.other.test", "--all", *_update(primary))
    assert code == 2 and "not in zone" in err


def test_wrong_tsig_key_via_environment_is_notauth_and_zone_unchanged(
    primary: Primary,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"envkey._device.{ZONE}"
    _run(capsys, "identity", "new", name, "--out-dir", str(tmp_path))
    cert = str(tmp_path / f"{name}.pem")
    base = ["publish", name, "--cert", cert, "--server", primary.hostport, "--zone", ZONE]
    serial = _serial(primary)
    wrong = "dance-update:hmac-sha256:" + "B" * 43 + "="
    monkeypatch.setenv("DANCE_TSIG_KEY", wrong)
    code, out, _ = _run(capsys, *base, "--json")
    assert code == 1 and json.loads(out)["rcode"] == "NOTAUTH"
    unknown = "someone-else:hmac-sha256:" + primary.key.secret_b64()
    monkeypatch.setenv("DANCE_TSIG_KEY", unknown)
    code, out, _ = _run(capsys, *base, "--json")
    assert code == 1 and json.loads(out)["rcode"] == "NOTAUTH"
    assert _serial(primary) == serial
    monkeypatch.setenv("DANCE_TSIG_KEY", f"dance-update:hmac-sha256:{primary.key.secret_b64()}")
    code, out, err = _run(capsys, *base, *_wait(primary), "--json")
    assert code == 0, err
    assert json.loads(out)["visible"] is True
    code, out, _ = _run(capsys, "lookup", name, *_lookup(primary))
    assert code == 0 and "secure" in out


def test_cli_rollover_switches_files_and_records(
    primary: Primary, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"roll2._device.{ZONE}"
    code, out, _ = _run(capsys, "identity", "new", name, "--out-dir", str(tmp_path), "--json")
    old_rdata = json.loads(out)["records"][0]["rdata"]
    old_cert = (tmp_path / f"{name}.pem").read_bytes()
    code, _, err = _run(
        capsys,
        "publish",
        name,
        "--cert",
        str(tmp_path / f"{name}.pem"),
        "--ttl",
        "2",
        *_update(primary),
        *_wait(primary),
    )
    assert code == 0, err
    code, out, err = _run(
        capsys,
        "rollover",
        name,
        "--dir",
        str(tmp_path),
        "--ttl",
        "2",
        "--unsafe-wait-seconds",
        "0.2",
        *_update(primary),
        *_wait(primary),
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["old_record"] == old_rdata and report["new_record"] != old_rdata
    assert (tmp_path / f"{name}.pem").read_bytes() != old_cert
    assert not (tmp_path / f"{name}.next.key").exists()
    # the new certificate authenticates, the old one no longer does
    old = tmp_path / "old.pem"
    old.write_bytes(old_cert)
    assert (
        _run(capsys, "check", name, "--cert", str(tmp_path / f"{name}.pem"), *_lookup(primary))[0]
        == 0
    )
    assert _run(capsys, "check", name, "--cert", str(old), *_lookup(primary))[0] == 1
    # rolling over an identity that does not exist is unusable input, nothing is sent
    serial = _serial(primary)
    code, _, err = _run(
        capsys,
        "rollover",
        f"none._device.{ZONE}",
        "--dir",
        str(tmp_path),
        "--unsafe-wait-seconds",
        "0",
        *_update(primary),
    )
    assert code == 2 and "missing" in err
    assert _serial(primary) == serial


def test_publish_wait_ctrl_c_reports_what_was_published(primary: Primary, tmp_path: Path) -> None:
    """The record is in the zone before the wait starts: Ctrl-C while waiting must say so."""
    import signal
    import subprocess
    import sys
    import time

    dance = str(Path(sys.executable).with_name("dance"))
    name = f"waiting.{ZONE}"
    assert main(["identity", "new", name, "--out-dir", str(tmp_path)]) == 0
    # a lookup server that never answers keeps --wait waiting until Ctrl-C
    import socket

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    proc = subprocess.Popen(
        [dance, "publish", name, "--cert", str(tmp_path / f"{name}.pem"), *_update(primary),
         "--wait", "--deadline", "60", "--trust-anchor", str(primary.anchor_file),
         "--lookup-server", f"127.0.0.1:{silent.getsockname()[1]}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(f"published {name}. 300 IN TLSA 3 1 1 "), first
        assert proc.stdout.readline().startswith("waiting up to 60 s")
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        silent.close()
    assert proc.returncode == 130
    assert "interrupted while waiting" in err and "accepted by the server" in err
    assert "Traceback" not in err + out
    answer = dns.query.tcp(
        dns.message.make_query(name + ".", "TLSA"), "127.0.0.1", port=primary.server.port
    )
    assert answer.answer, "the record is in the zone"
