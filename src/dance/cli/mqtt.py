"""``dance mqtt-proxy``: a DANCE front for an MQTT broker (Mosquitto) on loopback."""

from __future__ import annotations

import argparse
import json
import logging
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
    serve_workers,
    start_errors,
)

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "mqtt-proxy",
        help="MQTT front requiring DANCE client authentication, in front of a broker",
        description=(
            "Terminate TLS 1.3, authenticate devices with dane_clientid and DNSSEC-validated "
            "TLSA records, check their CONNECT strictly, set its username to the authenticated "
            "ClientName (a client-supplied username and password are dropped) and relay to the "
            "broker on loopback, whose ACL patterns on %%u confine each device. Refused clients "
            "and malformed first packets never cause a broker connection."
        ),
    )
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--broker", required=True, metavar="HOST:PORT", help="the broker (loopback)")
    lim = add_front_options(p, idle_help="0: none (MQTT keep-alive traffic counts as activity)")
    lim.add_argument(
        "--max-packet",
        type=int,
        default=256 * 1024,
        metavar="BYTES",
        help="largest Remaining Length accepted from a device (default 262144)",
    )
    lim.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                     help="time for the device's CONNECT to arrive")  # fmt: skip
    lim.add_argument("--broker-timeout", type=float, default=5.0, metavar="S")
    p.add_argument("--verbose", "-v", action="store_true")
    add_dns_options(p)
    p.set_defaults(func=cmd_mqtt_proxy)


def cmd_mqtt_proxy(args: argparse.Namespace) -> int:
    from dance.auth import AllowList, Authenticator
    from dance.dns import TLSAResolver
    from dance.mqtt import MQTTProxyConfig, start_mqtt_proxy

    listen = parse_hostport(args.listen, "--listen")
    broker = parse_hostport(args.broker, "--broker")
    codepoint = clientid_codepoint(args.clientid_codepoint)
    limits = front_limits(args)
    try:
        allow = AllowList.parse(allow_entries(args))
        config = MQTTProxyConfig(
            broker,
            max_remaining=args.max_packet,
            connect_timeout=args.connect_timeout,
            broker_timeout=args.broker_timeout,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.verbose:
        log_to_stderr(logging.INFO)
    make_resolver(args)  # unusable DNS options: one line, exit 2, before anything starts
    raise_descriptor_limit(2 * args.max_connections + 64)

    def serve_one(index: int = 0) -> int:
        resolver = make_resolver(args)
        current: dict[str, Any] = {"auth": Authenticator(resolver, allow=allow)}

        def sources() -> dict[str, Any]:
            auth = current["auth"]
            out: dict[str, Any] = {"auth": auth.stats(), "dns": auth.source.stats()}
            if "tls" in current:
                out["tls:reason"] = current["tls"].snapshot()
            if "mqtt" in current:
                snap = current["mqtt"].stats.snapshot()
                out["mqtt:reason"] = snap.pop("refused")
                out["mqtt"] = snap
            return out

        observer, endpoint = observe_service(args, "mqtt-proxy", sources, index=index, dns=resolver)
        return run_until_stopped(run(resolver, current, observer, index), endpoint)

    async def run(
        resolver: TLSAResolver, current: dict[str, Any], observer: Any, index: int
    ) -> None:
        with start_errors():
            server, proxy = await start_mqtt_proxy(
                listen[0],
                listen[1],
                config=config,
                cert=args.cert,
                key=args.key,
                authenticator=current["auth"],
                codepoint=codepoint,
                **limits,
                observer=observer,
                reuse_port=args.workers > 1,
            )
        current["tls"], current["mqtt"] = server.stats, proxy

        def reload(new_resolver: TLSAResolver) -> None:
            """SIGHUP: certificate, key, allow-list and trust anchors, or nothing at all."""
            new_auth = front_authenticator(args, new_resolver)
            server.reload(cert=args.cert, key=args.key, authenticator=new_auth)
            current["auth"] = new_auth

        def announce() -> None:
            where = f"{server.host}:{server.port}"
            if index == 0 and args.json:  # one announcement, not one per worker
                print(
                    json.dumps({"listening": where, "broker": f"{broker[0]}:{broker[1]}"}),
                    flush=True,
                )
            elif index == 0:
                print(
                    f"dance mqtt-proxy: listening on {where}, broker {broker[0]}:{broker[1]}",
                    flush=True,
                )

        async def shutdown() -> int:
            log.info(
                "stopping: %d connection(s) get up to %g s to finish",
                server.connections,
                args.drain_timeout,
            )
            return await server.shutdown(args.drain_timeout)

        try:
            await run_service(
                "mqtt-proxy", args, resolver, reload=reload, shutdown=shutdown, announce=announce
            )
        finally:
            log.info("tls stats: %s", server.stats.snapshot())
            log.info("mqtt stats: %s", proxy.stats.snapshot())

    return serve_workers(args, serve_one)
