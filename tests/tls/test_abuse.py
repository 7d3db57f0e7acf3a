"""Load and abuse against a `dance proxy` process (the short run of bench/soak_tls.py).

Legitimate DANCE clients keep >= 99% success while the proxy takes handshake floods (openssl
s_time -new with and without a certificate, DANCE clients that abort after the handshake, clients
that leave mid-handshake, raw connect/close and connect/RST) and resource holders (slowloris,
idle connections, clients that never read); the backend goes down, silent and resetting. After
each phase the proxy's descriptors return to their baseline and the next client is served; the
proxy exits 0 on SIGTERM and its log holds no traceback and no "Task was destroyed".
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak_tls.py"


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bench_soak_tls", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl (the command) is needed for s_time floods")
    soak = load_soak()
    settings = soak.Settings(
        phase_seconds=2.0,
        holders=40,
        backend_fault_seconds=1.0,
        baseline_wait=20.0,
        handshake_timeout=3.0,  # a loaded machine must not cut legitimate handshakes
        idle_timeout=1.5,
        backend_timeout=1.0,
        max_per_address=32,
        # off: the floods must reach the TLS layer, whose own limits are what this proves (the
        # per-address rate, on by default, is tested in test_lifecycle.py)
        handshake_rate=0.0,
        phases=soak.ABUSE_PHASES + soak.BACKEND_PHASES,
        fresh_names=200,
        settle_seconds=0.2,
    )
    result: dict[str, Any] = soak.run(settings, tmp_path_factory.mktemp("abuse"))
    return result


def phase(report: dict[str, Any], name: str) -> dict[str, Any]:
    found = [p for p in report["phases"] if p["phase"] == name]
    assert found, report
    result: dict[str, Any] = found[0]
    return result


@pytest.mark.parametrize("name", ["floods", "holders"])
def test_legitimate_clients_served_during_abuse(report: dict[str, Any], name: str) -> None:
    p = phase(report, name)
    assert p["legit"]["attempts"] >= 10, p
    assert p["legit"]["success"] >= 0.99, p
    # clients whose identity is not cached (a DNS lookup each) too
    assert p["uncached"]["attempts"] >= 1, p
    assert p["uncached"]["success"] >= 0.99, p


def test_floods_reached_the_proxy(report: dict[str, Any]) -> None:
    abuse = phase(report, "floods")["abuse"]
    assert abuse["s_time_with_cert"] > 0 and abuse["s_time_no_cert"] > 0, abuse
    assert abuse["abort_after_handshake"] > 0, abuse
    assert abuse["leave_mid_handshake"] > 0 and abuse["connect_close_or_rst"] > 0, abuse


def test_holders_cut_by_the_proxy(report: dict[str, Any]) -> None:
    """Slowloris, idle and never-reading clients are closed by the proxy's own timeouts (the
    abuser holds them longer than those timeouts); beyond the per-address cap, refused."""
    abuse = phase(report, "holders")["abuse"]
    for kind in ("slowloris", "idle", "never_read"):
        held = abuse[kind]
        assert held["opened"] > 0, abuse
        assert held["closed_by_server"] == held["opened"], abuse
    assert abuse["idle"]["refused_at_once"] == 40 - 32, abuse  # --max-per-address 32
    counters = report["proxy_counters"]["proxy stats"]
    assert counters["limit_handshake-timeout"] >= 1
    assert counters["limit_idle-timeout"] >= abuse["idle"]["opened"]
    assert counters["limit_per-address"] >= 1


@pytest.mark.parametrize(
    "name",
    ["floods", "holders", "backend down", "backend silent", "backend resetting", "backend restart"],
)
def test_service_resumes_and_descriptors_return(report: dict[str, Any], name: str) -> None:
    p = phase(report, name)
    assert p["fds_back_to_baseline"], p
    assert p["served_after"], p
    if name.startswith("backend"):  # a client arriving after the fault is served, cached or not
        assert p["abuse"]["recovery_s"] is not None, p
        assert p["abuse"]["recovery_uncached_s"] is not None, p


def test_backend_restart_closes_clients_at_once(report: dict[str, Any]) -> None:
    """While the backend is restarting, clients are closed without data (refused), not held."""
    during = phase(report, "backend restart")["abuse"]["legit_during_fault"]
    assert during["attempts"] >= 1 and during["ok"] == 0, during
    assert set(during["outcomes"]) == {"refused"}, during


def test_backend_faults_fail_fast_and_counted(report: dict[str, Any]) -> None:
    relay = report["proxy_counters"]["relay stats"]
    assert relay["backend_refused"] >= 1  # down
    down = phase(report, "backend down")["abuse"]["legit_during_fault"]
    assert down["attempts"] >= 1 and down["ok"] == 0  # closed at once, not hung
    assert report["backend_bad_headers"] == 0
    identities = report["backend_identities"]
    assert "sensor7._device.example.test" in identities
    # the others: the names presented once by the uncached clients, each its own identity
    others = set(identities) - {"sensor7._device.example.test"}
    assert others and all(n.endswith("._fresh._device.example.test") for n in others), identities


def test_clean_exit_and_log(report: dict[str, Any]) -> None:
    assert report["exit_status"] == 0
    assert report["stopped_line"], report
    assert report["bad_log_lines"] == []
    assert report["final"]["fds"] <= report["baseline"]["fds"]
