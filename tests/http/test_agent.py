"""The agent over real loopback HTTP: decisions, headers, limits, spoofing, keep-alive, CLI."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dance import certs as gen
from dance.dns import LookupResult, Outcome
from dance.http.agent import Agent
from dance.http.core import HttpAuth
from tests.http.common import (
    DEVICE,
    ISSUED,
    NOW,
    USER,
    FakeSource,
    Identities,
    b64,
    make_http_auth,
    make_identities,
    nginx_header,
    rfc9440,
)
from tests.pki import key

# Not `python -m dance.cli`: there dance.cli runs as __main__ and dance.cli_http's UsageError
# (imported from dance.cli) is another class, so usage errors would escape as tracebacks.
DANCE = [
    sys.executable,
    "-c",
    "import sys; from dance.cli import main; sys.exit(main(sys.argv[1:]))",
]


@dataclass
class Running:
    agent: Agent
    http_auth: HttpAuth
    source: FakeSource
    port: int


class _AgentThread:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.agent.serve("127.0.0.1", 0))
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.agent.close())
        self.loop.close()

    def __enter__(self) -> int:
        self.thread.start()
        assert self.ready.wait(10)
        return self.agent.address[1]

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def ids() -> Identities:
    return make_identities()


@pytest.fixture
def running(ids: Identities) -> Iterator[Running]:
    http_auth, source = make_http_auth(ids)
    agent = Agent(http_auth)
    with _AgentThread(agent) as port:
        yield Running(agent, http_auth, source, port)


def ask(port: int, headers: dict[str, str], path: str = "/auth") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_accepts_device_and_user(running: Running, ids: Identities) -> None:
    r = ask(running.port, {"Client-Cert": nginx_header(ids.device)})
    assert r.status == 200
    assert r.getheader("X-DANCE-Client-ID") == DEVICE
    assert r.getheader("X-DANCE-User") is None
    r = ask(running.port, {"Client-Cert": rfc9440(ids.issued)})
    assert (r.status, r.getheader("X-DANCE-Client-ID")) == (200, ISSUED)
    r = ask(running.port, {"Client-Cert": b64(ids.alice), "X-DANCE-Client-Name": USER})
    assert r.status == 200
    assert r.getheader("X-DANCE-Client-ID") == "alice@example.test"
    assert r.getheader("X-DANCE-User") == "alice"
    assert r.getheader("Cache-Control") == "no-store"
    # A non-ASCII user id travels %-escaped (UTF-8).
    jurgen = gen.issue_certificate(
        ids.user_ca, key(1), key(4).public_key(), dns_names=["example.test"], uid="jürgen", now=NOW
    )
    r = ask(running.port, {"Client-Cert": b64(jurgen), "X-DANCE-Client-Name": USER})
    assert r.status == 200
    assert r.getheader("X-DANCE-Client-ID") == "j%C3%BCrgen@example.test"
    assert r.getheader("X-DANCE-User") == "j%C3%BCrgen"


def test_refusals_are_403_with_stable_codes(running: Running, ids: Identities) -> None:
    cases = [
        ({"Client-Cert": b64(ids.impostor)}, "not-authenticated"),  # wrong key
        ({"Client-Cert": b64(ids.outsider)}, "not-authenticated"),  # outside the allow-list
        ({"Client-Cert": b64(ids.two_names)}, "bad-client-name"),  # no single SAN, no claim
        (
            {"Client-Cert": b64(ids.device), "X-DANCE-Client-Name": "sensor8._device.example.test"},
            "not-authenticated",
        ),  # claimed name not in the certificate
        ({"Client-Cert": b64(ids.alice)}, "not-authenticated"),  # user needs the claimed name
        ({"Client-Cert": "%%%"}, "bad-client-certificate"),
        ({"Client-Cert": "A" * 20000}, "bad-client-certificate"),  # oversized
        ({"Client-Cert": nginx_header(ids.chained, ids.ca)}, "bad-client-certificate"),
        ({"Client-Cert": b64(ids.device), "Client-Cert-Chain": rfc9440(ids.ca)}, "bad-client-"),
        ({}, "no-client-certificate"),
        ({"Client-Cert": b64(ids.device), "X-DANCE-Client-Name": "bad name"}, "bad-client-name"),
    ]
    for headers, code in cases:
        r = ask(running.port, headers)
        assert r.status == 403, headers
        assert (r.getheader("X-DANCE-Error") or "").startswith(code), (headers, code)
        assert r.getheader("X-DANCE-Client-ID") is None
    stats = running.http_auth.stats()
    for reason in (
        "no-match",
        "not-allowed",
        "name-missing",
        "claimed-name-not-in-certificate",
        "cert-bad-encoding",
        "cert-header-too-large",
        "cert-several-certificates",
        "cert-missing",
        "name-malformed",
    ):
        assert stats.get(f"denied_{reason}", 0) >= 1, (reason, stats)
    assert "host.example.org" not in running.source.queries  # no query outside the allow-list


def test_failures_are_marked_uncacheable(running: Running, ids: Identities) -> None:
    """A refusal that reports a DNS failure carries X-Accel-Expires: 0 (a caching front end
    must ask again); decisions (accepted, refused for the inputs) do not."""
    for headers in (
        {"Client-Cert": b64(ids.device)},
        {"Client-Cert": b64(ids.impostor)},
        {"Client-Cert": b64(ids.outsider)},
        {"Client-Cert": "%%%"},
    ):
        r = ask(running.port, headers)
        assert r.getheader("Cache-Control") == "no-store"
        assert r.getheader("X-Accel-Expires") is None, headers

    async def failing(name: str) -> LookupResult:
        return LookupResult(Outcome.INDETERMINATE, (), 0.0, reason="timeout", name=name)

    running.source.lookup_tlsa = failing  # type: ignore[method-assign]
    r = ask(running.port, {"Client-Cert": b64(ids.issued)})
    assert (r.status, r.getheader("X-DANCE-Error")) == (403, "not-authenticated")
    assert r.getheader("X-Accel-Expires") == "0"
    assert running.http_auth.stats()["denied_dns-indeterminate"] == 1


def test_decisions_are_cached_through_the_authenticator(running: Running, ids: Identities) -> None:
    for _ in range(5):
        assert ask(running.port, {"Client-Cert": b64(ids.device)}).status == 200
        assert ask(running.port, {"Client-Cert": b64(ids.impostor)}).status == 403
    assert running.source.queries.count(DEVICE) == 2  # one per credential
    assert running.http_auth.stats()["auth_decision_cache_hits"] >= 8


def raw(port: int, payload: bytes, *, read_until_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        chunks = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
            if not read_until_close and b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


def test_keep_alive_and_pipelining(running: Running, ids: Identities) -> None:
    one = f"GET /auth HTTP/1.1\r\nHost: a\r\nClient-Cert: {b64(ids.device)}\r\n\r\n".encode()
    bad = f"GET /auth HTTP/1.1\r\nHost: a\r\nClient-Cert: {b64(ids.impostor)}\r\n\r\n".encode()
    last = b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    out = raw(running.port, one + bad + one + last)
    statuses = [line.split(b" ")[1] for line in out.split(b"\r\n") if line.startswith(b"HTTP/1.1")]
    assert statuses == [b"200", b"403", b"200", b"200"]


@pytest.mark.parametrize(
    "payload",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /auth HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /auth HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"GET /auth HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /auth HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
        b"GET /auth HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
        b"GET /auth HTTP/1.1\r\nClient-Cert: QUJD\r\nClient-Cert: QUJD\r\n\r\n",
        b"GET /auth HTTP/1.1\r\nClient-Cert: \xff\xfe\x00\r\n\r\n",
    ],
)
def test_malformed_requests_get_403_never_500(running: Running, payload: bytes) -> None:
    out = raw(running.port, payload, read_until_close=False)
    assert out.startswith(b"HTTP/1.1 403 "), out[:100]
    assert b"X-DANCE-Error: " in out


def test_health_stats_and_unknown_paths(running: Running, ids: Identities) -> None:
    ask(running.port, {"Client-Cert": b64(ids.device)})
    assert ask(running.port, {}, "/healthz").status == 200
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    conn.request("GET", "/stats")
    stats = json.loads(conn.getresponse().read())
    conn.close()
    assert stats["accepted"] >= 1 and "auth_dns_lookups" in stats
    assert ask(running.port, {}, "/other").status == 404


def test_untrusted_callers_are_refused(ids: Identities) -> None:
    http_auth, source = make_http_auth(ids)
    agent = Agent(http_auth, trusted_proxies=["192.0.2.0/24"])
    with _AgentThread(agent) as port:
        for path in ("/auth", "/stats"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                # Closed at accept: nothing is read, nothing is answered.
                with contextlib.suppress(ConnectionResetError):
                    s.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
                with contextlib.suppress(ConnectionResetError):
                    assert s.recv(100) == b""
    assert source.queries == []
    assert agent.refused["untrusted-source"] == 2
    assert http_auth.stats()["requests"] == 0


def test_dns_failure_is_a_403(ids: Identities) -> None:
    class Broken(FakeSource):
        async def lookup_tlsa(self, name: str):  # type: ignore[no-untyped-def]
            raise OSError("network down")

    http_auth, _ = make_http_auth(ids)
    http_auth.authenticator.source = Broken({})
    with _AgentThread(Agent(http_auth)) as port:
        r = ask(port, {"Client-Cert": b64(ids.device)})
        assert (r.status, r.getheader("X-DANCE-Error")) == (403, "not-authenticated")
    assert http_auth.stats()["denied_dns-indeterminate"] == 1


def _dance(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DANCE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cli_usage_errors(tmp_path: Path) -> None:
    anchor = tmp_path / "anchor.txt"
    anchor.write_text("example.test. IN DS 1 13 2 " + "00" * 32 + "\n")
    common = ["--server", "127.0.0.1:53", "--trust-anchor", str(anchor)]
    for args, message in (
        (["--listen", "nonsense", "--allow", ".example.test"], "--listen"),
        (["--allow", ".example.test", "--trusted-proxy", "not-an-ip"], "--trusted-proxy"),
        (["--listen", "127.0.0.1:1"], "--allow"),
        (["--allow", "bad name!"], "allow-list"),
    ):
        out = _dance("agent", *args, *common)
        assert out.returncode == 2, out
        assert message in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert "--listen" in _dance("agent", "--help").stdout


def test_slow_and_idle_connections_are_closed(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dance.http.agent as agent_module

    monkeypatch.setattr(agent_module, "HEAD_TIMEOUT", 0.2)
    monkeypatch.setattr(agent_module, "IDLE_TIMEOUT", 0.2)
    with socket.create_connection(("127.0.0.1", running.port), timeout=15) as slow:
        slow.sendall(b"GET /auth HTTP/1.1\r\nClient-Cert: ")  # and never finishes
        assert slow.recv(100) == b""  # closed by the agent, no answer
    with socket.create_connection(("127.0.0.1", running.port), timeout=15) as idle:
        assert idle.recv(100) == b""
