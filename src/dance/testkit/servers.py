"""Real DNS servers from Debian packages, started on loopback high ports for tests and benchmarks.

Knot DNS as the authoritative server with online signing (and a TSIG-updatable primary), Unbound
as the validating resolver. Each ``start_*`` returns a handle whose ``stop()`` terminates the
process; callers stop every server they start. Part of the test kit, so that benchmarks under
``bench/`` and users' own tests can use it without the project's test package.

A missing binary raises `MissingServer`; the project's test suite turns that into a skip (or a
failure under ``DANCE_REQUIRE_INTEGRATION=1``) by setting `BINARY_FINDER`.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype

from dance.tsig import TSIGKey


class MissingServer(RuntimeError):
    """A server binary (knotd, unbound, ...) is not installed."""


def find_binary(*names: str) -> str:
    """The path of the first of ``names`` on PATH or in the sbin directories."""
    for name in names:
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
        if path:
            return path
    raise MissingServer(f"integration binary not found: {' or '.join(names)}")


# How binaries are found; a test suite may swap in its own (skip or fail instead of raising).
BINARY_FINDER: Callable[..., str] = find_binary


def require_binary(*names: str) -> str:
    return BINARY_FINDER(*names)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A port P with P+1 free too (``--workers``: worker i serves its metrics at P+i)."""
    for _ in range(100):
        port = free_port(host)
        with socket.socket() as probe:
            try:
                probe.bind((host, port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if ``process`` has not exited within ``timeout`` seconds (nothing if
    it has exited already); its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return int(process.returncode)


@dataclass
class Proc:
    """A server process started by a test, with its port and log file."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        stop_process(self.process)

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


class Server(Proc):
    """A DNS server process with its working directory."""

    def __init__(
        self, process: subprocess.Popen[bytes], port: int, workdir: Path, log: Path
    ) -> None:
        super().__init__(process, port, log)
        self.workdir = workdir


def _wait_for(port: int, qname: str, rdtype: str, server: Server, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    query = dns.message.make_query(qname, rdtype, want_dnssec=True)
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.logs()}")
        with contextlib.suppress(Exception):
            answer = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
            if answer.answer and any(r.rdtype == dns.rdatatype.RRSIG for r in answer.answer):
                return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} not ready for {qname} {rdtype}:\n{server.logs()}")


@dataclass
class KnotZone:
    name: str  # without trailing dot
    text: str  # zone file body ($ORIGIN is added)
    nsec3: bool = False
    signed: bool = True


def start_knot(
    workdir: Path,
    zones: Sequence[KnotZone],
    *,
    update_key: TSIGKey | None = None,
    workers: int = 1,
) -> Server:
    """Start knotd serving and online-signing ``zones`` (ECDSA P-256). With ``update_key``, the
    zones accept RFC 2136 updates signed with that TSIG key."""
    knotd = require_binary("knotd")
    port = free_port()
    (workdir / "db").mkdir(parents=True, exist_ok=True)
    for zone in zones:
        (workdir / f"{zone.name}.zone").write_text(f"$ORIGIN {zone.name}.\n$TTL 300\n{zone.text}\n")
    zone_conf = "\n".join(
        f"  - domain: {z.name}.\n    file: {workdir}/{z.name}.zone\n"
        + (
            f"    dnssec-signing: on\n    dnssec-policy: {'nsec3' if z.nsec3 else 'nsec'}"
            if z.signed
            else "    dnssec-signing: off"
        )
        + ("\n    acl: update" if update_key is not None else "")
        for z in zones
    )
    tsig = ""
    if update_key is not None:
        tsig = f"""key:
  - id: {update_key.name}.
    algorithm: {update_key.algorithm}
    secret: {update_key.secret_b64()}
acl:
  - id: update
    key: {update_key.name}.
    action: update
"""
    conf = workdir / "knot.conf"
    conf.write_text(
        f"""server:
    rundir: "{workdir}"
    listen: 127.0.0.1@{port}
    background-workers: 1
    tcp-workers: {workers}
    udp-workers: {workers}
    tcp-max-clients: 256
log:
  - target: stderr
    any: info
database:
    storage: "{workdir}/db"
{tsig}policy:
  - id: nsec
    algorithm: ecdsap256sha256
    rrsig-lifetime: 14d
    rrsig-refresh: 7d
  - id: nsec3
    algorithm: ecdsap256sha256
    nsec3: on
    nsec3-iterations: 0
    nsec3-salt-length: 0
    rrsig-lifetime: 14d
    rrsig-refresh: 7d
template:
  - id: default
    storage: "{workdir}"
    journal-content: all
    zonefile-sync: -1
    semantic-checks: off
zone:
{zone_conf}
"""
    )
    log = workdir / "knot.log"
    with log.open("wb") as out:
        process = subprocess.Popen([knotd, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, port, workdir, log)
    try:
        for zone in zones:
            if zone.signed:
                _wait_for(port, zone.name + ".", "DNSKEY", server)
    except Exception:
        server.stop()
        raise
    return server


def knotc(server: Server, *args: str) -> str:
    knotc_bin = require_binary("knotc")
    out = subprocess.run(
        [knotc_bin, "-c", str(server.workdir / "knot.conf"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"knotc {' '.join(args)} failed: {out.stdout}{out.stderr}")
    return out.stdout


def dnskey_anchor(port: int, zone: str) -> str:
    """The KSK (flags 257) of ``zone`` as a trust-anchor line (DNSKEY presentation form)."""
    query = dns.message.make_query(zone + ".", "DNSKEY", want_dnssec=True)
    answer = dns.query.tcp(query, "127.0.0.1", port=port, timeout=2)
    lines = []
    for rrset in answer.answer:
        if rrset.rdtype == dns.rdatatype.DNSKEY:
            lines += [f"{zone}. IN DNSKEY {rd.to_text()}" for rd in rrset if rd.flags == 257]
    if not lines:
        raise RuntimeError(f"no KSK for {zone}")
    return "\n".join(lines) + "\n"


def child_ds(port: int, child: str) -> list[str]:
    """DS (SHA-256) of the child's KSK, as presentation RDATA."""
    import dns.dnssec
    import dns.name

    query = dns.message.make_query(child + ".", "DNSKEY", want_dnssec=True)
    answer = dns.query.tcp(query, "127.0.0.1", port=port, timeout=2)
    out = []
    for rrset in answer.answer:
        if rrset.rdtype == dns.rdatatype.DNSKEY:
            for rd in rrset:
                if rd.flags == 257:
                    out.append(
                        dns.dnssec.make_ds(dns.name.from_text(child + "."), rd, "SHA256").to_text()
                    )
    return out


def start_unbound(
    workdir: Path, anchor_text: str, stubs: dict[str, int], *, extra: str = ""
) -> Server:
    """Start a validating Unbound that trusts ``anchor_text`` and reaches ``stubs`` zones at the
    given loopback ports. ``extra`` is added to the ``server:`` clause (indented lines, e.g.
    ``    val-override-date: "20300101000000"``)."""
    unbound = require_binary("unbound")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    anchor = workdir / "anchor.txt"
    anchor.write_text(anchor_text)
    stub_conf = "\n".join(
        f'stub-zone:\n    name: "{zone}."\n    stub-addr: 127.0.0.1@{stub_port}\n'
        for zone, stub_port in stubs.items()
    )
    local_zones = "\n".join(
        f'    local-zone: "{zone.rsplit(".", 1)[-1]}." nodefault' for zone in stubs
    )
    conf = workdir / "unbound.conf"
    conf.write_text(
        f"""server:
    interface: 127.0.0.1@{port}
    port: {port}
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{workdir}"
    pidfile: "{workdir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    do-ip6: no
    do-not-query-localhost: no
    module-config: "validator iterator"
    trust-anchor-file: "{anchor}"
    access-control: 127.0.0.0/8 allow
    incoming-num-tcp: 64
    val-log-level: 2
    num-threads: 1
{extra}
{local_zones}
{stub_conf}
"""
    )
    log = workdir / "unbound.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [unbound, "-d", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(process, port, workdir, log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"unbound exited:\n{server.logs()}")
        with contextlib.suppress(Exception):
            dns.query.udp(dns.message.make_query(".", "NS"), "127.0.0.1", port=port, timeout=0.3)
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"unbound not ready:\n{server.logs()}")


# --- a TSIG-updatable Knot primary (provisioning tests and benchmarks) ----------------------

SOA = "@ SOA ns1 hostmaster 1 3600 600 86400 5"


@dataclass
class Primary:
    server: Server
    zone: str
    key: TSIGKey
    key_file: Path
    anchor_file: Path

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.server.port)

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.server.port}"


def start_primary(
    workdir: Path, zone: str = "example.test", extra: str = "", more_zones: Sequence[str] = ()
) -> Primary:
    """Knot serving ``zone`` (and ``more_zones``, e.g. fleet shard zones), all signed online and
    updatable with the returned TSIG key."""
    workdir.mkdir(parents=True, exist_ok=True)
    key = TSIGKey("dance-update", "hmac-sha256", bytes(range(32)))
    key_file = workdir / "update.key"
    key_file.write_text(
        f'key "{key.name}" {{\n    algorithm hmac-sha256;\n    secret "{key.secret_b64()}";\n}};\n'
    )
    key_file.chmod(0o600)
    base = f"{SOA}\n@ NS ns1\nns1 A 127.0.0.1\n"
    zones = [KnotZone(zone, base + extra)] + [KnotZone(other, base) for other in more_zones]
    server = start_knot(workdir, zones, update_key=key, workers=2)
    try:
        anchor_file = workdir / "anchor.txt"
        anchor_file.write_text(dnskey_anchor(server.port, zone))
    except Exception:
        server.stop()
        raise
    return Primary(server, zone, key, key_file, anchor_file)
