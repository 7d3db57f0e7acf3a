"""``dance proxy`` (a DANCE-terminating TLS proxy) and ``dance connect`` (a test client)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
from typing import Any

from dance.cli import (
    UsageError,
    add_dns_options,
    client_name_arg,
    log_to_stderr,
    make_resolver,
    parse_hostport,
)

EXIT_OK, EXIT_NEGATIVE = 0, 1

log = logging.getLogger(__name__)


def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"bad {what} {text!r}") from None


def _codepoint(text: str) -> int:
    from dance.tls import check_codepoint

    try:
        return check_codepoint(_int(text, "--clientid-codepoint"))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "proxy",
        help="TLS proxy requiring DANCE client authentication in front of a backend",
        description=(
            "Terminate TLS 1.3, authenticate clients with dane_clientid and DNSSEC-validated TLSA "
            "records, and relay authenticated clients to BACKEND with their identity (PROXY v2 "
            "TLV in tcp mode, a request header in http mode). Refused clients never cause a "
            "backend connection."
        ),
    )
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--backend", required=True, metavar="HOST:PORT")
    p.add_argument("--cert", required=True, metavar="FILE", help="server certificate chain (PEM)")
    p.add_argument("--key", required=True, metavar="FILE", help="server private key (PEM)")
    p.add_argument(
        "--allow",
        action="append",
        required=True,
        metavar="NAME_OR_SUFFIX",
        help="allowed client name, or .suffix for every name below it (repeatable)",
    )
    p.add_argument("--mode", choices=("tcp", "http"), default="tcp")
    p.add_argument("--clientid-codepoint", default="0xFFDC", metavar="N")
    p.add_argument("--tlv-type", default="0xE0", metavar="N", help="PROXY v2 TLV type (0xE0-0xEF)")
    p.add_argument("--header", default="X-DANCE-Client-ID", help="identity header (http mode)")
    p.add_argument(
        "--san-fallback",
        action="store_true",
        help="clients without dane_clientid: use the single SAN dNSName as their name",
    )
    p.add_argument("--max-pending", type=int, default=64, help="connections awaiting DNS, max")
    p.add_argument("--verbose", "-v", action="store_true")
    add_dns_options(p)
    p.set_defaults(func=cmd_proxy)

    c = subparsers.add_parser(
        "connect",
        help="connect with a DANCE client identity and report whether the server accepted it",
    )
    c.add_argument("target", metavar="HOST:PORT")
    c.add_argument("--name", required=True, help="the client name (TLSA owner name)")
    c.add_argument("--cert", required=True, metavar="FILE")
    c.add_argument("--key", required=True, metavar="FILE")
    c.add_argument("--clientid-codepoint", default="0xFFDC", metavar="N")
    c.add_argument("--cafile", metavar="FILE", help="CA to verify the server (default: system)")
    c.add_argument("--insecure", action="store_true", help="do not verify the server")
    c.add_argument("--server-name", metavar="NAME", help="SNI and name to verify (default: HOST)")
    c.add_argument("--send", metavar="TEXT", help="send TEXT (\\n-terminated) after connecting")
    c.add_argument("--wait", type=float, default=2.0, help="seconds to wait for a first read")
    c.add_argument("--timeout", type=float, default=10.0)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_connect)


def cmd_connect(args: argparse.Namespace) -> int:
    import ssl

    from dance.tls import BridgeError, client_context, probe

    host, port = parse_hostport(args.target, "HOST:PORT")
    if port == 0:
        raise UsageError("port 0 is not a server port")
    name = client_name_arg(args.name)
    codepoint = _codepoint(args.clientid_codepoint)
    try:
        context = client_context(
            name=name,
            cert=args.cert,
            key=args.key,
            codepoint=codepoint,
            cafile=args.cafile,
            verify_server=not args.insecure,
        )
    except BridgeError as exc:
        raise UsageError(f"cannot use this Python's OpenSSL: {exc}") from None
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise UsageError(f"cannot load the client certificate or key: {exc}") from None
    send = (args.send + "\n").encode() if args.send is not None else b""
    result = asyncio.run(
        probe(
            host,
            port,
            context=context,
            server_hostname=args.server_name or host,
            send=send,
            read_timeout=args.wait,
            timeout=args.timeout,
        )
    )
    if args.json:
        out = result.to_dict()
        out["target"] = f"{host}:{port}"
        out["client_name"] = name
        out["clientid_codepoint"] = f"{codepoint:#06x}"
        print(json.dumps(out))
    else:
        verdict = "accepted" if result.accepted else "refused"
        print(f"{verdict}: {result.detail}")
        neg = result.negotiated
        if neg:
            print(f"  {neg.get('tls_version')} {neg.get('cipher')}")
            print(
                f"  dane_clientid requested by the server: "
                f"{'yes' if neg.get('clientid_requested') else 'no'}; "
                f"name sent: {neg.get('client_name_sent') or '-'}"
            )
        if result.reply:
            print(f"  reply: {result.reply.decode('utf-8', 'replace').rstrip()}")
    return EXIT_OK if result.accepted else EXIT_NEGATIVE


def cmd_proxy(args: argparse.Namespace) -> int:
    import ssl

    from dance.auth import AllowList, Authenticator
    from dance.tls import BridgeError, serve
    from dance.tls.proxy import Proxy, ProxyConfig

    listen = parse_hostport(args.listen, "--listen")
    backend = parse_hostport(args.backend, "--backend")
    codepoint = _codepoint(args.clientid_codepoint)
    try:
        allow = AllowList.parse(args.allow)
        config = ProxyConfig(
            backend,
            mode=args.mode,
            tlv_type=_int(args.tlv_type, "--tlv-type"),
            header=args.header,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.max_pending < 1:
        raise UsageError("--max-pending must be at least 1")
    if args.verbose:
        log_to_stderr(logging.INFO)
    resolver = make_resolver(args)

    async def run() -> None:
        async with resolver:
            auth = Authenticator(resolver, allow=allow)
            try:
                server = await serve(
                    Proxy(config).handle,
                    listen[0],
                    listen[1],
                    cert=args.cert,
                    key=args.key,
                    authenticator=auth,
                    codepoint=codepoint,
                    san_fallback=args.san_fallback,
                    max_pending=args.max_pending,
                )
            except BridgeError as exc:
                raise UsageError(f"cannot use this Python's OpenSSL: {exc}") from None
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"cannot start: {exc}") from None
            async with server:
                where = f"{server.host}:{server.port}"
                if args.json:
                    print(json.dumps({"listening": where, "mode": args.mode}), flush=True)
                else:
                    print(
                        f"dance proxy: listening on {where}, {args.mode} mode, "
                        f"backend {backend[0]}:{backend[1]}",
                        flush=True,
                    )
                try:
                    await server.serve_forever()
                finally:
                    stats = server.stats.snapshot()
                    log.info("proxy stats: %s", stats)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return EXIT_OK
