"""The key daemon (`dance ssh-keys-daemon`) and the fast hook (`dance-ssh-keys --socket`), as real
processes, plus the sans-I/O request/reply protocol."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dance.ssh.protocol import (
    MAGIC,
    ProtocolError,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from dance.testkit import Fault
from tests.ssh.common import ALICE, CAROL, World, ssh_pub

BIN = Path(sys.executable).parent
HOOK = str(BIN / "dance-ssh-keys")
DANCE = str(BIN / "dance")


# -- protocol (no sockets) -------------------------------------------------------------------


def test_request_round_trip_and_refusals() -> None:
    line = encode_request("alice", "ssh-ed25519", "AAAAC3Nz")
    assert line == f"{MAGIC}\talice\tssh-ed25519\tAAAAC3Nz\n".encode()
    assert decode_request(line) == ("alice", "ssh-ed25519", "AAAAC3Nz")
    for bad in (
        b"DANCE-SSH-KEYS/1\talice\tssh-ed25519\tAAAA",  # no LF
        b"DANCE-SSH-KEYS/2\talice\tssh-ed25519\tAAAA\n",  # other version
        b"DANCE-SSH-KEYS/1\talice\tssh-ed25519\n",  # a field missing
        b"DANCE-SSH-KEYS/1\tal ice\tssh-ed25519\tAAAA\n",  # space in a field
        b"DANCE-SSH-KEYS/1\talice\tssh-ed25519\tAA\tAA\n",  # a field too many
        b"DANCE-SSH-KEYS/1\t\xc3\xa9\tssh-ed25519\tAAAA\n",  # not ASCII
        b"DANCE-SSH-KEYS/1\talice\tssh-ed25519\tAAAA\r\n",  # CR in a field
        b"DANCE-SSH-KEYS/1\talice\tssh-ed25519\t" + b"A" * 20000 + b"\n",  # too long
    ):
        with pytest.raises(ProtocolError):
            decode_request(bad)
    with pytest.raises(ProtocolError):
        encode_request("al\tice", "ssh-ed25519", "AAAA")


def test_reply_round_trip_and_refusals() -> None:
    assert decode_reply(encode_reply("ssh-ed25519 AAAA dance:x")) == (
        "OK",
        "ssh-ed25519 AAAA dance:x",
    )
    assert decode_reply(encode_reply(None)) == ("NO", "")
    assert decode_reply(encode_reply(None, "internal-error")) == ("ERR", "internal-error")
    for bad in (b"", b"OK\n", b"MAYBE\tx\n", b"OK\ta\nOK\tb\n", b"NO"):
        with pytest.raises(ProtocolError):
            decode_reply(bad)
    with pytest.raises(ProtocolError):
        encode_reply("two\nlines")


@given(st.binary(max_size=300))
def test_decode_request_never_raises_anything_else(data: bytes) -> None:
    try:
        user, keytype, blob = decode_request(data)
    except ProtocolError:
        return
    assert encode_request(user, keytype, blob) == data  # what is accepted is canonical


# -- the daemon and the hook as processes ----------------------------------------------------


def _wait_socket(path: Path, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited: {proc.communicate()[1]}")
        if path.exists():
            return
        time.sleep(0.05)
    raise AssertionError("daemon did not create its socket")


@pytest.fixture
def daemon(world: World, tmp_path: Path) -> Iterator[tuple[Path, list[str], subprocess.Popen[str]]]:
    names = tmp_path / "names"
    names.write_text(f"root: {ALICE}, {CAROL}\n")
    names.chmod(0o644)
    anchor = tmp_path / "anchor.txt"
    anchor.write_text(world.anchor_text)
    options = [
        "--names-file", str(names),
        "--server", f"{world.dns[0]}:{world.dns[1]}",
        "--trust-anchor", str(anchor),
    ]  # fmt: skip
    sock = tmp_path / "keys.sock"
    proc = subprocess.Popen(
        [DANCE, "ssh-keys-daemon", "--socket", str(sock), "--max-connections", "4", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_socket(sock, proc)
        yield sock, options, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _hook(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HOOK, *args], capture_output=True, text=True, timeout=60)


def test_hook_asks_the_daemon(
    world: World, daemon: tuple[Path, list[str], subprocess.Popen[str]]
) -> None:
    sock, _, proc = daemon
    keytype, blob = ssh_pub(world.keys["alice"])
    out = _hook("--socket", str(sock), "root", keytype, blob)
    assert (out.returncode, out.stdout) == (0, f"{keytype} {blob} dance:{ALICE}\n"), out.stderr
    assert out.stderr == ""  # the daemon logs, not the hook
    # an unpublished key, a key published for a name root does not list, an account without names
    for key, user in (("mallory", "root"), ("bob", "root"), ("alice", "nobody")):
        keytype, blob = ssh_pub(world.keys[key])
        out = _hook("--socket", str(sock), user, keytype, blob)
        assert (out.returncode, out.stdout) == (0, ""), (key, user, out.stderr)
    # a forged blob and a type mismatch are refused without a traceback anywhere
    out = _hook("--socket", str(sock), "root", "ssh-ed25519", "AAAA")
    assert (out.returncode, out.stdout) == (0, "")
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert "accepted ssh-ed25519" in err and "Traceback" not in err
    # the access log: one line per decision, with the asking process's uid
    access = [line for line in err.splitlines() if " ssh-keys uid=" in line]
    assert any(f" {ALICE} accepted reason=- dns=secure" in line for line in access), err
    assert any("rejected reason=no-match dns=secure" in line for line in access), err
    assert any("user=nobody rejected reason=not-allowed" in line for line in access), err
    assert not sock.exists()  # removed on SIGTERM


def test_bogus_dns_refuses_through_the_daemon(
    world: World, daemon: tuple[Path, list[str], subprocess.Popen[str]]
) -> None:
    sock, _, _ = daemon
    keytype, blob = ssh_pub(world.keys["alice"])
    with world.zones.inject(Fault("bad-signature", ALICE)):
        out = _hook("--socket", str(sock), "root", keytype, blob)
    assert (out.returncode, out.stdout) == (0, "")


def test_daemon_survives_garbage_slow_and_excess_clients(
    world: World, daemon: tuple[Path, list[str], subprocess.Popen[str]]
) -> None:
    sock, _, proc = daemon
    garbage = socket.socket(socket.AF_UNIX)
    garbage.connect(str(sock))
    garbage.sendall(b"GET / HTTP/1.1\r\n\r\n")
    garbage.shutdown(socket.SHUT_WR)
    assert garbage.recv(100).startswith(b"ERR\tmalformed-request")
    garbage.close()
    holders = []
    for i in range(6):  # over --max-connections 4: idle and slowloris (half a line) clients
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(sock))
        if i % 2:
            s.sendall(b"DANCE-SSH-KEYS/1\troot")
        holders.append(s)
        time.sleep(0.05)  # in order: the oldest first
    # every slot is held: the connections that waited longest for their line made room
    for s in holders[:2]:
        s.settimeout(5)
        with contextlib.suppress(ConnectionResetError):  # a reset is a close too
            assert s.recv(10) == b""
    # a real hook still gets its answer while the holders keep every other slot
    keytype, blob = ssh_pub(world.keys["carol"])
    for _ in range(3):
        out = _hook("--socket", str(sock), "root", keytype, blob)
        assert out.stdout == f"{keytype} {blob} dance:{CAROL}\n", out.stderr
    for s in holders:
        s.close()
    assert proc.poll() is None
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err


def test_hook_falls_back_in_process_when_no_daemon(world: World, tmp_path: Path) -> None:
    names = tmp_path / "names"
    names.write_text(f"root: {ALICE}\n")
    names.chmod(0o644)
    anchor = tmp_path / "anchor.txt"
    anchor.write_text(world.anchor_text)
    keytype, blob = ssh_pub(world.keys["alice"])
    out = _hook(
        "--socket", str(tmp_path / "absent.sock"), "--names-file", str(names),
        "--server", f"{world.dns[0]}:{world.dns[1]}", "--trust-anchor", str(anchor),
        "root", keytype, blob,
    )  # fmt: skip
    assert out.stdout == f"{keytype} {blob} dance:{ALICE}\n", out.stderr
    assert "no key daemon at" in out.stderr and "Traceback" not in out.stderr
