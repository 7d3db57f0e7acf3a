"""A fresh install stays quiet: no third-party warning reaches a user's terminal, and dance's own
modules import warning-free under ``-W error`` (issue: a fresh machine stays green)."""

from __future__ import annotations

import os
import pkgutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import dance

DANCE = str(Path(sys.executable).with_name("dance"))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONWARNINGS")}
    env.pop("DANCE_TSIG_KEY", None)
    return env


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_dance_module_imports_under_w_error() -> None:
    names = [
        m.name
        for m in pkgutil.walk_packages(dance.__path__, "dance.")
        if not m.name.endswith(".__main__")  # running it is not importing it
    ]
    assert "dance.dns.validator" in names and "dance.cli" in names
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code, *names],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr == ""


def _imports_dnssec(path: Path) -> bool:
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(
            a.name.startswith("dns.dnssec") for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dns.dnssec"):
            return True
    return False


def test_each_dnssec_user_imports_quietly_on_its_own() -> None:
    """dnspython's DSA warning is silenced before any dance module imports dns.dnssec: each such
    module, imported first in a fresh interpreter under -W error, raises nothing."""
    root = Path(dance.__path__[0])
    users = [
        "dance." + ".".join(p.relative_to(root).with_suffix("").parts)
        for p in sorted(root.rglob("*.py"))
        if _imports_dnssec(p)
    ]
    assert "dance.dns.validator" in users
    for name in users:
        out = subprocess.run(
            [sys.executable, "-W", "error", "-c", f"import {name}"],
            capture_output=True, text=True, env=_env(), timeout=60,
        )  # fmt: skip
        assert out.returncode == 0 and out.stderr == "", (name, out.stderr[-1500:])


def test_import_dance_is_cheap() -> None:
    """`import dance` loads none of the heavy dependencies (the SSH key hook relies on it)."""
    code = (
        "import sys, dance\n"
        "heavy = [m for m in ('cryptography', 'dns', 're', 'typing') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


def _dance_lines_only(stderr: str) -> None:
    own = ("dance", "refused:", "verified:", "  ")  # messages, verdicts, their detail lines
    for line in stderr.splitlines():
        assert line.startswith(own), f"a line that is not dance's own on stderr: {line!r}"
        assert "Warning" not in line and "Traceback" not in line, line


@pytest.mark.parametrize(
    "argv",
    [
        ["--version"],
        ["lookup", "a._device.example.com", "--server", "127.0.0.1:{port}", "--timeout", "0.3"],
        [
            "check",
            "a._device.example.com",
            "--cert",
            "{cert}",
            "--server",
            "127.0.0.1:{port}",
            "--timeout",
            "0.3",
        ],
        ["tlsa", "--cert", "{cert}"],
        ["verify-message", "--allow", ".example.com", "--in", "{cert}"],
        ["agent", "--listen", "bad", "--allow", ".example.com"],
        ["lookup", "bad..name", "--server", "127.0.0.1:{port}"],
    ],
    ids=["version", "lookup-down", "check-down", "tlsa", "verify-message", "agent-bad", "bad-name"],
)
def test_commands_print_only_dance_lines_on_stderr(argv: list[str], tmp_path: Path) -> None:
    made = subprocess.run(
        [DANCE, "identity", "new", "a._device.example.com", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    _dance_lines_only(made.stderr)
    cert = tmp_path / "a._device.example.com.pem"
    args = [a.format(port=_closed_port(), cert=cert) for a in argv]
    out = subprocess.run(
        [DANCE, *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode in (0, 1, 2, 3), out
    _dance_lines_only(out.stderr)


def test_demo_is_quiet_on_stderr() -> None:
    out = subprocess.run(
        [DANCE, "demo"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "All outcomes as expected" in out.stdout
    assert out.stderr == ""
