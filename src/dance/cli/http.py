"""`dance agent`: the HTTP authorization service for nginx auth_request and HAProxy."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
from typing import Any

from dance.cli.common import (
    UsageError,
    add_dns_options,
    log_to_stderr,
    make_resolver,
    observe_service,
    parse_hostport,
    run_service,
    serve_workers,
)

__all__ = ["register"]

log = logging.getLogger("dance.http")


def cmd_agent(args: argparse.Namespace) -> int:
    from dance.auth import AllowList, Authenticator
    from dance.http.agent import Agent
    from dance.http.core import LOOPBACK, HttpAuth
    from dance.http.headers import CertificateHeaderParser

    host, port = parse_hostport(args.listen)
    if not args.allow:
        raise UsageError("--allow is required (names or .suffixes)")
    proxies = args.trusted_proxy or list(LOOPBACK)
    try:
        for entry in proxies:
            ipaddress.ip_network(entry, strict=False)
    except ValueError as exc:
        raise UsageError(f"bad --trusted-proxy: {exc}") from None
    try:
        parser = CertificateHeaderParser(
            args.cert_format,
            max_header_bytes=args.max_header_bytes,
            allow_chain=args.allow_chain,
            max_chain=args.max_chain,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    make_resolver(args)  # unusable DNS options: one line, exit 2, before anything starts
    try:
        AllowList.parse(args.allow)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for value, flag in (
        (args.max_connections, "--max-connections"),
        (args.max_per_address, "--max-per-address"),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1")
    if args.head_timeout is not None and args.head_timeout <= 0:
        raise UsageError("--head-timeout must be positive")
    log_to_stderr(logging.INFO if args.verbose else logging.WARNING)

    def serve_one(index: int = 0) -> int:
        resolver = make_resolver(args)
        authenticator = Authenticator(resolver, allow=args.allow)
        holder: dict[str, Any] = {"auth": authenticator, "dns": resolver}
        observer, endpoint = observe_service(
            args,
            "agent",
            lambda: {"auth": holder["auth"].stats(), "dns": holder["dns"].stats()},
            index=index,
            dns=resolver,
        )
        http_auth = HttpAuth(authenticator, parser=parser)
        agent = Agent(
            http_auth,
            cert_header=args.cert_header,
            chain_header=args.chain_header,
            name_header=args.name_header,
            trusted_proxies=proxies,
            max_connections=args.max_connections,
            max_per_address=args.max_per_address,
            head_timeout=args.head_timeout,
            observer=observer,
        )

        async def run() -> int:
            def reload(new_resolver: Any) -> None:
                """SIGHUP: the allow-list and trust anchors (a new Authenticator and DNS cache),
                or nothing at all when the new configuration is unusable."""
                new = Authenticator(new_resolver, allow=AllowList.parse(args.allow))
                http_auth.authenticator = new
                holder.update(auth=new, dns=new_resolver)

            def announce() -> None:
                if index == 0:
                    bound = agent.address
                    print(f"dance agent listening on {bound[0]}:{bound[1]}", flush=True)

            async with resolver:  # closed by run_service too, or here if listening fails
                try:
                    await agent.serve(host, port, reuse_port=args.workers > 1)
                except OSError as exc:
                    raise UsageError(
                        f"cannot listen on {args.listen}: {exc.strerror or exc}"
                    ) from None
                await run_service(
                    "agent",
                    args,
                    resolver,
                    reload=reload,
                    shutdown=lambda: agent.drain(args.drain_timeout),
                    announce=announce,
                    cut_unit="request",
                    report_stop=index == 0,
                )
            return 0

        try:
            return asyncio.run(run())
        finally:
            if endpoint is not None:
                endpoint.close()

    return serve_workers(args, serve_one)


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "agent", help="HTTP authorization service for nginx auth_request and HAProxy"
    )
    p.add_argument("--listen", default="127.0.0.1:9180", metavar="HOST:PORT", help="bind address")
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="on SIGTERM, seconds for decisions in progress to be answered (default 10)",
    )
    p.add_argument(
        "--allow",
        action="append",
        metavar="NAME_OR_SUFFIX",
        help="allow-list entry (.example.com = any name below); required",
    )
    p.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="CIDR",
        help="front-end address allowed to call the agent (default: loopback)",
    )
    p.add_argument("--cert-header", default="Client-Cert", help="certificate header name")
    p.add_argument("--chain-header", default="Client-Cert-Chain", help="chain header name")
    p.add_argument("--name-header", default="X-DANCE-Client-Name", help="claimed-name header")
    p.add_argument(
        "--cert-format",
        choices=("auto", "nginx", "rfc9440", "base64"),
        default="auto",
        help="certificate header encoding (default: auto-detect)",
    )
    p.add_argument("--allow-chain", action="store_true", help="accept more than one certificate")
    p.add_argument("--max-chain", type=int, default=4, help="certificates at most (with a chain)")
    p.add_argument(
        "--max-header-bytes", type=int, default=16384, help="certificate header size cap"
    )
    p.add_argument(
        "--max-connections",
        type=int,
        help="open connections at most (default: descriptor limit - 64, at most 4096)",
    )
    p.add_argument(
        "--max-per-address", type=int, help="open connections per source address at most"
    )
    p.add_argument(
        "--head-timeout",
        type=float,
        help="seconds for a whole request, from its first byte (default 10)",
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", help="log every decision and refused connection"
    )
    add_dns_options(p)
    p.set_defaults(func=cmd_agent)
