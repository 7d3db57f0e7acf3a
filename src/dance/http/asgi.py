"""ASGI middleware (Starlette, FastAPI, any ASGI app): architecture Example 2.

    app.add_middleware(DanceMiddleware, http_auth=HttpAuth(authenticator),
                       settings=RequestSettings(trusted_proxies=TrustedProxies(["10.0.0.5"])))

For every HTTP request (and WebSocket handshake):

1. incoming ``X-DANCE-Client-ID`` / ``X-DANCE-User`` headers are removed, always, in any case
   and with ``_`` for ``-`` (``X_Dance_Client_ID``);
2. the certificate header counts only when the peer is a trusted proxy; otherwise 403;
3. the claimed ClientName comes from the ``X-DANCE-Client-Name`` header, else from the JSON body
   field ``dane_clientid`` (the body is buffered, capped and replayed to the application), else
   from the certificate's only SAN dNSName;
4. the `HttpAuth` decides (through the Authenticator); a refusal is a 403 with
   ``{"error": "forbidden", "code": <public code>}`` and nothing more;
5. on success the application sees the `Identity` in ``scope["dance.identity"]`` (Starlette:
   ``request.state.dance_identity``) and in fresh ``X-DANCE-Client-ID`` / ``X-DANCE-User``
   headers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from dance.http.core import (
    IDENTITY_HEADERS,
    Denied,
    HttpAuth,
    RequestSettings,
    forbidden_body,
    identity_headers,
    name_from_json_body,
)
from dance.http.h1 import normalize_name
from dance.identity import Identity

__all__ = ["DanceMiddleware", "Scope", "authenticate_scope"]

log = logging.getLogger("dance.http.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_STRIP = frozenset(normalize_name(h) for h in IDENTITY_HEADERS)


def _header_getter(headers: Iterable[tuple[bytes, bytes]]) -> Callable[[str], list[str]]:
    """Values by header name, names compared lower-cased with ``_`` read as ``-``: a
    ``Client_Cert`` next to a ``Client-Cert`` counts as a second certificate header."""
    table: dict[str, list[str]] = {}
    for key, value in headers:
        table.setdefault(normalize_name(key), []).append(value.decode("latin-1"))
    return lambda name: table.get(normalize_name(name), [])


async def _read_body(receive: Receive, limit: int) -> tuple[list[Message], bytes] | None:
    """Buffer the request body (at most ``limit`` bytes); None when larger."""
    messages: list[Message] = []
    body = b""
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, body
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return messages, body


async def authenticate_scope(
    http_auth: HttpAuth, settings: RequestSettings, scope: Scope, receive: Receive
) -> tuple[Identity | Denied, Receive]:
    """Decide an ASGI request; returns the result and a ``receive`` that replays the body."""
    client = scope.get("client")
    peer = str(client[0]) if client else None
    get = _header_getter(scope.get("headers", ()))
    inputs = settings.inputs(http_auth, peer, get)
    if isinstance(inputs, Denied):
        return inputs, receive
    cert, chain, claimed = inputs
    if claimed is None and settings.name_field and scope["type"] == "http":
        content_type = (get("content-type") or [""])[0].split(";", 1)[0].strip().lower()
        if content_type == "application/json" or content_type.endswith("+json"):
            read = await _read_body(receive, settings.max_body)
            if read is None:
                return http_auth.refuse("bad-request", "body-too-large"), receive
            messages, body = read
            claimed = name_from_json_body(body, settings.name_field)
            receive = _replay(messages, receive)
    return await http_auth.authenticate(cert, chain, claimed), receive


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


class DanceMiddleware:
    """Authenticate every request (except ``exempt_paths``) before the application sees it."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        http_auth: HttpAuth,
        settings: RequestSettings | None = None,
        exempt_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.http_auth = http_auth
        self.settings = settings or RequestSettings()
        self.exempt = frozenset(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        scope["headers"] = [
            (k, v) for k, v in scope.get("headers", ()) if normalize_name(k) not in _STRIP
        ]
        if scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        try:
            result, receive = await authenticate_scope(
                self.http_auth, self.settings, scope, receive
            )
        except Exception:  # fail closed, never a traceback
            log.exception("dance middleware: internal error")
            result = self.http_auth.deny("not-authenticated", "internal-error")
        if isinstance(result, Denied):
            await _forbid(scope, send, result)
            return
        scope["headers"] = scope["headers"] + [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in identity_headers(result)
        ]
        scope["dance.identity"] = result
        state = dict(scope.get("state") or {})  # never write into a shared (lifespan) dict
        state["dance_identity"] = result
        scope["state"] = state
        await self.app(scope, receive, send)


async def _forbid(scope: Scope, send: Send, denied: Denied) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": denied.code})
        return
    body = forbidden_body(denied.code)
    await send(
        {
            "type": "http.response.start",
            "status": denied.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
