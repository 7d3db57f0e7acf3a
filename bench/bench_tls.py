"""DANCE over TLS: handshakes per server CPU-second, and behaviour under a slow DNS server.

    .venv/bin/python bench/bench_tls.py [--seconds 4] [--rounds 3] [--concurrency 8]
                                        [--cold-rate 20] [--no-nginx] [--only-slow] [--no-slow]

Part 1, in one run, each server in its own process, the same Python clients (TLS 1.3, P-256
certificates, no tickets, one short exchange per connection), server CPU read from /proc:

* ``dance``: ``dance.tls.serve`` with a cached identity (decided inside the handshake);
* ``pinned``: the same asyncio server shape with plain ``ssl``, mutual TLS with the client
  certificate pinned as the only CA (no DANCE): the baseline, target dance >= 90% of it;
* ``nginx``: nginx (1 worker) with ``ssl_verify_client optional_no_ca``, if installed.

Part 3 (issue 18 item 1): ``dance proxy`` in tcp mode against nginx ``stream`` (1 worker,
``ssl_verify_client optional_no_ca``), both relaying to the same backend (it answers ``ok`` to
every connection), in alternating rounds, each driven by the same two clients: the Python
``dane_clientid`` clients above, and 3 ``openssl s_time -new`` processes presenting the
certificate (dance identifies it by its SAN: ``--san-fallback``). Needs nginx's stream module
(Debian: libnginx-mod-stream).

Part 2 (slow DNS): the DNS server answers names below ``slow._device.example.test`` only after
5 s, and cold clients with fresh names there arrive at ``--cold-rate`` per second from another
process. Cached clients are measured (a) saturating, alone before and after, and with the cold
load; (b) paced at ``--offered`` of that capacity, alone and with the cold load (share served,
latency). The server's peak open file descriptors and RSS are printed.
Figures vary with the machine: compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from dance import certs, make_record  # noqa: E402

DEVICE = "sensor7._device.example.test"
NOW = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)


# -- server processes -------------------------------------------------------------------------


async def _handler_reply(writer: asyncio.StreamWriter) -> None:
    writer.write(b"ok\n")
    await writer.drain()


def backend_main() -> None:
    """Child process: the relays' backend. Every connection gets ``ok`` at once and is closed
    when the client (the relay) closes its side."""

    async def on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"ok\n")
            while await reader.read(65536):
                pass
        except OSError:
            pass
        finally:
            writer.close()

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        server = await asyncio.start_server(on, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await stop.wait()

    asyncio.run(main())


def pinned_context(args: argparse.Namespace) -> ssl.SSLContext:
    """Plain ``ssl``, TLS 1.3 without tickets, mutual TLS with the client certificate pinned as
    the only CA (no DANCE): the baseline servers' context."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.num_tickets = 0
    ctx.options |= ssl.OP_NO_TICKET
    ctx.load_cert_chain(args.cert, args.key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(args.pin)
    return ctx


def serve_main(args: argparse.Namespace) -> None:
    """Child process: one server until SIGTERM; prints its port."""

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        if args.role == "pinned":
            ctx = pinned_context(args)

            async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                try:
                    await _handler_reply(writer)
                except (OSError, ssl.SSLError):
                    pass
                finally:
                    writer.close()

            server = await asyncio.start_server(plain, "127.0.0.1", 0, ssl=ctx, backlog=512)
            print(server.sockets[0].getsockname()[1], flush=True)
            async with server:
                await stop.wait()
            return
        from dance.auth import Authenticator
        from dance.dns import TLSAResolver, TrustAnchors
        from dance.identity import Identity
        from dance.tls import serve

        host, port = args.dns.split(":")
        async with TLSAResolver(
            (host, int(port)),
            anchors=TrustAnchors.from_file(args.anchor),
            recursion_desired=False,
            timeout=7.0,
            deadline=12.0,
        ) as res:
            auth = Authenticator(res, allow=["._device.example.test"])

            async def handler(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, identity: Identity
            ) -> None:
                await _handler_reply(writer)

            if args.role == "proxy":  # dance proxy, tcp mode (PROXY v2 header to the backend)
                from dance.tls.proxy import Proxy, ProxyConfig

                handler = Proxy(ProxyConfig(("127.0.0.1", args.backend), mode="tcp")).handle
            server = await serve(
                handler,
                "127.0.0.1",
                0,
                cert=args.cert,
                key=args.key,
                authenticator=auth,
                max_pending=args.max_pending,
                lookup_timeout=15.0,
                # every client of this benchmark comes from 127.0.0.1: the per-address cap
                # would refuse the paced clients behind the cold ones (max_pending bounds those)
                max_per_address=100_000,
                max_connections=4096,
                san_fallback=args.role == "proxy",  # openssl s_time sends no dane_clientid
            )
            print(server.port, flush=True)
            async with server:
                await stop.wait()
            print(server.stats.snapshot(), file=sys.stderr, flush=True)

    if args.uvloop:  # the dance servers on uvloop (the extra "fast")
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def floor_main(args: argparse.Namespace) -> None:
    """Child process: the floor of any CPython relay. One thread, blocking sockets, no asyncio:
    accept, a TLS 1.3 handshake in one call into OpenSSL (stdlib ``ssl``, the client certificate
    pinned as the only CA, so verification runs in C), connect to the backend, relay its answer,
    close. No limits, no timeouts, no DANE: what a CPython process spends with the least Python
    that can relay a mutual-TLS connection. Until SIGTERM; prints its port."""
    import socket

    ctx = pinned_context(args)
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        try:
            with (
                ctx.wrap_socket(conn, server_side=True) as tls,
                socket.create_connection(("127.0.0.1", args.backend)) as backend,
            ):
                tls.sendall(backend.recv(4096))
        except (OSError, ssl.SSLError):
            conn.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Child:
    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.pid = self.proc.pid

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


# -- clients ------------------------------------------------------------------------------------


async def one(port: int, ctx: ssl.SSLContext, request: bytes) -> bool:
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
    except (OSError, ssl.SSLError):
        return False
    try:
        if request:
            writer.write(request)
        data = await reader.read(4096)
        return bool(data)
    except (OSError, ssl.SSLError):
        return False
    finally:
        writer.close()


async def load(
    port: int, ctx: ssl.SSLContext, seconds: float, concurrency: int, request: bytes = b""
) -> tuple[int, int]:
    ok = failed = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal ok, failed
        while time.monotonic() < deadline:
            if await one(port, ctx, request):
                ok += 1
            else:
                failed += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, failed


def measure(
    name: str, pid: int, port: int, ctx: ssl.SSLContext, args: argparse.Namespace, req: bytes
) -> float:
    asyncio.run(load(port, ctx, 0.5, 2, req))  # warm-up (DANCE: the lookup, then cached)
    cpu0 = cpu_seconds(pid)
    t0 = time.monotonic()
    ok, failed = asyncio.run(load(port, ctx, args.seconds, args.concurrency, req))
    wall = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0
    rate = ok / cpu if cpu else 0.0
    print(
        f"  {name:8s} {ok:6d} handshakes in {wall:4.1f} s ({ok / wall:6.0f}/s wall), "
        f"server CPU {cpu:5.2f} s -> {rate:6.0f} handshakes per server CPU-second"
        + (f", {failed} failed" if failed else "")
    )
    return rate


def load_main(args: argparse.Namespace) -> int:
    """Child process: cached clients (the published device) for ``--seconds``; prints the count."""
    from dance.tls import client_context

    ctx = client_context(name=DEVICE, cert=args.cert, key=args.key, cafile=args.pin)
    if not args.rate:
        ok, failed = asyncio.run(load(args.port, ctx, args.seconds, args.concurrency))
        print(ok, failed, flush=True)
        return 0
    latencies: list[float] = []

    async def paced() -> int:
        tasks: set[asyncio.Task[None]] = set()

        async def timed() -> None:
            t0 = time.monotonic()
            if await one(args.port, ctx, b""):
                latencies.append(time.monotonic() - t0)

        start = time.monotonic()
        n = 0
        while (now := time.monotonic()) < start + args.seconds:
            due = start + n / args.rate
            if due > now:
                await asyncio.sleep(due - now)
            t = asyncio.ensure_future(timed())
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        return n

    offered = asyncio.run(paced())
    lat = sorted(latencies) or [0.0]
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(len(latencies), offered, f"{p50 * 1000:.1f}", f"{p99 * 1000:.1f}", flush=True)
    return 0


def run_load(
    args: argparse.Namespace, port: int, cert: str, key: str, ca: str, rate: float = 0.0
) -> list[str]:
    out = subprocess.run(
        [sys.executable, __file__, "--role", "load", "--port", str(port), "--cert", cert,
         "--key", key, "--pin", ca, "--seconds", str(args.seconds),
         "--concurrency", str(args.concurrency), "--rate", str(rate)],
        capture_output=True, text=True, check=True, timeout=args.seconds + 60,
    )  # fmt: skip
    return out.stdout.split()


def cold_main(args: argparse.Namespace) -> int:
    """Child process: clients with fresh names below slow._device.example.test at a fixed rate."""
    from dance.tls import client_context

    counts = {"sent": 0, "accepted": 0, "refused": 0}

    async def run() -> None:
        tasks: set[asyncio.Task[None]] = set()
        end = time.monotonic() + args.seconds
        n = 0

        async def go(ctx: ssl.SSLContext) -> None:
            ok = await one(args.port, ctx, b"")
            counts["accepted" if ok else "refused"] += 1

        while time.monotonic() < end:
            n += 1
            ctx = client_context(
                name=f"c{n}-{os.getpid()}.slow._device.example.test",
                cert=args.cert,
                key=args.key,
                cafile=args.pin,
            )
            t = asyncio.ensure_future(go(ctx))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            counts["sent"] += 1
            await asyncio.sleep(1 / args.cold_rate)
        await asyncio.wait(tasks, timeout=7) if tasks else None

    asyncio.run(run())
    print(
        f"{counts['sent']} cold, {counts['accepted']} accepted after the slow answer, "
        f"{counts['refused']} refused or unfinished"
    )
    return 0


# -- nginx --------------------------------------------------------------------------------------


def _nginx(d: Path, conf: Callable[[int], str]) -> tuple[subprocess.Popen[bytes], int, list[int]]:
    """nginx with 1 worker and ``conf(port)``, started by the test kit (``daemon off``, waits
    for the port); returns the master, the port and the worker pids."""
    from dance.testkit.frontends import start_nginx as start
    from dance.testkit.servers import free_port

    port = free_port()
    proc = start(d, f"worker_processes 1;\npid {d}/nginx.pid;\n{conf(port)}", port)
    pid = proc.process.pid
    children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return proc.process, port, children


def _tls(cert: str, key: str) -> str:
    return f"""
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.3;
    ssl_session_tickets off;
    ssl_session_cache off;
    ssl_verify_client optional_no_ca;"""


def start_nginx(d: Path, cert: str, key: str) -> tuple[subprocess.Popen[bytes], int, list[int]]:
    """nginx ``http``: TLS 1.3 with ``ssl_verify_client optional_no_ca``, answering ok."""
    return _nginx(
        d / "http",
        lambda port: (
            f"""
events {{ worker_connections 1024; }}
http {{
  access_log off;
  server {{
    listen 127.0.0.1:{port} ssl;{_tls(cert, key)}
    location / {{ return 200 "ok $ssl_client_fingerprint\\n"; }}
  }}
}}
"""
        ),
    )


STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def start_nginx_stream(
    d: Path, cert: str, key: str, backend: int
) -> tuple[subprocess.Popen[bytes], int, list[int]]:
    """nginx ``stream``: TLS 1.3 with ``ssl_verify_client optional_no_ca``, relaying to
    ``backend`` (1 worker; the module from Debian's libnginx-mod-stream)."""
    return _nginx(
        d,
        lambda port: (
            f"""
load_module {STREAM_MODULE};
events {{ worker_connections 2048; }}
stream {{
  server {{
    listen 127.0.0.1:{port} ssl;{_tls(cert, key)}
    proxy_pass 127.0.0.1:{backend};
  }}
}}
"""
        ),
    )


def s_time(port: int, cert: str, key: str, seconds: float, processes: int) -> int:
    """Connections made by ``processes`` parallel ``openssl s_time -new`` (a full handshake
    each, the client certificate sent, no request)."""
    import re

    procs = [
        subprocess.Popen(
            [
                "openssl",
                "s_time",
                "-connect",
                f"127.0.0.1:{port}",
                "-new",
                "-cert",
                cert,
                "-key",
                key,
                "-time",
                str(max(1, round(seconds))),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(processes)
    ]
    total = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 60)
        match = re.search(r"(\d+) connections in [\d.]+s", out)
        total += int(match.group(1)) if match else 0
    return total


def part3(
    args: argparse.Namespace,
    d: Path,
    common: list[str],
    client_cert: str,
    client_key: str,
    server_cert: str,
    server_key: str,
    dance_ctx: ssl.SSLContext,
    out: Any,
) -> None:
    """`dance proxy` (tcp mode) against nginx ``stream``, both relaying to the same backend,
    driven by the same clients in alternating rounds: handshakes relayed per server
    CPU-second."""
    print("\nPart 3: dance proxy (tcp) against nginx stream, same backend, same clients")
    backend = Child("--role", "backend")
    rates: dict[tuple[str, str], list[float]] = {}
    try:
        for _ in range(args.rounds):
            for server in ("proxy", "nginx", "floor"):
                if server in ("proxy", "floor"):
                    child = Child("--role", server, *common, "--backend", str(backend.port),
                                  "--pin", client_cert)  # fmt: skip
                    port, pids, stop = child.port, [child.pid], child.stop
                else:
                    proc, port, workers = start_nginx_stream(
                        d / "stream", server_cert, server_key, backend.port
                    )
                    pids = workers or [proc.pid]

                    def stop(proc: subprocess.Popen[bytes] = proc) -> str:
                        proc.terminate()
                        proc.wait()
                        return ""

                try:
                    asyncio.run(load(port, dance_ctx, 0.5, 2))  # warm-up: the lookup
                    for client in ("dane_clientid", "s_time"):
                        cpu0 = sum(cpu_seconds(p) for p in pids)
                        if client == "s_time":
                            ok = s_time(port, client_cert, client_key, args.seconds, 3)
                        else:
                            ok, _ = asyncio.run(
                                load(port, dance_ctx, args.seconds, args.concurrency)
                            )
                        cpu = sum(cpu_seconds(p) for p in pids) - cpu0
                        rate = ok / cpu if cpu else 0.0
                        rates.setdefault((server, client), []).append(rate)
                        print(
                            f"  {server:5s} {client:13s} {ok:6d} handshakes, server CPU "
                            f"{cpu:5.2f} s -> {rate:6.0f} per server CPU-second "
                            f"({cpu / ok * 1e6 if ok else 0:.0f} us each)"
                        )
                finally:
                    stop()
    finally:
        backend.stop()
    for client in ("dane_clientid", "s_time"):
        proxy = statistics.median(rates[("proxy", client)])
        nginx = statistics.median(rates[("nginx", client)])
        floor = statistics.median(rates[("floor", client)])
        print(f"  {client}: dance proxy / nginx stream = {proxy / nginx:.0%} (target >= 100%); "
              f"the CPython floor / nginx stream = {floor / nginx:.0%}")  # fmt: skip
        for server in ("proxy", "floor"):  # each round against the nginx of the same round
            pairs = zip(rates[(server, client)], rates[("nginx", client)], strict=True)
            per_round = ", ".join(f"{a / b:.2f}" for a, b in pairs)
            out.note(f"part 3, {client}, {server} / nginx stream per round: {per_round}")
        label = "a dane_clientid client" if client == "dane_clientid" else (
            "openssl s_time -new, certificate through --san-fallback"
        )  # fmt: skip
        out.add(f"dance proxy (tcp), handshakes relayed per server CPU-second, {label}",
                proxy, "/CPU-s", peer="nginx stream, ssl_verify_client optional_no_ca",
                peer_value=nginx, target=">= 1.0x")  # fmt: skip
        out.add(f"the CPython floor (one blocking thread, stdlib ssl, certificate pinned, no "
                f"asyncio, no DANE), handshakes relayed per server CPU-second, {label}",
                floor, "/CPU-s", peer="nginx stream, ssl_verify_client optional_no_ca",
                peer_value=nginx)  # fmt: skip


# -- main ---------------------------------------------------------------------------------------


def write(d: Path, label: str, cert: Any, key: Any) -> tuple[str, str]:
    (d / f"{label}.pem").write_bytes(certs.certificate_pem(cert))
    certs.write_private_key(d / f"{label}.key", key)
    return str(d / f"{label}.pem"), str(d / f"{label}.key")


def bench(args: argparse.Namespace) -> int:
    from dance.testkit import Hierarchy, ServerThread
    from dance.tls import client_context

    d = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    ca_key = certs.generate_key("ec-p256")
    ca = certs.new_ca(ca_key, "bench CA", now=NOW)
    s_key = certs.generate_key("ec-p256")
    s_cert = certs.issue_certificate(
        ca, ca_key, s_key.public_key(), dns_names=["localhost"], now=NOW, client_auth=False
    )
    (d / "ca.pem").write_bytes(certs.certificate_pem(ca))
    server_cert, server_key = write(d, "server", s_cert, s_key)
    c_key = certs.generate_key("ec-p256")
    c_cert = certs.self_signed(c_key, DEVICE, now=NOW)
    client_cert, client_key = write(d, "client", c_cert, c_key)
    zones = Hierarchy("test.", ttl=3600)
    zones.child("example.test.")
    devices = zones.child("_device.example.test.")
    devices.add("sensor7", "TLSA", make_record(c_cert).to_text())
    devices.add("*.slow", "TLSA", make_record(c_cert).to_text())
    zones.sign(algorithm=13, denial="nsec3")
    (d / "anchor.txt").write_text(zones.export_trust_anchor())

    dance_ctx = client_context(
        name=DEVICE, cert=client_cert, key=client_key, cafile=str(d / "ca.pem")
    )
    plain_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    plain_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    plain_ctx.load_verify_locations(str(d / "ca.pem"))
    plain_ctx.load_cert_chain(client_cert, client_key)
    print(f"TLS 1.3, P-256, {args.concurrency} concurrent Python clients, {args.seconds} s each")

    with ServerThread(zones) as dns:
        dns_arg = f"{dns.address[0]}:{dns.address[1]}"
        common = ["--cert", server_cert, "--key", server_key, "--dns", dns_arg]
        common += ["--anchor", str(d / "anchor.txt")]
        if not args.only_slow:
            part1(args, d, common, client_cert, client_key, server_cert, server_key,
                  dance_ctx, plain_ctx)  # fmt: skip
        if not args.quick and not args.no_slow:
            part2(args, d, zones, common, client_cert, client_key, dance_ctx)
    shutil.rmtree(d, ignore_errors=True)
    return 0


def part1(
    args: argparse.Namespace,
    d: Path,
    common: list[str],
    client_cert: str,
    client_key: str,
    server_cert: str,
    server_key: str,
    dance_ctx: ssl.SSLContext,
    plain_ctx: ssl.SSLContext,
) -> None:
    print("\nPart 1: handshakes per server CPU-second")
    all_rates: dict[str, list[float]] = {}
    for role in ("pinned", "dance") * args.rounds:
        child = Child("--role", role, *common, "--pin", client_cert)
        try:
            ctx = dance_ctx if role == "dance" else plain_ctx
            rate = measure(role, child.pid, child.port, ctx, args, b"")
            all_rates.setdefault(role, []).append(rate)
        finally:
            child.stop()
    rates = {role: statistics.median(values) for role, values in all_rates.items()}
    print(
        f"  medians: dance {rates['dance']:.0f}, pinned {rates['pinned']:.0f}: "
        f"dance / pinned = {rates['dance'] / rates['pinned']:.0%} (target >= 90%)"
    )
    from benchlib import Results

    out = Results("bench_tls", quick=getattr(args, "quick", False))
    out.add("dance.tls.serve, handshakes per server CPU-second (cached identity)",
            rates["dance"], "/CPU-s", peer="stdlib ssl, certificate pinned",
            peer_value=rates["pinned"], target=">= 0.9x")  # fmt: skip
    if not args.no_nginx and (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        proc, port, workers = start_nginx(d, server_cert, server_key)
        try:
            req = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"
            cpu_pids = workers or [proc.pid]
            asyncio.run(load(port, plain_ctx, 0.5, 2, req))
            cpu0 = sum(cpu_seconds(p) for p in cpu_pids)
            ok, _ = asyncio.run(load(port, plain_ctx, args.seconds, args.concurrency, req))
            cpu = sum(cpu_seconds(p) for p in cpu_pids) - cpu0
            rate = ok / cpu if cpu else 0.0
            print(
                f"  nginx    {ok:6d} handshakes, worker CPU {cpu:5.2f} s -> {rate:6.0f} "
                f"per server CPU-second (ssl_verify_client optional_no_ca)"
            )
            print(f"  dance / nginx = {rates['dance'] / rate:.0%}")
            out.add("dance.tls.serve, handshakes per server CPU-second", rates["dance"],
                    "/CPU-s", peer="nginx, ssl_verify_client optional_no_ca",
                    peer_value=rate, target=">= 1.0x")  # fmt: skip
        finally:
            proc.terminate()
            proc.wait()
    elif args.no_nginx:
        print("  nginx: skipped (--no-nginx)")
    else:
        print("  nginx: not installed (apt-get install -y nginx), skipped")
    if not args.no_nginx and STREAM_MODULE.exists() and shutil.which("openssl"):
        part3(args, d, common, client_cert, client_key, server_cert, server_key, dance_ctx, out)
        out.note(
            "part 3: the relays' backend answers ok to every connection; dane_clientid: "
            f"{args.concurrency} concurrent Python clients; s_time: 3 openssl s_time -new "
            "processes"
        )
    else:
        print("  part 3 (nginx stream): needs nginx's stream module (libnginx-mod-stream)")
    out.write()


def part2(
    args: argparse.Namespace,
    d: Path,
    zones: Any,
    common: list[str],
    client_cert: str,
    client_key: str,
    dance_ctx: ssl.SSLContext,
) -> None:
    import threading

    from dance.testkit import Fault

    print("\nPart 2: a DNS server answering slow._device.example.test names after 5 s")
    ca = str(d / "ca.pem")
    child = Child("--role", "dance", *common, "--max-pending", str(args.max_pending))
    fault = Fault("slow", "slow._device.example.test", subtree=True, delay=5.0)

    def with_cold(measure: Any) -> tuple[Any, str, dict[str, int]]:
        """Run ``measure()`` while cold clients arrive; the server's peak fds and RSS."""
        with zones.inject(fault):
            cold = subprocess.Popen(
                [sys.executable, __file__, "--role", "cold", "--port", str(child.port),
                 "--cert", client_cert, "--key", client_key, "--pin", ca,
                 "--seconds", str(args.seconds + 2), "--cold-rate", str(args.cold_rate)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            peaks = {"fds": fds(child.pid), "rss": rss_kib(child.pid)}
            time.sleep(1.0)  # let the cold load build up
            box: list[Any] = []
            runner = threading.Thread(target=lambda: box.append(measure()))
            runner.start()
            while runner.is_alive() or cold.poll() is None:
                peaks["fds"] = max(peaks["fds"], fds(child.pid))
                peaks["rss"] = max(peaks["rss"], rss_kib(child.pid))
                time.sleep(0.1)
            cold_out, _ = cold.communicate(timeout=30)
        return box[0], cold_out.strip(), peaks

    try:
        asyncio.run(load(child.port, dance_ctx, 0.5, 2))  # the lookup, then cached
        fd0, rss0 = fds(child.pid), rss_kib(child.pid)
        print(f"  server at rest: fds {fd0}, RSS {rss0 // 1024} MiB")

        # (a) saturating cached load (a client process with --concurrency connections)
        def saturating() -> int:
            return int(run_load(args, child.port, client_cert, client_key, ca)[0])

        before = saturating()
        during, cold_out, peaks = with_cold(saturating)
        after = saturating()
        base = (before + after) / 2
        print(
            f"  (a) saturating: cached clients alone {before / args.seconds:.0f}/s before, "
            f"{after / args.seconds:.0f}/s after; with cold clients {during / args.seconds:.0f}/s"
            f" = {during / base:.0%} (2 vCPUs shared by server, load and cold clients)"
        )
        print(f"      cold clients ({args.cold_rate:.0f}/s): {cold_out}")
        print(
            f"      server peaks: fds {peaks['fds']} (max_pending {args.max_pending}), "
            f"RSS {peaks['rss'] // 1024} MiB"
        )
        # (b) paced cached load at a fraction of capacity: does it keep up, and how fast?
        rate = args.offered * base / args.seconds

        def paced() -> list[str]:
            return run_load(args, child.port, client_cert, client_key, ca, rate)

        alone = paced()
        mixed, cold_out, peaks = with_cold(paced)
        print(
            f"  (b) paced at {rate:.0f}/s ({args.offered:.0%} of capacity): alone "
            f"{int(alone[0]) / int(alone[1]):.0%} served, latency p50 {alone[2]} ms p99 "
            f"{alone[3]} ms; with cold clients {int(mixed[0]) / int(mixed[1]):.0%} served "
            f"(target >= 90%), p50 {mixed[2]} ms p99 {mixed[3]} ms"
        )
        print(f"      cold clients: {cold_out}")
        print(f"      server peaks: fds {peaks['fds']}, RSS {peaks['rss'] // 1024} MiB")
    finally:
        err = child.stop()
    print(f"  server counters: {err.strip().splitlines()[-1] if err.strip() else '-'}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--role", choices=("dance", "pinned", "cold", "load", "proxy", "backend", "floor")
    )
    p.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    p.add_argument("--uvloop", action="store_true", help="run the dance servers on uvloop")
    p.add_argument("--port", type=int)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--pin")
    p.add_argument("--dns")
    p.add_argument("--anchor")
    p.add_argument("--max-pending", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--cold-rate", type=float, default=20.0, help="cold clients per second")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    p.add_argument("--no-nginx", action="store_true")
    p.add_argument("--only-slow", action="store_true", help="run part 2 only")
    p.add_argument("--no-slow", action="store_true", help="skip part 2 (the slow DNS server)")
    p.add_argument("--quick", action="store_true", help="part 1 only, 1 round of 3 s")
    p.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument(
        "--offered", type=float, default=0.6, help="part 2 paced load, fraction of capacity"
    )
    args = p.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, min(args.seconds, 3.0)
    if args.role == "cold":
        return cold_main(args)
    if args.role == "load":
        return load_main(args)
    if args.role == "backend":
        backend_main()
        return 0
    if args.role == "floor":
        floor_main(args)
        return 0
    if args.role:
        if os.environ.get("BENCH_TLS_PROFILE"):  # developer aid: cProfile the server process
            import cProfile

            out = f"{os.environ['BENCH_TLS_PROFILE']}.{args.role}"
            cProfile.runctx("serve_main(args)", globals(), locals(), out)
        else:
            serve_main(args)
        return 0
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
