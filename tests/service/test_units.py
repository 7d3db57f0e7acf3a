"""The systemd units in deploy/systemd: valid for systemd, sandboxed, and naming real flags."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_binary

UNITS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "systemd").glob("*.service"))
DANCE = str(Path(sys.executable).with_name("dance"))


def test_a_unit_per_server() -> None:
    names = {u.stem for u in UNITS}
    assert names == {
        "dance-proxy", "dance-smtp-proxy", "dance-agent", "dance-authority", "dance-ssh-keys",
        "dance-mqtt-proxy",
    }  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.stem)
def test_unit_verifies_and_is_sandboxed(unit: Path, tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    text = unit.read_text()
    for setting in (
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ):
        assert re.search(rf"^{re.escape(setting)}", text, re.M), (unit.name, setting)
    caps = re.findall(r"^CapabilityBoundingSet=(.*)$", text, re.M)
    assert caps and set(caps[0].split()) <= {"CAP_NET_BIND_SERVICE"}, caps
    assert "ReadWritePaths=/" not in text  # writable state only in StateDirectory/RuntimeDirectory
    # systemd checks that ExecStart is executable: point it at this venv's dance
    local = tmp_path / unit.name
    local.write_text(text.replace("/opt/dance/bin/dance", DANCE))
    out = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr
    sec = subprocess.run(
        [analyze, "security", "--offline=yes", str(local)], capture_output=True, text=True
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", sec.stdout + sec.stderr)
    assert match, sec.stdout[-500:] + sec.stderr[-500:]
    assert float(match.group(1)) < 3.0, match.group(0)  # systemd rates < 3 as well sandboxed


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.stem)
def test_exec_start_uses_existing_flags(unit: Path) -> None:
    line = re.search(r"^ExecStart=(.*)$", unit.read_text(), re.M)
    assert line
    argv = line.group(1).split()
    assert argv[0] == "/opt/dance/bin/dance"
    command = argv[1]
    help_text = subprocess.run([DANCE, command, "--help"], capture_output=True, text=True).stdout
    for flag in (a for a in argv[2:] if a.startswith("--")):
        assert flag in help_text, (unit.name, flag)
    assert "--config" in argv and any(a.startswith("/etc/dance/") for a in argv)
    # secrets never on the command line: keys come from systemd credentials
    for i, arg in enumerate(argv):
        if arg in ("--key", "--tsig-key-file"):
            assert argv[i + 1].startswith("${CREDENTIALS_DIRECTORY}/"), arg


def test_units_are_shipped_verbatim_in_docs() -> None:
    deploy = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    for unit in UNITS:
        assert unit.name in deploy, unit.name


ETC = Path(__file__).resolve().parents[2] / "deploy" / "etc"


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.stem)
def test_unit_command_line_and_example_config_parse(unit: Path) -> None:
    """The unit's ExecStart, with its example /etc/dance file from deploy/etc, is a command line
    the parser accepts: every key of the example exists and has a valid value."""
    from dance.cli import _with_config, build_parser

    line = re.search(r"^ExecStart=(.*)$", unit.read_text(), re.M)
    assert line
    argv = line.group(1).split()[1:]
    argv = [re.sub(r"\$\{[A-Z_]+\}", "/run/x", a) for a in argv]
    config = argv[argv.index("--config") + 1]
    example = ETC / Path(config).name
    assert example.exists(), f"no example for {config} in deploy/etc"
    argv[argv.index("--config") + 1] = str(example)
    parser = build_parser()
    args = parser.parse_args(_with_config(parser, argv, {}))
    assert args.command == argv[0]
