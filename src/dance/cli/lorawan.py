"""``dance lorawan-join-server`` and ``dance lorawan-join-request``: the two LoRaWAN services
(`dance.lorawan`, architecture Example 5) as processes.

    dance lorawan-join-server --listen 127.0.0.1:8443 --cert js.pem --key js.key \\
        --join-eui 70b3d57ed0000001 --device-keys devices.keys \\
        --network-server ns1.netid-000013.example.test=000013 \\
        --server 127.0.0.1:53 --trust-anchor anchor.txt
    dance lorawan-join-request --connect 127.0.0.1:8443 --server-name js.example.test \\
        --client-name ns1.netid-000013.example.test --cert ns1.pem --key ns1.key \\
        --server 127.0.0.1:53 --trust-anchor anchor.txt --request joinreq.json

The join server prints ``listening HOST PORT`` once it serves and ``stopped COUNTERS`` when
SIGTERM or SIGINT stops it (exit 0); SIGHUP reloads its certificate, key and trust anchors.
``lorawan-join-request`` prints the JoinAns (exit 0), or ``refused: REASON: detail`` (exit 1).
``--dns HOST:PORT`` is the same as ``--server`` (the name these commands had as
``python -m dance.lorawan``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import string
from typing import Any

from dance.cli.common import (
    EXIT_NEGATIVE,
    EXIT_OK,
    UsageError,
    _read,
    add_dns_options,
    add_front_options,
    client_name_arg,
    clientid_codepoint,
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


def _add_dns(p: argparse.ArgumentParser) -> None:
    add_dns_options(p)
    p.add_argument(
        "--dns", metavar="HOST[:PORT]", help="the same as --server (give one of the two)"
    )


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "lorawan-join-server",
        allow_abbrev=False,  # "--device" must not pass for --device-keys (an AppKey as a path)
        help="LoRaWAN join server answering TS002 JoinReq from network servers authenticated "
        "by DNS only",
        description=(
            "Serve TS002 JoinReq/JoinAns over HTTPS (TLS 1.3). Network servers are "
            "authenticated by dane_clientid and the DNSSEC-validated TLSA records of their "
            "ClientName; the allow-list is exactly the --network-server names, each bound to "
            "its NetID (a JoinReq under another NetID gets UnknownSender). No CA anywhere."
        ),
    )
    p.add_argument("--listen", default="127.0.0.1:8443", metavar="HOST:PORT",
                   help="default 127.0.0.1:8443")  # fmt: skip
    p.add_argument("--join-eui", required=True, metavar="HEX16", help="this join server's JoinEUI")
    p.add_argument(
        "--device-keys",
        metavar="FILE",
        help="the devices: one DEVEUI=APPKEY a line (DevEUI 16 hex digits, AppKey 32), '#' "
        "comments; AppKeys are secrets: the file must not be readable by group or others",
    )
    p.add_argument(
        "--network-server",
        action="append",
        default=[],
        metavar="CLIENTNAME=NETID",
        help="a network server served: its exact ClientName and NetID (6 hex digits); "
        "repeatable; these names are the allow-list",
    )
    add_front_options(p, idle_timeout=30.0, allow=False)
    p.add_argument("--verbose", "-v", action="store_true")
    _add_dns(p)
    p.set_defaults(func=cmd_join_server)

    q = subparsers.add_parser(
        "lorawan-join-request",
        help="send one TS002 JoinReq to a LoRaWAN join server authenticated by DNS only",
        description=(
            "Look up the TLSA records at _PORT._tcp.SERVER_NAME (DNSSEC-validated, secure and "
            "usable or nothing is sent), connect with TLS 1.3 and this network server's "
            "ClientName (dane_clientid), check the join server's key against those records and "
            "POST the JoinReq read from --request. Prints the JoinAns (exit 0) or "
            "'refused: REASON: detail' (exit 1)."
        ),
    )
    q.add_argument("--connect", required=True, metavar="HOST:PORT", help="the join server")
    q.add_argument(
        "--server-name",
        required=True,
        metavar="NAME",
        help="the join server's name (TLSA owner _PORT._tcp.NAME, SNI, Host)",
    )
    q.add_argument("--client-name", required=True, metavar="NAME",
                   help="this network server's ClientName")  # fmt: skip
    q.add_argument("--cert", required=True, metavar="FILE", help="its certificate (PEM)")
    q.add_argument("--key", required=True, metavar="FILE", help="its private key (PEM)")
    q.add_argument("--request", required=True, metavar="FILE", help="the JoinReq (JSON)")
    q.add_argument(
        "--service-port",
        type=int,
        default=None,
        metavar="PORT",
        help="the port of the TLSA owner name (default: the port of --connect)",
    )
    q.add_argument("--clientid-codepoint", default="0xFFDC", metavar="N")
    q.add_argument("--verbose", "-v", action="store_true")
    _add_dns(q)
    q.set_defaults(func=cmd_join_request)


def _dns_alias(args: argparse.Namespace) -> None:
    """``--dns`` is ``--server``; both at once is ambiguous."""
    if args.dns is not None:
        if args.server is not None:
            raise UsageError("give --server or --dns, not both")
        args.server = args.dns


def _pairs(values: list[str], flag: str, what: str) -> list[tuple[str, str]]:
    out = []
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"bad {flag} {text!r} ({what})")
        out.append((key, value))
    return out


def _device_keys(path: str | None) -> list[tuple[str, bytes]]:
    """The ``--device-keys`` file: ``DEVEUI=APPKEY`` lines. Secrets come from a file kept from
    other users (never from the command line, where ``ps`` shows them to everyone); a key is
    never echoed in an error."""
    if path is None:
        return []
    try:
        mode = os.stat(path).st_mode
        text = _read(path).decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise UsageError(
            f"{path} holds AppKeys and is open to group or others (mode {mode & 0o777:o}): "
            f"chmod 600 {path}"
        )
    out: list[tuple[str, bytes]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        dev, sep, key = line.partition("=")
        if not sep or not dev or not key:
            raise UsageError(f"{path}:{number}: bad device line (DEVEUI=APPKEY expected)")
        if len(key) != 32 or not all(c in string.hexdigits for c in key):
            raise UsageError(f"{path}:{number}: device {dev}: the AppKey must be 32 hex digits")
        out.append((dev, bytes.fromhex(key)))
    return out


def _join_server_app(args: argparse.Namespace) -> Any:
    from dance.lorawan import JoinServer

    devices = _device_keys(args.device_keys)
    servers = _pairs(args.network_server, "--network-server", "CLIENTNAME=NETID")
    if not servers:
        raise UsageError("no network servers: give --network-server CLIENTNAME=NETID")
    try:
        js = JoinServer(
            join_eui=args.join_eui,
            devices=dict(devices),
            network_servers=dict(servers),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if len(js.devices) != len(devices):
        raise UsageError(f"the same DevEUI is given twice in {args.device_keys}")
    if len(js.network_servers) != len(servers):
        raise UsageError("the same network server is given twice in --network-server")
    return js


def cmd_join_server(args: argparse.Namespace) -> int:
    from dance.auth import Authenticator
    from dance.dns import TLSAResolver
    from dance.tls import serve

    listen = parse_hostport(args.listen, "--listen")
    codepoint = clientid_codepoint(args.clientid_codepoint)
    limits = front_limits(args)
    _dns_alias(args)
    js = _join_server_app(args)
    if args.verbose:
        log_to_stderr(logging.INFO)
    resolver = make_resolver(args)  # unusable DNS options: one line, exit 2, before anything
    raise_descriptor_limit(args.max_connections + 64)
    current: dict[str, Any] = {"auth": Authenticator(resolver, allow=js.allow_list())}

    def sources() -> dict[str, Any]:
        auth = current["auth"]
        out: dict[str, Any] = {"auth": auth.stats(), "dns": auth.source.stats()}
        if "tls" in current:
            out["tls:reason"] = current["tls"].snapshot()
        out["lorawan:event"] = dict(js.counters)
        return out

    observer, endpoint = observe_service(args, "lorawan-join-server", sources, dns=resolver)

    async def run(resolver: TLSAResolver) -> None:
        with start_errors():
            server = await serve(
                js.handle,
                listen[0],
                listen[1],
                cert=args.cert,
                key=args.key,
                authenticator=current["auth"],
                codepoint=codepoint,
                observer=observer,
                **limits,
            )
        current["tls"] = server.stats

        def reload(new_resolver: TLSAResolver) -> None:
            """SIGHUP: certificate, key and trust anchors, or nothing at all."""
            new_auth = Authenticator(new_resolver, allow=js.allow_list())
            server.reload(cert=args.cert, key=args.key, authenticator=new_auth)
            current["auth"] = new_auth

        def announce() -> None:
            if args.json:
                print(json.dumps({"listening": f"{server.host}:{server.port}"}), flush=True)
            else:
                print(f"listening {server.host} {server.port}", flush=True)

        cut = [0]

        async def shutdown() -> int:
            cut[0] = await server.shutdown(args.drain_timeout)
            return cut[0]

        try:
            await run_service(
                "lorawan-join-server",
                args,
                resolver,
                reload=reload,
                shutdown=shutdown,
                announce=announce,
                report_stop=False,
            )
        finally:
            log.info("tls stats: %s", server.stats.snapshot())
            log.info("lorawan counters: %s", js.counters)
        log.info("stopped: %d connection(s) cut at the deadline", cut[0])
        if args.json:
            print(json.dumps({"stopped": dict(sorted(js.counters.items()))}), flush=True)
        else:
            print(f"stopped {sorted(js.counters.items())}", flush=True)

    return run_until_stopped(run(resolver), endpoint)


def cmd_join_request(args: argparse.Namespace) -> int:
    from dance.lorawan import JoinError, MessageError, encode, join_request, parse
    from dance.tls import BridgeError, client_context

    host, port = parse_hostport(args.connect, "--connect")
    if args.service_port is not None and not 0 < args.service_port < 65536:
        raise UsageError(f"bad --service-port {args.service_port} (1 to 65535)")
    client_name = client_name_arg(args.client_name)
    codepoint = clientid_codepoint(args.clientid_codepoint)
    _dns_alias(args)
    data = _read(args.request)
    try:  # the certificate and key, before any DNS query
        client_context(
            name=client_name, cert=args.cert, key=args.key, codepoint=codepoint,
            verify_server=False,
        )  # fmt: skip
    except BridgeError as exc:
        raise UsageError(f"cannot use this Python's OpenSSL: {exc}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot use --cert {args.cert} / --key {args.key}: {exc}") from None
    if args.verbose:
        log_to_stderr(logging.INFO)
    resolver = make_resolver(args)

    def refused(reason: str, detail: str) -> int:
        if args.json:
            print(json.dumps({"refused": reason, "detail": detail}), flush=True)
        else:
            print(f"refused: {reason}: {detail}", flush=True)
        return EXIT_NEGATIVE

    try:
        message = parse(data)
    except MessageError as exc:
        return refused("bad-request-message", str(exc))

    async def run() -> Any:
        async with resolver:
            return await join_request(
                message, host=host, port=port, server_name=args.server_name,
                client_name=client_name, cert=args.cert, key=args.key, resolver=resolver,
                service_port=args.service_port, codepoint=codepoint,
            )  # fmt: skip

    try:
        result = asyncio.run(run())
    except JoinError as exc:
        return refused(exc.reason, exc.detail)
    print(encode(result.answer).decode(), flush=True)
    return EXIT_OK
