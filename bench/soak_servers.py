"""Load, abuse and faults against the other long-running servers: `dance agent`,
`dance ssh-keys-daemon`, `dance authority` and `dance smtp-proxy` (`dance proxy` has
bench/soak_tls.py).

    .venv/bin/python bench/soak_servers.py
        [--server agent|ssh-keys-daemon|authority|smtp-proxy|all]
        [--phase-seconds 15] [--holders 100] [--rounds 3] [--json]

Each server runs in its own process and carries a steady stream of legitimate clients (two at
a time, from 127.0.0.2 where the transport has addresses) while it gets, phase by phase:

* burst: connections that close at once (FIN) or reset (RST), as fast as one client can;
* slowloris: connections sending the first bytes of a request (an HTTP head, an SSH key line,
  a DNS length prefix) then one byte every 0.5 s;
* idle: connections that send nothing;
* never-read: connections that pipeline whole requests and never read the answers;
* DNS faults, for the servers that look identities up (agent, ssh-keys-daemon): the DNS server
  slow (answers delayed), then stopped and started again on the same port. The legitimate
  clients' identities are cached: they must keep being served; after the fault a client is
  served within 1 s.

The authority's legitimate clients are UDP and TCP queries and TSIG-signed dynamic updates (each
update's record must then be served).

The SMTP proxy's legitimate clients are sending MTAs: EHLO, STARTTLS with dane_clientid (cached
identity), EHLO, MAIL, RCPT to a relayed domain, DATA, QUIT, through the proxy to a small SMTP
sink in its own process (it offers XCLIENT and lets a RCPT to the relayed domain through only
after XCLIENT LOGIN, like Postfix's permit_sasl_authenticated). Its slowloris clients drip a
command line, its never-reading clients send one EHLO every 0.05 s and read nothing, and it has
one more fault: `backend down` (the sink stopped, then started again on the same port). While
the backend is down, a legitimate client's success is a fast typed refusal (451/421 from the
proxy); after it is back, a client must be served within 1 s.

After each phase: the server's descriptors back to their baseline and the next legitimate client
served; the server's RSS after a short settle. With ``--rounds N`` all phases run N times and
the last round's end RSS must be within 10% of the first round's end (a leak check). Pass rules
(per phase): legitimate success >= 99% and p99 < 1 s, descriptors back, next client served;
at the end, exit status 0 on SIGTERM and no traceback in the server's log. Exit status 1 if any
rule failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rcode  # noqa: E402
import dns.update  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # noqa: E402

from benchlib import serve_until_sigterm  # noqa: E402
from dance import certs, make_record  # noqa: E402
from dance.ssh import ssh_key_to_spki, ssh_tlsa_record  # noqa: E402
from dance.ssh.protocol import decode_reply, encode_request  # noqa: E402
from dance.testkit import Fault, Hierarchy, ServerThread  # noqa: E402
from dance.testkit.authority import ZONE, make_zone_dir, python_env  # noqa: E402
from dance.testkit.authority import serve as serve_authority  # noqa: E402
from dance.testkit.servers import free_port, stop_process  # noqa: E402
from dance.tsig import generate_tsig_key, write_tsig_key  # noqa: E402
from soaklib import (  # noqa: E402
    Measured,
    Sample,
    SampleLog,
    latency_summary,
    leak_check,
    log_lines_matching,
    passed,
    reset,
    wait_for_baseline,
    watch_peaks,
)

DEVICE = "sensor7._device.example.test"
ALICE = "alice._user.example.test"
NOW = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
LEGIT_SOURCE = "127.0.0.2"
SOURCES = {"burst": "127.0.0.3", "slowloris": "127.0.0.4", "idle": "127.0.0.5"}
SOURCES["never-read"] = "127.0.0.6"
BAD_LOG_PATTERNS = ("Traceback", "Task was destroyed", "GeneratorExit", "was never retrieved")
ABUSE_PHASES = ("burst", "slowloris", "idle", "never-read")
DNS_FAULT_PHASES = ("dns slow", "dns restart")
SERVERS = ("agent", "ssh-keys-daemon", "authority", "smtp-proxy")
MTA = "_smtp-client.mta1.example.test"


@dataclass
class Settings:
    phase_seconds: float = 3.0
    holders: int = 40
    rounds: int = 1
    dns_fault_seconds: float = 2.0
    dns_slow_delay: float = 1.5
    baseline_wait: float = 20.0
    settle_seconds: float = 1.0
    recovery_window: float = 5.0
    legit_workers: int = 2
    head_timeout: float = 2.0  # the agent's --head-timeout (the holders outlast it)
    command_timeout: float = 2.0  # the SMTP proxy's --command-timeout (idem)


# -- the server process -----------------------------------------------------------------------


@dataclass
class Server(Measured):
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> int:
        return stop_process(self.process, timeout)

    def bad_log_lines(self) -> list[str]:
        return log_lines_matching(self.log, BAD_LOG_PATTERNS)


def start_process(
    cmd: list[str], log: Path, ready: Callable[[], bool], timeout: float = 60
) -> Server:
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=python_env())
    server = Server(process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{cmd[3]} exited: {log.read_text(errors='replace')[-2000:]}")
        if ready():
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{cmd[3]} did not start: {log.read_text(errors='replace')[-2000:]}")


def tcp_ready(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
        return False

    return ready


DANCE = [sys.executable, "-m", "dance.cli"]


# -- targets ----------------------------------------------------------------------------------


class Target:
    """One server under test: how to start it, a legitimate exchange, and its abusers' bytes."""

    name = ""
    slow_bytes = b""  # the start of a request, for slowloris
    request = b""  # a whole request, for never-read (pipelined)
    dns_faults = False
    backend_down = False  # while it is stopped: a typed refusal is the expected answer
    backend_fault = False  # a backend that can be stopped and started again
    # holders: how often they send
    tick_seconds: ClassVar[dict[str, float]] = {"slowloris": 0.5, "never-read": 0.5}
    server: Server
    zones: Hierarchy | None = None
    dns: ServerThread | None = None
    dns_port = 0
    settings = Settings()

    def start(self, d: Path) -> None:
        raise NotImplementedError

    def legit(self) -> None:
        """One legitimate exchange (blocking); raises on failure."""
        raise NotImplementedError

    def connect(self, source: str) -> socket.socket:
        """A raw connection to the server (blocking, with a timeout)."""
        raise NotImplementedError

    def stop(self) -> int:
        status = self.server.stop()
        self.dns_stop()
        return status

    # the holders (slowloris, never-read)
    def hold_open(self, sock: socket.socket, kind: str) -> None:
        if kind == "slowloris":
            sock.sendall(self.slow_bytes)
        elif kind == "never-read":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(0.5)
            with contextlib.suppress(OSError):  # until the server stops reading
                for _ in range(2000):
                    sock.sendall(self.request)

    def hold_tick(self, sock: socket.socket, kind: str) -> None:
        if kind == "slowloris":
            sock.send(b"X")

    # the backend (for the targets that have one)
    def backend_stop(self) -> None:
        raise NotImplementedError

    def backend_start(self) -> None:
        raise NotImplementedError

    # the DNS server (for the targets that look names up)
    def dns_start(self) -> None:
        assert self.zones is not None
        self.dns = ServerThread(self.zones, port=self.dns_port).start()
        self.dns_port = self.dns.port

    def dns_stop(self) -> None:
        if self.dns is not None:
            self.dns.stop()
            self.dns = None


class TcpTarget(Target):
    port = 0

    def connect(self, source: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", self.port))
        except OSError:
            sock.close()
            raise
        return sock


class AgentTarget(TcpTarget):
    """`dance agent` (nginx auth_request style): GET /auth with the client's certificate."""

    name = "agent"
    dns_faults = True

    def start(self, d: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = certs.self_signed(key, DEVICE, now=NOW)
        self.zones = Hierarchy("test.", ttl=3600)
        self.zones.child("example.test.")
        self.zones.child("_device.example.test.").add(
            "sensor7", "TLSA", make_record(cert).to_text()
        )
        self.zones.sign(algorithm=13, denial="nsec3")
        (d / "anchor.txt").write_text(self.zones.export_trust_anchor())
        self.dns_start()
        pem = certs.certificate_pem(cert).decode()
        self.headers = {"Client-Cert": urllib.parse.quote(pem, safe="")}
        head = "GET /auth HTTP/1.1\r\nHost: agent\r\nClient-Cert: {}\r\n\r\n"
        self.request = head.format(self.headers["Client-Cert"]).encode()
        self.slow_bytes = b"GET /auth HTTP/1.1\r\nHost: agent\r\nClient-Cert: "
        self.port = free_port()
        cmd = [
            *DANCE, "agent", "--listen", f"127.0.0.1:{self.port}",
            "--allow", "._device.example.test", "--server", f"127.0.0.1:{self.dns_port}",
            "--trust-anchor", str(d / "anchor.txt"),
            "--head-timeout", str(self.settings.head_timeout), "--timeout", "1", "--deadline", "2",
        ]  # fmt: skip
        self.server = start_process(cmd, d / "agent.log", tcp_ready(self.port))

    def legit(self) -> None:
        import http.client

        conn = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=10, source_address=(LEGIT_SOURCE, 0)
        )
        try:
            conn.request("GET", "/auth", headers=self.headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status} {response.getheaders()}")
        finally:
            conn.close()


class SshTarget(Target):
    """`dance ssh-keys-daemon`: one key line over its Unix socket, ``OK`` expected."""

    name = "ssh-keys-daemon"
    dns_faults = True

    def start(self, d: Path) -> None:
        key = ed25519.Ed25519PrivateKey.generate()
        line = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        self.keytype, self.blob = line.decode().split()[:2]
        self.zones = Hierarchy("test.", ttl=3600)
        self.zones.child("example.test.")
        record = ssh_tlsa_record(ssh_key_to_spki(self.keytype, self.blob)).to_text()
        self.zones.child("_user.example.test.").add("alice", "TLSA", record)
        self.zones.sign(algorithm=13, denial="nsec3")
        (d / "anchor.txt").write_text(self.zones.export_trust_anchor())
        self.dns_start()
        names = d / "names"
        names.write_text(f"root: {ALICE}\n")
        names.chmod(0o644)
        self.path = str(d / "keys.sock")
        self.request = encode_request("root", self.keytype, self.blob)
        self.slow_bytes = self.request[:20]
        cmd = [
            *DANCE, "ssh-keys-daemon", "--socket", self.path, "--names-file", str(names),
            "--server", f"127.0.0.1:{self.dns_port}", "--trust-anchor", str(d / "anchor.txt"),
            "--timeout", "1", "--deadline", "2",
        ]  # fmt: skip
        self.server = start_process(cmd, d / "daemon.log", lambda: os.path.exists(self.path))

    def connect(self, source: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        return sock

    def legit(self) -> None:
        with self.connect(LEGIT_SOURCE) as sock:
            sock.settimeout(10)
            sock.sendall(self.request)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError(f"closed after {data!r}")
                data += chunk
        kind, rest = decode_reply(data)
        if kind != "OK" or f"dance:{ALICE}" not in rest:
            raise RuntimeError(f"reply {kind} {rest}")


class AuthorityTarget(TcpTarget):
    """`dance authority`: UDP and TCP queries, and now and then a TSIG dynamic update whose
    record must then be served."""

    name = "authority"

    def start(self, d: Path) -> None:
        zone_dir, _ = make_zone_dir(d, "nsec3", names=200)
        key = generate_tsig_key("update-key")
        write_tsig_key(d / "update.key", key)
        self.tsig = key.to_dnspython()
        proc = serve_authority(zone_dir, d / "update.key", free_port(), d / "authority.log")
        self.port = proc.port
        self.server = Server(proc.process, proc.log)
        query = dns.message.make_query(f"sensor7._device.{ZONE}", "TLSA", want_dnssec=True)
        wire = query.to_wire()
        self.request = struct.pack("!H", len(wire)) + wire
        self.slow_bytes = self.request[:1]
        self.n = 0

    def legit(self) -> None:
        self.n += 1
        q = dns.message.make_query(f"sensor7._device.{ZONE}", "TLSA", want_dnssec=True)
        r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=5, source=LEGIT_SOURCE)
        if r.rcode() != dns.rcode.NOERROR or not r.answer:
            raise RuntimeError(f"udp: {dns.rcode.to_text(r.rcode())}")
        r = dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=5, source=LEGIT_SOURCE)
        if r.rcode() != dns.rcode.NOERROR or not r.answer:
            raise RuntimeError(f"tcp: {dns.rcode.to_text(r.rcode())}")
        if self.n % 10 == 0:  # an update, then its record served
            name = f"u{self.n}"
            up = dns.update.UpdateMessage(ZONE, keyring=self.tsig)
            up.replace(name, 300, "TXT", f'"soak {self.n}"')
            r = dns.query.tcp(up, "127.0.0.1", port=self.port, timeout=10, source=LEGIT_SOURCE)
            if r.rcode() != dns.rcode.NOERROR:
                raise RuntimeError(f"update: {dns.rcode.to_text(r.rcode())}")
            q = dns.message.make_query(f"{name}.{ZONE}", "TXT")
            r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=5, source=LEGIT_SOURCE)
            if not r.answer:
                raise RuntimeError("updated record not served")


async def _sink_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One backend session of the SMTP sink: XCLIENT offered; RCPT to the relayed domain only
    after XCLIENT LOGIN (Postfix's permit_sasl_authenticated); messages read and dropped."""
    login = False

    def say(text: str) -> None:
        writer.write(text.encode() + b"\r\n")

    say("220 sink ESMTP")
    try:
        while line := await asyncio.wait_for(reader.readline(), 60):
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"EHLO":
                say("250-sink\r\n250-XCLIENT NAME ADDR PROTO HELO LOGIN\r\n250 SIZE 10485760")
            elif verb == b"XCLIENT":
                login = b" LOGIN=" in line
                say("220 sink ESMTP")
            elif verb == b"RCPT":
                relayed = b"@relay.test" in line
                say("250 2.1.5 Ok" if login or not relayed else "554 5.7.1 Relay access denied")
            elif verb == b"DATA":
                say("354 go")
                while (chunk := await reader.readline()) not in (b".\r\n", b""):
                    pass
                if not chunk:
                    break
                say("250 2.0.0 Ok: queued")
            elif verb == b"QUIT":
                say("221 bye")
                break
            else:
                say("250 2.0.0 Ok")
            await writer.drain()
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()


def sink_main(port: int) -> None:
    """``--sink-port N``: the SMTP sink as a process of its own (the SMTP proxy's backend)."""

    serve_until_sigterm(_sink_session, port)


def _smtp_reply(f: Any) -> tuple[int, bytes]:
    """One SMTP reply (its last line) from a file made from a socket."""
    while True:
        line = f.readline(1024)
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return int(line[:3]), line.rstrip()


class SmtpTarget(TcpTarget):
    """`dance smtp-proxy` in front of an SMTP sink: whole STARTTLS + DANCE sessions relaying one
    short message each."""

    name = "smtp-proxy"
    dns_faults = True
    backend_fault = True
    tick_seconds: ClassVar[dict[str, float]] = {"slowloris": 0.5, "never-read": 0.05}
    sink: subprocess.Popen[bytes] | None = None

    def start(self, d: Path) -> None:
        from dance.tls import client_context

        self.dir = d
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = certs.new_ca(ca_key, "soak SMTP CA", now=NOW)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = certs.issue_certificate(
            ca, ca_key, server_key.public_key(), dns_names=["localhost"], now=NOW,
            client_auth=False,
        )  # fmt: skip
        mta_key = ec.generate_private_key(ec.SECP256R1())
        mta = certs.self_signed(mta_key, MTA, now=NOW)
        (d / "ca.pem").write_bytes(certs.certificate_pem(ca))
        (d / "server.pem").write_bytes(certs.certificate_pem(server))
        certs.write_private_key(d / "server.key", server_key)
        (d / "mta.pem").write_bytes(certs.certificate_pem(mta))
        certs.write_private_key(d / "mta.key", mta_key)
        self.context = client_context(
            name=MTA, cert=str(d / "mta.pem"), key=str(d / "mta.key"), cafile=str(d / "ca.pem")
        )
        self.zones = Hierarchy("test.", ttl=3600)
        self.zones.child("example.test.").add(
            "_smtp-client.mta1", "TLSA", make_record(mta).to_text()
        )
        self.zones.sign(algorithm=13, denial="nsec3")
        (d / "anchor.txt").write_text(self.zones.export_trust_anchor())
        self.dns_start()
        self.sink_port = free_port()
        self.backend_start()
        self.slow_bytes = b"EHLO slowloris.example"
        self.request = b"EHLO never-read.example\r\n"
        self.port = free_port()
        cmd = [
            *DANCE, "smtp-proxy", "--listen", f"127.0.0.1:{self.port}",
            "--backend", f"127.0.0.1:{self.sink_port}",
            "--cert", str(d / "server.pem"), "--key", str(d / "server.key"), "--allow", MTA,
            "--server", f"127.0.0.1:{self.dns_port}", "--trust-anchor", str(d / "anchor.txt"),
            "--timeout", "1", "--deadline", "2",
            "--command-timeout", str(self.settings.command_timeout),
        ]  # fmt: skip
        self.server = start_process(cmd, d / "smtp-proxy.log", tcp_ready(self.port))

    def backend_start(self) -> None:
        cmd = [sys.executable, __file__, "--sink-port", str(self.sink_port)]
        log = (self.dir / "sink.log").open("ab")
        self.sink = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        ready = tcp_ready(self.sink_port)
        deadline = time.monotonic() + 30
        while not ready():
            if time.monotonic() > deadline or self.sink.poll() is not None:
                raise RuntimeError("the SMTP sink did not start")
            time.sleep(0.02)

    def backend_stop(self) -> None:
        if self.sink is not None:
            stop_process(self.sink)
            self.sink = None

    def stop(self) -> int:
        status = super().stop()
        self.backend_stop()
        return status

    def hold_open(self, sock: socket.socket, kind: str) -> None:
        if kind == "never-read":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one line a segment
            sock.setblocking(False)  # a send that would block is skipped
        else:
            super().hold_open(sock, kind)

    def hold_tick(self, sock: socket.socket, kind: str) -> None:
        if kind == "never-read":
            sock.send(self.request)  # one command at a time; the replies are never read
        else:
            super().hold_tick(sock, kind)

    def legit(self) -> None:
        sock = socket.create_connection(
            ("127.0.0.1", self.port), timeout=10, source_address=(LEGIT_SOURCE, 0)
        )
        # Without it the first command after the handshake waits for a delayed ACK (Nagle):
        # 50 ms a session instead of 10 ms, the client's doing, not the proxy's.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            f = sock.makefile("rb")
            steps: list[tuple[bytes | None, int]] = [(None, 220), (b"EHLO mta1.example.test", 250)]
            steps.append((b"STARTTLS", 220))
            for line, want in steps:
                if line is not None:
                    sock.sendall(line + b"\r\n")
                code, text = _smtp_reply(f)
                if code != want:
                    raise RuntimeError(f"{line!r}: {text!r}")
            tls = self.context.wrap_socket(sock, server_hostname="localhost")
            sock = tls
            f = tls.makefile("rb")
            for line, want in [
                (b"EHLO mta1.example.test", 250),
                (b"MAIL FROM:<soak@mta1.example.test>", 250),
                (b"RCPT TO:<someone@relay.test>", 250),
                (b"DATA", 354),
                (b"Subject: soak\r\n\r\nhello\r\n.", 250),
                (b"QUIT", 221),
            ]:
                down = self.backend_down
                tls.sendall(line + b"\r\n")
                code, text = _smtp_reply(f)
                if code != want:
                    if down and code in (421, 451):
                        return  # the backend is away: refused at once, with a typed reply
                    raise RuntimeError(f"{line[:20]!r}: {text!r}")
        finally:
            sock.close()


TARGETS: dict[str, Callable[[], Target]] = {
    "agent": AgentTarget,
    "ssh-keys-daemon": SshTarget,
    "authority": AuthorityTarget,
    "smtp-proxy": SmtpTarget,
}


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Legit(SampleLog):
    target: Target
    samples: list[Sample] = field(default_factory=list)

    async def once(self, record: bool = True) -> Sample:
        start = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.to_thread(self.target.legit), 15)
            ok, detail = True, ""
        except Exception as exc:  # any failure of the exchange is a failure
            ok, detail = False, repr(exc)[:200]
        sample = Sample(start, ok, time.monotonic() - start, detail)
        if record:
            self.samples.append(sample)
        return sample


def summary(samples: list[Sample]) -> dict[str, Any]:
    return {
        **latency_summary(samples),
        "failures": sorted({s.detail for s in samples if not s.ok})[:3],
    }


async def recovery(legit: Legit, since: float, window: float) -> float | None:
    """Seconds from ``since`` until an attempt started after it succeeded (one every 0.1 s)."""
    first: list[float] = []
    tasks: set[asyncio.Task[Sample]] = set()
    while time.monotonic() < since + window and not first:
        task = asyncio.ensure_future(legit.once(record=False))
        task.add_done_callback(lambda t: first.append(time.monotonic()) if t.result().ok else None)
        tasks.add(task)
        await asyncio.sleep(0.1)
    if tasks:
        await asyncio.wait(tasks, timeout=20)
    return round(min(first) - since, 3) if first else None


# -- abuse ------------------------------------------------------------------------------------


@dataclass
class Held:
    socks: list[socket.socket] = field(default_factory=list)
    opened: int = 0
    refused: int = 0

    def closed_by_server(self) -> int:
        """Held connections the server has closed (EOF after what it sent, or a reset)."""
        n = 0
        for sock in self.socks:
            try:
                sock.setblocking(False)
                for _ in range(16):  # what it sent (a last reply), then the end, if any
                    if sock.recv(65536) == b"":
                        n += 1
                        break
            except BlockingIOError:
                pass
            except OSError:
                n += 1
        return n

    def release(self) -> None:
        for sock in self.socks:
            sock.close()


def burst(target: Target, stop_at: float) -> int:
    n = 0
    while time.monotonic() < stop_at:
        with contextlib.suppress(OSError):
            sock = target.connect(SOURCES["burst"])
            if n % 2:
                reset(sock)
            else:
                sock.close()
            n += 1
        time.sleep(0.002)
    return n


def hold(target: Target, kind: str, count: int, stop_at: float) -> dict[str, int]:
    held = Held()
    for _ in range(count):
        try:
            sock = target.connect(SOURCES[kind])
            target.hold_open(sock, kind)
        except OSError:
            held.refused += 1
            continue
        held.opened += 1
        held.socks.append(sock)
    tick = target.tick_seconds.get(kind, 0.5)
    while time.monotonic() < stop_at:
        for sock in held.socks:
            with contextlib.suppress(OSError):
                target.hold_tick(sock, kind)
        time.sleep(tick)
    out = {"opened": held.opened, "refused_at_once": held.refused}
    out["closed_by_server"] = held.closed_by_server()
    held.release()
    return out


# -- the run ----------------------------------------------------------------------------------


async def run_phase(
    name: str,
    target: Target,
    legit: Legit,
    baseline: int,
    settings: Settings,
    action: Callable[[], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    server = target.server
    stop = asyncio.Event()
    peak = {"fds": server.fds(), "rss_kib": server.rss_kib()}
    start = time.monotonic()
    sampler = asyncio.ensure_future(watch_peaks(server, peak, stop))
    stream = asyncio.ensure_future(legit.stream(stop, settings.legit_workers))
    try:
        abuse = await action()
    finally:
        end = time.monotonic()
        stop.set()
        await asyncio.gather(stream, sampler)
    reached, took = await wait_for_baseline(server, baseline, settings.baseline_wait)
    after = await legit.once(record=False)
    await asyncio.sleep(settings.settle_seconds)
    p: dict[str, Any] = {
        "phase": name,
        "seconds": round(end - start, 1),
        "legit": summary(legit.between(start, end)),
        "abuse": abuse,
        "fds_peak": peak["fds"],
        "rss_peak_kib": peak["rss_kib"],
        "rss_after_kib": server.rss_kib(),
        "fds_back_to_baseline": reached,
        "seconds_to_baseline": took,
        "served_after": after.ok,
    }
    failed = []
    if p["legit"]["success"] < 0.99:
        failed.append(f"success {p['legit']['success']:.2%} < 99%")
    if p["legit"]["p99_ms"] >= 1000:
        failed.append(f"p99 {p['legit']['p99_ms']} ms >= 1 s")
    if not reached:
        failed.append("descriptors not back to baseline")
    if not after.ok:
        failed.append("next client not served")
    if "recovery_s" in abuse and (abuse["recovery_s"] is None or abuse["recovery_s"] > 1.0):
        failed.append(f"recovery {abuse['recovery_s']} s > 1 s")
    p["checks_failed"] = failed
    return p


async def suite(target: Target, settings: Settings) -> dict[str, Any]:
    legit = Legit(target)
    for _ in range(3):  # warm: the identity is cached afterwards
        await legit.once(record=False)
    await asyncio.sleep(0.5)
    server = target.server
    baseline = server.fds()
    report: dict[str, Any] = {
        "server": target.name,
        "baseline": {"fds": baseline, "rss_kib": server.rss_kib()},
        "phases": [],
        "rounds": [],
    }

    def abuse(kind: str) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def run() -> dict[str, Any]:
            stop_at = time.monotonic() + settings.phase_seconds
            if kind == "burst":
                return {"connections": await asyncio.to_thread(burst, target, stop_at)}
            return await asyncio.to_thread(hold, target, kind, settings.holders, stop_at)

        return run

    def dns_fault(kind: str) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def run() -> dict[str, Any]:
            assert target.zones is not None
            injection = None
            if kind == "dns slow":
                injection = target.zones.inject(Fault("slow", delay=settings.dns_slow_delay))
            else:
                await asyncio.to_thread(target.dns_stop)
            await asyncio.sleep(settings.dns_fault_seconds)
            if injection is not None:
                injection.remove()
            else:
                await asyncio.to_thread(target.dns_start)
            return {"recovery_s": await recovery(legit, time.monotonic(), settings.recovery_window)}

        return run

    async def backend_down() -> dict[str, Any]:
        target.backend_down = True
        await asyncio.to_thread(target.backend_stop)
        await asyncio.sleep(settings.dns_fault_seconds)
        await asyncio.to_thread(target.backend_start)
        target.backend_down = False
        return {"recovery_s": await recovery(legit, time.monotonic(), settings.recovery_window)}

    phases: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = [
        (k, abuse(k)) for k in ABUSE_PHASES
    ]
    if target.dns_faults:
        phases += [(k, dns_fault(k)) for k in DNS_FAULT_PHASES]
    if target.backend_fault:
        phases.append(("backend down", backend_down))
    for round_no in range(settings.rounds):
        for name, action in phases:
            p = await run_phase(name, target, legit, baseline, settings, action)
            p["round"] = round_no + 1
            report["phases"].append(p)
        await asyncio.sleep(settings.settle_seconds)
        report["rounds"].append({"round": round_no + 1, "rss_end_kib": server.rss_kib()})
    report["final"] = {"fds": server.fds(), "rss_kib": server.rss_kib()}
    return report


def run(name: str, settings: Settings, workdir: Path | None = None) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        target = TARGETS[name]()
        target.settings = settings
        target.start(workdir)
        try:
            report = asyncio.run(suite(target, settings))
        finally:
            status = target.stop()
        report["exit_status"] = status
        report["bad_log_lines"] = target.server.bad_log_lines()[:20]
        report["leak_check"] = leak_check(report["rounds"])
        report["settings"] = vars(settings)
        return report


def print_report(report: dict[str, Any]) -> None:
    print(f"== {report['server']}  baseline: {report['baseline']}")
    for p in report["phases"]:
        legit = p["legit"]
        print(
            f"[{p['round']}] {p['phase']:<11} {p['seconds']:>5.1f} s  legit {legit['ok']}/"
            f"{legit['attempts']} ({legit['success']:.2%}) p50 {legit['p50_ms']} ms p99 "
            f"{legit['p99_ms']} ms  fds peak {p['fds_peak']} -> baseline "
            f"{'yes' if p['fds_back_to_baseline'] else 'NO'} in {p['seconds_to_baseline']} s  "
            f"RSS peak {p['rss_peak_kib'] // 1024} MiB, after {p['rss_after_kib'] // 1024} MiB  "
            f"next {'served' if p['served_after'] else 'NOT served'}  {json.dumps(p['abuse'])}"
        )
        if p["checks_failed"]:
            print(f"    FAILED: {'; '.join(p['checks_failed'])}")
    rss = ", ".join(f"{r['rss_end_kib'] // 1024} MiB" for r in report["rounds"])
    print(f"round ends: {rss}; leak check: {report['leak_check']}")
    print(
        f"exit status {report['exit_status']}, log lines with tracebacks: "
        f"{len(report['bad_log_lines'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=[*SERVERS, "all"], default="all")
    parser.add_argument("--phase-seconds", type=float, default=15.0)
    parser.add_argument("--holders", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dns-fault-seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sink-port", type=int, help=argparse.SUPPRESS)  # the SMTP backend
    args = parser.parse_args()
    if args.sink_port:
        sink_main(args.sink_port)
        return
    settings = Settings(
        phase_seconds=args.phase_seconds,
        holders=args.holders,
        rounds=args.rounds,
        dns_fault_seconds=args.dns_fault_seconds,
        baseline_wait=60.0,
    )
    ok = True
    for name in SERVERS if args.server == "all" else (args.server,):
        report = run(name, settings)
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print_report(report)
        ok = ok and passed(report)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
