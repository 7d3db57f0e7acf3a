"""Shared pieces of the command line: errors, argument types, loading files, DNS options.

Exit codes: 0 success, 1 a negative verdict (rejected, bogus), 2 unusable input or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

from dance.credentials import (
    CertificateChain,
    CredentialError,
    Presented,
    RawPublicKey,
    load_certificates,
    load_public_key,
)
from dance.identity import Identity, Result
from dance.names import InvalidName, parse_client_name
from dance.tlsa import MalformedRecord
from dance.tlsa.record import parse_field

if TYPE_CHECKING:
    from dance.auth import Authenticator
    from dance.dns import TLSAResolver
    from dance.service.endpoint import MetricsEndpoint
    from dance.service.linedaemon import LineDaemon
    from dance.service.observe import Observer

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


def require_limits(
    at_least_one: Sequence[tuple[str, int]] = (), positive: Sequence[tuple[str, float]] = ()
) -> None:
    """Refuse limit options out of range: ``(flag, value)`` pairs, one line each (exit 2)."""
    for label, count in at_least_one:
        if count < 1:
            raise UsageError(f"{label} must be at least 1")
    for label, seconds in positive:
        if not seconds > 0:
            raise UsageError(f"{label} must be positive")


def observe_service(
    args: argparse.Namespace,
    service: str,
    sources: Callable[[], Mapping[str, Mapping[str, float]]],
    *,
    index: int = 0,
    dns: TLSAResolver | None = None,
) -> tuple[Observer, MetricsEndpoint | None]:
    """The access log and metrics of a service command (`dance.service.options.observe`).

    Worker ``index`` of ``--workers`` serves its own metrics at PORT+index; with ``dns``,
    ``/readyz`` probes that resolver's server. Unusable options are a UsageError (exit 2)."""
    from dance.service.endpoint import dns_readiness
    from dance.service.options import ServiceOptionError, observe

    if getattr(args, "metrics", None) is not None and index:
        args.metrics = (args.metrics[0], args.metrics[1] + index)
    readiness = dns_readiness(dns.server, ".") if dns is not None else None
    try:
        return observe(args, service, sources, readiness)
    except ServiceOptionError as exc:
        raise UsageError(str(exc)) from None


log = logging.getLogger(__name__)

#: what a refused reload may raise (the old configuration then stays)
RELOAD_ERRORS: tuple[type[BaseException], ...] = (UsageError, ValueError, OSError)


async def run_service(
    command: str,
    args: argparse.Namespace,
    resolver: TLSAResolver,
    *,
    reload: Callable[[TLSAResolver], None] | None,
    shutdown: Callable[[], Awaitable[int]],
    announce: Callable[[], None] = lambda: None,
    cut_unit: str = "connection",
    report_stop: bool = True,
) -> None:
    """The life of a service command once it listens, the same for every one: SIGTERM and SIGINT
    stop it (``shutdown`` drains and returns how many connections were cut at the deadline),
    SIGHUP reloads all or nothing. ``reload(new_resolver)`` gets a resolver made from the
    options again (new trust anchors) and applies the rest (certificate, key, allow-list) or
    raises one of RELOAD_ERRORS (or ssl.SSLError), in which case nothing changes. A resolver
    replaced by a reload is closed once the lookups still using it are over; every resolver is
    closed at the end. ``announce`` prints the listening line once the signals are handled
    (whoever waits for that line may signal at once)."""
    import ssl

    errors: tuple[type[BaseException], ...] = (*RELOAD_ERRORS, ssl.SSLError)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    resolvers = [resolver]
    closing: set[asyncio.Task[None]] = set()
    grace = float(getattr(args, "lookup_timeout", getattr(args, "deadline", 5.0))) + 1.0

    def close_later(old: TLSAResolver, delay: float) -> None:
        async def close() -> None:
            await asyncio.sleep(delay)
            with contextlib.suppress(Exception):
                await old.aclose()

        task = loop.create_task(close())
        closing.add(task)
        task.add_done_callback(closing.discard)

    def refused(exc: BaseException) -> None:
        log.error("reload refused (the previous configuration stays): %s", exc)
        print(f"dance {command}: reload refused, configuration unchanged: {exc}", flush=True)

    def on_hup() -> None:
        assert reload is not None
        try:
            new = make_resolver(args)
        except errors as exc:
            refused(exc)
            return
        try:
            reload(new)
        except errors as exc:
            close_later(new, 0.0)
            refused(exc)
            return
        close_later(resolvers.pop(), grace)  # lookups still using it end first
        resolvers.append(new)
        log.info("configuration reloaded")
        print(f"dance {command}: configuration reloaded", flush=True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        announce()
        await stop.wait()
        cut = await shutdown()
        if report_stop:  # (one line for all the workers of --workers)
            print(f"dance {command}: stopped ({cut} {cut_unit}(s) cut at the deadline)", flush=True)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        for sig in (signal.SIGTERM, signal.SIGHUP):  # the process is ending: a repeated signal
            signal.signal(sig, signal.SIG_IGN)  # must not turn exit 0 into death by signal
        for task in closing:
            task.cancel()
        for res in resolvers:
            with contextlib.suppress(Exception):
                await res.aclose()


def octal_mode(text: str) -> int:
    """An argparse type: a file mode in octal (``0660``), 0 to 0777."""
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal file mode: {text!r}") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"not a file mode: {text!r}")
    return mode


def add_socket_options(p: argparse.ArgumentParser, mode: int, why: str) -> None:
    """``--socket PATH`` and ``--socket-mode MODE`` of a line daemon command, ``why`` its
    default ``mode``."""
    p.add_argument("--socket", required=True, metavar="PATH", help="Unix socket to listen on")
    p.add_argument(
        "--socket-mode",
        type=octal_mode,
        default=mode,
        metavar="MODE",
        help=f"socket file mode (default {mode:04o}: {why})",
    )


_D = TypeVar("_D", bound="LineDaemon")


def run_line_daemon(
    args: argparse.Namespace,
    service: str,
    make_daemon: Callable[[Observer], _D],
    metrics: Callable[[_D], dict[str, dict[str, float]]],
    stopped: Callable[[_D], None],
    ready: str | None = None,
) -> int:
    """Run a line daemon (`dance.service.linedaemon`: ``ssh-keys-daemon``,
    ``eap-verify-daemon``) on ``args.socket`` until SIGTERM or SIGINT; SIGHUP flushes its caches.

    ``metrics(daemon)`` gives the command's counters for `observe_service` (the resolver's are
    added as ``dns``); ``ready`` is printed once the signals are handled; ``stopped(daemon)``
    logs the counters once the daemon is closed. A socket it cannot listen on is a UsageError."""

    async def run() -> None:
        holder: list[_D] = []

        def sources() -> dict[str, dict[str, float]]:
            if not holder:
                return {}
            out = metrics(holder[0])
            if holder[0].resolver is not None:
                out["dns"] = dict(holder[0].resolver.stats())
            return out

        observer, endpoint = observe_service(args, service, sources)
        daemon = make_daemon(observer)
        holder.append(daemon)
        try:
            await daemon.start()
        except OSError as exc:
            raise UsageError(f"cannot listen on {args.socket}: {exc.strerror or exc}") from None
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, daemon.flush)  # revocations apply at once
        if ready is not None:
            print(ready, flush=True)
        try:
            await stop.wait()
        finally:
            if endpoint is not None:
                endpoint.close()
            await daemon.close()
            stopped(daemon)

    asyncio.run(run())
    return EXIT_OK


def add_front_options(
    p: argparse.ArgumentParser,
    *,
    idle_timeout: float = 300.0,
    idle_help: str = "0: none",
    allow: bool = True,
) -> argparse._ArgumentGroup:
    """The options of every DANCE TLS front (proxy, mqtt-proxy, ldap-proxy, radsec-proxy,
    lorawan-join-server): certificate, key, allow-list (``allow=False``: the command derives
    its allow-list from its own configuration), extension codepoint, and the limits of
    `dance.tls.DanceServer`. Returns the limits group, for the command's own limits."""
    p.add_argument("--cert", required=True, metavar="FILE", help="server certificate chain (PEM)")
    p.add_argument("--key", required=True, metavar="FILE", help="server private key (PEM)")
    if allow:
        p.add_argument(
            "--allow",
            action="append",
            metavar="NAME_OR_SUFFIX",
            help="allowed client name, or .suffix for every name below it (repeatable)",
        )
        p.add_argument(
            "--allow-file",
            metavar="FILE",
            help="more allowed names or .suffixes, one per line (# comments); re-read on SIGHUP",
        )
    p.add_argument("--clientid-codepoint", default="0xFFDC", metavar="N")
    lim = p.add_argument_group("limits (each refusal is counted by reason)")
    lim.add_argument("--max-pending", type=int, default=64, help="connections awaiting DNS, max")
    lim.add_argument("--max-lookups", type=int, default=32, help="DNS lookups at once, max")
    lim.add_argument("--lookup-timeout", type=float, default=10.0, metavar="S")
    lim.add_argument("--max-connections", type=int, default=512, help="connections at once")
    lim.add_argument("--max-per-address", type=int, default=64, help="connections per client IP")
    lim.add_argument(
        "--handshake-rate",
        type=float,
        default=100.0,
        metavar="N",
        help="new connections per client IP and second, bursts of 2N (0: no limit; default 100)",
    )
    lim.add_argument("--handshake-timeout", type=float, default=10.0, metavar="S")
    lim.add_argument("--idle-timeout", type=float, default=idle_timeout, metavar="S",
                     help=idle_help)  # fmt: skip
    lim.add_argument(
        "--drain-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="on SIGTERM, time given to established connections before they are closed",
    )
    return lim


def front_limits(
    args: argparse.Namespace, positive: Sequence[tuple[str, float]] = ()
) -> dict[str, Any]:
    """Check the options of :func:`add_front_options` (and the command's own ``positive``
    ``(flag, value)`` pairs): one line and exit 2 when out of range. Returns the limits as
    keyword arguments of `dance.tls.serve` / `DanceServer`."""
    require_limits(
        [
            ("--max-pending", args.max_pending),
            ("--max-lookups", args.max_lookups),
            ("--max-connections", args.max_connections),
            ("--max-per-address", args.max_per_address),
        ],
        [
            ("--lookup-timeout", args.lookup_timeout),
            ("--handshake-timeout", args.handshake_timeout),
            *positive,
        ],
    )
    if not args.handshake_rate >= 0:
        raise UsageError("--handshake-rate must be 0 or more")
    if not args.idle_timeout >= 0 or not args.drain_timeout >= 0:
        raise UsageError("--idle-timeout and --drain-timeout must be 0 or more")
    return {
        "max_pending": args.max_pending,
        "max_lookups": args.max_lookups,
        "lookup_timeout": args.lookup_timeout,
        "handshake_timeout": args.handshake_timeout,
        "max_connections": args.max_connections,
        "max_per_address": args.max_per_address,
        "idle_timeout": args.idle_timeout or None,
        "handshake_rate": args.handshake_rate,
    }


def allow_entries(args: argparse.Namespace) -> list[str]:
    """The allow-list of a TLS front: its ``--allow`` entries and the lines of ``--allow-file``
    (``#`` comments); none at all is a UsageError."""
    entries = list(args.allow or [])
    if args.allow_file:
        try:
            with open(args.allow_file, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--allow-file: {exc}") from None
        for line in text.splitlines():
            entry = line.split("#", 1)[0].strip()
            if entry:
                entries.append(entry)
    if not entries:
        raise UsageError("no allowed names: give --allow NAME_OR_SUFFIX or --allow-file FILE")
    return entries


def front_authenticator(args: argparse.Namespace, resolver: TLSAResolver) -> Authenticator:
    """A TLS front's Authenticator with its allow-list read again (what SIGHUP does); an
    unusable entry raises ValueError or UsageError (both refuse the reload)."""
    from dance.auth import AllowList, Authenticator

    return Authenticator(resolver, allow=AllowList.parse(allow_entries(args)))


def clientid_codepoint(text: str) -> int:
    """``--clientid-codepoint N`` (decimal or 0x hex) as a usable ``dane_clientid`` codepoint."""
    from dance.tls import check_codepoint

    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"bad --clientid-codepoint {text!r}") from None
    try:
        return check_codepoint(value)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def raise_descriptor_limit(needed: int) -> None:
    """Raise the soft limit of open descriptors to ``needed`` (at most the hard limit)."""
    import resource

    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:  # pragma: no cover - the server warns if still low
        log.debug("cannot raise the descriptor limit: %s", exc)


@contextlib.contextmanager
def start_errors() -> Iterator[None]:
    """Around the start of a TLS front: no usable OpenSSL in this Python, or a listener or
    certificate that cannot be used, is one line and exit 2 (a UsageError)."""
    import ssl

    from dance.tls import BridgeError

    try:
        yield
    except BridgeError as exc:
        raise UsageError(f"cannot use this Python's OpenSSL: {exc}") from None
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot start: {exc}") from None


def run_until_stopped(main: Coroutine[Any, Any, None], endpoint: MetricsEndpoint | None) -> int:
    """Run a service command's event loop (``main``, usually ending in :func:`run_service`) to
    its end, Ctrl-C included, then close its metrics endpoint; returns EXIT_OK."""
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main)
    finally:
        if endpoint is not None:
            endpoint.close()
    return EXIT_OK


def serve_workers(args: argparse.Namespace, serve_one: Callable[[int], int]) -> int:
    """``serve_one(index)`` in each of ``--workers`` processes (`dance.service.workers`), or
    ``serve_one(0)`` in this one."""
    if args.workers > 1:
        from dance.service.workers import run_workers

        return run_workers(args.workers, serve_one)
    return serve_one(0)
