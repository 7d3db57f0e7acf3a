"""`dance proxy --mode http`: requests per proxy CPU-second, the strict relay against the old one.

    .venv/bin/python bench/bench_proxy_http.py [--seconds 4] [--rounds 3] [--connections 8]

In one run, each in its own process: a keep-alive HTTP backend (answers every request with 2
bytes), the proxy (TLS 1.3 with dane_clientid, a cached identity, http mode), and Python clients
that open ``--connections`` TLS connections and send GET requests one after the other on each
(6 header fields, one of them a spoofed identity header). The proxy runs with

* ``new``: today's relay (`dance.http.relay`: h11 plus strict checks, re-serialized by h11);
* ``old``: the hand-written relay it replaced (``rewrite_head`` and friends, copied below).

Proxy CPU is read from /proc; rounds alternate old and new. Target: new >= 90% of old.
Figures vary with the machine: compare the ratio from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from dance import certs, make_record  # noqa: E402
from dance.testkit.servers import stop_process  # noqa: E402

DEVICE = "sensor7._device.example.test"
NOW = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
REQUEST = (
    b"GET /v1/readings?since=1700000000 HTTP/1.1\r\nHost: api.example.test\r\n"
    b"User-Agent: bench/1.0\r\nAccept: application/json\r\nAccept-Encoding: identity\r\n"
    b"X-Request-ID: 0123456789abcdef\r\nX-DANCE-Client-ID: spoofed.example.test\r\n\r\n"
)
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# -- the old relay (before the strict parser), copied as the baseline -------------------------

_CHUNK = 64 * 1024
MAX_HEAD = 64 * 1024


class OldProxyError(ValueError):
    pass


def rewrite_head(head: bytes, header: str, identity: str) -> tuple[bytes, int, bool, int]:
    lines = head.split(b"\r\n")
    if len(lines) < 2 or lines[-1] != b"" or lines[-2] != b"":
        raise OldProxyError("request head must end with an empty line")
    request, fields = lines[0], lines[1:-2]
    wanted = header.lower().encode("ascii")
    kept: list[bytes] = []
    length, chunked, stripped = 0, False, 0
    for line in fields:
        if line[:1] in (b" ", b"\t"):
            raise OldProxyError("obsolete header folding")
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise OldProxyError("malformed header line")
        lname = name.lower()
        if lname == wanted:
            stripped += 1
            continue
        if lname == b"content-length":
            if not value.strip().isdigit():
                raise OldProxyError("bad Content-Length")
            new = int(value.strip())
            if length and new != length:
                raise OldProxyError("conflicting Content-Length")
            length = new
        elif lname == b"transfer-encoding":
            codings = [c.strip().lower() for c in value.split(b",")]
            if codings[-1:] != [b"chunked"]:
                raise OldProxyError("unsupported Transfer-Encoding")
            chunked = True
        kept.append(line)
    if chunked and length:
        raise OldProxyError("both Content-Length and chunked")
    ours = header.encode("ascii") + b": " + identity.encode("ascii")
    return b"\r\n".join([request, ours, *kept, b"", b""]), length, chunked, stripped


async def _copy_exact(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    while n > 0:
        data = await reader.read(min(n, _CHUNK))
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        writer.write(data)
        await writer.drain()
        n -= len(data)


async def _copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise OldProxyError("bad chunk size") from None
        writer.write(line)
        if size == 0:
            while True:
                trailer = await reader.readuntil(b"\r\n")
                writer.write(trailer)
                if trailer == b"\r\n":
                    await writer.drain()
                    return
        await _copy_exact(reader, writer, size + 2)


async def _old_requests(
    reader: asyncio.StreamReader, backend: asyncio.StreamWriter, header: str, identity: str
) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                break
            new, length, chunked, _ = rewrite_head(head, header, identity)
            backend.write(new)
            if chunked:
                await _copy_chunked(reader, backend)
            elif length:
                await _copy_exact(reader, backend, length)
            await backend.drain()
    except (OldProxyError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        with contextlib.suppress(OSError):
            if backend.can_write_eof():
                backend.write_eof()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()


async def old_relay_http(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    backend_reader: asyncio.StreamReader,
    backend_writer: asyncio.StreamWriter,
    *,
    header: str,
    identity: str,
    stats: Any,
) -> None:
    await asyncio.gather(
        _old_requests(client_reader, backend_writer, header, identity),
        _pipe(backend_reader, client_writer),
    )


# -- child processes ----------------------------------------------------------------------------


def backend_main() -> None:
    async def on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                await reader.readuntil(b"\r\n\r\n")  # GETs without a body
                writer.write(RESPONSE)
                await writer.drain()
        writer.close()

    from benchlib import serve_until_sigterm

    serve_until_sigterm(on, backlog=512, announce=True)


def proxy_main(args: argparse.Namespace) -> None:
    import dance.tls.proxy as proxy_module
    from dance.auth import Authenticator
    from dance.dns import TLSAResolver, TrustAnchors
    from dance.tls import serve
    from dance.tls.proxy import Proxy, ProxyConfig

    if args.impl == "old":
        proxy_module.relay_http = old_relay_http  # type: ignore[assignment]

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        host, port = args.dns.split(":")
        async with TLSAResolver(
            (host, int(port)), anchors=TrustAnchors.from_file(args.anchor), recursion_desired=False
        ) as res:
            proxy = Proxy(ProxyConfig(("127.0.0.1", args.backend), mode="http"))
            server = await serve(
                proxy.handle,
                "127.0.0.1",
                0,
                cert=args.cert,
                key=args.key,
                authenticator=Authenticator(res, allow=["._device.example.test"]),
            )
            print(server.port, flush=True)
            async with server:
                await stop.wait()

    if args.profile:  # --profile FILE: cProfile of the proxy process (the last round's)
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            asyncio.run(main())
        finally:
            profiler.disable()
            profiler.dump_stats(f"{args.profile}.{args.impl}")
        return
    asyncio.run(main())


def load_main(args: argparse.Namespace) -> None:
    from dance.tls import client_context

    ctx = client_context(name=DEVICE, cert=args.cert, key=args.key, cafile=args.ca)

    async def connection(deadline: float) -> int:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", args.port, ssl=ctx, server_hostname="localhost"
        )
        done = 0
        try:
            while time.monotonic() < deadline:
                writer.write(REQUEST)
                got = b""
                while not got.endswith(b"ok"):
                    data = await reader.read(4096)
                    if not data:
                        return done
                    got += data
                done += 1
        finally:
            writer.close()
        return done

    async def main() -> int:
        deadline = time.monotonic() + args.seconds
        counts = await asyncio.gather(*(connection(deadline) for _ in range(args.connections)))
        return sum(counts)

    print(asyncio.run(main()), flush=True)


class Child:
    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def stop(self) -> None:
        stop_process(self.proc)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def write(d: Path, label: str, cert: Any, key: Any) -> tuple[str, str]:
    (d / f"{label}.pem").write_bytes(certs.certificate_pem(cert))
    certs.write_private_key(d / f"{label}.key", key)
    return str(d / f"{label}.pem"), str(d / f"{label}.key")


def run_load(port: int, seconds: float, connections: int, files: dict[str, str]) -> int:
    out = subprocess.run(
        [
            sys.executable, __file__, "--role", "load", "--port", str(port),
            "--seconds", str(seconds), "--connections", str(connections),
            "--cert", files["client_cert"], "--key", files["client_key"], "--ca", files["ca"],
        ],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    )  # fmt: skip
    return int(out.stdout.split()[0])


def bench(args: argparse.Namespace) -> int:
    from dance.testkit import Hierarchy, ServerThread

    d = Path(tempfile.mkdtemp(prefix="bench-proxy-http-"))
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
    files = {"client_cert": client_cert, "client_key": client_key, "ca": str(d / "ca.pem")}
    zones = Hierarchy("test.", ttl=3600)
    zones.child("example.test.")
    zones.child("_device.example.test.").add("sensor7", "TLSA", make_record(c_cert).to_text())
    zones.sign(algorithm=13, denial="nsec3")
    (d / "anchor.txt").write_text(zones.export_trust_anchor())
    print(
        f"keep-alive GETs, {args.connections} TLS 1.3 connections, {args.seconds} s per round, "
        f"{args.rounds} rounds each; requests per proxy CPU-second"
    )
    rates: dict[str, list[float]] = {"old": [], "new": []}
    backend = Child("--role", "backend")
    try:
        with ServerThread(zones) as dns:
            common = ["--cert", server_cert, "--key", server_key, "--backend", str(backend.port)]
            common += ["--dns", f"{dns.address[0]}:{dns.address[1]}"]
            common += ["--anchor", str(d / "anchor.txt")]
            if args.profile:
                common += ["--profile", args.profile]
            for round_ in range(args.rounds):
                for impl in ("old", "new"):
                    proxy = Child("--role", "proxy", "--impl", impl, *common)
                    try:
                        run_load(proxy.port, 0.5, 2, files)  # warm-up: the DNS lookup, caches
                        user0, sys0 = cpu_seconds(proxy.proc.pid)
                        count = run_load(proxy.port, args.seconds, args.connections, files)
                        user1, sys1 = cpu_seconds(proxy.proc.pid)
                    finally:
                        proxy.stop()
                    user, system = user1 - user0, sys1 - sys0
                    cpu = user + system
                    rate = count / cpu if cpu else 0.0
                    rates[impl].append(rate)
                    print(
                        f"  round {round_ + 1} {impl}: {count:6d} requests, proxy CPU "
                        f"{cpu:5.2f} s (user {user:5.2f}, system {system:5.2f}) -> "
                        f"{rate:6.0f} requests per CPU-second"
                    )
    finally:
        backend.stop()
        shutil.rmtree(d, ignore_errors=True)
    old, new = statistics.median(rates["old"]), statistics.median(rates["new"])
    pairs = [n / o for o, n in zip(rates["old"], rates["new"], strict=True) if o]
    print(f"median old (hand-written relay): {old:6.0f} requests per proxy CPU-second")
    print(f"median new (strict reader, relay): {new:6.0f} requests per proxy CPU-second")
    print(f"new / old: {new / old:.1%} (target >= 90%)")
    print(
        f"per round (new / old of the same round): {', '.join(f'{r:.1%}' for r in pairs)}; "
        f"median {statistics.median(pairs):.1%}"
    )
    from benchlib import Results

    out = Results("bench_proxy_http", quick=args.quick)
    out.add(
        "requests per proxy CPU-second, strict reader",
        new,
        "/CPU-s",
        peer="the hand-written relay before issue 12",
        peer_value=old,
        target=">= 0.9x",
    )
    out.note(
        f"{args.rounds} alternating rounds of {args.seconds:g} s, {args.connections} "
        "keep-alive TLS connections with dane_clientid"
    )
    out.write()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--role", default="bench", choices=("bench", "backend", "proxy", "load"))
    p.add_argument("--impl", choices=("old", "new"), default="new")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=8)
    for opt in ("--cert", "--key", "--ca", "--dns", "--anchor"):
        p.add_argument(opt)
    p.add_argument("--backend", type=int)
    p.add_argument("--profile", help="write the proxy's cProfile stats to FILE.old / FILE.new")
    p.add_argument("--port", type=int)
    p.add_argument("--quick", action="store_true", help="2 rounds of 3 s (make bench-quick)")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.seconds = min(args.rounds, 2), min(args.seconds, 3.0)
    if args.role == "backend":
        backend_main()
    elif args.role == "proxy":
        proxy_main(args)
    elif args.role == "load":
        load_main(args)
    else:
        return bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
