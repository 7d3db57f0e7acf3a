"""Load, abuse and faults against a `dance proxy` process (tcp mode, PROXY v2, SAN fallback on).

    .venv/bin/python bench/soak_tls.py [--phase-seconds 30] [--holders 200]
        [--backend-fault-seconds 10] [--handshake-timeout 10] [--idle-timeout 10] [--json]

A steady stream of legitimate DANCE clients (dane_clientid, cached identity, from 127.0.0.2)
talks through the proxy to a backend that, like an HTTP server, waits for the client to speak
first, while the proxy gets, phase by phase:

* floods: handshakes that close at once: ``openssl s_time -new`` with a certificate (no
  extension: the SAN fallback decides) and without one, DANCE clients with the extension that
  abort right after the handshake, clients that leave in the middle of the handshake, raw TCP
  connect/close and connect/RST;
* holders: slowloris (a partial ClientHello, 127.0.0.3), idle authenticated connections
  (127.0.0.4), authenticated clients that make the backend stream and never read (127.0.0.5);
* backend faults: down (connection refused), silent (accepts, never answers), resetting (RST).

After each phase the harness waits for the proxy's descriptors to return to their baseline and
checks that the next legitimate client is served. Figures: legitimate success and latency per
phase, abuse volume, descriptors and RSS of the proxy process, the proxy's counters. The proxy
is stopped with SIGTERM (exit status and log checked: no traceback, no "Task was destroyed").

The test suite runs a short version (tests/tls/test_abuse.py imports this file); this script
imports nothing from the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.append(str(ROOT / "bench"))  # soaklib (last: the tests import this file too)

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from dance import certs, make_record  # noqa: E402
from dance.testkit import Fault, Hierarchy, Injection, ServerThread  # noqa: E402
from dance.testkit.servers import stop_process  # noqa: E402
from dance.tls import client_context  # noqa: E402
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
ALLOW = "._device.example.test"
NOW = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
PROXY_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
LEGIT_SOURCE = "127.0.0.2"
SLOW_SOURCE, IDLE_SOURCE, DEAF_SOURCE = "127.0.0.3", "127.0.0.4", "127.0.0.5"
FLOOD_SOURCES = {"abort_after_handshake": "127.0.0.6", "leave_mid_handshake": "127.0.0.7"}
FLOOD_SOURCES["connect_close_or_rst"] = "127.0.0.8"
FRESH_SOURCE = "127.0.0.9"  # legitimate clients whose identity is not cached
BAD_LOG_PATTERNS = (
    "Traceback",
    "Task was destroyed",
    "GeneratorExit",
    "was never retrieved",
    "cannot build the PROXY header",
    " ERROR ",
)


# -- the world: PKI and a signed zone on the testkit DNS server -------------------------------


FRESH_ZONE = "_fresh._device.example.test."


@dataclass
class World:
    dir: Path
    dns: tuple[str, int]
    anchor: str
    ca: str
    server_cert: str
    server_key: str
    device_cert: str
    device_key: str
    zones: Hierarchy | None = None
    dns_server: ServerThread | None = None
    fresh_names: list[str] = field(default_factory=list)

    def inject(self, *faults: Fault) -> Injection:
        """Faults in the answers of the DNS server (removed with ``.remove()``)."""
        assert self.zones is not None
        return self.zones.inject(*faults)

    def dns_stop(self) -> None:
        """The DNS server goes away (its port closed: UDP queries get ICMP unreachable)."""
        if self.dns_server is not None:
            self.dns_server.stop()
            self.dns_server = None

    def dns_start(self) -> None:
        """The DNS server comes back on the same port."""
        assert self.zones is not None and self.dns_server is None
        self.dns_server = ServerThread(self.zones, port=self.dns[1]).start()


@contextlib.contextmanager
def dns_world(d: Path, fresh: int = 0) -> Iterator[World]:
    """Certificates in ``d`` and a DNSSEC-signed zone with DEVICE's TLSA record, served on
    loopback while the context is open. With ``fresh``, that many more names
    (``fN._fresh._device.example.test``, the device's key, in a zone with a TTL of 1 s) for
    clients whose identity the proxy has not cached: each is used once."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certs.new_ca(ca_key, "soak server CA", now=NOW)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = certs.issue_certificate(
        ca, ca_key, server_key.public_key(), dns_names=["localhost"], now=NOW, client_auth=False
    )
    device_key = ec.generate_private_key(ec.SECP256R1())
    device_cert = certs.self_signed(device_key, DEVICE, now=NOW)  # SAN dNSName = DEVICE
    (d / "ca.pem").write_bytes(certs.certificate_pem(ca))
    (d / "server.pem").write_bytes(certs.certificate_pem(server_cert))
    certs.write_private_key(d / "server.key", server_key)
    (d / "device.pem").write_bytes(certs.certificate_pem(device_cert))
    certs.write_private_key(d / "device.key", device_key)
    zones = Hierarchy("test.", ttl=3600)
    zones.child("example.test.")
    devices = zones.child("_device.example.test.")
    record = make_record(device_cert).to_text()
    devices.add("sensor7", "TLSA", record)
    names = [f"f{i}.{FRESH_ZONE}".rstrip(".") for i in range(fresh)]
    if fresh:
        fresh_zone = zones.child(FRESH_ZONE, ttl=1)
        for i in range(fresh):
            fresh_zone.add(f"f{i}", "TLSA", record)
    zones.sign(algorithm=13, denial="nsec3")
    (d / "anchor.txt").write_text(zones.export_trust_anchor())
    world = World(
        dir=d,
        dns=("", 0),
        anchor=str(d / "anchor.txt"),
        ca=str(d / "ca.pem"),
        server_cert=str(d / "server.pem"),
        server_key=str(d / "server.key"),
        device_cert=str(d / "device.pem"),
        device_key=str(d / "device.key"),
        zones=zones,
        fresh_names=names,
    )
    world.dns_server = ServerThread(zones).start()
    world.dns = world.dns_server.address
    try:
        yield world
    finally:
        world.dns_stop()


# -- the backend ------------------------------------------------------------------------------


class Backend:
    """A PROXY v2 backend that waits for the client to speak first, then echoes; ``flood``
    makes it stream until the connection breaks. Modes: normal, silent (reads, never answers),
    reset (RST at once), down (not listening)."""

    def __init__(self) -> None:
        self.mode = "normal"
        self.port = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.identities: set[bytes] = set()
        self.connections = 0
        self.bad_headers = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._on_client, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def set_mode(self, mode: str) -> None:
        if mode == "down" and self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        elif mode != "down" and self.server is None:
            await self.start()
        self.mode = mode

    async def drop_connections(self) -> None:
        """Close every established connection (as a restarted process would)."""
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=5)

    async def stop(self) -> None:
        await self.set_mode("down")
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=5)

    def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        mode = self.mode
        try:
            if mode == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            head = await reader.readexactly(16)
            body = await reader.readexactly(struct.unpack("!H", head[14:16])[0])
            if head[:12] != PROXY_SIGNATURE or body[12:13] != b"\xe0":
                self.bad_headers += 1
                return
            self.identities.add(body[15:])
            while data := await reader.read(65536):
                if mode == "silent":
                    continue
                if data.startswith(b"flood"):
                    chunk = b"x" * 65536
                    while True:
                        writer.write(chunk)
                        await writer.drain()
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()


# -- the proxy process ------------------------------------------------------------------------


class ProxyProcess(Measured):
    """``dance proxy`` in its own process, its stderr in a file."""

    def __init__(self, world: World, backend_port: int, *extra: str) -> None:
        self.log_path = world.dir / f"proxy-{os.getpid()}-{time.monotonic_ns()}.log"
        self.args = [
            sys.executable,
            "-m",
            "dance.cli",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            f"127.0.0.1:{backend_port}",
            "--cert",
            world.server_cert,
            "--key",
            world.server_key,
            "--allow",
            ALLOW,
            "--san-fallback",
            "--server",
            f"{world.dns[0]}:{world.dns[1]}",
            "--trust-anchor",
            world.anchor,
            "-v",
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.stdout: list[str] = []

    def start(self, timeout: float = 30.0) -> ProxyProcess:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=subprocess.PIPE, stderr=log, env=env, cwd=str(ROOT)
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if "listening on" in line or not line:
                break
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"dance proxy did not start: {line!r}\n{self.log()}")
        self.port = int(match.group(1))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM; the exit status (the process is killed if it does not exit in time)."""
        assert self.proc is not None
        stop_process(self.proc, timeout)
        assert self.proc.stdout is not None
        self.stdout.extend(self.proc.stdout.read().decode(errors="replace").splitlines())
        self.proc.stdout.close()
        return int(self.proc.returncode)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def bad_log_lines(self) -> list[str]:
        return log_lines_matching(self.log_path, BAD_LOG_PATTERNS)

    def final_stats(self) -> dict[str, Any]:
        """The counters the proxy logs when it stops (``proxy stats: {...}``)."""
        out: dict[str, Any] = {}
        for line in self.log().splitlines():
            for label in ("proxy stats", "relay stats"):
                if f"{label}: " in line:
                    text = line.split(f"{label}: ", 1)[1]
                    with contextlib.suppress(ValueError, SyntaxError):
                        import ast

                        out[label] = ast.literal_eval(text)
        return out


# -- clients ----------------------------------------------------------------------------------


@dataclass
class Legit(SampleLog):
    """Legitimate DANCE clients: connect, send a line, expect it echoed, close. With
    ``names``, each attempt presents the next name of that list (an identity the proxy has not
    cached: see ``dns_world(fresh=)``) with the same key."""

    port: int
    ctx: ssl.SSLContext
    source: str = LEGIT_SOURCE
    timeout: float = 10.0
    samples: list[Sample] = field(default_factory=list)
    names: list[str] | None = None
    world: World | None = None
    next_name: int = 0

    def context(self) -> ssl.SSLContext:
        if not self.names or self.world is None:
            return self.ctx
        name = self.names[self.next_name % len(self.names)]
        self.next_name += 1
        w = self.world
        return client_context(name=name, cert=w.device_cert, key=w.device_key, cafile=w.ca)

    async def once(self, record: bool = True) -> Sample:
        start = time.monotonic()
        writer: asyncio.StreamWriter | None = None
        connected = False
        outcome = "ok"
        ctx = self.context()
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1",
                    self.port,
                    ssl=ctx,
                    server_hostname="localhost",
                    local_addr=(self.source, 0),
                )
                connected = True
                writer.write(b"ping\n")
                await writer.drain()
                data = await reader.readexactly(5)
            ok, detail = data == b"ping\n", ""
        except TimeoutError as exc:
            ok, detail, outcome = False, repr(exc), "hang"
        except (OSError, asyncio.IncompleteReadError) as exc:
            ok, detail = False, repr(exc)
            outcome = "refused" if connected else "error"
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 2)
        sample = Sample(start, ok, time.monotonic() - start, detail, outcome if not ok else "ok")
        if record:
            self.samples.append(sample)
        return sample


def _served(task: asyncio.Task[Sample]) -> bool:
    return not task.cancelled() and task.exception() is None and task.result().ok


async def recovery(legit: Legit, since: float, window: float, every: float = 0.1) -> float | None:
    """Seconds from ``since`` (a fault's end) until a client arriving after it was served:
    one attempt starts every ``every`` seconds (not waiting for the previous ones) for at most
    ``window`` seconds; None if none of them was served."""
    first: list[float] = []
    pending: set[asyncio.Task[Sample]] = set()
    deadline = since + window
    while time.monotonic() < deadline and not first:
        task = asyncio.ensure_future(legit.once(record=False))
        task.add_done_callback(
            lambda t: (
                first.append(time.monotonic()) if not t.cancelled() and t.result().ok else None
            )
        )
        pending.add(task)
        await asyncio.sleep(every)
        pending = {t for t in pending if not t.done()}
    if not first and pending:
        await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()) + legit.timeout)
    for task in pending:
        task.cancel()
    return round(min(first) - since, 3) if first else None


def summary(samples: list[Sample]) -> dict[str, Any]:
    lat = sorted(s.latency for s in samples if s.ok)
    failed = [s for s in samples if not s.ok]
    outcomes: dict[str, int] = {}
    for s in samples:
        outcomes[s.outcome] = outcomes.get(s.outcome, 0) + 1
    return {
        **latency_summary(samples),
        "max_ms": round(lat[-1] * 1000, 1) if lat else 0.0,
        "outcomes": outcomes,
        # the slowest attempt that did not succeed (a refusal must be fast, not a hang)
        "slowest_failure_ms": round(1000 * max((s.latency for s in failed), default=0.0)),
        "failures": sorted({s.detail for s in failed})[:5],
    }


def client_hello(server_hostname: str = "localhost") -> bytes:
    """The bytes of a real TLS 1.3 ClientHello (from an in-memory handshake)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


async def _connect_raw(port: int, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.bind((source, 0))
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


def tcp_established(writer: asyncio.StreamWriter) -> bool:
    """Whether the kernel still sees the connection established (a client that never reads
    does not notice the server's close: its reading is paused)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return False
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except OSError:
        return False
    return info[0] == 1  # TCP_ESTABLISHED


async def stime(port: int, seconds: int, world: World | None) -> int:
    """``openssl s_time -new`` for ``seconds`` (with the device certificate when ``world``);
    returns the number of connections it made."""
    cert = ["-cert", world.device_cert, "-key", world.device_key] if world else []
    proc = await asyncio.create_subprocess_exec(
        "openssl",
        "s_time",
        "-connect",
        f"127.0.0.1:{port}",
        "-new",
        "-time",
        str(seconds),
        *cert,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    match = re.search(rb"(\d+) connections in [\d.]+s", out)
    return int(match.group(1)) if match else 0


async def flash_close(port: int, ctx: ssl.SSLContext, stop: asyncio.Event, source: str) -> int:
    """DANCE clients (with the extension) that abort right after their handshake."""
    n = 0
    while not stop.is_set():
        with contextlib.suppress(OSError, TimeoutError):
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    "127.0.0.1", port, ssl=ctx, server_hostname="localhost", local_addr=(source, 0)
                ),
                10,
            )
            writer.transport.abort()
            n += 1
    return n


async def mid_handshake(port: int, hello: bytes, stop: asyncio.Event, source: str) -> int:
    """Clients that send a whole ClientHello and leave (half of them with an RST)."""
    n = 0
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        with contextlib.suppress(OSError):
            sock = await _connect_raw(port, source)
            await loop.sock_sendall(sock, hello)
            if n % 2:
                reset(sock)
            else:
                sock.close()
            n += 1
        await asyncio.sleep(0.001)
    return n


async def connect_close(port: int, stop: asyncio.Event, source: str) -> int:
    """Raw TCP connect then close (FIN) or reset (RST), as port scanners and health checks."""
    n = 0
    while not stop.is_set():
        with contextlib.suppress(OSError):
            sock = await _connect_raw(port, source)
            if n % 2:
                reset(sock)
            else:
                sock.close()
            n += 1
        await asyncio.sleep(0.001)
    return n


@dataclass
class Held:
    """Connections held open by an abuser; ``closed_by_server`` counts those the proxy ended."""

    opened: int = 0
    refused_at_once: int = 0
    closed_by_server: int = 0
    socks: list[socket.socket] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    readers: list[asyncio.StreamReader] = field(default_factory=list)  # kept: never read

    async def watch_raw(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            while await loop.sock_recv(sock, 65536):
                pass
        except OSError:
            pass
        self.closed_by_server += 1

    def release(self) -> None:
        for sock in self.socks:
            sock.close()
        for writer in self.writers:
            writer.transport.abort()


async def slowloris(port: int, n: int, hello: bytes, tasks: set[asyncio.Task[None]]) -> Held:
    """``n`` connections that send the first 40 bytes of a ClientHello and stall."""
    held = Held()
    loop = asyncio.get_running_loop()
    for _ in range(n):
        try:
            sock = await _connect_raw(port, SLOW_SOURCE)
            await loop.sock_sendall(sock, hello[:40])
        except OSError:
            held.refused_at_once += 1
            continue
        held.opened += 1
        held.socks.append(sock)
        task = loop.create_task(held.watch_raw(sock))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    return held


async def _watch_stream(held: Held, reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while await reader.read(65536):
            pass
    held.closed_by_server += 1


async def idle_clients(
    port: int, ctx: ssl.SSLContext, n: int, tasks: set[asyncio.Task[None]]
) -> Held:
    """``n`` authenticated connections that never send a byte."""
    held = Held()
    loop = asyncio.get_running_loop()
    for _ in range(n):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    "127.0.0.1",
                    port,
                    ssl=ctx,
                    server_hostname="localhost",
                    local_addr=(IDLE_SOURCE, 0),
                ),
                10,
            )
        except (OSError, TimeoutError):
            held.refused_at_once += 1
            continue
        held.opened += 1
        held.writers.append(writer)
        task = loop.create_task(_watch_stream(held, reader))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    return held


async def deaf_clients(port: int, ctx: ssl.SSLContext, n: int) -> Held:
    """``n`` authenticated clients that make the backend stream, then never read."""
    held = Held()
    for _ in range(n):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    "127.0.0.1",
                    port,
                    ssl=ctx,
                    server_hostname="localhost",
                    local_addr=(DEAF_SOURCE, 0),
                ),
                10,
            )
            writer.write(b"flood\n")
            await writer.drain()
        except (OSError, TimeoutError):
            held.refused_at_once += 1
            continue
        held.opened += 1
        held.readers.append(reader)
        held.writers.append(writer)
    return held


async def flood_process(kind: str, port: int, seconds: float, world: World) -> int:
    """Run one flood in a child process (so that it does not slow the legitimate clients of
    this process down); the number of connections it made."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--flood",
        kind,
        "--port",
        str(port),
        "--seconds",
        str(seconds),
        "--cert",
        world.device_cert,
        "--key",
        world.device_key,
        "--ca",
        world.ca,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    try:
        return int(out.decode().strip() or 0)
    except ValueError:
        return -1


def flood_main(args: argparse.Namespace) -> None:
    """Child process: one flood for ``--seconds``; prints how many connections it made."""

    async def main() -> int:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(args.seconds, stop.set)
        source = FLOOD_SOURCES[args.flood]
        if args.flood == "abort_after_handshake":
            ctx = client_context(name=DEVICE, cert=args.cert, key=args.key, cafile=args.ca)
            return await flash_close(args.port, ctx, stop, source)
        if args.flood == "leave_mid_handshake":
            return await mid_handshake(args.port, client_hello(), stop, source)
        return await connect_close(args.port, stop, source)

    print(asyncio.run(main()), flush=True)


# -- the suite --------------------------------------------------------------------------------


ABUSE_PHASES = ("floods", "holders")
BACKEND_PHASES = ("backend down", "backend silent", "backend resetting", "backend restart")
DNS_PHASES = ("dns slow", "dns silent", "dns malformed", "dns wrong-id", "dns bogus", "dns restart")
ALL_PHASES = ABUSE_PHASES + BACKEND_PHASES + DNS_PHASES


@dataclass
class Settings:
    phase_seconds: float = 3.0
    holders: int = 40  # slowloris and idle connections (deaf: a quarter)
    backend_fault_seconds: float = 1.5
    baseline_wait: float = 20.0
    handshake_timeout: float = 1.0
    idle_timeout: float = 2.0
    backend_timeout: float = 1.0
    max_per_address: int = 32
    legit_workers: int = 2
    handshake_rate: float = 100.0  # --handshake-rate of the proxy (0: off)
    phases: tuple[str, ...] = ALL_PHASES
    rounds: int = 1  # the phases again and again: RSS at each round's end (a leak check)
    uncached_workers: int = 1  # clients presenting a name used once (0: none)
    fresh_names: int = 3000
    dns_fault_seconds: float = 2.0
    dns_slow_delay: float = 1.5  # seconds each answer is held back in "dns slow"
    dns_timeout: float = 2.0  # the proxy's --timeout (per query)
    dns_deadline: float = 4.0  # the proxy's --deadline (per lookup)
    recovery_window: float = 5.0  # how long to wait for the first client served after a fault
    settle_seconds: float = 1.0  # after a phase, before reading the proxy's RSS


async def run_phase(
    name: str,
    proxy: ProxyProcess,
    clients: tuple[Legit, Legit | None],
    baseline: int,
    settings: Settings,
    action: Callable[[], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    legit, fresh = clients
    stop = asyncio.Event()
    start = time.monotonic()
    peak = {"fds": proxy.fds(), "rss_kib": proxy.rss_kib()}
    sampler = asyncio.ensure_future(watch_peaks(proxy, peak, stop))
    streams = [asyncio.ensure_future(legit.stream(stop, workers=settings.legit_workers))]
    if fresh is not None and settings.uncached_workers:
        streams.append(
            asyncio.ensure_future(fresh.stream(stop, workers=settings.uncached_workers, pause=0.1))
        )
    try:
        abuse = await action()
    finally:
        end = time.monotonic()
        stop.set()
        await asyncio.gather(*streams, sampler)
    reached, took = await wait_for_baseline(proxy, baseline, settings.baseline_wait)
    after = await legit.once()
    await asyncio.sleep(settings.settle_seconds)
    out = {
        "phase": name,
        "seconds": round(end - start, 1),
        "legit": summary(legit.between(start, end)),
        "abuse": abuse,
        "fds_peak": peak["fds"],
        "rss_peak_kib": peak["rss_kib"],
        "rss_after_kib": proxy.rss_kib(),
        "fds_back_to_baseline": reached,
        "seconds_to_baseline": took,
        "served_after": after.ok,
        "served_after_detail": after.detail,
    }
    if fresh is not None:
        out["uncached"] = summary(fresh.between(start, end))
        window = abuse.pop("_fault_window", None)
        if window:
            out["uncached_during_fault"] = summary(fresh.between(*window))
            out["legit_during_fault"] = summary(legit.between(*window))
    out["checks_failed"] = phase_checks(out, settings)
    return out


def phase_checks(p: dict[str, Any], settings: Settings) -> list[str]:
    """The pass rules of issue 13 for one phase; the ones that failed (empty: passed).

    * abuse and DNS faults: the clients whose identity is cached keep >= 99% success and a p99
      under 1 s; clients whose identity is not cached too, except during a DNS fault;
    * during a DNS fault, clients whose identity is not cached are served or refused (TLS up,
      then closed without data, the proxy counting ``rejected_<reason>``) within the lookup
      deadline plus 1 s: a refusal, never a hang;
    * after each fault ends, a client arriving then is served within 1 s (cached and not);
    * descriptors back to their baseline and the next client served."""
    failed: list[str] = []
    name = p["phase"]
    if not p["fds_back_to_baseline"]:
        failed.append("descriptors not back to baseline")
    if not p["served_after"]:
        failed.append("next client not served")
    groups = []
    if name in ABUSE_PHASES:
        groups = [("legit", p["legit"])]
        if "uncached" in p:
            groups.append(("uncached", p["uncached"]))
    elif name in DNS_PHASES:
        groups = [("legit", p["legit"])]
    for label, summ in groups:
        if summ["attempts"] and summ["success"] < 0.99:
            failed.append(f"{label} success {summ['success']:.2%} < 99%")
        if summ["p99_ms"] >= 1000:
            failed.append(f"{label} p99 {summ['p99_ms']} ms >= 1 s")
    if name in DNS_PHASES and "uncached_during_fault" in p:
        during = p["uncached_during_fault"]
        limit = (settings.dns_deadline + 1) * 1000
        if during["outcomes"].get("hang") or during["outcomes"].get("error"):
            failed.append(f"uncached clients hung or failed to connect: {during['outcomes']}")
        if during["slowest_failure_ms"] > limit:
            failed.append(f"uncached refusal took {during['slowest_failure_ms']} ms > {limit} ms")
    # "dns slow": the queries sent before the fault's end are still answered late, and a new
    # lookup shares a query in flight for the same name and type (the zone's DNSKEY): resumed
    # within 1 s of the last late answer
    limit = 1.0 + (settings.dns_slow_delay if name == "dns slow" else 0.0)
    for key in ("recovery_s", "recovery_uncached_s"):
        if key in p["abuse"]:
            took = p["abuse"][key]
            if took is None or took > limit:
                failed.append(f"{key} {took} > {limit} s")
    return failed


async def suite(world: World, settings: Settings) -> dict[str, Any]:
    backend = Backend()
    await backend.start()
    proxy = ProxyProcess(
        world,
        backend.port,
        "--handshake-timeout",
        str(settings.handshake_timeout),
        "--idle-timeout",
        str(settings.idle_timeout),
        "--backend-timeout",
        str(settings.backend_timeout),
        "--max-per-address",
        str(settings.max_per_address),
        "--handshake-rate",
        str(settings.handshake_rate),
        "--timeout",
        str(settings.dns_timeout),
        "--deadline",
        str(settings.dns_deadline),
    )
    await asyncio.to_thread(proxy.start)
    port = proxy.port
    ctx = client_context(name=DEVICE, cert=world.device_cert, key=world.device_key, cafile=world.ca)
    legit = Legit(port, ctx)
    fresh: Legit | None = None
    if world.fresh_names:
        fresh = Legit(
            port,
            ctx,
            source=FRESH_SOURCE,
            timeout=settings.dns_deadline + 3,
            names=world.fresh_names,
            world=world,
        )
    hello = client_hello()
    tasks: set[asyncio.Task[None]] = set()
    report: dict[str, Any] = {"settings": vars(settings), "phases": [], "rounds": []}
    try:
        for _ in range(3):  # warm: the identity is cached afterwards
            await legit.once()
        if fresh is not None:
            await fresh.once(record=False)
        await asyncio.sleep(0.5)
        baseline = proxy.fds()
        report["baseline"] = {"fds": baseline, "rss_kib": proxy.rss_kib()}
        secs = settings.phase_seconds

        async def floods() -> dict[str, Any]:
            duration = max(1, round(secs))
            jobs = {
                "s_time_with_cert": asyncio.ensure_future(stime(port, duration, world)),
                "s_time_no_cert": asyncio.ensure_future(stime(port, duration, None)),
            }
            for kind in FLOOD_SOURCES:
                jobs[kind] = asyncio.ensure_future(flood_process(kind, port, secs, world))
            return {k: await v for k, v in jobs.items()}

        async def holders() -> dict[str, Any]:
            slow = await slowloris(port, settings.holders, hello, tasks)
            idle = await idle_clients(port, ctx, settings.holders, tasks)
            deaf = await deaf_clients(port, ctx, max(1, settings.holders // 4))
            # longer than the handshake and idle timeouts: the proxy must cut them itself
            await asyncio.sleep(max(secs, settings.idle_timeout + settings.handshake_timeout + 1))
            deaf.closed_by_server = sum(not tcp_established(w) for w in deaf.writers)
            out = {
                label: {k: getattr(h, k) for k in ("opened", "refused_at_once", "closed_by_server")}
                for label, h in (("slowloris", slow), ("idle", idle), ("never_read", deaf))
            }
            for h in (slow, idle, deaf):
                h.release()
            return out

        async def resumed(since: float) -> dict[str, Any]:
            """How long after a fault's end a client arriving then is served."""
            jobs = [recovery(legit, since, settings.recovery_window)]
            if fresh is not None:
                jobs.append(recovery(fresh, since, settings.recovery_window))
            took = await asyncio.gather(*jobs)
            out = {"recovery_s": took[0]}
            if fresh is not None:
                out["recovery_uncached_s"] = took[1]
            return out

        def backend_fault(mode: str) -> Callable[[], Awaitable[dict[str, Any]]]:
            async def fault() -> dict[str, Any]:
                before = len(legit.samples)
                begin = time.monotonic()
                if mode == "restart":  # the listener and every connection go, then it comes back
                    await backend.set_mode("down")
                    await backend.drop_connections()
                else:
                    await backend.set_mode(mode)
                await asyncio.sleep(settings.backend_fault_seconds)
                await backend.set_mode("normal")
                end = time.monotonic()
                during = legit.samples[before:]
                return {
                    "legit_during_fault": summary(during),
                    **await resumed(end),
                    "_fault_window": (begin, end),
                }

            return fault

        dns_faults: dict[str, Callable[[], Fault] | None] = {
            "dns slow": lambda: Fault("slow", delay=settings.dns_slow_delay),
            "dns silent": lambda: Fault("silent"),
            "dns malformed": lambda: Fault("malformed"),
            "dns wrong-id": lambda: Fault("wrong-id"),
            "dns bogus": lambda: Fault("bad-signature", rdtype="TLSA"),
            "dns restart": None,  # the server stopped (port closed), then started again
        }

        def dns_fault(name: str) -> Callable[[], Awaitable[dict[str, Any]]]:
            async def fault() -> dict[str, Any]:
                make = dns_faults[name]
                begin = time.monotonic()
                injection = None
                if make is None:
                    await asyncio.to_thread(world.dns_stop)
                else:
                    injection = world.inject(make())
                await asyncio.sleep(settings.dns_fault_seconds)
                if injection is None:
                    await asyncio.to_thread(world.dns_start)
                else:
                    injection.remove()
                end = time.monotonic()
                return {**await resumed(end), "_fault_window": (begin, end)}

            return fault

        actions: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            "floods": floods,
            "holders": holders,
            "backend down": backend_fault("down"),
            "backend silent": backend_fault("silent"),
            "backend resetting": backend_fault("reset"),
            "backend restart": backend_fault("restart"),
        }
        for name in DNS_PHASES:
            actions[name] = dns_fault(name)
        for round_no in range(settings.rounds):
            for name in settings.phases:
                result = await run_phase(
                    name, proxy, (legit, fresh), baseline, settings, actions[name]
                )
                result["round"] = round_no + 1
                report["phases"].append(result)
            await wait_for_baseline(proxy, baseline, settings.baseline_wait)
            await asyncio.sleep(settings.settle_seconds)
            report["rounds"].append({"round": round_no + 1, "rss_end_kib": proxy.rss_kib()})
        report["final"] = {"fds": proxy.fds(), "rss_kib": proxy.rss_kib()}
    finally:
        for task in list(tasks):
            task.cancel()
        report["exit_status"] = await asyncio.to_thread(proxy.stop)
        await backend.stop()
    report["bad_log_lines"] = proxy.bad_log_lines()[:20]
    report["proxy_counters"] = proxy.final_stats()
    report["stopped_line"] = [line for line in proxy.stdout if "stopped" in line]
    report["backend_bad_headers"] = backend.bad_headers
    report["backend_identities"] = sorted(i.decode() for i in backend.identities)
    report["leak_check"] = leak_check(report["rounds"])
    return report


def run(settings: Settings, workdir: Path | None = None) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-tls-")))
        fresh = settings.fresh_names if settings.uncached_workers else 0
        world = stack.enter_context(dns_world(workdir, fresh=fresh))
        return asyncio.run(suite(world, settings))


def _line(label: str, summ: dict[str, Any]) -> str:
    return (
        f"{label} {summ['ok']}/{summ['attempts']} ({summ['success']:.2%}) "
        f"p50 {summ['p50_ms']} ms p99 {summ['p99_ms']} ms"
    )


def print_report(report: dict[str, Any]) -> None:
    print(f"baseline: {report['baseline']}")
    for p in report["phases"]:
        print(
            f"[{p.get('round', 1)}] {p['phase']:<18} {p['seconds']:>5.1f} s  "
            f"{_line('legit', p['legit'])}  "
            f"fds peak {p['fds_peak']} -> baseline {'yes' if p['fds_back_to_baseline'] else 'NO'} "
            f"in {p['seconds_to_baseline']} s  RSS peak {p['rss_peak_kib'] // 1024} MiB, "
            f"after {p['rss_after_kib'] // 1024} MiB  "
            f"next client {'served' if p['served_after'] else 'NOT served'}"
        )
        if "uncached" in p:
            print(f"{'':<22} {_line('uncached', p['uncached'])} {p['uncached']['outcomes']}")
        if "uncached_during_fault" in p:
            d = p["uncached_during_fault"]
            print(
                f"{'':<22} during the fault: {_line('uncached', d)} {d['outcomes']}, slowest "
                f"refusal {d['slowest_failure_ms']} ms; {_line('cached', p['legit_during_fault'])}"
            )
        print(f"{'':<22} abuse: {json.dumps(p['abuse'])}")
        if p["checks_failed"]:
            print(f"{'':<22} FAILED: {'; '.join(p['checks_failed'])}")
    for r in report["rounds"]:
        print(f"round {r['round']} end: RSS {r['rss_end_kib'] // 1024} MiB")
    print(f"leak check: {report['leak_check']}")
    print(f"final: {report['final']}  exit status {report['exit_status']}")
    print(f"proxy counters: {json.dumps(report['proxy_counters'])}")
    print(f"log lines with tracebacks or errors: {len(report['bad_log_lines'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase-seconds", type=float, default=30.0)
    parser.add_argument("--holders", type=int, default=200)
    parser.add_argument("--backend-fault-seconds", type=float, default=10.0)
    parser.add_argument("--max-per-address", type=int, default=64)
    parser.add_argument("--handshake-timeout", type=float, default=10.0)
    parser.add_argument("--idle-timeout", type=float, default=10.0)
    parser.add_argument(
        "--handshake-rate", type=float, default=100.0, help="the proxy's (0: off, floods reach TLS)"
    )
    parser.add_argument("--dns-fault-seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3, help="all phases again (leak check)")
    parser.add_argument(
        "--phases",
        default=",".join(ALL_PHASES),
        help=f"comma-separated, from: {', '.join(ALL_PHASES)}",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--flood", choices=sorted(FLOOD_SOURCES), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        flood_main(args)
        return
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    unknown = sorted(set(phases) - set(ALL_PHASES))
    if unknown:
        parser.error(f"unknown phases: {', '.join(unknown)}")
    settings = Settings(
        phase_seconds=args.phase_seconds,
        holders=args.holders,
        backend_fault_seconds=args.backend_fault_seconds,
        max_per_address=args.max_per_address,
        baseline_wait=60.0,
        handshake_timeout=args.handshake_timeout,
        idle_timeout=args.idle_timeout,
        backend_timeout=5.0,
        handshake_rate=args.handshake_rate,
        dns_fault_seconds=args.dns_fault_seconds,
        rounds=args.rounds,
        phases=phases,
        fresh_names=20_000,
    )
    report = run(settings)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
    sys.exit(0 if passed(report) else 1)


if __name__ == "__main__":
    main()
