"""The `dance` command line. It only parses arguments, reads files and prints.

Exit codes: 0 success, 1 a negative verdict (rejected, bogus), 2 unusable input or configuration.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from cryptography import x509

from dance import __version__
from dance.credentials import (
    CertificateChain,
    CredentialError,
    Presented,
    RawPublicKey,
    load_certificates,
    load_public_key,
)
from dance.identity import Identity, Rejection, Result
from dance.names import InvalidName, parse_client_name
from dance.tlsa import MalformedRecord, TLSARecord, make_record, verify
from dance.tlsa.record import parse_field

if TYPE_CHECKING:
    from dance.dns import TLSAResolver

EXIT_OK, EXIT_NEGATIVE, EXIT_USAGE = 0, 1, 2

# Command groups that live in their own modules: each has register(subparsers) -> None, adding
# parsers whose `func(args) -> int` raises UsageError for unusable input (exit 2).
COMMAND_MODULES: tuple[str, ...] = (
    "dance.cli_tls",
    "dance.cli_provision",
    "dance.cli_http",
    "dance.cli_message",
    "dance.cli_authority",
    "dance.cli_ssh",
    "dance.cli_smtp",
)


# Long-running commands that read ``--config FILE`` (TOML, keys = long options; flags win).
SERVICE_COMMANDS: tuple[str, ...] = ("proxy", "smtp-proxy", "agent", "authority", "ssh-keys-daemon")


class UsageError(Exception):
    """Unusable input or configuration: printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def load_chain(cert: str, chain: str | None) -> CertificateChain:
    try:
        certs = load_certificates(_read(cert))
        if chain:
            certs += load_certificates(_read(chain))
        return CertificateChain.from_certificates(certs)
    except CredentialError as exc:
        raise UsageError(f"{cert if not chain else cert + ' / ' + chain}: {exc}") from None


def load_spki(path: str) -> bytes:
    """A public key as SPKI DER: PEM/DER SPKI, a certificate, or an OpenSSH ``.pub`` line."""
    data = _read(path)
    head = data.lstrip()[:32]
    if head.startswith((b"ssh-", b"ecdsa-sha2-", b"sk-")):
        from dance.ssh import SSHKeyError, parse_public_key_line

        try:
            return parse_public_key_line(data.decode("utf-8")).spki
        except (SSHKeyError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: not a usable OpenSSH public key: {exc}") from None
    try:
        return load_public_key(data)
    except CredentialError as exc:
        raise UsageError(f"{path}: {exc}") from None


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (safe when callers swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def log_to_stderr(level: int, fmt: str = "%(asctime)s %(name)s %(levelname)s %(message)s") -> None:
    """Send the ``dance`` loggers to standard error (once per process) for server commands."""
    logger = logging.getLogger("dance")
    logger.setLevel(level)
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter(fmt))
        logger.addHandler(handler)


def parse_hostport(text: str, what: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` (port 0-65535), or a UsageError naming ``what``."""
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"bad {what} {text!r} (HOST:PORT or [IPv6]:PORT)")
    return host, int(port)


def positive_float(text: str) -> float:
    """An argparse type: a finite number of seconds (or days) above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be above zero: {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number from 1."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def ttl_int(text: str) -> int:
    """An argparse type: a DNS TTL, 0 to 2^31-1 seconds (RFC 2181 section 8)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if not 0 <= value <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"a TTL is 0 to 2147483647 seconds: {text!r}")
    return value


def record_owner_arg(text: str) -> str:
    """A TLSA owner name: a ClientName, or a wildcard ``*.`` above one (a CA's DANE-TA record)."""
    if text.startswith("*."):
        return "*." + client_name_arg(text[2:])
    return client_name_arg(text)


def client_name_arg(text: str) -> str:
    try:
        return parse_client_name(text).text
    except InvalidName as exc:
        raise UsageError(f"bad client name {text!r}: {exc}") from None


def load_presented(args: argparse.Namespace) -> Presented:
    """--cert FILE [--chain FILE] or --pubkey FILE, as a CertificateChain or RawPublicKey."""
    if args.cert:
        return load_chain(args.cert, args.chain)
    if args.chain:
        raise UsageError("--chain goes with --cert")
    try:
        return RawPublicKey.from_spki(load_spki(args.pubkey))
    except CredentialError as exc:
        raise UsageError(f"{args.pubkey}: {exc}") from None


def print_result(result: Result, args: argparse.Namespace) -> int:
    """Print an authentication result (human or --json) and return its exit code."""
    if args.json:
        print(json.dumps(result.to_dict()))
    elif isinstance(result, Identity):
        print(f"authenticated: {result.identity}")
        print(f"  record: {result.record} at depth {result.depth}")
    else:
        print(f"rejected: {result.reason.value}")
        if getattr(args, "verbose", False) and result.detail:
            print(f"  {result.detail}", file=sys.stderr)
    return EXIT_OK if isinstance(result, Identity) else EXIT_NEGATIVE


def _field(kind: str, value: str) -> int:
    try:
        return parse_field(kind, value)
    except MalformedRecord as exc:
        raise UsageError(str(exc)) from None


# --- dance tlsa -----------------------------------------------------------------------------------


def cmd_tlsa(args: argparse.Namespace) -> int:
    usage = _field("usage", args.usage)
    selector = _field("selector", args.selector)
    mtype = _field("mtype", args.mtype)
    if usage > 3 or selector > 1 or mtype > 2:
        raise UsageError("only usages 0-3, selectors 0-1 and matching types 0-2 can be generated")
    source: x509.Certificate | bytes
    owner: str | None = record_owner_arg(args.name) if args.name else None
    if args.cert:
        try:
            certs = load_certificates(_read(args.cert))
        except CredentialError as exc:
            raise UsageError(f"{args.cert}: {exc}") from None
        cert = certs[0]
        if len(certs) > 1:
            print(
                f"dance tlsa: note: {args.cert} holds {len(certs)} certificates; using the first",
                file=sys.stderr,
            )
        source = cert
        if owner is None:
            try:
                san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                dns_names = san.get_values_for_type(x509.DNSName)
            except x509.ExtensionNotFound:
                dns_names = []
            if usage in (2, 3) and len(dns_names) == 1 and "*" not in dns_names[0]:
                try:
                    owner = parse_client_name(dns_names[0]).text
                except InvalidName:
                    owner = None
    else:
        if selector == 0:
            raise UsageError("selector 0 (Cert) needs --cert; a public key has only selector 1")
        source = load_spki(args.pubkey)
    record = make_record(source, usage, selector, mtype)
    if args.json:
        print(
            json.dumps(
                {
                    "name": owner,
                    "ttl": args.ttl,
                    "usage": usage,
                    "selector": selector,
                    "mtype": mtype,
                    "data": record.data.hex(),
                    "rdata": record.to_text(),
                }
            )
        )
    elif owner:
        print(record.to_zone_line(owner, args.ttl))
    else:
        ttl = f"{args.ttl} " if args.ttl is not None else ""
        print(f"; no owner name: pass --name NAME\n{ttl}IN TLSA {record.to_text()}")
    return EXIT_OK


# --- dance verify ---------------------------------------------------------------------------------


def _parse_at(text: str | None) -> datetime.datetime:
    if text is None:
        return datetime.datetime.now(datetime.UTC)
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"bad --at time {text!r} (use ISO 8601)") from None
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def cmd_verify(args: argparse.Namespace) -> int:
    name = client_name_arg(args.name)
    records: list[TLSARecord] = []
    for text in args.tlsa:
        try:
            record = TLSARecord.from_text(text)
        except MalformedRecord as exc:
            raise UsageError(f"bad --tlsa {text!r}: {exc}") from None
        if not record.well_formed:
            raise UsageError(
                f"bad --tlsa {text!r}: data length {len(record.data)} does not fit matching type "
                f"{record.mtype}"
            )
        records.append(record)
    presented = load_presented(args)
    result = verify(name, presented, records, now=_parse_at(args.at))
    return print_result(result, args)


# --- dance lookup / dance check (DNS) --------------------------------------------------------


def _parse_server(text: str | None, default_port: int = 53) -> tuple[str, int]:
    """HOST, HOST:PORT, [V6]:PORT or V6; default: the first nameserver of /etc/resolv.conf."""
    if text is None:
        try:
            for line in Path("/etc/resolv.conf").read_text().splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    return parts[1], default_port
        except OSError:
            pass
        return "127.0.0.1", default_port
    host, port = text, str(default_port)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"bad --server {text!r} (HOST[:PORT], [IPv6]:PORT)")
    return host, int(port)


def lookup_hint(outcome: str, reason: str, args: argparse.Namespace) -> str | None:
    """What to do about a lookup that could not decide, in one sentence (None: nothing to add)."""
    server = getattr(args, "server", None) or "127.0.0.1"
    anchored = bool(getattr(args, "trust_anchor", None))
    if reason == "network-error":
        return (
            f"no DNS server answered at {server} (connection refused or unreachable): "
            "is it running, and is --server right?"
        )
    if reason == "timeout":
        return (
            f"{server} did not answer within {getattr(args, 'timeout', '?')} s: is a DNS server "
            "listening there (--server), or does it need a longer --timeout?"
        )
    if reason == "refused" and not anchored:
        return (
            f"{server} refused a query: without --trust-anchor dance validates from the root, "
            "which an authoritative server for your zone does not serve; give --trust-anchor FILE "
            "(the DS/DNSKEY of your zone, e.g. from 'dance authority init --trust-anchor-out'), "
            "or use a validating resolver"
        )
    if reason == "refused":
        return f"{server} refused the query: does it serve this zone (or recurse for you)?"
    if reason == "servfail":
        return f"{server} answered SERVFAIL (a validating resolver says so for bogus data)"
    if outcome == "insecure" and reason == "no-trust-anchor":
        return "the name is under none of the trust anchors: check --trust-anchor"
    return None


def make_resolver(args: argparse.Namespace) -> TLSAResolver:
    from dance.dns import AnchorError, ConfigurationError, TLSAResolver, TrustAnchors

    server = _parse_server(args.server, 853 if args.tls else 53)
    try:
        anchors = (
            TrustAnchors.from_file(args.trust_anchor)
            if args.trust_anchor
            else TrustAnchors.builtin_root()
        )
    except AnchorError as exc:
        raise UsageError(str(exc)) from None
    transport = "tls" if args.tls else args.transport
    server_name = args.tls_name
    pins = tuple(args.tls_pin or ())
    if transport == "tls" and not server_name and not pins:
        import ipaddress

        try:
            ipaddress.ip_address(server[0])
        except ValueError:
            server_name = server[0]
        else:
            raise UsageError("--tls to an IP address needs --tls-name NAME or --tls-pin PIN")
    try:
        return TLSAResolver(
            server,
            anchors=anchors,
            transport=transport,
            server_name=server_name,
            spki_pins=pins,
            trust_ad=args.trust_ad,
            timeout=args.timeout,
            deadline=max(args.timeout, args.deadline),
        )
    except (ConfigurationError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def add_dns_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", metavar="HOST[:PORT]", help="resolver or authoritative server")
    p.add_argument("--trust-anchor", metavar="FILE", help="DS/DNSKEY lines (default: root KSKs)")
    p.add_argument("--tls", action="store_true", help="DNS over TLS (port 853 by default)")
    p.add_argument("--tls-name", metavar="NAME", help="DoT server name to authenticate")
    p.add_argument("--tls-pin", action="append", metavar="PIN", help="DoT server SPKI pin")
    p.add_argument("--transport", choices=("udp", "tcp"), default="udp", help=argparse.SUPPRESS)
    p.add_argument(
        "--trust-ad",
        action="store_true",
        help="trust the resolver's AD bit (only loopback or authenticated DoT)",
    )
    p.add_argument("--timeout", type=positive_float, default=2.0, help="per-query timeout (s)")
    p.add_argument("--deadline", type=positive_float, default=5.0, help="overall deadline (s)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_lookup(args: argparse.Namespace) -> int:
    import asyncio

    from dance.dns import LookupResult, Outcome

    name = client_name_arg(args.name)
    resolver = make_resolver(args)

    async def go() -> LookupResult:
        async with resolver:
            return await resolver.lookup_tlsa(name)

    result = asyncio.run(go())
    hint = lookup_hint(result.outcome.value, result.reason, args)
    records = []
    for rdata in result.records:
        try:
            records.append(TLSARecord.from_wire(rdata).to_text())
        except MalformedRecord:
            records.append("\\# " + str(len(rdata)) + " " + rdata.hex())
    if args.json:
        print(
            json.dumps(
                {
                    "name": name,
                    "outcome": result.outcome.value,
                    "reason": result.reason,
                    "cache_ttl": round(result.ttl, 3),
                    "records": records,
                    "hint": hint,
                }
            )
        )
    else:
        print(f"{name}: {result.outcome.value} ({result.reason})")
        for text in records:
            print(f"  TLSA {text}")
        if hint:
            print(f"  hint: {hint}")
        if result.outcome is Outcome.SECURE:
            print(f"  may be cached for {result.ttl:.0f} s")
    if result.outcome is Outcome.SECURE:
        return EXIT_OK
    if result.outcome is Outcome.INDETERMINATE:
        return EXIT_USAGE
    return EXIT_NEGATIVE


def cmd_check(args: argparse.Namespace) -> int:
    import asyncio

    from dance.auth import Authenticator

    name = client_name_arg(args.name)
    presented = load_presented(args)
    resolver = make_resolver(args)
    try:
        authenticator = Authenticator(resolver, allow=args.allow or [name])
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    async def go() -> Result:
        async with resolver:
            return await authenticator.authenticate(name, presented)

    result = asyncio.run(go())
    code = print_result(result, args)
    if isinstance(result, Rejection) and result.dns_outcome and not args.json:
        dns_reason = (result.detail or "").rpartition(": ")[2]
        hint = lookup_hint(result.dns_outcome, dns_reason, args)
        if hint:
            print(f"  hint: {hint}")
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    from dance.demo import run

    return run(sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dance",
        description="DANE authentication for clients, devices and users (IETF DANCE).",
    )
    parser.add_argument("--version", action="version", version=f"dance {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("tlsa", help="print the TLSA record for a certificate or public key")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cert", metavar="FILE", help="certificate (PEM or DER)")
    src.add_argument("--pubkey", metavar="FILE", help="public key (PEM or DER SPKI)")
    p.add_argument("--name", help="owner name (default: the certificate's single SAN dNSName)")
    p.add_argument("--usage", default="3", help="0-3 or PKIX-TA/PKIX-EE/DANE-TA/DANE-EE")
    p.add_argument("--selector", default="1", help="0 (Cert) or 1 (SPKI)")
    p.add_argument("--mtype", default="1", help="0 (Full), 1 (SHA2-256), 2 (SHA2-512)")
    p.add_argument("--ttl", type=ttl_int, help="TTL in seconds for the zone-file line")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_tlsa)

    p = sub.add_parser("verify", help="check a certificate or key against TLSA records (offline)")
    p.add_argument("--name", required=True, help="the ClientName (TLSA owner name)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cert", metavar="FILE", help="client certificate(s), EE first (PEM/DER)")
    src.add_argument("--pubkey", metavar="FILE", help="raw public key (PEM or DER SPKI)")
    p.add_argument("--chain", metavar="FILE", help="more certificates of the client's chain")
    p.add_argument(
        "--tlsa", action="append", required=True, metavar='"U S M HEX"', help="a TLSA record"
    )
    p.add_argument("--at", metavar="TIME", help="verify at this ISO 8601 time (default: now)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-v", "--verbose", action="store_true", help="print the rejection detail")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("lookup", help="DNSSEC-validated TLSA lookup")
    p.add_argument("name", help="the ClientName (TLSA owner name)")
    add_dns_options(p)
    p.set_defaults(func=cmd_lookup)

    p = sub.add_parser("check", help="lookup plus verification of a certificate or key")
    p.add_argument("name", help="the ClientName (TLSA owner name)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cert", metavar="FILE", help="client certificate(s), EE first (PEM/DER)")
    src.add_argument("--pubkey", metavar="FILE", help="raw public key (PEM or DER SPKI)")
    p.add_argument("--chain", metavar="FILE", help="more certificates of the client's chain")
    p.add_argument(
        "--allow",
        action="append",
        metavar="NAME_OR_SUFFIX",
        help="allow-list entry (.example.com = any name below); default: the name itself",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print the rejection detail")
    add_dns_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("demo", help="a walk-through of DANCE authentication")
    p.set_defaults(func=cmd_demo)

    import importlib
    import importlib.util

    for module in COMMAND_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).register(sub)
    from dance.service.config import add_config_option
    from dance.service.options import WORKER_COMMANDS, add_service_options

    for command in SERVICE_COMMANDS:
        service = sub.choices.get(command)
        if service is not None:
            add_config_option(service)
            add_service_options(service, workers=command in WORKER_COMMANDS)
    return parser


def _with_config(
    parser: argparse.ArgumentParser, argv: list[str], origins: dict[str, str]
) -> list[str]:
    """Put a service command's ``--config FILE`` options in front of its flags (flags win)."""
    if not argv or argv[0] not in SERVICE_COMMANDS:
        return argv
    rest = argv[1:]
    path = None
    for i, arg in enumerate(rest):
        if arg == "--":
            break
        if arg == "--config" and i + 1 < len(rest):
            path = rest[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    if path is None:
        return argv
    from dance.service.config import ConfigError, config_argv

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[
        argv[0]
    ]
    try:
        return [argv[0], *config_argv(sub, rest, path, origins)]
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    origins: dict[str, str] = {}  # options set by --config FILE: flag -> "file:line key"
    try:
        raw = _with_config(parser, raw, origins)
    except UsageError as exc:
        print(f"dance {raw[0]}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(raw)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as exc:
        message = str(exc)
        if origins:
            from dance.service.config import locate

            message = locate(message, origins)
        print(f"dance {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    # Under ``python -m dance.cli`` this file runs as __main__; call the imported module's main so
    # that exceptions raised by command modules (dance.cli.UsageError) are the ones caught.
    from dance.cli import main as _main

    sys.exit(_main())
