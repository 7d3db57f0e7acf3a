"""The embedded authority (``dance authority``) as a test subject: a zone directory holding a
small signed test zone, and the server started in its own process.

Used by the project's authority tests and by ``bench/bench_authority.py``; part of the test kit
so that benchmarks and users' own tests do not need the project's test package::

    from dance.testkit.authority import make_zone_dir, serve
    from dance.testkit.servers import free_port
    from dance.tsig import generate_tsig_key, write_tsig_key

    zone_dir, anchor = make_zone_dir(tmp, "nsec3", names=3000)
    key = generate_tsig_key("update-key")
    write_tsig_key(tmp / "update.key", key)
    server = serve(zone_dir, tmp / "update.key", free_port(), tmp / "authority.log")
    try:
        ...  # queries and TSIG updates to 127.0.0.1:server.port
    finally:
        server.stop()
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import dns.name

import dance
from dance.authority.store import Denial, ZoneDir, trust_anchor_text
from dance.testkit.servers import Proc

__all__ = [
    "H1",
    "H2",
    "ZONE",
    "AuthorityStartFailed",
    "make_zone_dir",
    "python_env",
    "serve",
]

#: The test zone.
ZONE = "example.test."
#: TLSA certificate association data (SHA-256 length): ``sensor7._device`` holds ``3 1 1 H1``.
H1 = "ab" * 32
#: Another one, for tests that add or replace a record.
H2 = "cd" * 32

_SERVING = re.compile(rb"dance authority: serving .* on (\S+) port (\d+) ")


class AuthorityStartFailed(RuntimeError):
    """``dance authority`` exited, or did not serve its zones within the timeout."""


def make_zone_dir(
    directory: Path,
    denial: str = "nsec",
    algorithm: int = 13,
    *,
    names: int = 0,
) -> tuple[Path, str]:
    """A zone directory ``directory/zones`` with ``example.test.`` and new signing keys.

    The zone holds its SOA, NS and ``ns1`` address, ``sensor7._device.example.test. TLSA
    3 1 1 H1``, ``www.example.test. A 192.0.2.1`` and ``names`` more TLSA names
    ``d0._device`` ... ``d{names-1}._device`` (``3 1 1`` and the index in hexadecimal).
    ``denial`` is ``"nsec"`` or ``"nsec3"``; ``algorithm`` 13 (ECDSA P-256) or 15 (Ed25519).

    Returns the directory and the zone's trust anchor (DS and DNSKEY lines, the format of
    :class:`dance.dns.TrustAnchors` and Unbound's ``trust-anchor-file``). Raises `ValueError`
    for another denial or a negative ``names``, :class:`dance.authority.AuthorityError` for
    an unsupported algorithm.
    """
    if denial not in ("nsec", "nsec3"):
        raise ValueError(f"denial must be 'nsec' or 'nsec3', not {denial!r}")
    if names < 0:
        raise ValueError(f"names must be >= 0, not {names}")
    origin = dns.name.from_text(ZONE)
    zone_dir = directory / "zones"
    store = ZoneDir(zone_dir)
    policy = store.init_zone(origin, denial=cast(Denial, denial), algorithm=algorithm)
    with store.zone_path(origin).open("a") as out:
        out.write(f"sensor7._device.{ZONE} 300 IN TLSA 3 1 1 {H1}\n")
        out.write(f"www.{ZONE} 300 IN A 192.0.2.1\n")
        for i in range(names):
            out.write(f"d{i}._device.{ZONE} 300 IN TLSA 3 1 1 {i:064x}\n")
    return zone_dir, trust_anchor_text(origin, policy.keys, 300)


def python_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child Python process that must import this ``dance`` package
    (``python -m dance.cli ...``): ``base`` (default: this process's environment) with the
    directory holding the package first on ``PYTHONPATH``, so that it works from a source tree
    (``sys.path`` insert of ``src/``) as well as from an installed wheel."""
    env = dict(os.environ if base is None else base)
    root = str(Path(dance.__file__).resolve().parents[1])
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join([root, *rest])
    return env


def serve(
    zone_dir: Path,
    key_file: Path,
    port: int,
    log: Path,
    *,
    extra_args: Sequence[str] = (),
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> Proc:
    """Start ``dance authority`` serving ``zone_dir`` on ``127.0.0.1:port`` (UDP and TCP) with
    the TSIG keys of ``key_file``, and return once it serves (its zones are loaded and signed).

    Standard output and error go to ``log``. ``extra_args`` are added to the command line
    (e.g. ``("--notify", "127.0.0.1:5300")``). The returned handle's ``port`` is the port
    the server reports; ``stop()`` terminates it (the caller stops every server it starts),
    ``process`` is the :class:`subprocess.Popen` (e.g. to ``send_signal(SIGKILL)``).

    Raises `AuthorityStartFailed` (with the end of the log) if the process exits first or does
    not report serving within ``timeout`` seconds; the process is killed then.
    """
    command = [
        sys.executable, "-m", "dance.cli", "authority", "--zone-dir", str(zone_dir),
        "--listen", f"127.0.0.1:{port}", "--tsig-key-file", str(key_file), *extra_args,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=python_env(env)
        )
    handle = Proc(process, port, log)
    deadline = time.monotonic() + timeout
    while True:
        match = _SERVING.search(_read(log))
        if match is not None:
            handle.port = int(match.group(2))
            if port and handle.port != port:
                handle.stop()
                raise AuthorityStartFailed(
                    f"dance authority serves port {handle.port}, not {port}:\n{handle.logs()}"
                )
            return handle
        if process.poll() is not None:
            raise AuthorityStartFailed(
                f"dance authority exited with status {process.returncode} before serving:\n"
                f"{handle.logs()}"
            )
        if time.monotonic() > deadline:
            process.kill()
            process.wait(timeout=10)
            raise AuthorityStartFailed(
                f"dance authority did not serve within {timeout:g} s:\n{handle.logs()}"
            )
        time.sleep(0.05)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
