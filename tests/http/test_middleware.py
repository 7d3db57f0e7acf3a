"""ASGI (Starlette, FastAPI) and WSGI (plain, Flask) middleware: Example 2 and spoofing."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from dance.http.core import RequestSettings, TrustedProxies
from dance.http.wsgi import DanceWSGIMiddleware, current_identity
from tests.http.common import (
    DEVICE,
    USER,
    Identities,
    b64,
    make_http_auth,
    make_identities,
    nginx_header,
    rfc9440,
)

PROXY = "10.9.8.7"
SETTINGS = RequestSettings(trusted_proxies=TrustedProxies([PROXY + "/32"]))


@pytest.fixture(scope="module")
def ids() -> Identities:
    return make_identities()


# -- WSGI without a framework ------------------------------------------------------------------


def _echo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    identity = current_identity(environ)
    body = environ["wsgi.input"].read()
    doc = {
        "identity": identity.identity if identity else None,
        "header": environ.get("HTTP_X_DANCE_CLIENT_ID"),
        "user": environ.get("HTTP_X_DANCE_USER"),
        "body": body.decode(),
    }
    out = json.dumps(doc).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [out]


def wsgi_call(
    app: Callable[..., Iterable[bytes]],
    headers: dict[str, str],
    *,
    remote: str = PROXY,
    body: bytes = b"",
    content_type: str = "",
    path: str = "/api",
) -> tuple[str, dict[str, Any]]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST" if body else "GET",
        "PATH_INFO": path,
        "REMOTE_ADDR": remote,
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": content_type,
        "wsgi.input": io.BytesIO(body),
    }
    for k, v in headers.items():
        environ["HTTP_" + k.upper().replace("-", "_")] = v
    status: list[str] = []
    out = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    return status[0], json.loads(out)


def test_wsgi_accepts_and_strips(ids: Identities) -> None:
    http_auth, _ = make_http_auth(ids)
    app = DanceWSGIMiddleware(_echo_app, http_auth=http_auth, settings=SETTINGS)
    try:
        spoof = {"X-DANCE-Client-ID": "admin.example.test", "X-DANCE-User": "root"}
        status, doc = wsgi_call(app, {"Client-Cert": nginx_header(ids.device), **spoof})
        assert status.startswith("200")
        assert doc["identity"] == doc["header"] == DEVICE and doc["user"] is None
        # Claimed name from the JSON body; the body still reaches the application.
        body = json.dumps({"dane_clientid": USER, "reading": 7}).encode()
        status, doc = wsgi_call(
            app, {"Client-Cert": b64(ids.alice)}, body=body, content_type="application/json"
        )
        assert status.startswith("200"), doc
        assert doc["identity"] == "alice@example.test" and doc["user"] == "alice"
        assert json.loads(doc["body"])["reading"] == 7
    finally:
        app.close()


def test_wsgi_refusals(ids: Identities) -> None:
    http_auth, source = make_http_auth(ids)
    app = DanceWSGIMiddleware(
        _echo_app, http_auth=http_auth, settings=SETTINGS, exempt_paths=["/healthz"]
    )
    try:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"headers": {"Client-Cert": b64(ids.impostor)}}, "not-authenticated"),
            ({"headers": {"Client-Cert": b64(ids.outsider)}}, "not-authenticated"),
            ({"headers": {"Client-Cert": "A" * 40000}}, "bad-client-certificate"),
            ({"headers": {"Client-Cert": nginx_header(ids.chained, ids.ca)}}, "bad-client-"),
            ({"headers": {}}, "no-client-certificate"),
            # Certificate headers from an address that is not a trusted proxy: ignored.
            (
                {"headers": {"Client-Cert": b64(ids.device)}, "remote": "192.0.2.1"},
                "no-client-certificate",
            ),
            (
                {
                    "headers": {"Client-Cert": b64(ids.device)},
                    "body": b"x" * 70000,
                    "content_type": "application/json",
                },
                "bad-request",
            ),
            (
                {
                    "headers": {"Client-Cert": b64(ids.device)},
                    "body": b'{"dane_clientid": "sensor8._device.example.test"}',
                    "content_type": "application/json",
                },
                "not-authenticated",
            ),
        ]
        for kwargs, code in cases:
            status, doc = wsgi_call(app, **kwargs)
            assert status.startswith("403"), kwargs
            assert set(doc) == {"error", "code"} and doc["code"].startswith(code), (kwargs, doc)
        stats = http_auth.stats()
        assert stats["denied_cert-header-untrusted-source"] == 1
        assert stats["denied_body-too-large"] == 1
        assert stats["denied_claimed-name-not-in-certificate"] == 1
        assert "host.example.org" not in source.queries
        # Exempt paths pass, but never with a spoofed identity.
        status, doc = wsgi_call(
            app, {"X-DANCE-Client-ID": DEVICE}, remote="192.0.2.1", path="/healthz"
        )
        assert status.startswith("200") and doc["header"] is None and doc["identity"] is None
    finally:
        app.close()


def test_flask(ids: Identities) -> None:
    flask = pytest.importorskip("flask")
    app = flask.Flask("dance-test")

    @app.route("/api", methods=["GET", "POST"])  # type: ignore[untyped-decorator,unused-ignore]
    def api() -> dict[str, Any]:
        identity = current_identity(flask.request.environ)
        return {"identity": identity.identity if identity else None}

    http_auth, _ = make_http_auth(ids)
    middleware = DanceWSGIMiddleware(app.wsgi_app, http_auth=http_auth, settings=SETTINGS)
    app.wsgi_app = middleware
    try:
        client = app.test_client()
        env = {"REMOTE_ADDR": PROXY}
        r = client.get("/api", headers={"Client-Cert": rfc9440(ids.device)}, environ_base=env)
        assert r.status_code == 200 and r.get_json() == {"identity": DEVICE}
        r = client.post(
            "/api",
            headers={"Client-Cert": b64(ids.alice)},
            json={"dane_clientid": USER},
            environ_base=env,
        )
        assert r.get_json() == {"identity": "alice@example.test"}
        r = client.get("/api", headers={"Client-Cert": b64(ids.impostor)}, environ_base=env)
        assert r.status_code == 403 and r.get_json() == {
            "error": "forbidden",
            "code": "not-authenticated",
        }
        r = client.get("/api", headers={"Client-Cert": b64(ids.device)})  # from 127.0.0.1
        assert r.status_code == 403 and r.get_json()["code"] == "no-client-certificate"
    finally:
        middleware.close()


# -- ASGI: Starlette and FastAPI ---------------------------------------------------------------


def test_starlette(ids: Identities) -> None:
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocket

    from dance.http.asgi import DanceMiddleware

    async def api(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse(
            {
                "identity": request.state.dance_identity.identity,
                "header": request.headers.get("x-dance-client-id"),
                "user": request.headers.get("x-dance-user"),
                "headers": request.headers.getlist("x-dance-client-id"),
                "body": body.decode(),
            }
        )

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"header": request.headers.get("x-dance-client-id")})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(websocket.state.dance_identity.identity)
        await websocket.close()

    http_auth, source = make_http_auth(ids)
    app = Starlette(
        routes=[
            Route("/api", api, methods=["GET", "POST"]),
            Route("/healthz", health),
            WebSocketRoute("/ws", ws),
        ],
        middleware=[
            Middleware(
                DanceMiddleware,
                http_auth=http_auth,
                settings=SETTINGS,
                exempt_paths=["/healthz"],
            )
        ],
    )
    with TestClient(app, client=(PROXY, 5000)) as client:
        spoof = {"X-DANCE-Client-ID": "admin.example.test", "X-DANCE-User": "root"}
        r = client.get("/api", headers={"Client-Cert": nginx_header(ids.device), **spoof})
        assert r.status_code == 200
        doc = r.json()
        assert doc["identity"] == doc["header"] == DEVICE
        assert doc["headers"] == [DEVICE] and doc["user"] is None
        body = json.dumps({"dane_clientid": USER, "n": 1})
        r = client.post(
            "/api",
            headers={"Client-Cert": b64(ids.alice), "Content-Type": "application/json"},
            content=body,
        )
        assert r.status_code == 200, r.text
        assert r.json()["identity"] == "alice@example.test" and r.json()["body"] == body
        for headers, code in (
            ({"Client-Cert": b64(ids.impostor)}, "not-authenticated"),
            ({"Client-Cert": b64(ids.outsider)}, "not-authenticated"),
            ({"Client-Cert": "%%"}, "bad-client-certificate"),
            ({"Client-Cert": b64(ids.two_names)}, "bad-client-name"),
            ({}, "no-client-certificate"),
        ):
            r = client.get("/api", headers=headers)
            assert r.status_code == 403 and r.json() == {"error": "forbidden", "code": code}
        r = client.get("/healthz", headers=spoof)
        assert r.json() == {"header": None}
        # WebSocket handshakes are authenticated the same way.
        from starlette.websockets import WebSocketDisconnect

        with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect("/ws"):
            pass
        assert info.value.code == 1008
        headers = {"Client-Cert": b64(ids.device)}
        with client.websocket_connect("/ws", headers=headers) as session:
            assert session.receive_text() == DEVICE
    with TestClient(app, client=("192.0.2.1", 5000)) as client:
        r = client.get("/api", headers={"Client-Cert": b64(ids.device)})
        assert r.status_code == 403 and r.json()["code"] == "no-client-certificate"
    assert http_auth.stats()["denied_cert-header-untrusted-source"] == 1
    assert "host.example.org" not in source.queries


# -- identity header variants (case, "_" for "-") ---------------------------------------------


def test_wsgi_strips_every_variant(ids: Identities) -> None:
    http_auth, _ = make_http_auth(ids)
    app = DanceWSGIMiddleware(_echo_app, http_auth=http_auth, settings=SETTINGS)
    try:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/api",
            "REMOTE_ADDR": PROXY,
            "wsgi.input": io.BytesIO(b""),
            "HTTP_CLIENT_CERT": b64(ids.device),
            "HTTP_X_DANCE_CLIENT_ID": "admin.example.test",  # X_DANCE_Client_ID merged in here
            "HTTP_X-DANCE-CLIENT-ID": "root",  # a server that keeps "-"
            "http_x_dance_user": "root",
        }
        status: list[str] = []
        doc = json.loads(b"".join(app(environ, lambda s, h, *a: status.append(s))))
        assert status[0].startswith("200") and doc["identity"] == doc["header"] == DEVICE
        assert doc["user"] is None
        assert [k for k in environ if k.upper().startswith("HTTP_X")] == ["HTTP_X_DANCE_CLIENT_ID"]
    finally:
        app.close()


def test_asgi_strips_every_variant_and_counts_cert_variants(ids: Identities) -> None:
    import asyncio

    from dance.http.asgi import DanceMiddleware

    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(list(scope["headers"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    http_auth, _ = make_http_auth(ids)
    middleware = DanceMiddleware(app, http_auth=http_auth, settings=SETTINGS)
    sent: list[dict[str, Any]] = []

    async def call(headers: list[tuple[bytes, bytes]]) -> int:
        sent.clear()

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "path": "/api", "client": (PROXY, 1), "headers": headers}
        await middleware(scope, receive, send)
        return int(sent[0]["status"])

    cert = b64(ids.device).encode()
    spoofs = [
        (b"x_dance_client_id", b"a"),
        (b"X-Dance-Client-Id", b"b"),
        (b"x-dance-client-id", b"c"),
        (b"x_dance_user", b"root"),
    ]
    assert asyncio.run(call([(b"client-cert", cert), *spoofs])) == 200
    ids_seen = [(k, v) for k, v in seen[0] if b"dance" in k.lower()]
    assert ids_seen == [(b"x-dance-client-id", DEVICE.encode())]
    # Client_Cert next to Client-Cert: two certificate headers, refused.
    assert asyncio.run(call([(b"client-cert", cert), (b"client_cert", cert)])) == 403
    assert http_auth.stats()["denied_cert-several-headers"] == 1
