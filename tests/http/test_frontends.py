"""Integration: real nginx and HAProxy (Debian packages) in front of `dance agent`, DNS from Knot.

Clients present certificates over TLS 1.3 (Python ssl and curl); the front end requests any
certificate (nginx ``ssl_verify_client optional_no_ca``; HAProxy ``verify optional`` with
``ca-ignore-err all crt-ignore-err all``) and asks the agent. A header-echo backend shows what
the application receives. Also Example 2: nginx passes the certificate to a WSGI application
that runs `DanceWSGIMiddleware` itself.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dance import make_record
from dance.auth import Authenticator
from dance.dns import TLSAResolver, TrustAnchors
from dance.http.core import HttpAuth, RequestSettings, TrustedProxies
from dance.http.wsgi import DanceWSGIMiddleware, current_identity
from tests.conftest import require_binary
from tests.http.common import DEVICE, ISSUED, USER, Identities, make_identities
from tests.http.frontends import (
    Proc,
    client_files,
    echo_backend,
    haproxy_conf,
    https_get,
    nginx_conf,
    server_tls,
    start_agent,
    start_haproxy,
    start_nginx,
    wsgi_backend,
)
from tests.integration.servers import KnotZone, Server, dnskey_anchor, free_port, start_knot
from tests.pki import key

pytestmark = pytest.mark.integration

SOA = "@ SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60"
ALLOW = ["--allow", "._device.example.test", "--allow", USER]


@dataclass
class Clients:
    device: tuple[Path, Path]
    impostor: tuple[Path, Path]
    issued: tuple[Path, Path]
    alice: tuple[Path, Path]
    outsider: tuple[Path, Path]
    two_names: tuple[Path, Path]


@dataclass
class Dns:
    knot: Server
    anchor: str
    ids: Identities
    clients: Clients


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dns]:
    require_binary("knotd")
    base = tmp_path_factory.mktemp("http-frontends")
    ids = make_identities()
    zone = KnotZone(
        "example.test",
        "\n".join(
            [
                SOA,
                "@ NS ns1",
                "ns1 A 127.0.0.1",
                f"sensor7._device TLSA {make_record(ids.device).to_text()}",
                f"sensor9._device TLSA {make_record(ids.ca, 2, 0, 0).to_text()}",
                f"other._device TLSA {make_record(ids.ca, 2, 0, 0).to_text()}",
                f"_user TLSA {make_record(ids.user_ca, 2, 0, 0).to_text()}",
            ]
        ),
    )
    knot = start_knot(base / "knot", [zone])
    try:
        anchor = dnskey_anchor(knot.port, "example.test")
        cdir = base / "clients"
        clients = Clients(
            client_files(cdir, "device", ids.device, key(2)),
            client_files(cdir, "impostor", ids.impostor, key(5)),
            client_files(cdir, "issued", ids.issued, key(3)),
            client_files(cdir, "alice", ids.alice, key(4)),
            client_files(cdir, "outsider", ids.outsider, key(6)),
            client_files(cdir, "two", ids.two_names, key(2)),
        )
        assert (cdir / "device.key").stat().st_mode & 0o777 == 0o600
        yield Dns(knot, anchor, ids, clients)
    finally:
        knot.stop()


@pytest.fixture(scope="module")
def agent(dns: Dns, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    proc = start_agent(tmp_path_factory.mktemp("agent"), dns.knot.port, dns.anchor, ALLOW)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def backend() -> Iterator[int]:
    with echo_backend() as port:
        yield port


@pytest.fixture(scope="module")
def example2(dns: Dns) -> Iterator[int]:
    """A WSGI application doing DANCE itself (Example 2), trusting only loopback (nginx)."""
    resolver = TLSAResolver(
        ("127.0.0.1", dns.knot.port),
        anchors=TrustAnchors.from_text(dns.anchor),
        recursion_desired=False,
    )
    http_auth = HttpAuth(Authenticator(resolver, allow=["._device.example.test", USER]))

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        identity = current_identity(environ)
        body = json.dumps({"identity": identity.identity if identity else None}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    middleware = DanceWSGIMiddleware(
        app,
        http_auth=http_auth,
        settings=RequestSettings(trusted_proxies=TrustedProxies(["127.0.0.1/32"])),
    )
    try:
        with wsgi_backend(middleware) as port:
            yield port
    finally:
        middleware.close()


@pytest.fixture(scope="module")
def nginx(
    agent: Proc, backend: int, example2: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proc]:
    require_binary("nginx")
    work = tmp_path_factory.mktemp("nginx")
    port = free_port()
    conf = nginx_conf(
        work,
        port,
        server_tls(work),
        agent_port=agent.port,
        backend_port=backend,
        example2_port=example2,
        auth_cache=5,  # the documented configuration (nginx keeps the agent's answers 5 s)
    )
    proc = start_nginx(work, conf, port)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def haproxy(agent: Proc, backend: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    require_binary("haproxy")
    work = tmp_path_factory.mktemp("haproxy")
    port = free_port()
    conf = haproxy_conf(work, port, server_tls(work), agent_port=agent.port, backend_port=backend)
    proc = start_haproxy(work, conf, port)
    try:
        yield proc
    finally:
        proc.stop()


def _front_end_cases(port: int, dns: Dns) -> None:
    c = dns.clients
    spoof = {"X-DANCE-Client-ID": "admin.example.test", "X-DANCE-User": "root"}
    # Accepted: DANE-EE, DANE-TA (2 0 0, leaf alone), user with a claimed name.
    status, _, body = https_get(port, "/x", cert=c.device, headers=spoof)
    assert status == 200, body
    seen = json.loads(body)
    assert seen["x-dance-client-id"] == DEVICE  # the spoofed value was replaced
    assert "x-dance-user" not in seen or seen["x-dance-user"] == ""
    assert "client-cert" not in seen  # the certificate header does not reach the app
    status, _, body = https_get(port, cert=c.issued)
    assert (status, json.loads(body)["x-dance-client-id"]) == (200, ISSUED)
    status, _, body = https_get(port, cert=c.alice, headers={"X-DANCE-Client-Name": USER})
    assert status == 200, body
    assert json.loads(body)["x-dance-client-id"] == "alice@example.test"
    assert json.loads(body)["x-dance-user"] == "alice"
    # Refused, with the public code (nothing else) and the request never reaches the app.
    refusals = [
        ({"cert": c.impostor}, "not-authenticated"),  # wrong key
        ({"cert": c.outsider}, "not-authenticated"),  # name outside the allow-list
        ({"cert": c.two_names}, "bad-client-name"),  # two SANs, no claim
        (
            {"cert": c.device, "headers": {"X-DANCE-Client-Name": "other._device.example.test"}},
            "not-authenticated",
        ),  # claimed name not in the certificate
        ({"cert": c.alice}, "not-authenticated"),  # user without the claimed name
        ({}, "no-client-certificate"),
        # No TLS client certificate, but a certificate header and an identity header: ignored.
        (
            {"headers": {"Client-Cert": (c.device[0]).read_text().replace("\n", ""), **spoof}},
            "no-client-certificate",
        ),
    ]
    for kwargs, code in refusals:
        status, headers, body = https_get(port, **kwargs)  # type: ignore[arg-type]
        assert status == 403, (kwargs, body)
        assert headers.get("x-dance-error") == code, (kwargs, headers)
        assert b"x-dance-client-id" not in body.lower()


def test_nginx_auth_request(nginx: Proc, dns: Dns) -> None:
    _front_end_cases(nginx.port, dns)


def test_nginx_with_curl(nginx: Proc, dns: Dns) -> None:
    curl = require_binary("curl")
    cert, key_file = dns.clients.device

    def run(*args: str) -> tuple[str, str]:
        out = subprocess.run(
            [curl, "-sk", "--tlsv1.3", "-w", "\n%{http_code}", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        body, _, code = out.stdout.rpartition("\n")
        return code, body

    code, body = run(
        "--cert", str(cert), "--key", str(key_file), f"https://127.0.0.1:{nginx.port}/"
    )
    assert code == "200" and json.loads(body)["x-dance-client-id"] == DEVICE
    bad_cert, bad_key = dns.clients.impostor
    code, _ = run(
        "--cert", str(bad_cert), "--key", str(bad_key), f"https://127.0.0.1:{nginx.port}/"
    )
    assert code == "403"


def test_nginx_example2_wsgi_middleware(nginx: Proc, dns: Dns) -> None:
    c = dns.clients
    status, _, body = https_get(nginx.port, "/app2/x", cert=c.device)
    assert (status, json.loads(body)) == (200, {"identity": DEVICE})
    status, _, body = https_get(
        nginx.port,
        "/app2/x",
        cert=c.alice,
        body=json.dumps({"dane_clientid": USER}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert (status, json.loads(body)) == (200, {"identity": "alice@example.test"})
    status, _, body = https_get(nginx.port, "/app2/x", cert=c.impostor)
    assert (status, json.loads(body)) == (403, {"error": "forbidden", "code": "not-authenticated"})


def test_agent_counts_and_caches(agent: Proc, nginx: Proc, dns: Dns) -> None:
    import http.client

    def stats() -> dict[str, int]:
        conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
        conn.request("GET", "/stats")
        out: dict[str, int] = json.loads(conn.getresponse().read())
        conn.close()
        return out

    before = stats()
    for _ in range(3):
        assert https_get(nginx.port, cert=dns.clients.device)[0] == 200
    after = stats()
    # nginx keeps the answer (docs/http.md): at most the first of the three reaches the agent.
    assert after["requests"] - before["requests"] <= 1, (before, after)
    assert after["accepted"] >= 1 and after["denied"] >= 1
    assert after.get("auth_dns_lookups", 0) <= after["auth_decision_cache_misses"]


def test_haproxy_lua_httpclient(haproxy: Proc, dns: Dns) -> None:
    try:
        _front_end_cases(haproxy.port, dns)
    except AssertionError:
        print(haproxy.logs())
        raise
