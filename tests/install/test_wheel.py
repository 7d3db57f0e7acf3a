"""The distribution builds (wheel and sdist) and installs with every extra into a fresh venv, where
``dance --version`` and ``dance demo`` run with nothing on stderr."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import dance

ROOT = Path(__file__).resolve().parents[2]


def _constraints(tmp: Path) -> Path:
    """The lock's pins without hashes (pip turns hashes in a constraints file into hash mode)."""
    pins = [
        re.sub(r"\s*\\$", "", line)
        for line in (ROOT / "requirements" / "dev.lock").read_text().splitlines()
        if re.match(r"^[A-Za-z0-9]", line)
    ]
    path = tmp / "constraints.txt"
    path.write_text("\n".join(pins) + "\n")
    return path


@pytest.mark.integration
def test_wheel_installs_with_all_extras_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels = list(dist.glob("dance_dane-*.whl"))
    sdists = list(dist.glob("dance_dane-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    assert wheels[0].name.startswith(f"dance_dane-{dance.__version__}-")

    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    py = target / "bin" / "python"
    installed = subprocess.run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-c",
            str(_constraints(tmp_path)),
            f"{wheels[0]}[all]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stdout

    exe = target / "bin" / "dance"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env=env)
    assert version.returncode == 0 and version.stdout.strip() == f"dance {dance.__version__}"
    assert version.stderr == ""
    # the extras came along: the message layer imports inside the installed venv
    extras = subprocess.run(
        [str(py), "-c", "import joserfc, cbor2, fastapi, flask, dance.message"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert extras.returncode == 0, extras.stderr

    demo = subprocess.run(
        [str(exe), "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "All outcomes as expected" in demo.stdout
    assert demo.stderr == ""
