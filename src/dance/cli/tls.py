"""``dance proxy`` (a DANCE-terminating TLS proxy) and ``dance connect`` (a test client)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Any

from dance.cli.common import (
    UsageError,
    add_dns_options,
    add_front_options,
    allow_entries,
    client_name_arg,
    clientid_codepoint,
    front_authenticator,
    front_limits,
    log_to_stderr,
    make_resolver,
    observe_service,
    parse_hostport,
    raise_descriptor_limit,
    run_service,
    run_until_stopped,
    serve_workers,
    start_errors,
)

EXIT_OK, EXIT_NEGATIVE, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

log = logging.getLogger(__name__)


def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"bad {what} {text!r}") from None


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
    p.add_argument("--mode", choices=("tcp", "http"), default="tcp")
    p.add_argument("--tlv-type", default="0xE0", metavar="N", help="PROXY v2 TLV type (0xE0-0xEF)")
    p.add_argument("--header", default="X-DANCE-Client-ID", help="identity header (http mode)")
    p.add_argument(
        "--san-fallback",
        action="store_true",
        help="clients without dane_clientid: use the single SAN dNSName as their name",
    )
    lim = add_front_options(p, idle_help="0: no idle timeout")
    lim.add_argument("--backend-timeout", type=float, default=5.0, metavar="S")
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
    c.add_argument("--insecure", action="store_true", help="do not verify the server (tests)")
    c.add_argument(
        "--server-auth",
        choices=("pkix", "dane", "dane-or-pkix"),
        default=None,
        help="how to authenticate the server: dane-or-pkix (the default: DANE when secure "
        "TLSA records exist at _PORT._tcp.NAME, with no fallback when they do not match; a CA "
        "when the name provably has none; bogus or unreachable DNS refuses), dane (TLSA "
        "records required), pkix (a CA only; the default when the target is an address and "
        "no --server-name is given)",
    )
    c.add_argument("--dns-server", metavar="HOST[:PORT]", help="DNS server for --server-auth dane")
    c.add_argument("--trust-anchor", metavar="FILE", help="DS/DNSKEY lines (default: root KSKs)")
    c.add_argument(
        "--trust-ad", action="store_true", help="trust the resolver's AD bit (loopback only)"
    )
    c.add_argument("--server-name", metavar="NAME", help="SNI and name to verify (default: HOST)")
    what = c.add_mutually_exclusive_group()
    what.add_argument("--send", metavar="TEXT", help="send TEXT and CRLF after connecting")
    what.add_argument(
        "--http",
        metavar="PATH",
        help="send 'GET PATH HTTP/1.1' with Host and 'Connection: close' after connecting",
    )
    c.add_argument("--wait", type=float, default=2.0, help="seconds to wait for a first read")
    c.add_argument("--timeout", type=float, default=10.0)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_connect)


def _http_request(path: str, host: str) -> bytes:
    if not path.startswith("/") or any(not 0x21 <= ord(c) <= 0x7E for c in path):
        raise UsageError(f"--http {path!r}: a path starts with / and has no spaces or controls")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("ascii")


def cmd_connect(args: argparse.Namespace) -> int:
    import ssl

    from dance.tls import BridgeError, client_context, probe

    host, port = parse_hostport(args.target, "HOST:PORT")
    if port == 0:
        raise UsageError("port 0 is not a server port")
    for label, value in (("--wait", args.wait), ("--timeout", args.timeout)):
        if not value > 0:
            raise UsageError(f"{label} must be positive")
    name = client_name_arg(args.name)
    codepoint = clientid_codepoint(args.clientid_codepoint)
    if args.send is not None:
        if "\r" in args.send or "\n" in args.send:
            raise UsageError("--send TEXT is one line; CRLF is added")
        send = args.send.encode("utf-8") + b"\r\n"
    elif args.http is not None:
        send = _http_request(args.http, args.server_name or host)
    else:
        send = b""
    defaulted = args.server_auth is None
    if defaulted:  # an address has no TLSA owner name: a CA, unless --server-name names it
        args.server_auth = "pkix" if _is_address(args.server_name or host) else "dane-or-pkix"
    server_check, use_pkix = None, not args.insecure
    if args.server_auth != "pkix" and not args.insecure:
        from dance.tls.dane import ServerNotAuthenticated

        try:
            server_check, use_pkix = _dane_server_check(args, host, port)
        except ServerNotAuthenticated as exc:
            print(f"server not authenticated: {exc}")
            if defaulted and "indeterminate" in str(exc):
                print(
                    "  (--server-auth dane-or-pkix, the default, looks the server up in DNS: "
                    "give --dns-server, or --server-auth pkix)"
                )
            return EXIT_NEGATIVE
    try:
        context = client_context(
            name=name,
            cert=args.cert,
            key=args.key,
            codepoint=codepoint,
            cafile=args.cafile,
            verify_server=use_pkix,
        )
    except BridgeError as exc:
        raise UsageError(f"cannot use this Python's OpenSSL: {exc}") from None
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise UsageError(f"cannot load the client certificate or key: {exc}") from None
    result = asyncio.run(
        probe(
            host,
            port,
            context=context,
            server_hostname=args.server_name or host,
            send=send,
            read_timeout=args.wait,
            timeout=args.timeout,
            server_check=server_check,
        )
    )
    if args.json:
        out = result.to_dict()
        out["target"] = f"{host}:{port}"
        out["client_name"] = name
        out["clientid_codepoint"] = f"{codepoint:#06x}"
        print(json.dumps(out))
    elif not result.connected:
        print(f"could not connect: {host}:{port}: {result.detail}")
    elif result.negotiated.get("server_authenticated") is False:
        print(result.detail)
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
    if not result.connected:
        return EXIT_UNREACHABLE
    return EXIT_OK if result.accepted else EXIT_NEGATIVE


def _is_address(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _dane_server_check(args: argparse.Namespace, host: str, port: int) -> tuple[Any, bool]:
    """For --server-auth dane / dane-or-pkix: (a check of the presented chain, whether PKIX
    applies instead), from the server's DNSSEC-validated TLSA records (`dance.tls.dane`)."""
    from dance.tls.dane import server_policy

    base = args.server_name or host
    if _is_address(base):
        raise UsageError("DANE server authentication needs a host name: give --server-name")
    resolver = make_resolver(
        argparse.Namespace(
            server=args.dns_server, trust_anchor=args.trust_anchor, tls=False, tls_name=None,
            tls_pin=None, transport="udp", trust_ad=args.trust_ad, timeout=2.0, deadline=5.0,
        )
    )  # fmt: skip

    async def decide() -> tuple[Any, bool]:
        async with resolver:
            return await server_policy(resolver, base, port, policy=args.server_auth)

    return asyncio.run(decide())


def cmd_proxy(args: argparse.Namespace) -> int:
    from dance.auth import AllowList, Authenticator
    from dance.dns import TLSAResolver
    from dance.tls import serve
    from dance.tls.proxy import Proxy, ProxyConfig

    listen = parse_hostport(args.listen, "--listen")
    backend = parse_hostport(args.backend, "--backend")
    codepoint = clientid_codepoint(args.clientid_codepoint)
    limits = front_limits(args, [("--backend-timeout", args.backend_timeout)])
    try:
        allow = AllowList.parse(allow_entries(args))
        config = ProxyConfig(
            backend,
            mode=args.mode,
            tlv_type=_int(args.tlv_type, "--tlv-type"),
            header=args.header,
            connect_timeout=args.backend_timeout,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.verbose:
        log_to_stderr(logging.INFO)
    make_resolver(args)  # unusable DNS options: one line, exit 2, before anything starts
    raise_descriptor_limit(2 * args.max_connections + 64)

    def serve_one(index: int = 0) -> int:
        resolver = make_resolver(args)
        current: dict[str, Any] = {"auth": Authenticator(resolver, allow=allow)}
        observer, endpoint = observe_service(
            args,
            "proxy",
            lambda: {
                "auth": current["auth"].stats(),
                "dns": current["auth"].source.stats(),
                "tls:reason": current["tls"].snapshot() if "tls" in current else {},
            },
            index=index,
            dns=resolver,
        )
        return run_until_stopped(run(resolver, current, observer, index), endpoint)

    async def run(
        resolver: TLSAResolver, current: dict[str, Any], observer: Any, index: int
    ) -> None:
        auth = current["auth"]
        proxy = Proxy(config)
        with start_errors():
            server = await serve(
                proxy.handle,
                listen[0],
                listen[1],
                cert=args.cert,
                key=args.key,
                authenticator=auth,
                codepoint=codepoint,
                san_fallback=args.san_fallback,
                **limits,
                observer=observer,
                reuse_port=args.workers > 1,
            )
        current["tls"] = server.stats  # TLS outcomes by reason, read at scrape time

        def reload(new_resolver: TLSAResolver) -> None:
            """SIGHUP: certificate, key, allow-list and trust anchors, or nothing at all."""
            new_auth = front_authenticator(args, new_resolver)
            server.reload(cert=args.cert, key=args.key, authenticator=new_auth)
            current["auth"] = new_auth

        def announce() -> None:
            where = f"{server.host}:{server.port}"
            if index == 0 and args.json:  # one announcement, not one per worker
                print(json.dumps({"listening": where, "mode": args.mode}), flush=True)
            elif index == 0:
                print(
                    f"dance proxy: listening on {where}, {args.mode} mode, "
                    f"backend {backend[0]}:{backend[1]}",
                    flush=True,
                )

        async def shutdown() -> int:
            log.info(
                "stopping: %d connection(s) get up to %g s to finish",
                server.connections,
                args.drain_timeout,
            )
            cut = await server.shutdown(args.drain_timeout)
            if cut:
                log.info("closed %d connection(s) still open at the deadline", cut)
            return cut

        try:
            await run_service(
                "proxy", args, resolver, reload=reload, shutdown=shutdown, announce=announce
            )
        finally:
            log.info("proxy stats: %s", server.stats.snapshot())
            log.info("relay stats: %s", proxy.stats.snapshot())

    return serve_workers(args, serve_one)
