"""Integration: nginx keeping `dance agent`'s answers (docs/http.md, "Caching decisions in nginx").

The documented configuration (``nginx_conf(auth_cache=...)``) with real nginx, the real agent and
Knot; a header-echo backend shows the identity the application receives. Each safety property
has a control run with a deliberately wrong configuration that shows the failure the check is
there to catch: a key without the certificate leaks one client's answer to another, caching
every status keeps an agent's 5xx, ignoring ``X-Accel-Expires`` keeps a DNS failure.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from dance import certs as gen
from dance import make_record
from tests.conftest import require_binary
from tests.http.common import DEVICE, ISSUED, NOW, USER, make_identities
from tests.http.frontends import (
    Proc,
    client_files,
    echo_backend,
    https_get,
    nginx_conf,
    server_tls,
    start_agent,
    start_nginx,
)
from tests.integration.servers import KnotZone, Server, dnskey_anchor, free_port, knotc, start_knot
from tests.pki import key

pytestmark = pytest.mark.integration

SOA = "@ SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60"
ALLOW = ["--allow", "._device.example.test", "--allow", USER]
VALID = 3.0  # nginx keeps answers this long here (the documented configuration: 5 s)
TTL = 2  # the TTL of the record the revocation test removes
GONE = "gone._device.example.test"

Cert = tuple[Path, Path]


@dataclass
class Env:
    knot: Server
    anchor: str
    base: Path
    device: Cert  # DEVICE, its record 3 1 1
    impostor: Cert  # DEVICE too, another key
    issued: Cert  # ISSUED, by a CA whose record is 2 0 0
    alice: Cert  # _user.example.test, uid alice
    gone: Cert  # GONE, record with a short TTL, removed by the revocation test


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    require_binary("knotd")
    require_binary("nginx")
    base = tmp_path_factory.mktemp("nginx-cache")
    ids = make_identities()
    gone_key = ec.generate_private_key(ec.SECP256R1())
    gone = gen.self_signed(gone_key, GONE, now=NOW)
    zone = KnotZone(
        "example.test",
        "\n".join(
            [
                SOA,
                "@ NS ns1",
                "ns1 A 127.0.0.1",
                f"sensor7._device TLSA {make_record(ids.device).to_text()}",
                f"sensor9._device TLSA {make_record(ids.ca, 2, 0, 0).to_text()}",
                f"_user TLSA {make_record(ids.user_ca, 2, 0, 0).to_text()}",
                f"gone._device {TTL} TLSA {make_record(gone).to_text()}",
            ]
        ),
    )
    knot = start_knot(base / "knot", [zone])
    try:
        cdir = base / "clients"
        yield Env(
            knot,
            dnskey_anchor(knot.port, "example.test"),
            base,
            client_files(cdir, "device", ids.device, key(2)),
            client_files(cdir, "impostor", ids.impostor, key(5)),
            client_files(cdir, "issued", ids.issued, key(3)),
            client_files(cdir, "alice", ids.alice, key(4)),
            client_files(cdir, "gone", gone, gone_key),
        )
    finally:
        knot.stop()


@dataclass
class Stack:
    nginx: Proc
    agent: Proc | None
    backend: int
    agent_port: int
    agent_dir: Path

    def agent_requests(self) -> int:
        """The agent's request counter (a cache hit in nginx does not reach the agent)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.agent_port, timeout=10)
        try:
            conn.request("GET", "/stats")
            return int(json.loads(conn.getresponse().read())["requests"])
        finally:
            conn.close()


_counter = iter(range(1000))


@contextlib.contextmanager
def stack(
    env: Env,
    *,
    key_expr: str | None = None,
    valid: str = "200 403",
    agent_args: list[str] | None = None,
    dns_port: int | None = None,
    mangle: Callable[[str], str] = lambda conf: conf,
) -> Iterator[Stack]:
    """Agent + nginx (the documented cached configuration, or a control variant) + backend."""
    work = env.base / f"stack{next(_counter)}"
    agent_dir = work / "agent"
    agent = start_agent(
        agent_dir, dns_port or env.knot.port, env.anchor, [*ALLOW, *(agent_args or [])]
    )
    nginx: Proc | None = None
    try:
        with echo_backend() as backend:
            port = free_port()
            extra: dict[str, Any] = {"auth_cache_valid": valid}
            if key_expr is not None:
                extra["auth_cache_key"] = key_expr
            conf = nginx_conf(
                work / "nginx",
                port,
                server_tls(work / "nginx"),
                agent_port=agent.port,
                backend_port=backend,
                auth_cache=VALID,
                **extra,
            )
            nginx = start_nginx(work / "nginx", mangle(conf), port)
            s = Stack(nginx, agent, backend, agent.port, agent_dir)
            try:
                yield s
            finally:
                if s.agent is not None:
                    s.agent.stop()
    finally:
        if nginx is not None:
            nginx.stop()
        agent.stop()


def get(
    s: Stack, cert: Cert | None, name: str | None = None, **headers: str
) -> tuple[int, dict[str, str], dict[str, Any] | None]:
    """One request through nginx; the backend's view of the request headers when it got it."""
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    if name is not None:
        hdrs["X-DANCE-Client-Name"] = name
    status, resp_headers, body = https_get(s.nginx.port, "/api", cert=cert, headers=hdrs)
    seen = json.loads(body) if status == 200 else None
    return status, resp_headers, seen


def expect_identity(s: Stack, cert: Cert, identity: str, name: str | None = None) -> None:
    spoof = {"X_Spoof": "1", "X-DANCE-Client-ID": "admin.example.test", "X-DANCE-User": "root"}
    status, _, seen = get(s, cert, name, **spoof)
    assert status == 200, (cert, name, status)
    assert seen is not None
    assert seen["x-dance-client-id"] == identity, (cert, name, seen)
    user = identity.split("@", maxsplit=1)[0] if "@" in identity else ""
    assert seen.get("x-dance-user", "") == user, seen
    assert "client-cert" not in seen


def expect_refused(s: Stack, cert: Cert | None, name: str | None = None) -> None:
    status, headers, seen = get(s, cert, name)
    assert (status, seen) == (403, None), (cert, name, status, seen)
    assert headers.get("x-dance-error") in {
        "not-authenticated",
        "bad-client-name",
        "no-client-certificate",
    }, headers


def isolation_cases(s: Stack, env: Env) -> None:
    """(a), (b), (d): each certificate gets its own answer, cached or not, and the backend sees
    the identity authenticated for that certificate (and claimed name), never another one."""
    n0 = s.agent_requests()
    expect_identity(s, env.device, DEVICE)  # A accepted ...
    expect_identity(s, env.device, DEVICE)  # ... and answered from nginx's cache
    assert s.agent_requests() == n0 + 1, "the second request of A was not a cache hit"
    # (b) another certificate for A's name, right after A's answer was cached: refused, with and
    # without claiming the name.
    expect_refused(s, env.impostor)
    expect_refused(s, env.impostor, DEVICE)
    # (a) B, another certificate for another name, gets B's answer, not A's; twice (cached).
    expect_identity(s, env.issued, ISSUED)
    expect_identity(s, env.issued, ISSUED)
    # (b) B's certificate claiming A's name: refused.
    expect_refused(s, env.issued, DEVICE)
    # A user: the claimed name is part of the decision (without it: refused).
    expect_identity(s, env.alice, "alice@example.test", USER)
    expect_refused(s, env.alice)
    # (d) interleaved, every answer now from the cache: always the identity of that certificate.
    n1 = s.agent_requests()
    for _ in range(3):
        expect_identity(s, env.issued, ISSUED)
        expect_refused(s, env.impostor)
        expect_identity(s, env.device, DEVICE)
        expect_identity(s, env.alice, "alice@example.test", USER)
        expect_refused(s, env.issued, DEVICE)
        expect_refused(s, env.alice)
    assert s.agent_requests() == n1, "the interleaved requests were not all cache hits"
    expect_refused(s, None)  # no client certificate


def test_cached_answers_are_per_certificate_and_name(env: Env) -> None:
    with stack(env) as s:
        isolation_cases(s, env)
        # Only the headers nginx sets reach the agent (proxy_pass_request_headers off): a
        # client's own Client-Cert-Chain would be an input outside the key (the agent refuses
        # chains unless --allow-chain). A fresh key (A claiming its own name) asks the agent.
        n = s.agent_requests()
        status, _, seen = get(s, env.device, DEVICE, Client_Cert_Chain=":AAAA:")
        assert status == 200 and seen is not None and seen["x-dance-client-id"] == DEVICE
        assert s.agent_requests() == n + 1


def test_control_key_without_certificate_leaks(env: Env) -> None:
    """The check above fails on a key that leaves the certificate out: B gets A's identity."""
    with stack(env, key_expr="$http_x_dance_client_name") as s:
        expect_identity(s, env.device, DEVICE)
        status, _, seen = get(s, env.impostor)  # another key, same (absent) claimed name
        assert status == 200 and seen is not None and seen["x-dance-client-id"] == DEVICE
        with pytest.raises(AssertionError):
            isolation_cases(s, env)


class _Unavailable(BaseHTTPRequestHandler):
    """What a failing agent (or a proxy in front of it) answers: 503."""

    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def unavailable(port: int) -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def restart_agent(s: Stack, env: Env) -> None:
    s.agent = start_agent(s.agent_dir, env.knot.port, env.anchor, ALLOW, port=s.agent_port)


def errors_cases(s: Stack, env: Env) -> tuple[int, int]:
    """(c): a cached refusal stays refused; an agent that is down or answers 5xx is never kept.
    Returns the statuses of the first requests after the agent is back (keys first seen while
    it was down, then while it answered 503); with the right configuration, 200 each, the
    identity checked at the backend."""
    n = s.agent_requests()
    expect_refused(s, env.impostor)
    expect_refused(s, env.impostor)
    assert s.agent_requests() == n + 1, "the refusal was not cached"
    # Agent stopped: nginx cannot reach it, the request fails (500, not the backend).
    assert s.agent is not None
    s.agent.stop()
    s.agent = None
    status, _, seen = get(s, env.device, DEVICE)  # a key nothing cached yet
    assert (status, seen) == (500, None)
    # An agent answering 503 (overloaded, restarting behind something): also a failure.
    with unavailable(s.agent_port):
        status, _, seen = get(s, env.issued, ISSUED)
        assert (status, seen) == (500, None)
    restart_agent(s, env)
    after = []
    for cert, name in ((env.device, DEVICE), (env.issued, ISSUED)):
        status, _, seen = get(s, cert, name)
        if status == 200:
            assert seen is not None and seen["x-dance-client-id"] == name, seen
        after.append(status)
    return after[0], after[1]


def test_refusals_cached_failures_not(env: Env) -> None:
    with stack(env) as s:
        assert errors_cases(s, env) == (200, 200)


def test_control_caching_every_status_keeps_failures(env: Env) -> None:
    """``proxy_cache_valid any``: nginx keeps its own 502 (agent down) and the agent's 503."""
    with stack(env, valid="any") as s:
        assert errors_cases(s, env) == (500, 500)


def test_control_client_headers_reach_the_agent(env: Env) -> None:
    """Without ``proxy_pass_request_headers off`` the client's Client-Cert-Chain reaches the
    agent (refused here), an input the cache key does not hold."""
    with stack(env, mangle=lambda c: c.replace("proxy_pass_request_headers off;", "")) as s:
        status, headers, _ = get(s, env.device, DEVICE, Client_Cert_Chain=":AAAA:")
        assert (status, headers.get("x-dance-error")) == (403, "bad-client-certificate")


def test_dns_failure_not_cached(env: Env, tmp_path: Path) -> None:
    """A DNS failure makes the agent refuse with X-Accel-Expires: 0, so nginx asks again; a
    control configuration ignoring X-Accel-Expires keeps it."""
    dead = free_port()  # nothing listens: every query fails (dns-indeterminate)
    args = ["--timeout", "0.5"]
    with stack(env, agent_args=args, dns_port=dead) as s:
        n = s.agent_requests()
        for _ in range(3):
            status, headers, _ = get(s, env.device)
            assert status == 403 and headers.get("x-dance-error") == "not-authenticated"
        assert s.agent_requests() == n + 3
    wrong = "proxy_ignore_headers Cache-Control X-Accel-Expires;"
    with stack(
        env,
        agent_args=args,
        dns_port=dead,
        mangle=lambda conf: conf.replace("proxy_ignore_headers Cache-Control;", wrong),
    ) as s:
        n = s.agent_requests()
        for _ in range(3):
            assert get(s, env.device)[0] == 403
        assert s.agent_requests() == n + 1


def test_revoked_record_refused_after_the_bound(env: Env) -> None:
    """(e): once the record is removed, refusals start at most TTL + nginx validity later."""
    with stack(env) as s:
        expect_identity(s, env.gone, GONE)
        knotc(env.knot, "zone-begin", "example.test")
        try:
            knotc(env.knot, "zone-unset", "example.test", "gone._device", "TLSA")
        except Exception:
            knotc(env.knot, "zone-abort", "example.test")
            raise
        knotc(env.knot, "zone-commit", "example.test")
        removed = time.monotonic()
        # Wait out the agent's decision (TTL) and nginx's copy of the answer (VALID).
        time.sleep(max(0.0, removed + TTL + VALID + 1.0 - time.monotonic()))
        expect_refused(s, env.gone)
        expect_identity(s, env.device, DEVICE)  # the others are unaffected
