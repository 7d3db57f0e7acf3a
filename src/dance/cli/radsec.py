"""``dance radsec-proxy``: RadSec (RADIUS over TLS, RFC 6614) with DANCE client authentication,
in front of a RADIUS server (FreeRADIUS) on loopback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

from dance.cli.common import (
    UsageError,
    add_dns_options,
    add_front_options,
    allow_entries,
    clientid_codepoint,
    front_authenticator,
    front_limits,
    log_to_stderr,
    make_resolver,
    observe_service,
    parse_hostport,
    raise_descriptor_limit,
    require_limits,
    run_service,
    run_until_stopped,
    start_errors,
)

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "radsec-proxy",
        help="RadSec (RADIUS/TLS) front requiring DANCE client authentication, before FreeRADIUS",
        description=(
            "Terminate RADIUS/TLS (RFC 6614) with TLS 1.3, authenticate RADIUS clients with "
            "dane_clientid (or, with --san-fallback, the single SAN dNSName of stock clients) and "
            "DNSSEC-validated TLSA records, check every packet strictly, and relay it over UDP to "
            "the RADIUS server on loopback with the authenticated ClientName in an attribute the "
            "proxy adds (a client-supplied copy is refused), signed with the loopback secret. "
            "Refused clients never cause a packet to the server."
        ),
    )
    p.add_argument(
        "--listen", default="127.0.0.1:2083", metavar="HOST:PORT", help="default 127.0.0.1:2083"
    )
    p.add_argument("--backend", required=True, metavar="HOST:PORT",
                   help="the RADIUS server's authentication port (UDP, loopback)")  # fmt: skip
    p.add_argument("--accounting-backend", metavar="HOST:PORT",
                   help="its accounting port (default: the --backend port + 1)")  # fmt: skip
    p.add_argument(
        "--backend-secret-file",
        required=True,
        metavar="FILE",
        help="the shared secret with the RADIUS server (first line; the file must be 0600)",
    )
    p.add_argument(
        "--identity-attribute",
        default="32473:1",
        metavar="VENDOR:TYPE|TYPE",
        help="the attribute carrying the ClientName (default 32473:1, DANCE-Client-Name)",
    )
    p.add_argument(
        "--san-fallback",
        action="store_true",
        help="clients without dane_clientid: use the single SAN dNSName as their name",
    )
    lim = add_front_options(
        p, idle_timeout=600.0, idle_help="0: none (RadSec clients keep connections open)"
    )
    lim.add_argument("--max-in-flight", type=int, default=32, metavar="N",
                     help="requests per connection awaiting the server (1-256)")  # fmt: skip
    lim.add_argument("--backend-timeout", type=float, default=10.0, metavar="S",
                     help="time for the server to answer a request")  # fmt: skip
    p.add_argument("--verbose", "-v", action="store_true")
    add_dns_options(p)
    p.set_defaults(func=cmd_radsec_proxy)


def read_secret(path: str) -> bytes:
    """The first line of a file that only its owner can read (UsageError otherwise)."""
    try:
        mode = os.stat(path).st_mode
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"--backend-secret-file: {exc.strerror or exc}: {path}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"--backend-secret-file: {path} is readable by others (chmod 600)")
    secret = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not secret:
        raise UsageError(f"--backend-secret-file: {path}: the first line is empty")
    return secret


def cmd_radsec_proxy(args: argparse.Namespace) -> int:
    from dance.auth import AllowList, Authenticator
    from dance.radius import IdentityAttribute, RadsecProxyConfig, start_radsec_proxy

    listen = parse_hostport(args.listen, "--listen")
    backend = parse_hostport(args.backend, "--backend")
    accounting = (
        parse_hostport(args.accounting_backend, "--accounting-backend")
        if args.accounting_backend
        else None
    )
    codepoint = clientid_codepoint(args.clientid_codepoint)
    require_limits([("--max-in-flight", args.max_in_flight)])
    limits = front_limits(args, [("--backend-timeout", args.backend_timeout)])
    secret = read_secret(args.backend_secret_file)
    try:
        identity_attribute = IdentityAttribute.parse(args.identity_attribute)
        allow = AllowList.parse(allow_entries(args))
        config = RadsecProxyConfig(
            backend,
            backend_secret=secret,
            accounting_backend=accounting,
            identity=identity_attribute,
            max_in_flight=args.max_in_flight,
            backend_timeout=args.backend_timeout,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.verbose:
        log_to_stderr(logging.INFO)
    resolver = make_resolver(args)
    raise_descriptor_limit(2 * args.max_connections + 64)
    current: dict[str, Any] = {"auth": Authenticator(resolver, allow=allow)}

    def sources() -> dict[str, Any]:
        auth = current["auth"]
        out: dict[str, Any] = {"auth": auth.stats(), "dns": auth.source.stats()}
        if "tls" in current:
            out["tls:reason"] = current["tls"].snapshot()
        if "radius" in current:
            snap = current["radius"].stats.snapshot()
            out["radsec_refused:reason"] = snap.pop("refused")
            out["radsec_backend_refused:reason"] = snap.pop("backend_refused")
            out["radsec"] = snap
        return out

    observer, endpoint = observe_service(args, "radsec-proxy", sources, dns=resolver)

    async def run() -> None:
        with start_errors():
            server, proxy = await start_radsec_proxy(
                listen[0],
                listen[1],
                config=config,
                cert=args.cert,
                key=args.key,
                authenticator=current["auth"],
                codepoint=codepoint,
                observer=observer,
                san_fallback=args.san_fallback,
                **limits,
            )
        current["tls"], current["radius"] = server.stats, proxy

        def reload(new_resolver: Any) -> None:
            """SIGHUP: certificate, key, allow-list and trust anchors, or nothing at all."""
            new_auth = front_authenticator(args, new_resolver)
            server.reload(cert=args.cert, key=args.key, authenticator=new_auth)
            current["auth"] = new_auth

        def announce() -> None:
            where = f"{server.host}:{server.port}"
            acct = config.accounting
            if args.json:
                out = {
                    "listening": where,
                    "backend": f"{backend[0]}:{backend[1]}",
                    "accounting": f"{acct[0]}:{acct[1]}",
                }
                print(json.dumps(out), flush=True)
            else:
                print(
                    f"dance radsec-proxy: listening on {where}, RADIUS server {backend[0]}:"
                    f"{backend[1]} (accounting {acct[0]}:{acct[1]})",
                    flush=True,
                )

        try:
            await run_service(
                "radsec-proxy",
                args,
                resolver,
                reload=reload,
                shutdown=lambda: server.shutdown(args.drain_timeout),
                announce=announce,
            )
        finally:
            log.info("tls stats: %s", server.stats.snapshot())
            log.info("radsec stats: %s", proxy.stats.snapshot())

    return run_until_stopped(run(), endpoint)
