"""Every command, fed unusable input, answers with one line and exit 2 (or a refusal, exit 1):
never a traceback, never a crash (the project's "fail closed, clearly" rule)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dance.cli import main


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    junk = tmp_path / "junk"
    junk.write_bytes(bytes(range(256)) * 2)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    badpem = tmp_path / "badpem"
    badpem.write_text("-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n")
    return {"junk": str(junk), "empty": str(empty), "badpem": str(badpem), "dir": str(tmp_path)}


CASES = [
    ("tlsa --cert {junk}", 2),
    ("tlsa --cert {badpem}", 2),
    ("tlsa --pubkey {empty}", 2),
    ("verify --name x._device.example.com --cert {junk} --tlsa '3 1 1 00'", 2),
    ("verify --name 'bad name' --cert {badpem} --tlsa x", 2),
    ("check bad..name --cert {junk} --server 127.0.0.1:1", 2),
    ("lookup x._device.example.com --server not-an-address:port", 2),
    ("identity show {junk}", 2),
    ("identity show {empty}", 2),
    ("identity new 'bad name' --out-dir {dir}", 2),
    ("ca issue --ca-cert {junk} --ca-key {junk} --name a._device.example.com --out-dir {dir}", 2),
    ("publish a._device.example.com --cert {junk} --server 127.0.0.1:1 --zone example.com", 2),
    ("revoke a._device.example.com --record '3 1 1 zz' --server x --zone example.com", 2),
    ("fleet provision {junk} --domain example.com --out-dir {dir} --zone-file", 2),
    ("sign --name a._device.example.com --key {junk} --in {junk}", 2),
    ("verify-message --allow .example.com --in {junk}", 1),
    ("decrypt --key {junk} --in {junk}", 2),
    ("encrypt --to 'bad name' --in {junk}", 2),
    ("connect 127.0.0.1:1 --name x._device.example.com --cert {junk} --key {junk}", 2),
    ("proxy --listen 127.0.0.1:0 --backend x --cert {junk} --key {junk} --allow .x", 2),
    ("agent --listen bad --allow .example.com", 2),
    ("authority --zone-dir {dir}/nonexistent --listen 127.0.0.1:0", 2),
    ("rollover x._device.example.com --dir {dir}/nonexistent", 2),
    ("ssh-tlsa --pubkey {junk} --name a._user.example.com", 2),
    ("ssh-tlsa --pubkey {dir} --name a._user.example.com", 2),
    ("smtp-proxy --listen bad --backend 127.0.0.1:25 --cert {junk} --key {junk} --allow .x", 2),
]


@pytest.mark.parametrize(("command", "expected"), CASES, ids=[c[0].split()[0] for c in CASES])
def test_unusable_input_is_one_line_never_a_traceback(
    command: str,
    expected: int,
    files: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shlex

    monkeypatch.delenv("DANCE_TSIG_KEY", raising=False)
    monkeypatch.setattr("sys.stdin", open(os.devnull))  # noqa: SIM115
    argv = shlex.split(command.format(**files))
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    err = captured.err
    assert code == expected, (argv, err)
    assert "Traceback" not in err + captured.out
    # one line: the error on stderr (argparse adds a usage line), or a refusal on stdout
    lines = [line for line in (err or captured.out).splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, (err, captured.out)
    assert all(len(line) < 300 for line in lines), err
