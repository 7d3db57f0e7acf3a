"""The cost of one `dance ssh-keys-command` decision vs a static authorized_keys lookup.

sshd runs the AuthorizedKeysCommand once per offered key, as a new process, so the figure that
matters is the wall time of one invocation (interpreter start + imports + DNSSEC-validated
lookup against a loopback server). The peer is what sshd does without it: scan an
authorized_keys file for the offered key (measured here in-process, in Python, with 100 keys:
sshd's C scan is faster still), and the floor of any Python command (`python -c pass`).

    .venv/bin/python bench/bench_ssh.py
"""

from __future__ import annotations

import asyncio
import base64
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from dance.auth import Authenticator
from dance.dns import TLSAResolver, TrustAnchors
from dance.ssh import authorize, ssh_tlsa_record
from dance.testkit import Hierarchy, ServerThread

NAME = "alice._user.example.test"
SRC = Path(__file__).resolve().parents[1] / "src"


def pub(private: ed25519.Ed25519PrivateKey) -> tuple[str, str]:
    line = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    keytype, blob = line.decode().split()[:2]
    return keytype, blob


def row(label: str, times: list[float]) -> None:
    med = statistics.median(times)
    print(f"{label:<58} median {med * 1000:9.3f} ms   min {min(times) * 1000:9.3f} ms")


def main() -> None:
    import argparse

    from benchlib import Results, alternating, wall
    from dance.ssh import ssh_key_to_spki

    parser = argparse.ArgumentParser(description="dance SSH key hook benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (make bench-quick)")
    args = parser.parse_args()
    k = 3 if args.quick else 1
    alice = ed25519.Ed25519PrivateKey.generate()
    keytype, blob = pub(alice)
    zones = Hierarchy("test.", ttl=60)
    zones.child("example.test.")
    users = zones.child("_user.example.test.")
    users.add(NAME + ".", "TLSA", ssh_tlsa_record(ssh_key_to_spki(keytype, blob)).to_text())
    zones.sign(algorithm=13, denial="nsec3")
    anchor_text = zones.export_trust_anchor()
    anchors = TrustAnchors.from_text(anchor_text)

    with tempfile.TemporaryDirectory() as tmp, ServerThread(zones) as server:
        d = Path(tmp)
        (d / "anchor").write_text(anchor_text)
        names = d / "names"
        names.write_text(f"root: {NAME}\n")
        keys = [pub(ed25519.Ed25519PrivateKey.generate()) for _ in range(99)] + [(keytype, blob)]
        ak = d / "authorized_keys"
        ak.write_text("".join(f"{t} {b} user{i}@host\n" for i, (t, b) in enumerate(keys)))

        def static_lookup() -> None:
            want = base64.b64decode(blob)
            for line in ak.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 2 and base64.b64decode(parts[1]) == want:
                    return
            raise AssertionError("not found")

        async def in_process_many(n: int) -> list[float]:
            out = []
            async with TLSAResolver(
                server.address, anchors=anchors, recursion_desired=False
            ) as resolver:
                for _ in range(n):
                    resolver.flush()  # a fresh process has no cache
                    auth = Authenticator(resolver, allow=[NAME])
                    start = time.perf_counter()
                    result = await authorize(auth, "root", keytype, blob, [NAME])
                    out.append(time.perf_counter() - start)
                    assert result.accepted
            return out

        cmd = [
            sys.executable, "-m", "dance.cli", "ssh-keys-command", "root", keytype, blob,
            "--names-file", str(names), "--server", f"{server.address[0]}:{server.address[1]}",
            "--trust-anchor", str(d / "anchor"),
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(SRC))

        def command() -> None:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            assert done.stdout.startswith(keytype), done.stderr

        def python_floor() -> None:
            subprocess.run([sys.executable, "-c", "pass"], check=True)

        # as after `pip install` (which compiles every module): a hook that compiled its modules
        # at every call (PYTHONDONTWRITEBYTECODE=1 in some shells) would measure the compiler
        compileall.compile_dir(str(SRC / "dance"), quiet=1)
        sock = d / "keys.sock"
        daemon = subprocess.Popen(
            [sys.executable, "-m", "dance.cli", "ssh-keys-daemon", "--socket", str(sock),
             *cmd[cmd.index("--names-file"):]],
            env=env, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        hook = Path(sys.executable).with_name("dance-ssh-keys")
        hook_cmd = [str(hook), "--socket", str(sock), "root", keytype, blob]

        def hook_call() -> None:
            done = subprocess.run(hook_cmd, capture_output=True, text=True, check=True)
            assert done.stdout.startswith(keytype), done.stderr

        try:
            deadline = time.monotonic() + 30
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            hook_call()  # the first call fills the daemon's cache
            print("one SSH key decision (Ed25519, TLSA 3 1 1, NSEC3-signed zone on loopback)\n")
            row(
                "peer: authorized_keys scan, 100 keys (in-process Python)",
                wall(static_lookup, 200),
            )
            row(
                "dance authorize(), in-process, no cache (lookup+validate)",
                asyncio.run(in_process_many(50)),
            )
            slow = wall(command, 10 // k)
            row("dance ssh-keys-command, one process, in-process check", slow)
            # in turn, so that both see the same load on a shared machine
            times = alternating({"floor": python_floor, "hook": hook_call}, 60 // k)
            floor, fast = times["floor"], times["hook"]
            row("floor: `python -c pass` process (alternating with the hook)", floor)
            row("dance-ssh-keys --socket (what sshd runs), warm daemon", fast)
            med, base = statistics.median(fast), statistics.median(floor)
            print(
                f"\nhook with daemon: {med * 1000:.1f} ms median (target <= 30 ms), "
                f"{(med - base) * 1000:.1f} ms above `python -c pass` in the same run "
                f"(load average {os.getloadavg()[0]:.1f})"
            )
            out = Results("bench_ssh", quick=args.quick)
            out.add("dance-ssh-keys --socket, warm daemon, one call", med * 1000, "ms",
                    peer="python -c pass", peer_value=base * 1000, target="<= 30")  # fmt: skip
            out.add("dance ssh-keys-command, in-process check, one call",
                    statistics.median(slow) * 1000, "ms", peer="python -c pass",
                    peer_value=base * 1000)  # fmt: skip
            out.write()
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)


if __name__ == "__main__":
    main()
