"""DNS faults and restarts under a `dance proxy` process (the short DNS run of bench/soak_tls.py).

Two streams of legitimate clients: one whose identity the proxy has cached, one presenting a
name used once (its TLSA record in a zone with a TTL of 1 s: a DNS lookup every time). The DNS
server becomes slow, silent, answers garbage (malformed messages, wrong IDs, bogus TLSA
signatures), and is stopped (port closed) then started again. Cached identities keep being
served; uncached ones are served or refused (closed without data, counted by reason), never left
hanging beyond the lookup deadline; after each fault a client arriving is served again; the
proxy's descriptors return to their baseline and its log stays clean.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.tls.test_abuse import load_soak, phase

DNS_PHASES = ["dns slow", "dns silent", "dns malformed", "dns wrong-id", "dns bogus", "dns restart"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    soak = load_soak()
    assert tuple(DNS_PHASES) == soak.DNS_PHASES
    settings = soak.Settings(
        phases=soak.DNS_PHASES,
        dns_fault_seconds=1.0,
        dns_slow_delay=1.5,
        dns_timeout=1.0,
        dns_deadline=2.0,
        recovery_window=15.0,  # generous: the machine is loaded; the soak asserts 1 s
        handshake_timeout=5.0,
        idle_timeout=5.0,
        fresh_names=300,
        settle_seconds=0.2,
    )
    result: dict[str, Any] = soak.run(settings, tmp_path_factory.mktemp("dns-faults"))
    return result


@pytest.mark.parametrize("name", DNS_PHASES)
def test_cached_identities_served_during_dns_fault(report: dict[str, Any], name: str) -> None:
    p = phase(report, name)
    during = p["legit_during_fault"]
    assert during["attempts"] >= 3, p
    assert during["success"] >= 0.99, p


@pytest.mark.parametrize("name", DNS_PHASES)
def test_uncached_identities_refused_not_hung(report: dict[str, Any], name: str) -> None:
    """Every uncached attempt during the fault ends: served, or refused (TLS up, then closed
    without data), never a client timeout (deadline 2 s, the client waits 5 s)."""
    during = phase(report, name)["uncached_during_fault"]
    assert during["attempts"] >= 1, during
    assert set(during["outcomes"]) <= {"ok", "refused"}, during


@pytest.mark.parametrize("name", ["dns silent", "dns malformed", "dns bogus", "dns restart"])
def test_uncached_identities_cannot_succeed_while_dns_fails(
    report: dict[str, Any], name: str
) -> None:
    during = phase(report, name)["uncached_during_fault"]
    assert during["outcomes"].get("refused", 0) >= 1, during


@pytest.mark.parametrize("name", DNS_PHASES)
def test_service_resumes_after_dns_fault(report: dict[str, Any], name: str) -> None:
    p = phase(report, name)
    assert p["abuse"]["recovery_s"] is not None, p
    assert p["abuse"]["recovery_uncached_s"] is not None, p
    assert p["fds_back_to_baseline"], p
    assert p["served_after"], p


def test_refusals_counted_by_reason(report: dict[str, Any]) -> None:
    counters = report["proxy_counters"]["proxy stats"]
    assert counters.get("rejected_dns-bogus", 0) >= 1, counters
    assert counters.get("rejected_dns-indeterminate", 0) >= 1, counters


def test_clean_exit_and_log(report: dict[str, Any]) -> None:
    assert report["exit_status"] == 0
    assert report["bad_log_lines"] == []
    assert report["final"]["fds"] <= report["baseline"]["fds"]
    assert report["backend_bad_headers"] == 0
