"""Integration: a real OpenSSH sshd with `AuthorizedKeysCommand` running `dance ssh-keys-command`.

The test starts its own `sshd -D` on 127.0.0.1 (free port, temporary host key, no
authorized_keys files), with the key lookup going to the testkit DNS server (signed zones), and
logs in as root with `ssh -i KEY ... true`. sshd requires the command and every directory above
it to be root-owned and not writable by others, so the wrapper lives in /run/dance-test-<random>/.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from dance.ssh import ssh_tlsa_record
from tests.conftest import require_binary
from tests.integration.servers import free_port
from tests.ssh.common import ALICE, CAROL, World, to_key, write_private

SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass
class Sshd:
    dir: Path
    port: int
    ssh: str
    log: Path
    names: Path
    daemon_log: Path | None = None
    daemon: subprocess.Popen[Any] | None = None

    def flush(self) -> None:
        """Daemon mode: SIGHUP, and wait until the daemon says its cache is empty."""
        if self.daemon is None or self.daemon_log is None:
            return
        before = self.daemon_log.read_text().count("DNS cache flushed")
        self.daemon.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self.daemon_log.read_text().count("DNS cache flushed") == before:
            assert time.monotonic() < deadline, "the daemon did not flush"
            time.sleep(0.02)

    def decisions(self) -> str:
        """What dance said: on sshd's log (the hook's stderr) or the key daemon's log."""
        text = self.log.read_text()
        if self.daemon_log is not None:
            text += self.daemon_log.read_text()
        return text

    def login(self, key: str, user: str = "root") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                self.ssh, "-F", "/dev/null", "-i", key, "-p", str(self.port),
                "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
                f"{user}@127.0.0.1", "echo", "logged-in",
            ],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip


def _wait_banner(port: int, proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-2.0"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("sshd did not start")


def _others_can_run(*paths: str) -> bool:
    """True when an unprivileged account (nobody) can execute/read these paths."""
    for path in paths:
        real = Path(os.path.realpath(path))
        for directory in real.parents:
            if not os.stat(directory).st_mode & 0o001:
                return False
        if not os.stat(real).st_mode & 0o005:
            return False
    return True


@pytest.fixture(scope="module", params=["in-process", "daemon"])
def sshd(world: World, request: pytest.FixtureRequest) -> Iterator[Sshd]:
    """sshd with dance-ssh-keys: checking in its own process, or asking the key daemon."""
    sshd_bin = require_binary("sshd")
    ssh_bin = require_binary("ssh")
    keygen = require_binary("ssh-keygen")
    if os.geteuid() != 0:
        pytest.skip("sshd integration needs root (root-owned AuthorizedKeysCommand)")
    created_privsep = False
    if not os.path.isdir("/run/sshd"):  # sshd's privilege separation directory
        os.makedirs("/run/sshd", mode=0o755)
        created_privsep = True
    d = Path(f"/run/dance-test-{secrets.token_hex(6)}")
    d.mkdir(mode=0o755)
    proc: subprocess.Popen[Any] | None = None
    daemon: subprocess.Popen[Any] | None = None
    daemon_log: Path | None = None
    daemon: subprocess.Popen[Any] | None = None
    try:
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True
        )
        (d / "anchor.txt").write_text(world.anchor_text)
        names = d / "names"
        names.write_text(f"root: {ALICE}, {CAROL}\n")
        names.chmod(0o644)
        wrapper = d / "dance-ssh-keys"
        # what the dance-ssh-keys console script does, with the options in sshd_config
        wrapper.write_text(
            f"#!{sys.executable} -B\n"
            f"import sys\nsys.path.insert(0, {str(SRC)!r})\n"
            "from dance.cli.ssh_hook import main\nsys.exit(main())\n"
        )
        options = (
            f"--names-file {names} --server {world.dns[0]}:{world.dns[1]} "
            f"--trust-anchor {d / 'anchor.txt'}"
        )
        if request.param == "daemon":
            sock = d / "keys.sock"
            daemon_log = d / "daemon.log"
            with open(daemon_log, "wb") as out:
                daemon = subprocess.Popen(
                    [sys.executable, "-B", "-m", "dance.cli", "ssh-keys-daemon",
                     "--socket", str(sock), *options.split()],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=dict(os.environ, PYTHONPATH=str(SRC)),
                )  # fmt: skip
            deadline = time.monotonic() + 30
            while not sock.exists():
                assert daemon.poll() is None and time.monotonic() < deadline, daemon_log.read_text()
                time.sleep(0.05)
            options = f"--socket {sock}"  # all the hook needs: the daemon has the rest
        wrapper.chmod(0o755)
        port = free_port()
        # The recommended unprivileged account, unless this interpreter lives where nobody
        # cannot reach it (e.g. a pyenv under /root): then root (the names file check is the
        # same either way).
        command_user = "nobody" if _others_can_run(sys.executable, str(SRC)) else "root"
        config = d / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
            f"PidFile {d / 'sshd.pid'}\n"
            "AuthorizedKeysFile none\n"
            f"AuthorizedKeysCommand {wrapper} {options} %u %t %k\n"
            f"AuthorizedKeysCommandUser {command_user}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            "UsePAM no\nLogLevel VERBOSE\n"
        )
        log = d / "sshd.log"
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(
                [sshd_bin, "-D", "-e", "-f", str(config)],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            _wait_banner(port, proc)
        except RuntimeError as exc:
            pytest.fail(f"{exc}: {log.read_text()}")
        yield Sshd(d, port, ssh_bin, log, names, daemon_log, daemon)
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=10)
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(d, ignore_errors=True)
        if created_privsep:
            shutil.rmtree("/run/sshd", ignore_errors=True)


def _key(sshd: Sshd, label: str, private: Any) -> str:
    return write_private(sshd.dir / f"id_{label}", private)


def _ok(result: subprocess.CompletedProcess[str], sshd: Sshd) -> None:
    assert result.returncode == 0, f"{result.stderr}\n--- sshd log ---\n{sshd.log.read_text()}"
    assert result.stdout == "logged-in\n"


def _refused(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr
    assert "logged-in" not in result.stdout


def test_published_key_logs_in(world: World, sshd: Sshd) -> None:
    _ok(sshd.login(_key(sshd, "alice", world.keys["alice"])), sshd)
    assert "Accepted publickey for root" in sshd.log.read_text()
    assert f"as {ALICE}" in sshd.decisions()  # dance's verdict (hook stderr via sshd -e, or daemon)


def test_full_spki_record_ecdsa(world: World, sshd: Sshd) -> None:
    _ok(sshd.login(_key(sshd, "carol", world.keys["carol"])), sshd)


def test_unpublished_key_refused(sshd: Sshd) -> None:
    _refused(sshd.login(_key(sshd, "stranger", ed25519.Ed25519PrivateKey.generate())))


def test_name_outside_names_file_refused(world: World, sshd: Sshd) -> None:
    """BOB's key is published (at bob._user.example.test), but root lists only ALICE, CAROL."""
    _refused(sshd.login(_key(sshd, "bob", world.keys["bob"])))


def test_removed_record_refused(world: World, sshd: Sshd) -> None:
    key = _key(sshd, "alice2", world.keys["alice"])
    _ok(sshd.login(key), sshd)
    world.users.remove("alice", "TLSA")
    world.resign()
    try:
        if sshd.daemon is not None:
            # the daemon's cache holds the answer for its TTL (the revocation bound) ...
            _ok(sshd.login(key), sshd)
            sshd.flush()  # ... unless the operator flushes it (SIGHUP)
        _refused(sshd.login(key))
    finally:
        world.users.add("alice", "TLSA", ssh_tlsa_record(to_key(world.keys["alice"])).to_text())
        world.resign()
        sshd.flush()  # the daemon remembers the absence for a few seconds (negative TTL)
    _ok(sshd.login(key), sshd)


def test_names_file_edit_revokes(world: World, sshd: Sshd) -> None:
    """Authorization is the names file: dropping ALICE refuses her key at once."""
    key = _key(sshd, "alice3", world.keys["alice"])
    sshd.names.write_text(f"root: {CAROL}\n")
    try:
        _refused(sshd.login(key))
    finally:
        sshd.names.write_text(f"root: {ALICE}, {CAROL}\n")
    _ok(sshd.login(key), sshd)


def test_fingerprint_and_tlsa_agree_with_ssh_keygen(tmp_path: Path) -> None:
    """Our fingerprint is sshd's; `dance ssh-tlsa` reads what ssh-keygen writes (all types)."""
    keygen = require_binary("ssh-keygen")
    from dance.ssh import parse_public_key_line

    for kind, bits in (("ed25519", ""), ("ecdsa", "384"), ("rsa", "3072")):
        path = tmp_path / f"id_{kind}"
        extra = ["-b", bits] if bits else []
        subprocess.run([keygen, "-q", "-t", kind, *extra, "-N", "", "-f", str(path)], check=True)
        key = parse_public_key_line((tmp_path / f"id_{kind}.pub").read_text())
        listed = subprocess.run(
            [keygen, "-l", "-E", "sha256", "-f", str(path) + ".pub"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert listed[1] == key.fingerprint
        # ssh-keygen -e -m PKCS8 exports the same SubjectPublicKeyInfo
        pkcs8 = subprocess.run(
            [keygen, "-e", "-m", "PKCS8", "-f", str(path) + ".pub"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if kind == "ed25519" and pkcs8.returncode != 0:
            continue  # OpenSSH 9.2 cannot export Ed25519 as PKCS8 (the vector test covers it)
        assert "BEGIN PUBLIC KEY" in pkcs8.stdout, pkcs8.stderr
        der = base64.b64decode("".join(pkcs8.stdout.strip().splitlines()[1:-1]))
        assert der == key.spki
