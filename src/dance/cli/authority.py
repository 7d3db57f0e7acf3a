"""``dance authority``: the embedded DNSSEC-signing authoritative server, and its zone tools.

dance authority --zone-dir DIR --listen 127.0.0.1:PORT [--tsig-key-file FILE]... [--json-log]
                [--notify HOST:PORT]... [--notify-key NAME] [--serial-policy unixtime|increment]
dance authority init --zone-dir DIR --zone ZONE [--algorithm ecdsa-p256|ed25519]
                     [--denial nsec|nsec3] [--trust-anchor-out FILE]
dance authority anchor --zone-dir DIR [--zone ZONE]
dance authority tsig-key NAME --out FILE

DNS over TLS with DANCE client authentication (secondaries named by ClientName, Example 9):
dance authority ... --tls-listen HOST:PORT --tls-cert FILE --tls-key FILE
                    --xfr-allow NAME_OR_.SUFFIX... [--query-allow ...] [--tls-allow ...]
                    [--tls-san-fallback] [--clientid-codepoint N]
                    [--xot-server HOST:PORT] [--xot-trust-anchor FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
import time
from typing import Any

__all__ = ["register"]

_SERVE_HELP = "serve the zones of a directory, DNSSEC-signed online, with TSIG dynamic updates"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            entry.update(event)
        return json.dumps(entry, sort_keys=True)


def _zone_name(text: str) -> Any:
    import dns.exception
    import dns.name

    from dance.cli.common import UsageError

    try:
        name = dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise UsageError(f"bad zone name {text!r}: {exc}") from None
    if name == dns.name.root:
        raise UsageError("the root zone cannot be served")
    return name


def _tsig_keys(args: argparse.Namespace) -> list[Any]:
    from dance.cli.common import UsageError
    from dance.tsig import TSIGError, load_tsig_keys, tsig_key_from_env

    keys = []
    try:
        for path in args.tsig_key_file or ():
            keys.extend(load_tsig_keys(path))
        for variable in args.tsig_key_env or ():
            keys.append(tsig_key_from_env(variable))
    except TSIGError as exc:
        raise UsageError(str(exc)) from None
    return keys


def cmd_serve(args: argparse.Namespace) -> int:
    from dance.cli.common import UsageError

    if not args.zone_dir:
        raise UsageError("--zone-dir DIR is required (create a zone with 'dance authority init')")
    from dance.cli.common import parse_hostport

    host, port = parse_hostport(args.listen)
    handler = logging.StreamHandler(sys.stderr)
    json_log = args.json_log or getattr(args, "log_format", "text") == "json"
    handler.setFormatter(
        _JsonFormatter() if json_log else logging.Formatter("%(asctime)s %(message)s")
    )
    logger = logging.getLogger("dance")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return _serve(args, host, port, logger)
    finally:  # in-process callers (tests, embedding) must not keep a handler on a stale stream
        logger.removeHandler(handler)
        logger.setLevel(level)


def _serve(args: argparse.Namespace, host: str, port: int, logger: logging.Logger) -> int:
    import dns.exception

    from dance.authority import ALGORITHMS, Authority, AuthorityError, Limits
    from dance.authority.update import UpdatePolicy
    from dance.cli.common import UsageError, parse_hostport

    try:
        keys = _tsig_keys(args)
        try:
            policy = UpdatePolicy.parse(args.update_types, args.update_scope)
        except (ValueError, dns.exception.DNSException) as exc:
            raise UsageError(f"bad update policy: {exc}") from None
        limits = Limits(
            rate=args.rate,
            burst=max(args.burst, args.rate),
            rate_action=args.rate_action,
            max_tcp_connections=args.max_tcp,
            max_tcp_per_client=args.max_tcp_per_client,
            tcp_idle_timeout=args.tcp_idle_timeout,
            tcp_lifetime=args.tcp_lifetime,
            max_transfers=args.max_transfers,
        )
        notify = [parse_hostport(target, "--notify") for target in args.notify or ()]
        authority = Authority(
            args.zone_dir,
            tsig_keys=keys,
            limits=limits,
            algorithm=ALGORITHMS[args.algorithm],
            denial=args.denial,
            allow_non_loopback=args.allow_non_loopback,
            update_policy=policy,
            serial_policy=args.serial_policy,
            notify=notify,
            notify_key=args.notify_key,
        )
        if args.tls_listen:
            authority.tls_config = _xot_config(args, authority, host, port)
    except AuthorityError as exc:
        raise UsageError(str(exc)) from None
    if not keys:
        logger.warning("no TSIG key given: every dynamic update will be REFUSED")
    # The loaded zones live as long as the process: keep them out of the cyclic collector's
    # full scans (it would pause updates of big zones for ~0.1 s now and then).
    gc.collect()
    gc.freeze()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await authority.start_async(host, port)
        from dance.service.options import ServiceOptionError, observe

        try:
            _, endpoint = observe(args, "authority", authority.metrics)
        except ServiceOptionError as exc:
            await authority.stop_async()
            raise UsageError(str(exc)) from None
        zones = " ".join(o.to_text() for o in authority.origins)
        print(
            f"dance authority: serving {zones} on {authority.host} port {authority.port} "
            f"(UDP and TCP), {len(keys)} TSIG key(s)",
            flush=True,
        )
        if authority.tls is not None:
            print(
                f"dance authority: DNS over TLS (DANCE client authentication) on "
                f"{authority.tls.host} port {authority.tls.port}",
                flush=True,
            )
        try:
            await stop.wait()
        finally:
            if endpoint is not None:
                endpoint.close()
            await authority.stop_async()

    try:
        asyncio.run(main())
    except AuthorityError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _xot_config(args: argparse.Namespace, authority: Any, host: str, port: int) -> Any:
    """The DNS-over-TLS options: the Authenticator's resolver is the authority itself unless
    --xot-server names another (the secondaries' TLSA records may live in the served zones)."""
    from dance.auth import AllowList, Authenticator
    from dance.authority.xot import XoTConfig
    from dance.cli.common import UsageError, parse_hostport
    from dance.dns import ConfigurationError, TLSAResolver, TrustAnchors
    from dance.tls.bridge import check_codepoint

    tls_host, tls_port = parse_hostport(args.tls_listen, "--tls-listen")
    if not args.tls_cert or not args.tls_key:
        raise UsageError("--tls-listen needs --tls-cert FILE and --tls-key FILE")
    if not args.xfr_allow and not args.query_allow and not args.tls_allow:
        raise UsageError("--tls-listen needs --xfr-allow (or --query-allow / --tls-allow) names")
    if args.xot_server:
        server, recursion = parse_hostport(args.xot_server, "--xot-server"), True
    else:
        if port == 0:
            raise UsageError("--tls-listen with --listen port 0 needs --xot-server HOST:PORT")
        server, recursion = (host, port), False
    try:
        if args.xot_trust_anchor:
            with open(args.xot_trust_anchor, encoding="utf-8") as handle:
                anchors = TrustAnchors.from_text(handle.read())
        else:
            anchors = TrustAnchors.from_text(authority.trust_anchor())
        xfr_allow = AllowList.parse(args.xfr_allow or ())
        query_allow = AllowList.parse(args.query_allow) if args.query_allow else None
        allow = args.tls_allow or [*(args.xfr_allow or ()), *(args.query_allow or ())]
        resolver = TLSAResolver(server, anchors=anchors, recursion_desired=recursion)
        authenticator = Authenticator(resolver, allow=allow)
        codepoint = check_codepoint(args.clientid_codepoint)
    except OSError as exc:
        raise UsageError(f"cannot read {args.xot_trust_anchor}: {exc}") from None
    except (ConfigurationError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return XoTConfig(
        cert=args.tls_cert,
        key=args.tls_key,
        authenticator=authenticator,
        xfr_allow=xfr_allow,
        query_allow=query_allow,
        san_fallback=args.tls_san_fallback,
        codepoint=codepoint,
        host=tls_host,
        port=tls_port,
    )


def cmd_init(args: argparse.Namespace) -> int:
    from dance.authority import ALGORITHMS, AuthorityError, ZoneDir, trust_anchor_text
    from dance.cli.common import UsageError

    origin = _zone_name(args.zone)
    store = ZoneDir(args.zone_dir)
    try:
        policy = store.init_zone(
            origin,
            ttl=args.ttl,
            ns_address=args.ns_address,
            algorithm=ALGORITHMS[args.algorithm],
            denial=args.denial,
        )
    except (AuthorityError, OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    anchor = trust_anchor_text(origin, policy.keys, args.ttl)
    if args.trust_anchor_out:
        try:
            with open(args.trust_anchor_out, "w", encoding="utf-8") as out:
                out.write(anchor)
        except OSError as exc:
            raise UsageError(f"cannot write {args.trust_anchor_out}: {exc}") from None
    if args.json:
        print(
            json.dumps(
                {
                    "zone": origin.to_text(),
                    "zone_file": str(store.zone_path(origin)),
                    "key_file": str(store.key_path(origin)),
                    "algorithm": policy.algorithm,
                    "denial": policy.denial,
                    "trust_anchor": anchor.splitlines(),
                },
                indent=2,
            )
        )
    else:
        print(f"created zone {origin} in {store.zone_path(origin)}")
        print(f"signing keys (0600) in {store.key_path(origin)}")
        print("trust anchor (dance --trust-anchor FILE, Unbound trust-anchor-file):")
        print(anchor, end="")
    return 0


def cmd_anchor(args: argparse.Namespace) -> int:
    from dance.authority import AuthorityError, ZoneDir, trust_anchor_text
    from dance.cli.common import UsageError

    store = ZoneDir(args.zone_dir)
    try:
        origins = [_zone_name(args.zone)] if args.zone else store.zones()
        out = []
        for origin in origins:
            policy = store.read_policy(origin)
            if policy is None:
                raise UsageError(f"zone {origin} has no signing keys yet (start the authority)")
            ttl = next(iter(store.read_records(origin)[origin].values())).ttl
            out.append(trust_anchor_text(origin, policy.keys, ttl))
    except AuthorityError as exc:
        raise UsageError(str(exc)) from None
    print("".join(out), end="")
    return 0


def cmd_tsig_key(args: argparse.Namespace) -> int:
    from dance.cli.common import UsageError
    from dance.tsig import TSIGError, generate_tsig_key, write_tsig_key

    try:
        key = generate_tsig_key(args.name, args.algorithm)
        write_tsig_key(args.out, key, style=args.format)
    except FileExistsError:
        raise UsageError(f"{args.out} already exists") from None
    except (TSIGError, OSError) as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote TSIG key {key.name} ({key.algorithm}) to {args.out} (mode 0600)")
    return 0


def _common(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument(
        "--zone-dir", required=required, metavar="DIR", help="zone directory (<zone>.zone files)"
    )


def _codepoint(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad codepoint {text!r}") from None


def _xot_options(p: argparse.ArgumentParser) -> None:
    from dance.tls.bridge import DEFAULT_CODEPOINT

    g = p.add_argument_group("DNS over TLS, clients authenticated by DANCE (XoT, Example 9)")
    g.add_argument("--tls-listen", metavar="HOST:PORT", help="also serve DNS over TLS here")
    g.add_argument("--tls-cert", metavar="FILE", help="the server certificate (PEM chain)")
    g.add_argument("--tls-key", metavar="FILE", help="its private key")
    g.add_argument(
        "--xfr-allow",
        action="append",
        metavar="NAME_OR_.SUFFIX",
        help="client names allowed AXFR over TLS without TSIG (repeatable)",
    )
    g.add_argument(
        "--query-allow",
        action="append",
        metavar="NAME_OR_.SUFFIX",
        help="client names whose queries are answered (default: every authenticated client)",
    )
    g.add_argument(
        "--tls-allow",
        action="append",
        metavar="NAME_OR_.SUFFIX",
        help="the Authenticator's allow-list (default: the --xfr-allow and --query-allow names)",
    )
    g.add_argument(
        "--tls-san-fallback",
        action="store_true",
        help="accept clients without dane_clientid by their single SAN dNSName (e.g. kdig)",
    )
    g.add_argument(
        "--clientid-codepoint",
        type=_codepoint,
        default=DEFAULT_CODEPOINT,
        metavar="N",
        help=f"dane_clientid extension codepoint (default {DEFAULT_CODEPOINT:#x})",
    )
    g.add_argument(
        "--xot-server",
        metavar="HOST:PORT",
        help="resolver for the clients' TLSA records (default: this authority's --listen)",
    )
    g.add_argument(
        "--xot-trust-anchor",
        metavar="FILE",
        help="DS/DNSKEY lines for that resolver (default: the served zones' own anchors)",
    )


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("authority", help=_SERVE_HELP, description=_SERVE_HELP)
    _common(p, required=False)
    p.add_argument("--listen", default="127.0.0.1:5300", metavar="HOST:PORT")
    p.add_argument(
        "--tsig-key-file", action="append", metavar="FILE", help="TSIG key(s) for updates"
    )
    p.add_argument(
        "--tsig-key-env",
        action="append",
        metavar="VAR",
        help="environment variable holding [ALGORITHM:]NAME:SECRET",
    )
    p.add_argument("--json-log", action="store_true", help="log JSON lines to stderr")
    p.add_argument(
        "--allow-non-loopback", action="store_true", help="permit a non-loopback --listen"
    )
    p.add_argument("--rate", type=float, default=200.0, help="messages/s per client (0: off)")
    p.add_argument("--burst", type=float, default=400.0, help="rate-limit burst")
    p.add_argument("--rate-action", choices=("drop", "refused"), default="drop")
    p.add_argument(
        "--max-tcp", type=int, default=64, help="concurrent TCP and DNS-over-TLS connections"
    )
    p.add_argument(
        "--max-tcp-per-client", type=int, default=16, help="concurrent connections per address"
    )
    p.add_argument(
        "--tcp-idle-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="deadline for each message read and each reply written (default 10)",
    )
    p.add_argument(
        "--tcp-lifetime",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="a TCP connection is closed after this long (default 120)",
    )
    p.add_argument("--max-transfers", type=int, default=10, help="concurrent zone transfers")
    p.add_argument(
        "--notify",
        action="append",
        metavar="HOST:PORT",
        help="secondary to send NOTIFY to after every new serial (repeatable)",
    )
    p.add_argument(
        "--notify-key", metavar="NAME", help="sign NOTIFY with this TSIG key (one of the loaded)"
    )
    p.add_argument(
        "--serial-policy",
        choices=("unixtime", "increment"),
        default="unixtime",
        help="new SOA serial: max(old+1, Unix time) (default) or old+1",
    )
    p.add_argument(
        "--algorithm",
        choices=("ecdsa-p256", "ed25519"),
        default="ecdsa-p256",
        help="for zones without keys yet",
    )
    p.add_argument("--denial", choices=("nsec", "nsec3"), default="nsec")
    p.add_argument(
        "--update-types",
        metavar="TYPES",
        help="record types updates may change, e.g. TLSA (default: any the signer does not own)",
    )
    p.add_argument(
        "--update-scope",
        action="append",
        metavar="KEY=NAME[,NAME]",
        help="names (and below) that TSIG key KEY may change (default: the whole zone)",
    )
    _xot_options(p)
    p.set_defaults(func=cmd_serve)
    sub = p.add_subparsers(dest="authority_command", metavar="{init,anchor,tsig-key}")

    q = sub.add_parser("init", help="create a zone and print its trust anchor")
    _common(q, required=True)
    q.add_argument("--zone", required=True, help="zone name, e.g. example.test")
    q.add_argument("--algorithm", choices=("ecdsa-p256", "ed25519"), default="ecdsa-p256")
    q.add_argument("--denial", choices=("nsec", "nsec3"), default="nsec")
    q.add_argument("--ttl", type=int, default=300, help="TTL of the initial records")
    q.add_argument("--ns-address", default="127.0.0.1", help="address of ns1.<zone>")
    q.add_argument("--trust-anchor-out", metavar="FILE", help="also write the anchor here")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_init)

    q = sub.add_parser("anchor", help="print the trust anchor (DS + DNSKEY) of zones")
    _common(q, required=True)
    q.add_argument("--zone", help="one zone (default: all)")
    q.set_defaults(func=cmd_anchor)

    q = sub.add_parser("tsig-key", help="generate a TSIG key file (BIND/Knot format, 0600)")
    q.add_argument("name", help="key name, e.g. dance-update")
    q.add_argument("--out", required=True, metavar="FILE")
    q.add_argument("--algorithm", choices=("hmac-sha256", "hmac-sha384", "hmac-sha512"),
                   default="hmac-sha256")  # fmt: skip
    q.add_argument(
        "--format",
        choices=("bind", "line"),
        default="bind",
        help="bind: key block (BIND, Knot config); line: ALGORITHM:NAME:SECRET (knsupdate -k)",
    )
    q.set_defaults(func=cmd_tsig_key)
