"""``dance smtp-proxy``: DANCE client authentication for SMTP relaying, in front of Postfix."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from dance.cli.common import (
    UsageError,
    add_dns_options,
    log_to_stderr,
    make_resolver,
    observe_service,
    parse_hostport,
    require_limits,
    run_service,
    run_until_stopped,
    serve_workers,
    start_errors,
)

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "smtp-proxy",
        help="SMTP relay authentication: STARTTLS with dane_clientid, XCLIENT LOGIN to Postfix",
        description=(
            "Speak SMTP to sending MTAs, terminate STARTTLS with DANCE client authentication "
            "(TLS 1.3, dane_clientid, DNSSEC-validated TLSA) and hand authenticated sessions to "
            "BACKEND (Postfix on loopback) with XCLIENT LOGIN=<identity>, so that "
            "permit_sasl_authenticated lets them relay. Refused clients never cause a backend "
            "connection; the client's own XCLIENT/AUTH lines are never forwarded."
        ),
    )
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--backend", required=True, metavar="HOST:PORT", help="Postfix smtpd")
    p.add_argument("--cert", required=True, metavar="FILE", help="server certificate chain (PEM)")
    p.add_argument("--key", required=True, metavar="FILE", help="server private key (PEM)")
    p.add_argument(
        "--allow",
        action="append",
        required=True,
        metavar="NAME_OR_SUFFIX",
        help="allowed client name (e.g. _smtp-client.mta1.example.com), or .suffix (repeatable)",
    )
    p.add_argument("--clientid-codepoint", default="0xFFDC", metavar="N")
    p.add_argument(
        "--require-tls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="answer MAIL before STARTTLS with 530 (default: on)",
    )
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="with --no-require-tls: forward plaintext sessions without LOGIN (no relaying)",
    )
    p.add_argument(
        "--san-fallback",
        action="store_true",
        help="clients without dane_clientid: use the single SAN dNSName as their name",
    )
    p.add_argument("--hostname", default="dance-smtp-proxy", help="name in the greeting/EHLO")
    p.add_argument("--max-size", type=int, default=10 * 1024 * 1024, help="advertised SIZE")
    p.add_argument("--max-pending", type=int, default=64, help="connections awaiting DNS, max")
    limits = p.add_argument_group("limits (refusals are counted by reason in the stats)")
    limits.add_argument(
        "--max-connections", type=int, default=256, metavar="N", help="sessions at once (256)"
    )
    limits.add_argument(
        "--max-per-address",
        type=int,
        default=32,
        metavar="N",
        help="sessions at once from one client IP address (32)",
    )
    limits.add_argument(
        "--command-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="deadline for each command line, idle time included (300, RFC 5321)",
    )
    limits.add_argument(
        "--data-timeout",
        type=float,
        default=180.0,
        metavar="SECONDS",
        help="deadline for each line of message text (180, RFC 5321)",
    )
    limits.add_argument(
        "--session-timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="deadline for a whole session (3600)",
    )
    limits.add_argument(
        "--tls-timeout", type=float, default=10.0, metavar="SECONDS", help="TLS handshake (10)"
    )
    limits.add_argument(
        "--connect-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="backend TCP connect (5)",
    )
    limits.add_argument(
        "--backend-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="deadline for each backend reply (300)",
    )
    limits.add_argument(
        "--max-command-length",
        type=int,
        default=512,
        metavar="OCTETS",
        help="longest command line with CRLF (512, RFC 5321 minimum; 512-65536)",
    )
    limits.add_argument(
        "--max-line-length",
        type=int,
        default=1000,
        metavar="OCTETS",
        help="longest line of message text with CRLF (1000, RFC 5321 minimum; 1000-65536)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="on SIGTERM, seconds for sessions in progress to finish (default 30)",
    )
    p.add_argument("--verbose", "-v", action="store_true")
    add_dns_options(p)
    p.set_defaults(func=cmd_smtp_proxy)


def _codepoint(text: str) -> int:
    from dance.tls import check_codepoint

    try:
        return check_codepoint(int(text, 0))
    except ValueError as exc:
        raise UsageError(f"bad --clientid-codepoint {text!r}: {exc}") from None


def cmd_smtp_proxy(args: argparse.Namespace) -> int:
    from dance.auth import AllowList, Authenticator
    from dance.smtp.proxy import SmtpProxyConfig, start_smtp_proxy

    listen = parse_hostport(args.listen, "--listen")
    backend = parse_hostport(args.backend, "--backend")
    if backend[1] == 0:
        raise UsageError("--backend: port 0 is not a server port")
    codepoint = _codepoint(args.clientid_codepoint)
    require_limits([("--max-pending", args.max_pending)])
    try:
        allow = AllowList.parse(args.allow)
        config = SmtpProxyConfig(
            backend,
            hostname=args.hostname,
            max_size=args.max_size,
            require_tls=args.require_tls,
            allow_unauthenticated=args.allow_unauthenticated,
            max_connections=args.max_connections,
            max_per_address=args.max_per_address,
            command_timeout=args.command_timeout,
            data_timeout=args.data_timeout,
            session_timeout=args.session_timeout,
            tls_timeout=args.tls_timeout,
            connect_timeout=args.connect_timeout,
            backend_timeout=args.backend_timeout,
            max_command_length=args.max_command_length,
            max_line_length=args.max_line_length,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.verbose:
        log_to_stderr(logging.INFO)
    make_resolver(args)  # unusable DNS options: one line, exit 2, before anything starts

    def serve_one(index: int = 0) -> int:
        resolver = make_resolver(args)
        current: dict[str, Any] = {"auth": Authenticator(resolver, allow=allow)}
        observer, endpoint = observe_service(
            args,
            "smtp-proxy",
            lambda: {
                "auth": current["auth"].stats(),
                "dns": current["auth"].source.stats(),
                "smtp_refused:reason": dict(current["proxy"].stats.refused)
                if "proxy" in current
                else {},
            },
            index=index,
            dns=resolver,
        )
        return run_until_stopped(run(resolver, current, observer, index), endpoint)

    async def run(resolver: Any, current: dict[str, Any], observer: Any, index: int) -> None:
        async with resolver:  # closed by run_service too, or here if the start fails
            with start_errors():
                proxy = await start_smtp_proxy(
                    listen[0],
                    listen[1],
                    config=config,
                    cert=args.cert,
                    key=args.key,
                    authenticator=current["auth"],
                    codepoint=codepoint,
                    san_fallback=args.san_fallback,
                    max_pending=args.max_pending,
                    observer=observer,
                    reuse_port=args.workers > 1,
                )
            current["proxy"] = proxy

            def reload(new_resolver: Any) -> None:
                """SIGHUP: certificate, key, allow-list and trust anchors, or nothing at all."""
                new_auth = Authenticator(new_resolver, allow=AllowList.parse(args.allow))
                proxy.core.reload(cert=args.cert, key=args.key, authenticator=new_auth)
                current["auth"] = new_auth

            def announce() -> None:
                where = f"{proxy.host}:{proxy.port}"
                if index == 0 and args.json:
                    out = {"listening": where, "backend": f"{backend[0]}:{backend[1]}"}
                    print(json.dumps(out), flush=True)
                elif index == 0:
                    print(
                        f"dance smtp-proxy: listening on {where}, backend "
                        f"{backend[0]}:{backend[1]}, require TLS: "
                        f"{'yes' if config.require_tls else 'no'}",
                        flush=True,
                    )

            try:
                await run_service(
                    "smtp-proxy",
                    args,
                    resolver,
                    reload=reload,
                    shutdown=lambda: proxy.drain(args.drain_timeout),
                    announce=announce,
                    cut_unit="session",
                )
            finally:
                log.info("smtp-proxy stats: %s %s", proxy.stats, proxy.core.stats.snapshot())
                proxy.close()
                await proxy.wait_closed()

    return serve_workers(args, serve_one)
