"""dance sign / verify-message / encrypt / decrypt, against zones signed with the real clock."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dance import certs
from dance.cli import main
from dance.message import MessageReason
from tests.message.kit import ED_ID, GATEWAY_ID, SENSOR, SENSOR_ID, World, build_world


@pytest.fixture(scope="module")
def live() -> Iterator[World]:
    yield from build_world(int(time.time()))


@pytest.fixture
def files(tmp_path: Path, live: World) -> dict[str, str]:
    out = {}
    for label, ident in (("sensor", SENSOR_ID), ("gateway", GATEWAY_ID), ("ed", ED_ID)):
        path = tmp_path / f"{label}.key"
        certs.write_private_key(path, ident.key)
        out[label] = str(path)
    (tmp_path / "gateway.pem").write_bytes(certs.certificate_pem(GATEWAY_ID.cert))
    out["gateway_cert"] = str(tmp_path / "gateway.pem")
    (tmp_path / "anchor.txt").write_text(live.hierarchy.export_trust_anchor())
    (tmp_path / "m.json").write_bytes(b'{"t":21.5}')
    out["payload"] = str(tmp_path / "m.json")
    out["dir"] = str(tmp_path)
    host, port = live.server.address
    out["dns"] = f"--server={host}:{port}"
    out["anchor"] = f"--trust-anchor={tmp_path / 'anchor.txt'}"
    return out


def dns(f: dict[str, str]) -> list[str]:
    return [f["dns"], f["anchor"]]


@pytest.mark.parametrize("fmt", ["jws", "jws-json", "cose"])
def test_sign_and_verify(
    files: dict[str, str], fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    token = f"{files['dir']}/token.{fmt}"
    payload_out = f"{files['dir']}/out.json"
    assert (
        main(
            [
                "sign",
                "--name",
                SENSOR,
                "--key",
                files["sensor"],
                "--format",
                fmt,
                "--in",
                files["payload"],
                "--out",
                token,
            ]
        )
        == 0
    )
    rc = main(
        [
            "verify-message",
            "--allow",
            "._device.example.test",
            "--in",
            token,
            "--out",
            payload_out,
            "--json",
            *dns(files),
        ]
    )
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["signer"] == SENSOR and doc["accepted"] is True
    assert Path(payload_out).read_bytes() == b'{"t":21.5}'


def test_verify_refused_exit_1(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    token = f"{files['dir']}/resigned.jws"
    assert (
        main(
            [
                "sign",
                "--name",
                SENSOR,
                "--key",
                files["gateway"],
                "--cert",
                files["gateway_cert"],
                "--in",
                files["payload"],
                "--out",
                token,
            ]
        )
        == 0
    )
    rc = main(["verify-message", "--allow", SENSOR, "--in", token, "--json", *dns(files)])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1 and doc["reason"] == MessageReason.KEY_NOT_PUBLISHED.value
    # the payload would go to stdout: the verdict goes to stderr, as "verified:" does
    rc = main(["verify-message", "--allow", "other.example.test", "--in", token, *dns(files)])
    out, err = capsys.readouterr()
    assert rc == 1 and "refused: not-allowed" in err and out == ""
    # the payload goes to a file: both verdicts go to stdout
    payload_out = f"{files['dir']}/payload.out"
    args = ["verify-message", "--in", token, "--out", payload_out, *dns(files)]
    rc = main([*args, "--allow", "other.example.test"])
    out, err = capsys.readouterr()
    assert rc == 1 and out.startswith("refused: not-allowed") and err == ""


def test_usage_errors_exit_2(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["sign", "--name", SENSOR, "--key", files["payload"], "--in", files["payload"]]) == 2
    )
    assert main(["sign", "--name", "bad name!", "--key", files["sensor"]]) == 2
    assert main(["verify-message", "--in", files["payload"], *dns(files)]) == 2
    assert main(["decrypt", "--key", "/nonexistent", "--in", files["payload"]]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err


@pytest.mark.parametrize("fmt", ["jwe", "cose"])
def test_encrypt_decrypt(files: dict[str, str], fmt: str) -> None:
    enc = f"{files['dir']}/secret.{fmt}"
    dec = f"{files['dir']}/plain.{fmt}"
    assert (
        main(
            [
                "encrypt",
                "--to",
                SENSOR,
                "--format",
                fmt,
                "--in",
                files["payload"],
                "--out",
                enc,
                *dns(files),
            ]
        )
        == 0
    )
    assert main(["decrypt", "--key", files["sensor"], "--in", enc, "--out", dec]) == 0
    assert Path(dec).read_bytes() == b'{"t":21.5}'
    assert main(["decrypt", "--key", files["gateway"], "--in", enc, "--out", dec]) == 1


def test_encrypt_to_ed25519_identity_refused(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["encrypt", "--to", ED_ID.name, "--in", files["payload"], *dns(files)])
    assert rc == 1 and "key-not-published" in capsys.readouterr().err  # stdout: data only


def test_stdin_stdout_pipeline(files: dict[str, str]) -> None:
    cli = [sys.executable, "-m", "dance.cli"]
    signed = subprocess.run(
        [*cli, "sign", "--name", SENSOR, "--key", files["sensor"], "--format", "cose"],
        input=b"hello",
        capture_output=True,
        check=True,
    )
    assert signed.stdout[:1] == b"\xd2"
    verified = subprocess.run(
        [*cli, "verify-message", "--allow", SENSOR, *dns(files)],
        input=signed.stdout,
        capture_output=True,
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout == b"hello" and SENSOR in verified.stderr.decode()
    tampered = signed.stdout.replace(b"hello", b"jello")
    refused = subprocess.run(
        [*cli, "verify-message", "--allow", SENSOR, *dns(files)],
        input=tampered,
        capture_output=True,
    )
    assert refused.returncode == 1 and b"bad-signature" in refused.stderr and not refused.stdout
