"""`dance ssh-keys-command` and `dance ssh-tlsa` in-process (dance.cli.main)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from dance.cli import main
from dance.testkit import Fault
from tests.ssh.common import ALICE, CAROL, LEGACY, World, ssh_pub, to_key


@pytest.fixture
def setup(world: World, tmp_path: Path) -> tuple[World, list[str]]:
    names = tmp_path / "names"
    names.write_text(f"root: {ALICE}, {CAROL}\nguest: {LEGACY}\n")
    names.chmod(0o644)
    anchor = tmp_path / "anchor.txt"
    anchor.write_text(world.anchor_text)
    opts = [
        "--names-file", str(names),
        "--server", f"{world.dns[0]}:{world.dns[1]}",
        "--trust-anchor", str(anchor),
    ]  # fmt: skip
    return world, opts


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_accepted_prints_one_line(
    setup: tuple[World, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    world, opts = setup
    keytype, blob = ssh_pub(world.keys["alice"])
    rc, out, err = run(capsys, ["ssh-keys-command", "root", keytype, blob, *opts])
    assert rc == 0
    assert out == f"{keytype} {blob} dance:{ALICE}\n"
    assert "accepted" in err and "Traceback" not in err
    keytype, blob = ssh_pub(world.keys["carol"])
    rc, out, _ = run(capsys, ["ssh-keys-command", "root", keytype, blob, *opts])
    assert (rc, out) == (0, f"{keytype} {blob} dance:{CAROL}\n")


@pytest.mark.parametrize(
    ("user", "key", "why"),
    [
        ("root", "mallory", "no-match"),  # unpublished key
        ("root", "bob", "no-match"),  # published, but for a name root does not list
        ("nobody", "alice", "no DANCE names"),  # account without names
        ("guest", "dave", "dns-insecure"),  # matching record in an unsigned zone
    ],
)
def test_refused_prints_nothing(
    setup: tuple[World, list[str]], capsys: pytest.CaptureFixture[str], user: str, key: str,
    why: str,
) -> None:  # fmt: skip
    world, opts = setup
    keytype, blob = ssh_pub(world.keys[key])
    rc, out, err = run(capsys, ["ssh-keys-command", user, keytype, blob, *opts])
    assert (rc, out) == (0, "")
    assert why in err


def test_bogus_prints_nothing(
    setup: tuple[World, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    world, opts = setup
    keytype, blob = ssh_pub(world.keys["alice"])
    with world.zones.inject(Fault("bad-signature", ALICE)):
        rc, out, err = run(capsys, ["ssh-keys-command", "root", keytype, blob, *opts])
    assert (rc, out) == (0, "")
    assert "dns-bogus" in err


@pytest.mark.parametrize(
    ("keytype", "blob"),
    [("ssh-ed25519", "!!!"), ("ssh-rsa", None), ("", ""), ("ssh-ed25519", "AAAA")],
)
def test_bad_input_prints_nothing(
    setup: tuple[World, list[str]], capsys: pytest.CaptureFixture[str], keytype: str,
    blob: str | None,
) -> None:  # fmt: skip
    world, opts = setup
    if blob is None:
        blob = ssh_pub(world.keys["alice"])[1]  # type mismatch
    rc, out, err = run(capsys, ["ssh-keys-command", "root", keytype, blob, *opts])
    assert (rc, out) == (0, "")
    assert "Traceback" not in err


def test_bad_names_file_exit_2(
    setup: tuple[World, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    world, opts = setup
    keytype, blob = ssh_pub(world.keys["alice"])
    names = Path(opts[1])
    names.write_text(f"root: {ALICE}\nroot {CAROL}\n")
    rc, out, err = run(capsys, ["ssh-keys-command", "root", keytype, blob, *opts])
    assert (rc, out) == (2, "")
    assert f"{names}:2: expected" in err
    names.write_text(f"root: {ALICE}\n")
    names.chmod(0o666)
    rc, out, err = run(capsys, ["ssh-keys-command", "root", keytype, blob, *opts])
    assert (rc, out) == (2, "")
    assert "world-writable" in err


def test_bad_trust_anchor_exit_2(
    setup: tuple[World, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    world, opts = setup
    keytype, blob = ssh_pub(world.keys["alice"])
    bad = tmp_path / "bad-anchor"
    bad.write_text("garbage\n")
    opts[opts.index("--trust-anchor") + 1] = str(bad)
    rc, out, err = run(capsys, ["ssh-keys-command", "root", keytype, blob, *opts])
    assert (rc, out) == (2, "")
    assert "configuration error" in err and "Traceback" not in err


def test_ssh_tlsa(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    keytype, blob = ssh_pub(private)
    pub = tmp_path / "id_ed25519.pub"
    pub.write_text(f"{keytype} {blob} alice@laptop\n")
    spki = to_key(private).spki
    rc, out, _ = run(capsys, ["ssh-tlsa", "--pubkey", str(pub), "--name", ALICE])
    assert rc == 0
    assert out == f"{ALICE}. IN TLSA 3 1 1 {hashlib.sha256(spki).hexdigest()}\n"
    argv = ["ssh-tlsa", "--pubkey", str(pub), "--name", ALICE, "--mtype", "0", "--ttl", "300"]
    rc, out, _ = run(capsys, argv)
    assert rc == 0 and out.split()[1] == "300" and out.split()[-1] == spki.hex()
    rc, out, _ = run(capsys, ["ssh-tlsa", "--pubkey", str(pub), "--name", ALICE, "--json"])
    doc = json.loads(out)
    assert doc["rdata"] == "3 1 1 " + hashlib.sha256(spki).hexdigest()
    assert doc["keytype"] == "ssh-ed25519"


@pytest.mark.parametrize(
    ("content", "name", "fragment"),
    [
        ("garbage\n", ALICE, "malformed-key"),
        (None, ALICE, "cannot read"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== x\n", ALICE, "malformed-key"),
        ("VALID", "bad..name", ""),
    ],
)
def test_ssh_tlsa_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, name: str,
    fragment: str,
) -> None:  # fmt: skip
    pub = tmp_path / "key.pub"
    if content == "VALID":
        keytype, blob = ssh_pub(ed25519.Ed25519PrivateKey.generate())
        content = f"{keytype} {blob}\n"
    if content is not None:
        pub.write_text(content)
    rc, out, err = run(capsys, ["ssh-tlsa", "--pubkey", str(pub), "--name", name])
    assert (rc, out) == (2, "")
    assert fragment in err and "Traceback" not in err


def test_syslog_unreachable_falls_back_to_stderr_in_one_line(
    setup: tuple[World, list[str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    world, opts = setup
    monkeypatch.setattr("dance.cli.ssh.SYSLOG_SOCKET", str(tmp_path / "no-such-log"))
    keytype, blob = ssh_pub(world.keys["alice"])
    rc, out, err = run(capsys, ["ssh-keys-command", "root", keytype, blob, "--syslog", *opts])
    assert rc == 0
    assert out == f"{keytype} {blob} dance:{ALICE}\n"  # the decision is unchanged
    assert "Logging error" not in err and "Traceback" not in err
    assert err.count("syslog is not reachable") == 1
    assert "accepted" in err  # the decision was logged on stderr instead


def test_openssh_pub_accepted_where_a_public_key_is_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`publish --spki` and `tlsa --pubkey` take the same .pub file as `ssh-tlsa`."""
    key = ed25519.Ed25519PrivateKey.generate()
    keytype, blob = ssh_pub(key)
    pub = tmp_path / "id.pub"
    pub.write_text(f"{keytype} {blob} alice@laptop\n")
    name = "alice._user.example.com"
    rc, out, _ = run(capsys, ["ssh-tlsa", "--pubkey", str(pub), "--name", name])
    assert rc == 0
    record = out.split(" IN TLSA ")[1].strip()
    rc, out, _ = run(capsys, ["tlsa", "--pubkey", str(pub)])
    assert rc == 0 and out.strip().endswith(record)
    rc, out, err = run(
        capsys,
        ["publish", name, "--spki", str(pub), "--zone-file", "--server", "x", "--zone", "x.com"],
    )
    assert rc == 0, err
    assert out.strip().endswith(f"IN TLSA {record}")
    bad = tmp_path / "bad.pub"
    bad.write_text("ssh-ed25519 AAAAnotakey\n")
    rc, out, err = run(capsys, ["tlsa", "--pubkey", str(bad)])
    assert rc == 2 and "not a usable OpenSSH public key" in err and err.count("\n") == 1
