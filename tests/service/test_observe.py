"""Access log lines and Prometheus metrics of a service, and its /metrics, /healthz, /readyz."""

from __future__ import annotations

import json
import logging
import logging.handlers
import socket
import time
import urllib.error
import urllib.request

import pytest

from dance.identity import Identity, Reason, Rejection
from dance.service.endpoint import MetricsEndpoint, dns_readiness
from dance.service.observe import Observer

ACCEPTED = Identity(
    identity="a._device.example.com", client_name="a._device.example.com",
    usage=3, selector=1, mtype=1, depth=0,
)  # fmt: skip


def _identity() -> Identity:
    return ACCEPTED


def test_text_and_json_access_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dance.access")
    obs = Observer("proxy")
    obs.decision("127.0.0.1:5000", _identity(), time.monotonic() - 0.002)
    rejected = Rejection(Reason.DNS_BOGUS, "x", "b._device.example.com", dns_outcome="bogus")
    obs.decision("127.0.0.1:5001", rejected, time.monotonic())
    text = [r.getMessage() for r in caplog.records]
    assert " proxy 127.0.0.1:5000 a._device.example.com accepted reason=- dns=secure " in text[0]
    assert "b._device.example.com rejected reason=dns-bogus dns=bogus" in text[1]
    assert text[0].endswith("ms") and text[0][:4].isdigit()
    caplog.clear()
    obs = Observer("agent", log_format="json")
    obs.decision("[::1]:9", rejected, time.monotonic())
    doc = json.loads(caplog.records[0].getMessage())
    assert doc["service"] == "agent" and doc["client"] == "[::1]:9"
    assert (doc["outcome"], doc["reason"], doc["dns"]) == ("rejected", "dns-bogus", "bogus")
    assert doc["client_name"] == "b._device.example.com" and doc["latency_ms"] >= 0
    with pytest.raises(ValueError):
        Observer("x", log_format="xml")


def test_access_lines_written_directly_only_when_nothing_else_would_see_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With `setup_access_log`'s handler alone, a line goes straight to its stream, exactly as
    the handler would write it; with a filter or another handler, through a log record."""
    import io

    from dance.service.options import setup_access_log

    access = logging.getLogger("dance.access")
    monkeypatch.setattr(access, "handlers", [])
    monkeypatch.setattr(access, "filters", [])
    monkeypatch.setattr(access, "propagate", True)
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    setup_access_log("text")
    obs = Observer("agent")
    obs.decision("127.0.0.1", _identity(), time.monotonic())
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and " agent 127.0.0.1 a._device.example.com accepted " in lines[0]
    assert lines[0][:4].isdigit() and lines[0].endswith("ms")

    seen: list[str] = []

    class Keep(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            seen.append(record.getMessage())
            return "hidden" not in record.getMessage()

    access.addFilter(Keep())
    obs.decision("127.0.0.1", _identity(), time.monotonic())
    obs.record("127.0.0.1", "hidden._device.example.com", "accepted", "-", "secure", 0.0)
    lines = stream.getvalue().splitlines()
    assert len(seen) == 2 and len(lines) == 2  # both through the filter, one written
    assert "a._device.example.com" in seen[0] and "hidden" in seen[1]
    access.filters.clear()
    other = logging.handlers.BufferingHandler(10)
    access.addHandler(other)
    obs.decision("127.0.0.1", _identity(), time.monotonic())
    assert len(other.buffer) == 1 and len(stream.getvalue().splitlines()) == 3
    assert other.buffer[0].getMessage() == stream.getvalue().splitlines()[2]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_endpoint_serves_counters_health_and_readiness() -> None:
    ready = {"ok": True}
    obs = Observer(
        "proxy",
        metrics=True,
        sources=lambda: {"auth": {"decision_cache_hits": 5}, "dns": {"cache_entries": 2}},
    )
    endpoint = MetricsEndpoint(
        "127.0.0.1", 0, obs, lambda: (ready["ok"], "ready" if ready["ok"] else "dns down")
    )
    endpoint.start()
    try:
        base = "http://{}:{}".format(*endpoint.address)
        obs.opened()
        obs.decision("127.0.0.1:1", _identity(), time.monotonic(), handshake_seconds=0.004)
        obs.decision("127.0.0.1:1", Rejection(Reason.NO_MATCH, "x", "a.b"), time.monotonic())
        obs.refused("per-address-limit")
        obs.backend_error("connect")
        status, body = _get(base + "/metrics")
        assert status == 200
        assert 'dance_decisions_total{outcome="accepted",reason="-"} 1.0' in body
        assert 'dance_decisions_total{outcome="rejected",reason="no-match"} 1.0' in body
        assert 'dance_connections_refused_total{reason="per-address-limit"} 1.0' in body
        assert 'dance_backend_errors_total{kind="connect"} 1.0' in body
        assert "dance_open_connections 1.0" in body
        assert "dance_handshake_seconds_count 1.0" in body
        assert "dance_auth_decision_cache_hits 5.0" in body
        assert "dance_dns_cache_entries 2.0" in body
        assert _get(base + "/healthz") == (200, "alive\n")
        assert _get(base + "/readyz") == (200, "ready\n")
        ready["ok"] = False
        assert _get(base + "/readyz") == (503, "dns down\n")
        assert _get(base + "/nope")[0] == 404
    finally:
        endpoint.close()


def test_endpoint_refuses_public_bind_unless_asked() -> None:
    with pytest.raises(ValueError, match="loopback"):
        MetricsEndpoint("0.0.0.0", 0, Observer("x"))


def test_dns_readiness_probe() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        check = dns_readiness(silent.getsockname(), "example.com", timeout=0.2)
        ok, why = check()
        assert not ok and "does not answer" in why
