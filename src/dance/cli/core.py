"""The core commands: ``tlsa``, ``verify``, ``lookup``, ``check`` and ``demo``."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import TYPE_CHECKING, Any

from cryptography import x509

from dance.credentials import (
    CredentialError,
    load_certificates,
)
from dance.identity import Rejection, Result
from dance.names import InvalidName, parse_client_name
from dance.tlsa import MalformedRecord, TLSARecord, make_record, verify

if TYPE_CHECKING:
    pass
from dance.cli.common import (
    EXIT_NEGATIVE,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    _field,
    _read,
    add_dns_options,
    client_name_arg,
    load_presented,
    load_spki,
    lookup_hint,
    make_resolver,
    print_result,
    record_owner_arg,
    ttl_int,
)

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


def register(sub: Any) -> None:
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
