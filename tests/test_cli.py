"""The command line: `dance tlsa`, `dance verify`, `dance demo` (exit codes 0, 1, 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from dance import certs as gen
from dance.cli import main
from tests.pki import NOW, key, make_pki

NAME = "sensor7._device.example.com"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    pki = make_pki()
    ee = gen.issue_certificate(pki.ica, pki.ica_key, key(2).public_key(), dns_names=[NAME], now=NOW)
    ss = gen.self_signed(key(3), NAME, now=NOW)
    out = {
        "ee": d / "ee.pem",
        "chain": d / "chain.pem",
        "ca": d / "ca.pem",
        "ss": d / "ss.der",
        "pub": d / "pub.pem",
        "garbage": d / "garbage.pem",
        "key": d / "key.pem",
    }
    out["ee"].write_bytes(gen.certificate_pem(ee))
    out["chain"].write_bytes(gen.certificate_pem(pki.ica, pki.ca))
    out["ca"].write_bytes(gen.certificate_pem(pki.ca))
    out["ss"].write_bytes(ss.public_bytes(serialization.Encoding.DER))
    out["pub"].write_bytes(
        key(3)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    out["garbage"].write_bytes(
        b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"
    )
    gen.write_private_key(out["key"], key(3))
    return out


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_tlsa_default_3_1_1(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tlsa", "--cert", str(files["ss"]), "--ttl", "300")
    assert code == 0
    assert out.startswith(f"{NAME}. 300 IN TLSA 3 1 1 ")
    # The same record from the public key.
    code, out2, _ = run(
        capsys, "tlsa", "--pubkey", str(files["pub"]), "--name", NAME, "--ttl", "300"
    )
    assert out2 == out


def test_tlsa_ca_record(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "tlsa",
        "--cert",
        str(files["ca"]),
        "--name",
        "*._device.example.com".replace("*.", "x."),
        "--usage",
        "DANE-TA",
        "--selector",
        "0",
        "--mtype",
        "1",
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert (data["usage"], data["selector"], data["mtype"]) == (2, 0, 1)


def test_tlsa_errors(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "tlsa", "--pubkey", str(files["pub"]), "--selector", "0")
    assert code == 2 and "selector 0" in err and err.count("\n") == 1
    code, _, err = run(capsys, "tlsa", "--cert", "/nonexistent/x.pem")
    assert code == 2 and "cannot read" in err
    code, _, err = run(capsys, "tlsa", "--cert", str(files["garbage"]))
    assert code == 2 and err.count("\n") == 1
    code, _, err = run(capsys, "tlsa", "--pubkey", str(files["key"]))
    assert code == 2 and "private key" in err
    code, _, err = run(capsys, "tlsa", "--cert", str(files["ss"]), "--usage", "9")
    assert code == 2


def test_verify_dane_ee(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, line, _ = run(capsys, "tlsa", "--cert", str(files["ss"]))
    rdata = " ".join(line.split()[3:])
    code, out, _ = run(
        capsys, "verify", "--name", NAME, "--cert", str(files["ss"]), "--tlsa", rdata
    )
    assert code == 0 and out.startswith(f"authenticated: {NAME}")
    code, out, _ = run(
        capsys, "verify", "--name", NAME, "--pubkey", str(files["pub"]), "--tlsa", rdata, "--json"
    )
    assert code == 0 and json.loads(out)["raw_public_key"] is True
    code, out, _ = run(
        capsys, "verify", "--name", NAME, "--cert", str(files["ee"]), "--tlsa", rdata
    )
    assert code == 1 and out == "rejected: no-match\n"


def test_verify_dane_ta(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(
        capsys,
        "tlsa",
        "--cert",
        str(files["ca"]),
        "--name",
        "x.example",
        "--usage",
        "2",
        "--selector",
        "0",
        "--json",
    )
    rdata = json.loads(out)["rdata"]
    args = [
        "verify",
        "--name",
        NAME,
        "--cert",
        str(files["ee"]),
        "--chain",
        str(files["chain"]),
        "--tlsa",
        rdata,
    ]
    code, out, _ = run(capsys, *args, "--at", "2026-06-01T00:00:00")
    assert code == 0
    code, out, _ = run(capsys, *args, "--at", "2036-06-01T00:00:00+00:00", "--json")
    assert code == 1 and json.loads(out)["reason"] == "expired"
    code, out, _ = run(
        capsys, "verify", "--name", "sensor9._device.example.com", *args[3:], "--at", "2026-06-01"
    )
    assert code == 1 and out == "rejected: name-mismatch\n"


@pytest.mark.parametrize(
    "extra",
    [
        ["--tlsa", "3 1 1 zz"],
        ["--tlsa", "3 1 1 abcd"],
        ["--tlsa", "3 1"],
        ["--name", "bad..name", "--tlsa", "3 1 1 " + "00" * 32],
        ["--name", "*.example.com", "--tlsa", "3 1 1 " + "00" * 32],
        ["--tlsa", "3 1 1 " + "00" * 32, "--at", "yesterday"],
    ],
)
def test_verify_usage_errors(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    argv = ["verify", "--cert", str(files["ss"])]
    if "--name" not in extra:
        argv += ["--name", NAME]
    code, out, err = run(capsys, *argv, *extra)
    assert code == 2 and out == "" and err.count("\n") == 1 and "error" in err


def test_verify_bad_files(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rec = ["--tlsa", "3 1 1 " + "00" * 32]
    for path in ("/nonexistent", str(files["garbage"]), str(files["key"])):
        code, _, err = run(capsys, "verify", "--name", NAME, "--cert", path, *rec)
        assert code == 2 and err.count("\n") == 1


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["verify", "--name", NAME])
    assert info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_console_script_and_demo() -> None:
    exe = Path(sys.executable).with_name("dance")
    proc = subprocess.run([str(exe), "demo"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "All outcomes as expected." in proc.stdout
    assert "Traceback" not in proc.stderr
    assert proc.stdout.count("ACCEPTED") >= 4 and proc.stdout.count("REJECTED") >= 5
    for part in "ABCDEFGHIJKL":  # every part ran (or said why it was skipped)
        assert f"dance demo, part {part}:" in proc.stdout
    # LDAP (J) and EAP-TLS (K): run here when slapd / FreeRADIUS and eapol_test are installed
    ldap = proc.stdout.split("part J:")[1].split("part K:")[0]
    assert "(skipped: slapd" in ldap or "Who Am I? dn:uid=alice,ou=people" in ldap
    eap = proc.stdout.split("part K:")[1].split("part L:")[0]
    assert "(skipped: freeradius" in eap or "Access-Accept  User-Name=sensor1" in eap
    radsec = proc.stdout.split("part L:")[1]  # RadSec (L): with FreeRADIUS installed
    assert "(skipped: freeradius" in radsec or 'DANCE-Client-Name = "ap1._nas' in radsec


def test_private_key_written_0600(files: dict[str, Path]) -> None:
    assert files["key"].stat().st_mode & 0o777 == 0o600
