"""`dance sign`, `dance verify-message`, `dance encrypt`, `dance decrypt`: message-level identity.

Input from a file (``--in FILE``) or standard input; output to a file (``--out FILE``) or
standard output. Exit codes: 0 ok, 1 refused (a reason code is printed), 2 unusable input.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from dance.cli.common import UsageError, add_dns_options, client_name_arg, load_chain, make_resolver

EXIT_OK, EXIT_NEGATIVE = 0, 1
FORMATS = ("jws", "jws-json", "cose")


def _read_input(path: str | None) -> bytes:
    if path in (None, "-"):
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _write_output(path: str | None, data: bytes) -> None:
    if path in (None, "-"):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _load_key(path: str) -> Any:
    from dance.message import MessageError, load_private_key

    try:
        return load_private_key(path)
    except MessageError as exc:
        raise UsageError(f"{path}: {exc.detail or exc.reason.value}") from None


def _summary_stream(args: argparse.Namespace) -> TextIO:
    """Where verdicts go: stderr while the payload itself goes to stdout, else stdout.

    ``verified:`` and ``refused:`` always go to the same stream, so a script that reads one
    reads both; with --json the document is on stdout either way.
    """
    if args.json:
        return sys.stdout
    payload_on_stdout = getattr(args, "output", None) in (None, "-")
    return sys.stderr if payload_on_stdout else sys.stdout


def _refused(exc: Any, args: argparse.Namespace) -> int:
    from dance.message import MissingExtra

    if isinstance(exc, MissingExtra):
        raise UsageError(exc.detail) from None
    if args.json:
        print(json.dumps(exc.to_dict()))
    else:
        print(f"refused: {exc.reason.value}", file=_summary_stream(args))
        if getattr(args, "verbose", False) and exc.detail:
            print(f"  {exc.detail}", file=sys.stderr)
    return EXIT_NEGATIVE


def cmd_sign(args: argparse.Namespace) -> int:
    from dance.message import MessageError, sign_cose, sign_jws

    name = client_name_arg(args.name)
    key = _load_key(args.key)
    certificates = [c.certificate for c in load_chain(args.cert, None).certs] if args.cert else []
    payload = _read_input(args.input)
    try:
        if args.format == "cose":
            out = sign_cose(
                payload, key, name, alg=args.alg, certificates=certificates, x5u=args.x5u
            )
        else:
            serialization = "json" if args.format == "jws-json" else "compact"
            token = sign_jws(
                payload,
                key,
                name,
                alg=args.alg,
                serialization=serialization,
                certificates=certificates,
                x5u=args.x5u,
            )
            out = token.encode("ascii") + b"\n"
    except MessageError as exc:
        raise UsageError(f"cannot sign: {exc}") from None
    _write_output(args.output, out)
    return EXIT_OK


def _authenticator(args: argparse.Namespace, allow: list[str]) -> tuple[Any, Any]:
    from dance.auth import Authenticator

    resolver = make_resolver(args)
    try:
        return resolver, Authenticator(resolver, allow=allow)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_verify_message(args: argparse.Namespace) -> int:
    from dance.message import MessageError, MessageVerifier

    if not args.allow:
        raise UsageError("give the accepted signers: --allow NAME or --allow .SUFFIX")
    token = _read_input(args.input)
    resolver, authenticator = _authenticator(args, args.allow)
    verifier = MessageVerifier(authenticator)

    async def go() -> Any:
        async with resolver:
            return await verifier.verify(token)

    try:
        result = asyncio.run(go())
    except MessageError as exc:
        return _refused(exc, args)
    summary = _summary_stream(args)
    if args.json:
        doc = result.to_dict()
        if args.output is None:
            doc["payload_b64"] = base64.b64encode(result.payload).decode("ascii")
        print(json.dumps(doc))
    else:
        ident = result.identity
        print(f"verified: signed by {ident.identity}", file=summary)
        print(
            f"  {result.format} {result.alg}, key from "
            f"{'the embedded certificate' if result.certificate_embedded else 'DNS'}, "
            f"record {ident.record}",
            file=summary,
        )
    if args.output is not None or not args.json:
        _write_output(args.output, result.payload)
    return EXIT_OK


def cmd_encrypt(args: argparse.Namespace) -> int:
    from dance.message import MessageError, MessageVerifier, encrypt_cose, encrypt_jwe
    from dance.message.keys import allowed_algorithms

    name = client_name_arg(args.to)
    plaintext = _read_input(args.input)
    resolver, authenticator = _authenticator(args, [name])
    verifier = MessageVerifier(authenticator)

    async def go() -> Any:
        async with resolver:
            return await verifier.published_keys(name)

    try:
        keys = asyncio.run(go())
        usable = [k for k in keys if set(allowed_algorithms(k.public_key)) & {"ES256", "RS256"}]
        if not usable:
            from dance.message.errors import MessageReason

            raise MessageError(
                MessageReason.KEY_NOT_PUBLISHED,
                "no P-256 or RSA key published in full (3 1 0 / 3 0 0) for the recipient",
                name,
            )
        key = usable[0].public_key
        if args.format == "cose":
            out = encrypt_cose(plaintext, key, name)
        else:
            out = encrypt_jwe(plaintext, key, name, alg=args.alg).encode("ascii") + b"\n"
    except MessageError as exc:
        return _refused(exc, args)
    _write_output(args.output, out)
    if args.json:
        print(
            json.dumps({"encrypted": True, "recipient": name, "format": args.format}),
            file=sys.stderr if args.output in (None, "-") else sys.stdout,
        )
    return EXIT_OK


def cmd_decrypt(args: argparse.Namespace) -> int:
    from dance.message import MessageError, decrypt_cose, decrypt_jwe

    key = _load_key(args.key)
    data = _read_input(args.input)
    try:
        if data[:1] in (b"\xd8", b"\x84"):
            plaintext = decrypt_cose(data, key)
        else:
            plaintext = decrypt_jwe(data, key)
    except MessageError as exc:
        return _refused(exc, args)
    _write_output(args.output, plaintext)
    return EXIT_OK


def _io(p: argparse.ArgumentParser) -> None:
    p.add_argument("--in", dest="input", metavar="FILE", help="input file (default: stdin)")
    p.add_argument("--out", dest="output", metavar="FILE", help="output file (default: stdout)")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("sign", help="sign a payload as JWS or COSE_Sign1 with a DANCE name")
    p.add_argument("--name", required=True, help="the signer's ClientName (kid, dns: x5u)")
    p.add_argument("--key", required=True, metavar="FILE", help="the signer's private key (PEM)")
    p.add_argument("--format", choices=FORMATS, default="jws", help="jws (compact), jws-json, cose")
    p.add_argument("--alg", choices=("ES256", "EdDSA", "RS256", "PS256"), help="default: by key")
    p.add_argument(
        "--cert",
        metavar="FILE",
        help="embed this certificate chain (x5c / x5chain); "
        "default: name only, the key comes from a 3 1 0 / 3 0 0 record",
    )
    p.add_argument(
        "--no-x5u",
        dest="x5u",
        action="store_false",
        default=None,
        help="omit x5u=dns:NAME?type=TLSA (JWS has it by default)",
    )
    p.add_argument("--x5u", dest="x5u", action="store_true", help="add x5u (COSE label 35)")
    _io(p)
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_sign_defaults)

    p = subparsers.add_parser(
        "verify-message", help="verify a JWS / COSE_Sign1 and print who signed it"
    )
    p.add_argument(
        "--allow",
        action="append",
        metavar="NAME",
        help="accepted signer name, or .SUFFIX for names below it (repeatable)",
    )
    _io(p)
    p.add_argument("-v", "--verbose", action="store_true", help="print the refusal detail")
    add_dns_options(p)
    p.set_defaults(func=cmd_verify_message)

    p = subparsers.add_parser("encrypt", help="encrypt to a DANCE identity (key from DNS)")
    p.add_argument("--to", required=True, metavar="NAME", help="the recipient's ClientName")
    p.add_argument("--format", choices=("jwe", "cose"), default="jwe")
    p.add_argument(
        "--alg",
        choices=("ECDH-ES+A256KW", "ECDH-ES", "RSA-OAEP-256"),
        help="JWE key management (default: by key type)",
    )
    _io(p)
    p.add_argument("-v", "--verbose", action="store_true", help="print the refusal detail")
    add_dns_options(p)
    p.set_defaults(func=cmd_encrypt)

    p = subparsers.add_parser("decrypt", help="decrypt a JWE or COSE_Encrypt with a private key")
    p.add_argument("--key", required=True, metavar="FILE", help="the recipient's private key")
    _io(p)
    p.add_argument("-v", "--verbose", action="store_true", help="print the refusal detail")
    p.add_argument("--json", action="store_true", help="machine-readable refusals")
    p.set_defaults(func=cmd_decrypt)


def _sign_defaults(args: argparse.Namespace) -> int:
    if args.x5u is None:
        args.x5u = args.format != "cose"
    return cmd_sign(args)
