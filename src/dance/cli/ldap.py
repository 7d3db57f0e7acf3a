"""``dance ldap-proxy``: a DANCE front (LDAPS and StartTLS, SASL EXTERNAL) for slapd on ldapi://."""

from __future__ import annotations

import argparse
import json
import logging
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
    run_service,
    run_until_stopped,
    start_errors,
)

log = logging.getLogger(__name__)


def _optional_hostport(text: str | None, flag: str) -> tuple[str, int] | None:
    return None if text is None else parse_hostport(text, flag)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ldap-proxy",
        help="LDAP front (LDAPS/StartTLS, SASL EXTERNAL) authenticating users by their "
        "domain's user CA in DNS, in front of slapd on ldapi://",
        description=(
            "Terminate LDAPS and/or StartTLS (TLS 1.3, dane_clientid), authenticate users of "
            "the allowed _user.DOMAIN names by the user CA published in DNSSEC-signed TLSA "
            "records, answer their SASL EXTERNAL bind, and relay to slapd over ldapi:// bound "
            "with SASL EXTERNAL and the authorization identity u:uid@domain, so that slapd's "
            "authz-regexp, authzTo and ACLs decide. Every client PDU is framed and decoded "
            "strictly (pyasn1); malformed ones end the session and are counted."
        ),
    )
    p.add_argument("--listen", metavar="HOST:PORT", help="LDAPS listener")
    p.add_argument("--listen-starttls", metavar="HOST:PORT", help="LDAP listener for StartTLS")
    p.add_argument("--ldapi", required=True, metavar="PATH", help="slapd's ldapi socket")
    p.add_argument(
        "--ca-hint",
        action="append",
        default=[],
        metavar="FILE",
        help="PEM certificates of user CAs (those published at _user.DOMAIN) whose subject names "
        "are announced in the CertificateRequest, so that a client picks the right certificate; "
        "repeatable; hints only, acceptance is decided by DNS",
    )
    lim = add_front_options(p)
    lim.add_argument("--max-pdu", type=int, default=256 * 1024, metavar="BYTES",
                     help="largest LDAP message from a client (default 262144)")  # fmt: skip
    lim.add_argument("--max-depth", type=int, default=32, metavar="N",
                     help="deepest nesting of BER elements (default 32)")  # fmt: skip
    lim.add_argument("--bind-timeout", type=float, default=10.0, metavar="S")
    lim.add_argument("--upstream-timeout", type=float, default=10.0, metavar="S")
    p.add_argument("--verbose", "-v", action="store_true")
    add_dns_options(p)
    p.set_defaults(func=cmd_ldap_proxy)


def _ca_hints(files: list[str]) -> list[bytes]:
    """The DER subject names of the certificates in ``files`` (each a PEM file)."""
    from cryptography import x509

    names: list[bytes] = []
    for path in files:
        try:
            certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
        except OSError as exc:
            raise UsageError(f"--ca-hint {path}: {exc.strerror or exc}") from None
        except ValueError:
            raise UsageError(f"--ca-hint {path}: no PEM certificate") from None
        names += [cert.subject.public_bytes() for cert in certs]
    return names


def cmd_ldap_proxy(args: argparse.Namespace) -> int:
    from dance.auth import AllowList, Authenticator

    try:
        from dance.ldap import LDAPProxyConfig, start_ldap_proxy
    except ImportError as exc:  # the ldap extra is not installed
        raise UsageError(f"dance ldap-proxy needs the 'ldap' extra ({exc})") from None
    ldaps = _optional_hostport(args.listen, "--listen")
    plain = _optional_hostport(args.listen_starttls, "--listen-starttls")
    if ldaps is None and plain is None:
        raise UsageError("give --listen (LDAPS), --listen-starttls, or both")
    if ldaps is not None and plain is not None and ldaps[0] != plain[0]:
        raise UsageError("--listen and --listen-starttls must use the same host")
    codepoint = clientid_codepoint(args.clientid_codepoint)
    limits = front_limits(args)
    try:
        allow = AllowList.parse(allow_entries(args))
        config = LDAPProxyConfig(
            args.ldapi,
            max_pdu=args.max_pdu,
            max_depth=args.max_depth,
            bind_timeout=args.bind_timeout,
            upstream_timeout=args.upstream_timeout,
            max_connections=args.max_connections,
            max_per_address=args.max_per_address,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    hints = _ca_hints(args.ca_hint)
    if args.verbose:
        log_to_stderr(logging.INFO)
    resolver = make_resolver(args)
    raise_descriptor_limit(4 * args.max_connections + 64)
    auth = Authenticator(resolver, allow=allow)
    current: dict[str, Any] = {"auth": auth}

    def sources() -> dict[str, Any]:
        a = current["auth"]
        source: Any = a.source
        out: dict[str, Any] = {"auth": a.stats(), "dns": source.stats()}
        if "proxy" in current:
            out["tls:reason"] = current["proxy"].core.stats.snapshot()
            snap = current["proxy"].stats.snapshot()
            out["ldap:reason"] = snap.pop("refused")
            out["ldap"] = snap
        return out

    observer, endpoint = observe_service(args, "ldap-proxy", sources, dns=resolver)
    host = (ldaps or plain or ("127.0.0.1", 0))[0]

    async def run() -> None:
        with start_errors():
            proxy = await start_ldap_proxy(
                host,
                ldaps_port=ldaps[1] if ldaps else None,
                starttls_port=plain[1] if plain else None,
                config=config,
                cert=args.cert,
                key=args.key,
                authenticator=auth,
                codepoint=codepoint,
                observer=observer,
                **limits,
                client_ca_names=hints,
            )
        current["proxy"] = proxy

        def reload(new_resolver: Any) -> None:
            """SIGHUP: certificate, key, CA hints, allow-list and trust anchors, or nothing."""
            new_auth = front_authenticator(args, new_resolver)
            proxy.core.reload(
                cert=args.cert,
                key=args.key,
                authenticator=new_auth,
                client_ca_names=_ca_hints(args.ca_hint),
            )
            current["auth"] = new_auth

        def announce() -> None:
            where = {
                "ldaps": f"{host}:{proxy.core.port}" if ldaps else None,
                "starttls": f"{host}:{proxy.starttls_port}" if plain else None,
                "ldapi": args.ldapi,
            }
            if args.json:
                print(json.dumps(where), flush=True)
            else:
                print(
                    f"dance ldap-proxy: LDAPS {where['ldaps'] or 'off'}, StartTLS "
                    f"{where['starttls'] or 'off'}, slapd {args.ldapi}",
                    flush=True,
                )

        try:
            await run_service(
                "ldap-proxy",
                args,
                resolver,
                reload=reload,
                shutdown=lambda: proxy.shutdown(args.drain_timeout),
                announce=announce,
            )
        finally:
            log.info("tls stats: %s", proxy.core.stats.snapshot())
            log.info("ldap stats: %s", proxy.stats.snapshot())

    return run_until_stopped(run(), endpoint)
