"""The provisioning CLI without a network: identities, CAs, checks that refuse bad input."""

from __future__ import annotations

import datetime
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from dance.cli import main
from dance.credentials import CertificateChain, load_certificates
from dance.names import tree_device_name
from dance.tlsa import TLSARecord, make_record, verify


def _now() -> datetime.datetime:
    """The time of the check (the CLI issues certificates at the time it runs; a module-level
    constant would lag behind it by however long the suite took to get here)."""
    return datetime.datetime.now(datetime.UTC)


SECRET = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_identity_new_writes_0600_key_and_prints_matching_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "identity",
        "new",
        "Sensor7._device.Example.test",
        "--out-dir",
        str(tmp_path),
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["name"] == "sensor7._device.example.test"
    key = Path(data["key"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in out.encode()
    rdata = data["records"][0]["rdata"]
    assert rdata.startswith("3 1 1 ")
    chain = CertificateChain.from_certificates(
        load_certificates(Path(data["certificate"]).read_bytes())
    )
    assert verify(data["name"], chain, [TLSARecord.from_text(rdata)], now=_now()).accepted


def test_identity_new_refuses_to_overwrite_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["identity", "new", "a._device.example.test", "--out-dir", str(tmp_path)]
    assert run(capsys, *args)[0] == 0
    key = tmp_path / "a._device.example.test.key"
    before = key.read_bytes()
    code, _, err = run(capsys, *args)
    assert code == 2 and "exists" in err and "Traceback" not in err
    assert key.read_bytes() == before
    assert run(capsys, *args, "--force", "--key-type", "ed25519")[0] == 0
    assert key.read_bytes() != before
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_identity_new_bad_name_and_key_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "identity", "new", "bad name!", "--out-dir", str(tmp_path))
    assert code == 2 and "bad client name" in err
    with pytest.raises(SystemExit) as exc:
        main(["identity", "new", "a._device.example.test", "--key-type", "dsa-1024"])
    assert exc.value.code == 2


@pytest.mark.parametrize("key_type", ["ec-p256", "ed25519", "rsa-3072"])
def test_csr_split_device_ca_issues_client_auth_cert_matching_dane_ta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key_type: str
) -> None:
    """Manufacturer makes the key + CSR; the integrator's device CA issues; 2 0 1 matches."""
    name = "dev9._device.example.test"
    assert (
        run(
            capsys,
            "identity",
            "new",
            name,
            "--csr",
            "--key-type",
            key_type,
            "--out-dir",
            str(tmp_path / "maker"),
        )[0]
        == 0
    )
    assert not (tmp_path / "maker" / f"{name}.pem").exists()
    code, out, _ = run(
        capsys,
        "ca",
        "new",
        "--kind",
        "device",
        "--domain",
        "example.test",
        "--out-dir",
        str(tmp_path / "ca"),
        "--json",
    )
    assert code == 0
    ca = json.loads(out)
    assert ca["records"][0]["owner"] == "*._device.example.test"
    assert ca["records"][0]["rdata"].startswith("2 0 1 ")
    assert stat.S_IMODE(Path(ca["key"]).stat().st_mode) == 0o600
    code, out, _ = run(
        capsys,
        "ca",
        "issue",
        "--ca-cert",
        ca["certificate"],
        "--ca-key",
        ca["key"],
        "--csr",
        str(tmp_path / "maker" / f"{name}.csr"),
        "--out-dir",
        str(tmp_path / "issued"),
        "--json",
    )
    assert code == 0
    issued = json.loads(out)
    assert issued["key"] is None  # the key never left the manufacturer
    certs = load_certificates(Path(issued["certificate"]).read_bytes())
    ee = certs[0]
    san = ee.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [name]
    eku = ee.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    record = TLSARecord.from_text(ca["records"][0]["rdata"])
    chain = CertificateChain.from_certificates(certs)
    assert verify(name, chain, [record], now=_now()).accepted
    # the same chain presented under another name of the domain is refused
    assert not verify("dev10._device.example.test", chain, [record], now=_now()).accepted


def test_ca_refuses_names_outside_its_constraints_and_foreign_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for kind in ("device", "user"):
        assert (
            run(
                capsys,
                "ca",
                "new",
                "--kind",
                kind,
                "--domain",
                "example.test",
                "--out-dir",
                str(tmp_path),
            )[0]
            == 0
        )
    dev_cert = str(tmp_path / "device-ca.example.test.pem")
    dev_key = str(tmp_path / "device-ca.example.test.key")
    code, _, err = run(
        capsys,
        "ca",
        "issue",
        "--ca-cert",
        dev_cert,
        "--ca-key",
        dev_key,
        "--name",
        "x._device.other.test",
        "--out-dir",
        str(tmp_path / "o"),
    )
    assert code == 2 and "name constraints" in err
    code, _, err = run(
        capsys,
        "ca",
        "issue",
        "--ca-cert",
        dev_cert,
        "--ca-key",
        str(tmp_path / "user-ca.example.test.key"),
        "--name",
        "x._device.example.test",
        "--out-dir",
        str(tmp_path / "o"),
    )
    assert code == 2 and "does not belong" in err
    assert not (tmp_path / "o" / "x._device.example.test.key").exists()


def test_user_certificates_uid_and_mailbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "ca",
        "new",
        "--kind",
        "user",
        "--domain",
        "example.test",
        "--out-dir",
        str(tmp_path),
        "--json",
    )
    ca = json.loads(out)
    assert ca["records"][0]["owner"] == "_user.example.test"
    base = [
        "ca",
        "issue",
        "--ca-cert",
        ca["certificate"],
        "--ca-key",
        ca["key"],
        "--out-dir",
        str(tmp_path / "u"),
        "--json",
    ]
    code, out, _ = run(capsys, *base, "--name", "_user.example.test", "--user", "alice")
    assert code == 0
    issued = json.loads(out)
    assert issued["name"] == "_user.example.test" and issued["user"] == "alice"
    ee = load_certificates(Path(issued["certificate"]).read_bytes())[0]
    san = ee.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["example.test"]
    assert any(isinstance(n, x509.OtherName) for n in san)
    assert stat.S_IMODE(Path(issued["key"]).stat().st_mode) == 0o600
    code, out, _ = run(
        capsys, *base, "--name", "_user.example.test", "--mailbox", "bob@example.test"
    )
    assert code == 0
    ee = load_certificates(Path(json.loads(out)["certificate"]).read_bytes())[0]
    san = ee.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["bob@example.test"]
    code, _, err = run(capsys, *base, "--name", "_user.example.test", "--mailbox", "eve@evil.test")
    assert code == 2 and ("not in domain" in err or "outside" in err)


def test_identity_show_kinds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = "s1._device.example.test"
    code, out, _ = run(capsys, "identity", "new", name, "--out-dir", str(tmp_path), "--json")
    rdata = json.loads(out)["records"][0]["rdata"]
    for suffix in (".pem", ".key"):
        code, out, _ = run(capsys, "identity", "show", str(tmp_path / (name + suffix)), "--json")
        info = json.loads(out)
        assert code == 0 and info["records"] == [{"owner": name, "rdata": rdata}]
        assert "PRIVATE" not in out
    code, _, err = run(capsys, "identity", "show", str(tmp_path / "missing.pem"))
    assert code == 2 and "cannot read" in err
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    code, _, err = run(capsys, "identity", "show", str(junk))
    assert code == 2


def test_publish_refuses_mismatched_or_unchecked_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = "a._device.example.test", "b._device.example.test"
    for n in (a, b):
        run(capsys, "identity", "new", n, "--out-dir", str(tmp_path))
    cert_a = str(tmp_path / f"{a}.pem")
    other = load_certificates((tmp_path / f"{b}.pem").read_bytes())[0]
    wrong = make_record(other, 3, 1, 1).to_text()
    code, out, err = run(capsys, "publish", a, "--cert", cert_a, "--record", wrong, "--zone-file")
    assert code == 2 and "does not match" in err and out == ""
    # a DANE-TA usage for an end-entity certificate is refused too
    own = load_certificates(Path(cert_a).read_bytes())[0]
    ta = make_record(own, 2, 0, 1).to_text()
    code, _, err = run(capsys, "publish", a, "--cert", cert_a, "--record", ta, "--zone-file")
    assert code == 2 and "CA certificate" in err
    code, _, err = run(capsys, "publish", a, "--record", wrong, "--zone-file")
    assert code == 2 and "--unchecked" in err
    code, out, _ = run(capsys, "publish", a, "--record", wrong, "--unchecked", "--zone-file")
    assert code == 0 and out.strip() == f"{a}. 300 IN TLSA {wrong}"
    code, out, _ = run(capsys, "publish", a, "--cert", cert_a, "--zone-file", "--ttl", "60")
    assert code == 0 and out.startswith(f"{a}. 60 IN TLSA 3 1 1 ")


def test_publish_needs_a_tsig_key_from_file_or_env_never_argv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DANCE_TSIG_KEY", raising=False)
    name = "a._device.example.test"
    run(capsys, "identity", "new", name, "--out-dir", str(tmp_path))
    base = [
        "publish",
        name,
        "--cert",
        str(tmp_path / f"{name}.pem"),
        "--server",
        "127.0.0.1:9",
        "--zone",
        "example.test",
    ]
    code, _, err = run(capsys, *base)
    assert code == 2 and "DANCE_TSIG_KEY" in err
    with pytest.raises(SystemExit):
        main([*base, "--tsig-secret", SECRET])
    capsys.readouterr()
    bad = tmp_path / "bad.key"
    bad.write_text('key "k" {\n algorithm hmac-md5;\n secret "' + SECRET + '";\n};\n')
    code, _, err = run(capsys, *base, "--tsig-key-file", str(bad))
    assert code == 2 and "line 1" in err and "hmac-md5" in err and SECRET not in err


def test_fleet_malformed_lines_are_numbered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = tmp_path / "fleet.csv"
    fleet.write_text("name,serial\nsensor1,AB\n\nbad label!,x\nsensor1,dup\n" + "a" * 70 + "\n")
    code, _, err = run(
        capsys,
        "fleet",
        "provision",
        str(fleet),
        "--domain",
        "example.test",
        "--out-dir",
        str(tmp_path / "ids"),
        "--zone-file",
    )
    assert code == 2
    assert "line 4:" in err and "line 5:" in err and "line 6:" in err and "line 2:" not in err
    assert not (tmp_path / "ids").exists() or not any((tmp_path / "ids").iterdir())


def test_fleet_zone_file_uses_tree_names_and_reuses_identities(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = tmp_path / "fleet.txt"
    fleet.write_text("# devices\nsensor1\nsensor2\nSensor3\n")
    args = [
        "fleet",
        "provision",
        str(fleet),
        "--domain",
        "example.test",
        "--out-dir",
        str(tmp_path / "ids"),
        "--zone-file",
        "--workers",
        "1",
    ]
    code, out, err = run(capsys, *args, "--progress")
    assert code == 0
    assert "identities [" in err and "3/3" in err  # the progress bar goes to stderr
    lines = out.strip().splitlines()
    owners = [line.split()[0].rstrip(".") for line in lines]
    assert owners == [
        tree_device_name(d, "example.test").text for d in ("sensor1", "sensor2", "sensor3")
    ]
    for owner in owners:
        key = tmp_path / "ids" / f"{owner}.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    code, again, _ = run(capsys, *args)
    assert code == 0 and again == out  # same keys: re-running changes nothing
