"""``python -m dance.lorawan join-server|join-request``: the two services as processes.

    python -m dance.lorawan join-server --listen 127.0.0.1:8443 --cert js.pem --key js.key \
        --join-eui 70b3d57ed0000001 --device 0004a30b001c0530=<AppKey hex> \
        --network-server ns1.netid-000013.example.test=000013 \
        --dns 127.0.0.1:53 --trust-anchor anchor.txt
    python -m dance.lorawan join-request --connect 127.0.0.1:8443 --server-name js.example.test \
        --client-name ns1.netid-000013.example.test --cert ns1.pem --key ns1.key \
        --dns 127.0.0.1:53 --trust-anchor anchor.txt --request joinreq.json

The join server prints ``listening HOST PORT`` once it serves and stops on SIGTERM or SIGINT
(exit 0). ``join-request`` prints the JoinAns (exit 0), or ``refused: REASON: detail`` (exit 1).
DNS is a validating stub to the given server with the given trust anchors.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from dance.auth import Authenticator
from dance.dns import TLSAResolver, TrustAnchors
from dance.lorawan.join_server import JoinServer
from dance.lorawan.messages import MessageError, encode, parse
from dance.lorawan.network_server import JoinError, join_request
from dance.tls.server import serve


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"HOST:PORT expected, not {text!r}")
    return host, int(port)


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"KEY=VALUE expected, not {text!r}")
    return key, value


def _resolver(args: argparse.Namespace) -> TLSAResolver:
    anchors = TrustAnchors.from_text(Path(args.trust_anchor).read_text())
    return TLSAResolver(args.dns, anchors=anchors, recursion_desired=False, deadline=5.0)


async def _join_server(args: argparse.Namespace) -> int:
    js = JoinServer(
        join_eui=args.join_eui,
        devices={dev: bytes.fromhex(k) for dev, k in args.device},
        network_servers=dict(args.network_server),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with _resolver(args) as resolver:
        auth = Authenticator(resolver, allow=js.allow_list())
        host, port = args.listen
        server = await serve(
            js.handle, host, port, cert=args.cert, key=args.key, authenticator=auth,
            idle_timeout=30.0,
        )  # fmt: skip
        async with server:
            bound = server.server.sockets[0].getsockname() if server.server else (host, port)
            print(f"listening {bound[0]} {bound[1]}", flush=True)
            await stop.wait()
    print(f"stopped {sorted(js.counters.items())}", flush=True)
    return 0


async def _join_request(args: argparse.Namespace) -> int:
    try:
        message = parse(Path(args.request).read_bytes())
    except (OSError, MessageError) as exc:
        print(f"refused: bad-request-message: {exc}", flush=True)
        return 1
    host, port = args.connect
    async with _resolver(args) as resolver:
        try:
            result = await join_request(
                message, host=host, port=port, server_name=args.server_name,
                client_name=args.client_name, cert=args.cert, key=args.key, resolver=resolver,
                service_port=args.service_port,
            )  # fmt: skip
        except JoinError as exc:
            print(f"refused: {exc.reason}: {exc.detail}", flush=True)
            return 1
    print(encode(result.answer).decode(), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dance.lorawan")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("join-server", "join-request"):
        p = sub.add_parser(name)
        p.add_argument("--cert", required=True)
        p.add_argument("--key", required=True)
        p.add_argument("--dns", type=_address, required=True)
        p.add_argument("--trust-anchor", required=True)
        if name == "join-server":
            p.add_argument("--listen", type=_address, default=("127.0.0.1", 8443))
            p.add_argument("--join-eui", required=True)
            p.add_argument("--device", type=_pair, action="append", default=[])
            p.add_argument("--network-server", type=_pair, action="append", default=[])
        else:
            p.add_argument("--connect", type=_address, required=True)
            p.add_argument("--server-name", required=True)
            p.add_argument("--client-name", required=True)
            p.add_argument("--request", required=True)
            p.add_argument("--service-port", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        if args.command == "join-server":
            return asyncio.run(_join_server(args))
        return asyncio.run(_join_request(args))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
