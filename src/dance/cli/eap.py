r"""``dance eap-verify-daemon``: the verify daemon behind FreeRADIUS's EAP-TLS ``verify`` hook.

FreeRADIUS (mods-enabled/eap, ``tls-config``; the ``client`` line is one line in the file)::

    verify {
        tmpdir = /var/lib/freeradius/dance-tmp
        client = "/opt/dance/bin/dance-eap-verify --socket /run/dance/eap.sock \
                  --identity %{User-Name} %{TLS-Client-Cert-Filename}"
    }

and the daemon::

    dance eap-verify-daemon --socket /run/dance/eap.sock --allow .\\_device.example.com \\
        --server 127.0.0.1:53 --trust-ad

Each certificate is authenticated as its single SAN dNSName (allow-list first, DNSSEC-validated
TLSA lookup, RFC 7671 matching); the EAP identity must be that name unless
``--no-identity-check``. SIGHUP flushes the caches (a removed record then applies at once).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from dance.cli.common import (
    UsageError,
    add_dns_options,
    add_socket_options,
    allow_entries,
    log_to_stderr,
    make_resolver,
    positive_int,
    require_limits,
    run_line_daemon,
)
from dance.cli.tls import EXIT_OK

log = logging.getLogger("dance.eap")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eap-verify-daemon",
        help="serve dance-eap-verify (FreeRADIUS EAP-TLS verify hook) with a warm DNS cache",
        description=(
            "Authenticate EAP-TLS client certificates for FreeRADIUS's 'verify { client = "
            "dance-eap-verify --socket PATH --identity %{User-Name} "
            "%{TLS-Client-Cert-Filename} }': the ClientName is the certificate's single SAN "
            "dNSName, checked against the allow-list, then DNSSEC-validated TLSA records."
        ),
    )
    add_socket_options(p, 0o660, "give the socket's group to FreeRADIUS's account")
    p.add_argument(
        "--allow",
        action="append",
        metavar="NAME_OR_SUFFIX",
        help="allowed client name, or .suffix for every name below it (repeatable)",
    )
    p.add_argument("--allow-file", metavar="FILE", help="more allowed names, one per line")
    p.add_argument(
        "--no-identity-check",
        action="store_true",
        help="accept any EAP identity (anonymous NAIs); by default it must be the ClientName",
    )
    p.add_argument(
        "--max-connections", type=positive_int, default=64, help="open requests (default 64)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every decision")
    add_dns_options(p)
    p.set_defaults(func=cmd_eap_verify_daemon)

    b = subparsers.add_parser(
        "eap-build-hook",
        help="compile the C EAP-TLS verify hook (dance-eap-verify without a Python start)",
        description=(
            "Compile dance's C verify hook: the same command line, protocol and exit statuses "
            "as dance-eap-verify, for FreeRADIUS's 'verify { client = ... }', without starting "
            "a Python interpreter per certificate check."
        ),
    )
    b.add_argument("--output", required=True, metavar="PATH", help="the executable to write")
    b.add_argument("--cc", metavar="COMPILER", help="C compiler (default: $CC, cc, gcc)")
    b.set_defaults(func=cmd_eap_build_hook)


def cmd_eap_build_hook(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dance.eap.native import HookBuildError, build_hook

    try:
        out = build_hook(Path(args.output), cc=args.cc)
    except HookBuildError as exc:
        raise UsageError(str(exc)) from None
    print(out)
    return EXIT_OK


def cmd_eap_verify_daemon(args: argparse.Namespace) -> int:
    from dance.auth import AllowList
    from dance.eap.server import VerifyDaemon, VerifyDaemonConfig

    require_limits([("--max-connections", args.max_connections)])
    try:
        allow = AllowList.parse(allow_entries(args))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    log_to_stderr(logging.INFO if args.verbose else logging.WARNING)
    make_resolver(args)  # configuration errors (anchors, server) now, as one line, exit 2
    config = VerifyDaemonConfig(
        socket_path=args.socket,
        allow=allow,
        require_identity=not args.no_identity_check,
        socket_mode=args.socket_mode,
        max_connections=args.max_connections,
        request_timeout=min(args.deadline + 3.0, 60.0),
    )

    def metrics(daemon: VerifyDaemon) -> dict[str, dict[str, float]]:
        stats = daemon.stats
        out: dict[str, dict[str, float]] = {
            "eap": {"requests": stats.requests, "accepted": stats.accepted,
                    "refused": stats.refused},
            "eap_refused:reason": dict(stats.reasons),
            "eap_errors:reason": dict(stats.errors),
        }  # fmt: skip
        if daemon.authenticator is not None:
            out["auth"] = dict(daemon.authenticator.stats())
        return out

    def stopped(daemon: VerifyDaemon) -> None:
        log.warning(
            "eap verify daemon stopped: %d requests, %d accepted, %d refused %s, errors %s",
            daemon.stats.requests,
            daemon.stats.accepted,
            daemon.stats.refused,
            daemon.stats.reasons or "{}",
            daemon.stats.errors or "none",
        )

    return run_line_daemon(
        args,
        "eap-verify",
        lambda observer: VerifyDaemon(config, lambda: make_resolver(args), observer),
        metrics,
        stopped,
        ready=f"eap verify daemon ready on {args.socket}",
    )
