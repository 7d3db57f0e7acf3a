# ruff: noqa: E501
"""Differential tests: request-smuggling payloads sent by an authenticated client through each
HTTP adapter to real backend parsers.

- `dance proxy --mode http` (dane_clientid over TLS 1.3) in front of uvicorn (h11), uvicorn
  (httptools), Python's http.server, and nginx;
- nginx and HAProxy (the docs/http.md configurations) in front of `dance agent`.

One assertion for every payload and backend: every request the backend's parser read carries
exactly one identity header, the authenticated identity (no ``X-DANCE-User``: the device has
none). For the proxy, the payloads it must refuse get its 400 and reach no backend at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dance.auth import Authenticator
from dance.tls import serve
from dance.tls.proxy import Proxy, ProxyConfig
from tests.http.frontends import haproxy_conf, nginx_conf, server_tls, start_haproxy, start_nginx
from tests.http.recorders import (
    Recorder,
    http_server_recorder,
    nginx_recorder,
    uvicorn_recorder,
)
from tests.http.test_frontends import Dns, agent, dns  # noqa: F401  (module fixtures)
from tests.integration.servers import Proc, free_port
from tests.tls.common import ALLOW, DEVICE, World, ctx_for, make_world, resolver

ME = DEVICE  # the same name in the TLS world and the HTTP front-end world
S = b"X-DANCE-Client-ID: admin.example.test\r\n"
LAST = b"GET /last HTTP/1.1\r\nHost: x\r\nX_DANCE_Client_ID: last\r\nConnection: close\r\n\r\n"
HIDDEN = b"GET /hidden HTTP/1.1\r\nHost: x\r\nX-DANCE-Client-ID: admin.example.test\r\n\r\n"
P = b"POST / HTTP/1.1\r\nHost: x\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# (name, payload, most requests a backend may see; 0 = the proxy refuses it)
CORPUS: list[tuple[str, bytes, int]] = [
    # CL.TE and TE.CL
    ("cl-te", P + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + HIDDEN, 0),
    ("te-cl", P + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + chunk(HIDDEN) + b"0\r\n\r\n", 0),
    # TE.TE with obfuscated Transfer-Encoding
    ("te-space", P + b"Transfer-Encoding: chunked \r\n\r\n" + chunk(HIDDEN) + b"0\r\n\r\n" + LAST, 2),
    ("te-tab", P + b"Transfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n" + LAST, 2),
    ("te-xchunked", P + b"Transfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n" + HIDDEN, 0),
    ("te-list", P + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + HIDDEN, 0),
    ("te-case", P + b"Transfer-Encoding: Chunked\r\n\r\n0\r\n\r\n" + HIDDEN, 0),
    ("te-twice", P + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n" + HIDDEN, 0),
    ("te-colon-space", P + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + HIDDEN, 0),
    ("te-http10", b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0),
    # bare LF, bare CR, obs-fold, NUL
    ("bare-lf", b"GET / HTTP/1.1\r\nHost: x\r\nA: b\n" + S + b"\r\n", 0),
    ("bare-lf-cl", b"GET / HTTP/1.1\r\nHost: x\r\nA: b\nContent-Length: %d\r\n\r\n" % len(HIDDEN) + HIDDEN, 0),
    ("bare-lf-end", b"GET / HTTP/1.1\nHost: x\n\n" + HIDDEN, 0),
    ("bare-cr", b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r" + S + b"\r\n", 0),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n " + S + b"\r\n", 0),
    ("nul", b"GET / HTTP/1.1\r\nHost: x\r\nA: b\x00c\r\n" + S + b"\r\n", 0),
    # Content-Length games
    ("cl-twice", P + b"Content-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(HIDDEN) + HIDDEN, 0),
    ("cl-plus", P + b"Content-Length: +%d\r\n\r\n" % len(HIDDEN) + HIDDEN, 0),
    ("cl-list", P + b"Content-Length: 0, 0\r\n\r\n" + HIDDEN, 0),
    # chunk sizes and trailers
    ("chunk-0x", P + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nabcde\r\n0\r\n\r\n" + HIDDEN, 0),
    ("chunk-plus", P + b"Transfer-Encoding: chunked\r\n\r\n+5\r\nabcde\r\n0\r\n\r\n" + HIDDEN, 0),
    ("chunk-ext-cr", P + b"Transfer-Encoding: chunked\r\n\r\n5;\rx\r\nabcde\r\n0\r\n\r\n" + HIDDEN, 0),
    ("trailer", P + b"Transfer-Encoding: chunked\r\n\r\n0\r\n" + S + b"\r\n", 0),
    # identity header variants (valid HTTP: stripped, ours added)
    ("underscore", b"GET / HTTP/1.1\r\nHost: x\r\nX_DANCE_Client_ID: admin\r\n\r\n" + LAST, 2),
    ("case", b"GET / HTTP/1.1\r\nHost: x\r\nx-dance-client-id: a\r\nX-Dance-Client-Id: b\r\n\r\n" + LAST, 2),
    ("mixed", b"GET / HTTP/1.1\r\nHost: x\r\nx_dance-client_ID: a\r\n" + S + b"\r\n" + LAST, 2),
    ("user", b"GET / HTTP/1.1\r\nHost: x\r\nX-DANCE-User: root\r\nx_dance_user: root\r\n\r\n" + LAST, 2),
    # pipelining and HTTP/1.0 keep-alive, each request with a spoof
    ("pipelined", (b"GET /p HTTP/1.1\r\nHost: x\r\n" + S + b"\r\n") * 3 + LAST, 4),
    ("http10-keepalive", (b"GET /k HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n" + S + b"\r\n") * 2 + LAST, 3),
    ("pipelined-then-bad", b"GET /p HTTP/1.1\r\nHost: x\r\n" + S + b"\r\n" + b"GET / HTTP/1.1\r\nHost: x\nA: b\r\n\r\n", 1),
    # a request hidden in a body
    ("hidden-cl", P + b"Content-Length: %d\r\n\r\n" % len(HIDDEN) + HIDDEN + LAST, 2),
    ("hidden-chunked", P + b"Transfer-Encoding: chunked\r\n\r\n" + chunk(HIDDEN) + b"0\r\n\r\n" + LAST, 2),
]  # fmt: skip
REFUSED_AFTER = {"pipelined-then-bad"}  # accepted first, then refused
# Refused in the body: when the head was relayed before the bad bytes arrived (another TLS
# record), the backend may have seen the head (with our identity only); normally it sees nothing.
BODY_REFUSED = {"chunk-0x", "chunk-plus", "chunk-ext-cr", "trailer"}


def check(recorder: Recorder, name: str, seen_max: int | None) -> None:
    """The one assertion: each request parsed carries exactly one identity, ours. For the
    proxy (``seen_max`` given) also: how many requests got through, and never /hidden (a
    request inside a body, or behind framing the proxy refuses). Through a front end, /hidden
    may be a genuine pipelined request of the authenticated client (e.g. after a
    ``Transfer-Encoding: Chunked`` body, valid HTTP): it must carry our identity all the same."""
    seen = recorder.take()
    for request in seen:
        assert request.client_ids() == [ME], (recorder.name, name, request)
        assert request.users() == [], (recorder.name, name, request)
        assert seen_max is None or request.path != "/hidden", (recorder.name, name)
    if seen_max is not None:
        if seen_max == 0 or name in BODY_REFUSED:
            assert len(seen) <= seen_max, (recorder.name, name, seen)
        else:
            assert 1 <= len(seen) <= seen_max, (recorder.name, name, seen)


# -- dance proxy --mode http ------------------------------------------------------------------


class ProxyThread:
    """The DANCE proxy (http mode) for one backend, on an event loop in a thread."""

    def __init__(self, world: World, backend: int) -> None:
        self.world, self.backend = world, backend
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        async with resolver(self.world) as res:
            proxy = Proxy(ProxyConfig(("127.0.0.1", self.backend), mode="http"))
            self.proxy = proxy
            server = await serve(
                proxy.handle,
                "127.0.0.1",
                0,
                cert=self.world.server.cert,
                key=self.world.server.key,
                authenticator=Authenticator(res, allow=ALLOW),
            )
            async with server:
                self.port = server.port
                self.ready.set()
                await self.stop.wait()

    def __enter__(self) -> ProxyThread:
        self.thread.start()
        assert self.ready.wait(20)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(20)


def send_tls(
    port: int, context: ssl.SSLContext, payload: bytes, timeout: float = 10.0, idle: float = 10.0
) -> bytes:
    """Send ``payload`` on one connection and read until the server closes (or ``timeout``,
    or ``idle`` seconds without data). asyncio's TLS (SSLObject) is what carries
    dane_clientid (`dance.tls.client_context`)."""

    async def run() -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"
        )
        out = b""
        try:
            writer.write(payload)
            async with asyncio.timeout(timeout):
                while data := await asyncio.wait_for(reader.read(65536), idle):
                    out += data
        except (OSError, ssl.SSLError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        return out

    return asyncio.run(run())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("http-differential"))


@contextlib.contextmanager
def backend(kind: str, workdir: Path) -> Iterator[Recorder]:
    if kind == "http.server":
        with http_server_recorder() as rec:
            yield rec
    elif kind == "nginx":
        with nginx_recorder(workdir) as rec:
            yield rec
    else:
        with uvicorn_recorder(kind) as rec:
            yield rec


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["h11", "httptools", "http.server", "nginx"])
def test_proxy_http_mode_against_real_backends(kind: str, world: World, tmp_path: Path) -> None:
    if kind == "nginx":
        from tests.conftest import require_binary

        require_binary("nginx")
    context = ctx_for(world, world.device, ME)
    with backend(kind, tmp_path / "nginx") as rec, ProxyThread(world, rec.port) as proxy:
        for name, payload, most in CORPUS:
            reply = send_tls(proxy.port, context, payload)
            if most == 0 or name in REFUSED_AFTER:
                assert b"HTTP/1.1 400 " in reply, (kind, name, reply[:200])
            time.sleep(0.05)  # the backend records before the next payload is checked
            check(rec, name, 1 if name in BODY_REFUSED else most)
        refused = proxy.proxy.stats.refused
    assert sum(refused.values()) == sum(1 for _, _, m in CORPUS if m == 0) + len(REFUSED_AFTER)


# -- nginx and HAProxy in front of dance agent ------------------------------------------------


FRONT_CORPUS = [(name, payload) for name, payload, _ in CORPUS]


def send_front(port: int, cert: tuple[Path, Path], payload: bytes) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return send_tls(port, ctx, payload, idle=0.4)


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    with http_server_recorder() as rec:
        yield rec


@pytest.fixture(scope="module")
def front_nginx(
    agent: Proc,  # noqa: F811
    recorder: Recorder,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Proc]:
    from tests.conftest import require_binary

    require_binary("nginx")
    work = tmp_path_factory.mktemp("diff-nginx")
    port = free_port()
    conf = nginx_conf(
        work, port, server_tls(work), agent_port=agent.port, backend_port=recorder.port
    )
    proc = start_nginx(work, conf, port)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def front_haproxy(
    agent: Proc,  # noqa: F811
    recorder: Recorder,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Proc]:
    from tests.conftest import require_binary

    require_binary("haproxy")
    work = tmp_path_factory.mktemp("diff-haproxy")
    port = free_port()
    conf = haproxy_conf(
        work, port, server_tls(work), agent_port=agent.port, backend_port=recorder.port
    )
    proc = start_haproxy(work, conf, port)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.mark.integration
@pytest.mark.parametrize("front", ["nginx", "haproxy"])
def test_front_ends_before_agent(
    front: str,
    request: pytest.FixtureRequest,
    recorder: Recorder,
    dns: Dns,  # noqa: F811
) -> None:
    proc: Proc = request.getfixturevalue(f"front_{front}")
    recorder.take()
    reached = 0
    for name, payload in FRONT_CORPUS:
        send_front(proc.port, dns.clients.device, payload)
        time.sleep(0.05)
        seen = recorder.take()
        reached += len(seen)
        recorder.seen.extend(seen)
        check(recorder, f"{front}:{name}", None)
    assert reached >= 8  # the valid payloads (identity variants, pipelining, ...) got through
