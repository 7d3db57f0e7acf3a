"""The `dance` command line. It only parses arguments, reads files and prints.

Exit codes: 0 success, 1 a negative verdict (rejected, bogus), 2 unusable input or configuration.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

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
from dance.identity import Identity
from dance.names import InvalidName, parse_client_name
from dance.tlsa import MalformedRecord, TLSARecord, make_record, verify
from dance.tlsa.record import parse_field

EXIT_OK, EXIT_NEGATIVE, EXIT_USAGE = 0, 1, 2


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


def _load_chain(cert: str, chain: str | None) -> CertificateChain:
    try:
        certs = load_certificates(_read(cert))
        if chain:
            certs += load_certificates(_read(chain))
        return CertificateChain.from_certificates(certs)
    except CredentialError as exc:
        raise UsageError(f"{cert if not chain else cert + ' / ' + chain}: {exc}") from None


def _load_spki(path: str) -> bytes:
    try:
        return load_public_key(_read(path))
    except CredentialError as exc:
        raise UsageError(f"{path}: {exc}") from None


def _name(text: str) -> str:
    try:
        return parse_client_name(text).text
    except InvalidName as exc:
        raise UsageError(f"bad client name {text!r}: {exc}") from None


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
    owner: str | None = _name(args.name) if args.name else None
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
        source = _load_spki(args.pubkey)
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
    name = _name(args.name)
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
    presented: Presented
    if args.cert:
        presented = _load_chain(args.cert, args.chain)
    else:
        if args.chain:
            raise UsageError("--chain goes with --cert")
        try:
            presented = RawPublicKey.from_spki(_load_spki(args.pubkey))
        except CredentialError as exc:
            raise UsageError(f"{args.pubkey}: {exc}") from None
    result = verify(name, presented, records, now=_parse_at(args.at))
    if args.json:
        print(json.dumps(result.to_dict()))
    elif isinstance(result, Identity):
        print(f"authenticated: {result.identity}")
        print(f"  record: {result.record} at depth {result.depth}")
    else:
        print(f"rejected: {result.reason.value}")
        if args.verbose and result.detail:
            print(f"  {result.detail}", file=sys.stderr)
    return EXIT_OK if isinstance(result, Identity) else EXIT_NEGATIVE


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
    p.add_argument("--ttl", type=int, help="TTL in seconds for the zone-file line")
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

    p = sub.add_parser("demo", help="an offline walk-through of DANCE authentication")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as exc:
        print(f"dance {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
