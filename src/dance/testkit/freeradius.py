"""A real FreeRADIUS (Debian ``freeradius``) behind ``dance radsec-proxy``, for tests and the demo.

The configuration is `dance.radius.freeradius.freeradius_config` (the one docs/radsec.md shows):
UDP authentication on a free loopback port and accounting on the next one, the proxy as its only
client with the loopback ``secret``, a policy that rejects requests without ``DANCE-Client-Name``
or with a name outside ``allowed_suffix``, PAP ``users``, and a ``detail`` file with every request
as FreeRADIUS decoded it (`RadiusBackend.packets`).

    with RadiusBackend(d, secret="s3cret", users={"bob": "pw"}, allowed_suffix="._nas.test") as r:
        config = RadsecProxyConfig(("127.0.0.1", r.port), backend_secret=b"s3cret")
        ...
        r.packets()[-1]["DANCE-Client-Name"] == ['"ap1._nas.test"']

(`dance.testkit.eapol.FreeRadius` is the other FreeRADIUS of the kit: EAP-TLS with a verify hook.)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from dance.radius.freeradius import freeradius_config
from dance.testkit import servers

__all__ = ["RadiusBackend", "free_udp_pair", "have_freeradius"]


def have_freeradius() -> bool:
    return bool(
        shutil.which("freeradius", path="/usr/sbin:/usr/bin")
        or shutil.which("radiusd", path="/usr/sbin:/usr/bin")
    )


def free_udp_pair(host: str = "127.0.0.1") -> int:
    """A UDP port P with P+1 free too (FreeRADIUS: authentication on P, accounting on P+1)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first:
            first.bind((host, 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second:
                try:
                    second.bind((host, port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free UDP ports")


@dataclass
class RadiusBackend:
    """FreeRADIUS in ``directory`` (created, mode 0700); ``start()`` or ``with`` runs it."""

    directory: Path
    secret: str = field(repr=False)
    users: dict[str, str]
    allowed_suffix: str
    port: int = 0  # 0: a free pair of UDP ports
    host: str = "127.0.0.1"
    proc: servers.Proc | None = field(default=None, repr=False)

    def start(self, timeout: float = 30.0) -> RadiusBackend:
        binary = servers.BINARY_FINDER("freeradius", "radiusd")
        d = Path(self.directory)
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
        if not self.port:
            self.port = free_udp_pair(self.host)
        freeradius_config(
            d, self.port, self.secret, users=self.users, allowed_suffix=self.allowed_suffix,
            host=self.host,
        )  # fmt: skip
        log = d / "stdout.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [binary, "-f", "-X", "-l", "stdout", "-d", str(d), "-n", "radiusd"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self.proc = servers.Proc(process, self.port, log)
        deadline = time.monotonic() + timeout
        while "Ready to process requests" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                logs = self.proc.logs()
                self.stop()
                raise RuntimeError(f"FreeRADIUS did not start:\n{logs}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.process.poll() is None

    def logs(self) -> str:
        return self.proc.logs() if self.proc is not None else ""

    def detail(self) -> str:
        try:
            return (Path(self.directory) / "detail").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def packets(self) -> list[dict[str, list[str]]]:
        """The requests FreeRADIUS received, as it decoded them (one dict per packet:
        attribute name -> its values as the detail file prints them, strings in quotes)."""
        out: list[dict[str, list[str]]] = []
        for block in self.detail().split("\n\n"):
            attrs: dict[str, list[str]] = {}
            for line in block.splitlines()[1:]:
                name, sep, value = line.strip().partition(" = ")
                if sep:
                    attrs.setdefault(name, []).append(value)
            if attrs:
                out.append(attrs)
        return out

    def __enter__(self) -> RadiusBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
