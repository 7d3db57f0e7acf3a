"""Ctrl-C during long provisioning work stops at once and says what was done."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

DANCE = str(Path(sys.executable).with_name("dance"))


def _wait_for_files(directory: Path, count: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        if directory.exists() and sum(1 for _ in directory.iterdir()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{directory} did not reach {count} files")


def test_fleet_provision_ctrl_c_cancels_pending_work(tmp_path: Path) -> None:
    devices = tmp_path / "devices.txt"
    devices.write_text("".join(f"dev{i}\n" for i in range(20000)))
    ids = tmp_path / "ids"
    proc = subprocess.Popen(
        [DANCE, "fleet", "provision", str(devices), "--domain", "example.com",
         "--out-dir", str(ids), "--zone-file", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for_files(ids, 200, time.monotonic() + 60)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    line = [ln for ln in err.splitlines() if "interrupted" in ln]
    assert len(line) == 1, err
    done = int(line[0].split("interrupted: ")[1].split(" of ")[0])
    assert "nothing was published" in line[0] and out == ""
    files = sorted(p.name for p in ids.iterdir())
    stems = {f.rsplit(".", 1)[0] for f in files}
    # far from all 20,000: queued work was dropped, and every identity on disk is whole
    assert 0 < len(stems) < 15000
    assert done == len(stems)
    for stem in stems:
        assert (ids / f"{stem}.key").exists() and (ids / f"{stem}.pem").exists(), stem
