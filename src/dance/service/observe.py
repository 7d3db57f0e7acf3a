"""What a running server reports: one access-log line per decision, and Prometheus metrics.

Every adapter's server holds one `Observer` and calls it at the same moments: a connection opened
or closed, a connection refused by a limit, a decision made (accepted or rejected), a backend error.
The observer writes the access log (logger ``dance.access``; text by default, JSON with
``log_format="json"``) and, when metrics are enabled, updates the Prometheus collectors. The
Authenticator's and resolver's own counters (cache hits, misses, entries, pending lookups) are read
at scrape time, so the hot path pays nothing for them.

Prometheus support needs the ``metrics`` extra (``prometheus-client``); without it, asking for
metrics is a configuration error, and everything else works.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from dance.identity import Identity, Rejection

__all__ = ["MetricsUnavailable", "Observer"]

access_log = logging.getLogger("dance.access")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class MetricsUnavailable(RuntimeError):
    """prometheus-client is not installed (``pip install 'dance-dane[metrics]'``)."""


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def _utc_now(now: float | None = None) -> str:
    """UTC time in ISO 8601 with milliseconds and ``Z`` (the date and time formatted once a
    second: this runs for every access-log line)."""
    if now is None:
        now = time.time()
    second = int(now)
    if second != _second[0]:
        text = datetime.datetime.fromtimestamp(second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[:] = [second, text]
    return "%s.%03dZ" % (_second[1], min(999, int((now - second) * 1000)))  # noqa: UP031


class _Metrics:
    """The Prometheus collectors of one service, in their own registry."""

    def __init__(self, service: str, sources: Callable[[], Mapping[str, Mapping[str, float]]]):
        try:
            import prometheus_client as prom
            from prometheus_client.core import GaugeMetricFamily
        except ImportError:
            raise MetricsUnavailable(
                "metrics need prometheus-client: pip install 'dance-dane[metrics]'"
            ) from None
        self.prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        labels = {"service": service}
        self.decisions = prom.Counter(
            "dance_decisions", "Authentication decisions", ["outcome", "reason"], registry=r
        )
        self.dns_lookups = prom.Counter(
            "dance_dns_lookups", "DNS outcomes of decisions that needed a lookup", ["outcome"],
            registry=r,
        )  # fmt: skip
        self.decision_seconds = prom.Histogram(
            "dance_decision_seconds", "Time from request to decision", buckets=_LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.handshake_seconds = prom.Histogram(
            "dance_handshake_seconds", "TLS handshake time", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.open_connections = prom.Gauge(
            "dance_open_connections", "Client connections open now", registry=r
        )
        self.refusals = prom.Counter(
            "dance_connections_refused", "Connections refused by a limit", ["reason"], registry=r
        )
        self.backend_errors = prom.Counter(
            "dance_backend_errors", "Errors reaching or talking to the backend", ["kind"],
            registry=r,
        )  # fmt: skip
        self.info = prom.Info("dance_service", "The dance service", registry=r)
        from dance import __version__

        self.info.info({**labels, "version": __version__})

        class _Sources:
            """Counters read at scrape time. A prefix ``name`` gives one gauge per key,
            ``dance_name_key``; a prefix ``name:label`` gives one gauge ``dance_name`` with the
            keys as values of ``label`` (zone serials by zone, responses by rcode, ...)."""

            def collect(self) -> Iterator[Any]:
                for prefix, stats in sources().items():
                    metric, _, label = prefix.partition(":")
                    if label:
                        family = GaugeMetricFamily(f"dance_{metric}", metric, labels=[label])
                        for key, value in stats.items():
                            family.add_metric([str(key)], float(value))
                        yield family
                        continue
                    for key, value in stats.items():
                        name = f"dance_{metric}_{key}".replace("-", "_")
                        one = GaugeMetricFamily(name, f"{metric} counter {key}")
                        one.add_metric([], float(value))
                        yield one

        r.register(_Sources())

    def exposition(self) -> bytes:
        return bytes(self.prom.generate_latest(self.registry))


class Observer:
    """Access log and metrics of one service (``proxy``, ``agent``, ``smtp-proxy``, ...)."""

    def __init__(
        self,
        service: str,
        *,
        log_format: str = "text",
        metrics: bool = False,
        sources: Callable[[], Mapping[str, Mapping[str, float]]] | None = None,
    ) -> None:
        if log_format not in ("text", "json"):
            raise ValueError("log format is text or json")
        self.service = service
        self.log_format = log_format
        self._sources = sources or (lambda: {})
        self.metrics = _Metrics(service, self._sources) if metrics else None
        self.counts: dict[str, int] = {"accepted": 0, "rejected": 0, "refused": 0}

    # -- events ----------------------------------------------------------------------------------

    def decision(
        self,
        peer: str,
        result: Identity | Rejection,
        started: float,
        *,
        client_name: str | None = None,
        handshake_seconds: float | None = None,
    ) -> None:
        """One decision: log a line and count it. ``started`` is a ``time.monotonic()`` value."""
        if isinstance(result, Identity):
            self.record(peer, result.client_name, "accepted", "-", "secure", started,
                        handshake_seconds=handshake_seconds)  # fmt: skip
        else:
            name = result.client_name or client_name or "-"
            self.record(peer, name, "rejected", result.reason.value, result.dns_outcome or "-",
                        started, handshake_seconds=handshake_seconds)  # fmt: skip

    def record(
        self,
        peer: str,
        client_name: str,
        outcome: str,
        reason: str,
        dns: str,
        started: float,
        *,
        handshake_seconds: float | None = None,
    ) -> None:
        """One decision in its parts (for adapters whose verdicts are not a `Result`)."""
        latency = time.monotonic() - started
        name = client_name or "-"
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if self.metrics is not None:
            self.metrics.decisions.labels(outcome, reason).inc()
            if dns != "-":
                self.metrics.dns_lookups.labels(dns).inc()
            self.metrics.decision_seconds.observe(latency)
            if handshake_seconds is not None:
                self.metrics.handshake_seconds.observe(handshake_seconds)
        if not access_log.isEnabledFor(logging.INFO):
            return
        if self.log_format == "json":
            line = json.dumps(
                {
                    "time": _utc_now(),
                    "service": self.service,
                    "client": peer,
                    "client_name": name,
                    "outcome": outcome,
                    "reason": reason,
                    "dns": dns,
                    "latency_ms": round(latency * 1000, 3),
                },
                sort_keys=True,
            )
        else:
            line = "%s %s %s %s %s reason=%s dns=%s latency=%.1fms" % (  # noqa: UP031
                _utc_now(),
                self.service,
                peer,
                name,
                outcome,
                reason,
                dns,
                latency * 1000,
            )
        handlers = access_log.handlers
        if (
            len(handlers) == 1
            and getattr(handlers[0], "_dance_access", False)
            and not access_log.propagate
            and not access_log.filters
            and not handlers[0].filters
            and handlers[0].level <= logging.INFO
            and getattr(handlers[0].formatter, "_fmt", None) == "%(message)s"
        ):
            # Only dance's own access handler would see the record (`setup_access_log`: a
            # stream, "%(message)s"): the line is written as its emit() would, without the
            # record (making and routing one costs about 3x the rest of this method).
            handler = handlers[0]
            assert isinstance(handler, logging.StreamHandler)
            handler.acquire()
            try:
                handler.stream.write(line + handler.terminator)
                handler.stream.flush()
            except (OSError, ValueError):
                pass  # as logging does by default: a failing log stream never stops the server
            finally:
                handler.release()
            return
        # Else the record made and handled: what Logger.info does, less the search for the
        # caller's frame (this runs once per decision; the line says where it comes from).
        access_log.handle(
            access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, line, (), None)
        )

    def refused(self, reason: str) -> None:
        """A connection refused by a limit (too many, per-address cap, timeout, ...)."""
        self.counts["refused"] += 1
        if self.metrics is not None:
            self.metrics.refusals.labels(reason).inc()

    def opened(self) -> None:
        if self.metrics is not None:
            self.metrics.open_connections.inc()

    def closed(self) -> None:
        if self.metrics is not None:
            self.metrics.open_connections.dec()

    def backend_error(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.backend_errors.labels(kind).inc()
