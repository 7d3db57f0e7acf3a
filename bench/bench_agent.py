"""nginx + `dance agent` (auth_request) against nginx alone, in handshakes per CPU-second.

Target (issue 18): nginx plus the agent >= 90% of nginx alone (``ssl_verify_client
optional_no_ca``), counting new TLS 1.3 handshakes with one request each per CPU-second of the
whole server process tree (nginx master + worker, plus the agent for the protected server),
measured in the same run.

Setup, all on loopback: Knot serves the signed zone with the client's ``3 1 1`` record; two
nginx servers run side by side, each with one worker, TLS 1.3 only, session tickets off (every
connection is a full handshake, the client always sends its P-256 certificate), both serving the
same small static file. Client processes open a connection, send one GET, read the answer and
close. Rounds alternate between the two servers; the ratio of the medians is reported. A third
nginx (``--nginx-cache SECONDS``, default 5, 0 to leave it out) runs the ready-made configuration
of docs/http.md, which keeps the agent's answers (``proxy_cache`` on the auth subrequest, key:
certificate and claimed name; ``nginx_conf(auth_cache=...)``), showing the identity it passed
on, which the clients check on every answer.

    .venv/bin/python bench/bench_agent.py [--seconds 4] [--rounds 3] [--clients 3] [--quick]

Writes bench/results/bench_agent.json (benchlib). ``--profile FILE``: the agent runs under
cProfile and writes its stats to FILE when stopped.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from dance import certs, make_record  # noqa: E402
from dance.testkit.frontends import (  # noqa: E402
    Proc,
    client_files,
    nginx_conf,
    server_tls,
    start_agent,
    start_nginx,
)
from dance.testkit.servers import KnotZone, dnskey_anchor, free_port, start_knot  # noqa: E402

NAME = "sensor7._device.example.test"
SOA = "@ SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60"
TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of the processes and all their descendants."""
    total = 0.0
    seen: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
            for task in Path(f"/proc/{pid}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        except (OSError, IndexError, ValueError):
            continue
    return total


def _client(
    port: int,
    cert: str,
    key: str,
    stop_at: float,
    out: multiprocessing.Queue,  # type: ignore[type-arg]
    expect_id: bool = False,
) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    request = b"GET /index.json HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    ok = bad = 0
    while time.monotonic() < stop_at:
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                ctx.wrap_socket(raw) as tls,
            ):
                tls.sendall(request)
                data = b""
                while True:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            if data.startswith(b"HTTP/1.1 200") and (
                not expect_id or f"X-Seen-Client-ID: {NAME}\r\n".encode() in data
            ):
                ok += 1
            else:
                bad += 1
        except (OSError, ssl.SSLError):
            bad += 1
    out.put((ok, bad))


def run_round(
    port: int,
    pids: list[int],
    cert: str,
    key: str,
    seconds: float,
    clients: int,
    expect_id: bool = False,
) -> tuple[float, int, int, float, float]:
    queue: multiprocessing.Queue[tuple[int, int]] = multiprocessing.Queue()
    stop_at = time.monotonic() + seconds
    cpu0 = tree_cpu(pids)
    last0 = tree_cpu(pids[-1:])
    workers = [
        multiprocessing.Process(target=_client, args=(port, cert, key, stop_at, queue, expect_id))
        for _ in range(clients)
    ]
    for w in workers:
        w.start()
    results = [queue.get(timeout=seconds + 30) for _ in workers]
    for w in workers:
        w.join(10)
    cpu = tree_cpu(pids) - cpu0
    last = tree_cpu(pids[-1:]) - last0
    ok = sum(r[0] for r in results)
    bad = sum(r[1] for r in results)
    return ok / cpu if cpu > 0 else 0.0, ok, bad, cpu, last


def _show_identity(conf: str) -> str:
    """The identity nginx passes on, shown to the client too (X-Seen-Client-ID: every answer
    counted as good must carry the right one)."""
    return conf.replace(
        "add_header X-DANCE-Error $dance_error always;",
        "add_header X-DANCE-Error $dance_error always;\n"
        "            add_header X-Seen-Client-ID $dance_client_id always;",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 s (make bench-quick)")
    parser.add_argument("--profile", help="run the agent under cProfile, stats to FILE")
    parser.add_argument("--uvloop", action="store_true", help="the agent on uvloop (extra fast)")
    parser.add_argument(
        "--nginx-cache",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="a third variant: nginx keeps the agent's answers (proxy_cache, key: certificate "
        "and claimed name) for SECONDS (default 5; 0: not measured)",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = min(args.rounds, 2), min(args.seconds, 3.0)

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certs.self_signed(key, NAME, now=now)
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="dance-bench-agent-") as tmp:
        base = Path(tmp)
        zone = KnotZone(
            "example.test",
            f"{SOA}\n@ NS ns1\nns1 A 127.0.0.1\nsensor7._device TLSA {make_record(cert).to_text()}",
        )
        knot = start_knot(base / "knot", [zone])
        try:
            anchor = dnskey_anchor(knot.port, "example.test")
            if args.uvloop:
                from dance.testkit import frontends

                frontends.DANCE = [
                    sys.executable,
                    "-c",
                    "import asyncio, sys, uvloop\n"
                    "asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())\n"
                    "from dance.cli import main\nsys.exit(main(sys.argv[1:]))\n",
                ]
            if args.profile:  # the agent under cProfile (stats written when it stops)
                from dance.testkit import frontends

                frontends.DANCE = [
                    sys.executable,
                    "-c",
                    "import cProfile, sys\nfrom dance.cli import main\n"
                    "p = cProfile.Profile()\np.enable()\ntry:\n    main(sys.argv[1:])\n"
                    f"finally:\n    p.disable()\n    p.dump_stats({args.profile!r})\n",
                ]
            cert_path, key_path = client_files(base / "client", "device", cert, key)
            agent = start_agent(
                base / "agent", knot.port, anchor, ["--allow", "._device.example.test"]
            )
            procs.append(agent)
            servers: dict[str, tuple[Proc, list[int]]] = {}
            variants: list[tuple[str, int | None, float]] = [
                ("nginx alone", None, 0.0),
                ("nginx + agent", agent.port, 0.0),
            ]
            if args.nginx_cache:
                variants.append(("+ nginx cache", agent.port, args.nginx_cache))
            for label, agent_port, cache in variants:
                work = base / f"nginx{len(servers)}"
                work.mkdir()
                (work / "html").mkdir()
                (work / "html" / "index.json").write_text('{"ok": true}\n')
                port = free_port()
                conf = nginx_conf(
                    work,
                    port,
                    server_tls(work),
                    agent_port=agent_port,
                    backend_port=1,
                    access_log=False,
                    auth_cache=cache,  # the docs/http.md configuration when > 0
                )
                # Serve the static file (a real content handler) instead of proxying.
                conf = conf.replace("proxy_pass http://127.0.0.1:1;", f"root {work}/html;")
                if cache:
                    conf = _show_identity(conf)
                nginx = start_nginx(work, conf, port)
                procs.append(nginx)
                pids = [nginx.process.pid] + ([agent.process.pid] if agent_port else [])
                servers[label] = (nginx, pids)

            # Warm up (the first request makes the DNS lookup and fills the caches).
            for nginx, pids in servers.values():
                run_round(nginx.port, pids, str(cert_path), str(key_path), 0.5, 1)

            rates: dict[str, list[float]] = {label: [] for label in servers}
            failures = 0
            for r in range(args.rounds):
                for label, (nginx, pids) in servers.items():
                    rate, ok, bad, cpu, last = run_round(
                        nginx.port, pids, str(cert_path), str(key_path), args.seconds,
                        args.clients, label == "+ nginx cache",
                    )  # fmt: skip
                    failures += bad
                    rates[label].append(rate)
                    share = f" (agent {last:.2f} CPU-s)" if len(pids) > 1 else ""
                    print(
                        f"round {r + 1} {label:14s}: {ok:6d} handshakes, {bad} failed, "
                        f"{cpu:6.2f} CPU-s{share}, {rate:7.0f} handshakes/CPU-s",
                        flush=True,
                    )
            import json
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/stats") as answer:
                stats = json.load(answer)
            print(
                f"agent: {stats['requests']} requests on {stats['connections_total']} connections, "
                f"{stats['auth_decision_cache_hits']} decision-cache hits, "
                f"{stats['auth_dns_lookups']} DNS lookups"
            )
            alone = statistics.median(rates["nginx alone"])
            with_agent = statistics.median(rates["nginx + agent"])
            alone_rates, agent_rates = rates["nginx alone"], rates["nginx + agent"]
            pairs = [a / n for n, a in zip(alone_rates, agent_rates, strict=True) if n]
            print()
            print(f"nginx alone            : {alone:7.0f} handshakes per CPU-second (median)")
            print(f"nginx + dance agent    : {with_agent:7.0f} handshakes per CPU-second (median)")
            ratio = with_agent / alone if alone else 0.0
            verdict = "OK" if ratio >= 0.9 else "BELOW TARGET"
            print(f"ratio                  : {ratio:.1%} (target >= 90%) {verdict}")
            print(f"per round              : {', '.join(f'{r:.1%}' for r in pairs)}")
            if failures:
                print(f"failed requests: {failures}")
            from benchlib import Results

            out = Results("bench_agent", quick=args.quick)
            out.add(
                "nginx + dance agent, handshakes (one request each) per CPU-second",
                with_agent,
                "/CPU-s",
                peer="nginx alone, ssl_verify_client optional_no_ca",
                peer_value=alone,
                target=">= 0.9x",
            )
            if "+ nginx cache" in rates:
                cached = statistics.median(rates["+ nginx cache"])
                cached_pairs = [
                    c / n for n, c in zip(alone_rates, rates["+ nginx cache"], strict=True) if n
                ]
                print(f"per round (cache)      : {', '.join(f'{r:.1%}' for r in cached_pairs)}")
                out.note(
                    "per-round ratios with the nginx cache "
                    + ", ".join(f"{r:.2f}" for r in cached_pairs)
                )
                print(f"+ nginx cache {args.nginx_cache:g} s : {cached:7.0f} handshakes per "
                      f"CPU-second (median), {cached / alone:.1%} of nginx alone")  # fmt: skip
                out.add(
                    f"nginx + dance agent, nginx caching its answers {args.nginx_cache:g} s "
                    "(docs/http.md configuration)",
                    cached,
                    "/CPU-s",
                    peer="nginx alone, ssl_verify_client optional_no_ca",
                    peer_value=alone,
                    target=">= 0.9x",
                )
            out.note(
                f"{args.rounds} alternating rounds of {args.seconds:g} s, {args.clients} client "
                "processes, TLS 1.3 without tickets, one GET per connection; CPU of the whole "
                "server process tree (nginx master + worker, the agent); per-round ratios "
                + ", ".join(f"{r:.2f}" for r in pairs)
            )
            if failures:
                out.note(f"{failures} failed requests")
            out.write()
        finally:
            for proc in reversed(procs):
                proc.stop()
            knot.stop()


if __name__ == "__main__":
    main()
