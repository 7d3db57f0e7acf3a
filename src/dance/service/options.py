"""The options every service command shares, and turning them into an Observer and endpoint.

``--log-format text|json`` (the access log, on at info level), ``--metrics HOST:PORT``
(Prometheus ``/metrics``, ``/healthz``, ``/readyz``), and for the commands that can use more than
one core, ``--workers N``. `dance.cli` adds them to every service command; the command calls
`observe` once its Authenticator and resolver exist.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping

from dance.service.endpoint import MetricsEndpoint, Readiness
from dance.service.observe import MetricsUnavailable, Observer

__all__ = ["ServiceOptionError", "add_service_options", "observe", "setup_access_log"]

WORKER_COMMANDS = ("proxy", "smtp-proxy", "agent", "mqtt-proxy")


class ServiceOptionError(ValueError):
    """An unusable service option (one line for the command line)."""


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return host, int(port)


def _workers(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"1 to 256 workers: {text!r}")
    return value


def add_service_options(parser: argparse.ArgumentParser, *, workers: bool) -> None:
    group = parser.add_argument_group("running as a service")
    names = {s for a in parser._actions for s in a.option_strings}
    if "--log-format" not in names:
        group.add_argument(
            "--log-format",
            choices=("text", "json"),
            default="text",
            help="access log lines (one per decision, logger dance.access): text or json",
        )
    if "--metrics" not in names:
        group.add_argument(
            "--metrics",
            type=_hostport,
            metavar="HOST:PORT",
            help="serve Prometheus /metrics, /healthz and /readyz here (loopback)",
        )
    if workers and "--workers" not in names:
        group.add_argument(
            "--workers",
            type=_workers,
            default=1,
            metavar="N",
            help="processes sharing the port with SO_REUSEPORT (default 1)",
        )


def setup_access_log(log_format: str) -> None:
    """Access lines to stderr at info level, as they are (each line carries its own time)."""
    access = logging.getLogger("dance.access")
    if access.level == logging.NOTSET or access.level > logging.INFO:
        access.setLevel(logging.INFO)
    if not any(getattr(h, "_dance_access", False) for h in access.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._dance_access = True  # type: ignore[attr-defined]
        access.addHandler(handler)
    access.propagate = False


def observe(
    args: argparse.Namespace,
    service: str,
    sources: Callable[[], Mapping[str, Mapping[str, float]]],
    readiness: Readiness | None = None,
) -> tuple[Observer, MetricsEndpoint | None]:
    """The Observer of a service command, and its metrics endpoint when ``--metrics`` is given
    (started; the caller closes it). Raises ServiceOptionError for unusable options."""
    log_format = getattr(args, "log_format", "text") or "text"
    setup_access_log(log_format)
    metrics = getattr(args, "metrics", None)
    try:
        observer = Observer(service, log_format=log_format, metrics=metrics is not None,
                            sources=sources)  # fmt: skip
    except MetricsUnavailable as exc:
        raise ServiceOptionError(str(exc)) from None
    endpoint = None
    if metrics is not None:
        try:
            endpoint = MetricsEndpoint(
                metrics[0], metrics[1], observer, readiness or (lambda: (True, "ready"))
            )
        except (OSError, ValueError) as exc:
            raise ServiceOptionError(f"--metrics {metrics[0]}:{metrics[1]}: {exc}") from None
        endpoint.start()
    return observer, endpoint
