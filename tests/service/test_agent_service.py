"""`dance agent` run as a service: --workers, --metrics, --log-format json, against real Knot."""

from __future__ import annotations

import http.client
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dance.testkit.frontends import start_agent
from dance.testkit.servers import (
    KnotZone,
    Proc,
    dnskey_anchor,
    free_port_pair,
    start_knot,
)
from dance.tlsa import make_record
from tests.http.common import DEVICE, Identities, make_identities, nginx_header

pytestmark = pytest.mark.integration
SOA = "@ SOA ns1 hostmaster 1 3600 600 86400 5"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, str, Identities]]:
    ids = make_identities()
    zone = KnotZone(
        "example.test",
        f"{SOA}\n@ NS ns1\nns1 A 127.0.0.1\n"
        f"sensor7._device TLSA {make_record(ids.device).to_text()}",
    )
    knot = start_knot(tmp_path_factory.mktemp("knot"), [zone])
    try:
        yield knot, dnskey_anchor(knot.port, "example.test"), ids
    finally:
        knot.stop()


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    return response.status, body


def test_agent_with_workers_metrics_and_json_access_log(
    world: tuple[Proc, str, Identities], tmp_path: Path
) -> None:
    knot, anchor, ids = world
    metrics = free_port_pair()
    proc = start_agent(
        tmp_path, knot.port, anchor,
        ["--allow", "._device.example.test", "--workers", "2", "--log-format", "json",
         "--metrics", f"127.0.0.1:{metrics}"],
    )  # fmt: skip
    try:
        good = {"Client-Cert": nginx_header(ids.device)}
        bad = {"Client-Cert": nginx_header(ids.impostor)}
        statuses = [_get(proc.port, "/auth", good if i % 2 == 0 else bad)[0] for i in range(8)]
        assert statuses == [200, 403] * 4
        deadline = time.monotonic() + 60
        while True:  # both workers serve their metrics (worker i at PORT+i)
            try:
                pages = [_get(metrics + i, "/metrics")[1] for i in range(2)]
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        total = 0.0
        for page in pages:
            for line in page.splitlines():
                if line.startswith("dance_decisions_total{"):
                    total += float(line.rsplit(" ", 1)[1])
        assert total == 8, pages
        assert 'reason="no-match"' in "".join(pages)
        assert _get(metrics, "/healthz") == (200, "alive\n")
        status, body = _get(metrics, "/readyz")
        assert status == 200 and "answers" in body
        proc.process.send_signal(signal.SIGHUP)  # both workers reload, and keep serving
        deadline = time.monotonic() + 20
        while proc.logs().count("dance agent: configuration reloaded") < 2:
            assert time.monotonic() < deadline, proc.logs()
            time.sleep(0.1)
        assert _get(proc.port, "/auth", good)[0] == 200
    finally:
        proc.process.send_signal(signal.SIGTERM)
        proc.process.wait(timeout=20)
    assert proc.process.returncode == 0
    lines = [json.loads(x) for x in proc.logs().splitlines() if x.startswith("{")]
    outcomes = sorted(doc["outcome"] for doc in lines)
    assert outcomes == ["accepted"] * 5 + ["rejected"] * 4, proc.logs()
    accepted = next(d for d in lines if d["outcome"] == "accepted")
    assert accepted["client_name"] == DEVICE and accepted["service"] == "agent"
    assert accepted["client"] == "127.0.0.1" and accepted["dns"] == "secure"
    rejected = next(d for d in lines if d["outcome"] == "rejected")
    assert rejected["reason"] == "no-match" and rejected["client_name"] == DEVICE
