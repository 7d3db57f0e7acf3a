"""WSGI middleware (Flask, Django, any WSGI app): architecture Example 2.

    app.wsgi_app = DanceWSGIMiddleware(app.wsgi_app, http_auth=HttpAuth(authenticator),
                                       settings=RequestSettings(...))

Same rules as the ASGI middleware: identity headers stripped (any ``HTTP_`` key that names one
in any case, with ``-`` or ``_``), certificate headers trusted only
from ``REMOTE_ADDR`` in the trusted proxies, claimed name from ``X-DANCE-Client-Name`` or the
JSON body field (buffered, capped, handed back to the application as ``wsgi.input``), 403 with
``{"error": "forbidden", "code": ...}`` on failure. The identity is ``environ["dance.identity"]``
(Flask: ``request.environ["dance.identity"]``) and ``HTTP_X_DANCE_CLIENT_ID``.

The Authenticator is asynchronous and bound to one event loop: the middleware runs that loop in
a daemon thread of its own and submits each decision to it (WSGI worker threads only wait).
Create the Authenticator (and its resolver) for this middleware alone.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Callable, Iterable
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
from dance.identity import Identity

__all__ = ["DanceWSGIMiddleware", "current_identity"]

log = logging.getLogger("dance.http.wsgi")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_STRIP = frozenset("HTTP_" + h.upper().replace("-", "_") for h in IDENTITY_HEADERS)


def _environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


def _strip_identity(environ: Environ) -> None:
    """Remove every identity header, whatever the server made of its case, ``-`` or ``_``."""
    for key in [k for k in environ if k[:5].upper() == "HTTP_"]:
        if _environ_key(key[5:]) in _STRIP:
            del environ[key]


def current_identity(environ: Environ) -> Identity | None:
    value = environ.get("dance.identity")
    return value if isinstance(value, Identity) else None


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="dance-wsgi-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class DanceWSGIMiddleware:
    def __init__(
        self,
        app: WSGIApp,
        *,
        http_auth: HttpAuth,
        settings: RequestSettings | None = None,
        exempt_paths: Iterable[str] = (),
        timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.http_auth = http_auth
        self.settings = settings or RequestSettings()
        self.exempt = frozenset(exempt_paths)
        self.timeout = timeout
        self._loop = _LoopThread()

    def close(self) -> None:
        self._loop.stop()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        _strip_identity(environ)
        if environ.get("PATH_INFO") in self.exempt:
            return self.app(environ, start_response)
        try:
            result = self._authenticate(environ)
        except Exception:  # fail closed, never a traceback
            log.exception("dance WSGI middleware: internal error")
            result = self.http_auth.deny("not-authenticated", "internal-error")
        if isinstance(result, Denied):
            body = forbidden_body(result.code)
            start_response(
                "403 Forbidden",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    ("Cache-Control", "no-store"),
                ],
            )
            return [body]
        environ["dance.identity"] = result
        for name, value in identity_headers(result):
            environ[_environ_key(name)] = value
        return self.app(environ, start_response)

    def _authenticate(self, environ: Environ) -> Identity | Denied:
        settings = self.settings
        http_auth = self.http_auth

        def get(name: str) -> list[str]:
            value = environ.get(_environ_key(name))
            # WSGI servers join repeated headers with "," (or keep the last one); a certificate
            # header never contains a comma except an RFC 9440 list, refused by the parser.
            return [value] if isinstance(value, str) else []

        inputs = settings.inputs(http_auth, environ.get("REMOTE_ADDR"), get)
        if isinstance(inputs, Denied):
            return inputs
        cert, chain, claimed = inputs
        if claimed is None and settings.name_field:
            content_type = str(environ.get("CONTENT_TYPE", "")).split(";", 1)[0].strip().lower()
            if content_type == "application/json":
                length_text = str(environ.get("CONTENT_LENGTH") or "0")
                if not length_text.isdigit() or int(length_text) > settings.max_body:
                    return http_auth.refuse("bad-request", "body-too-large")
                body = environ["wsgi.input"].read(int(length_text)) if int(length_text) else b""
                environ["wsgi.input"] = io.BytesIO(body)
                claimed = name_from_json_body(body, settings.name_field)
        future = asyncio.run_coroutine_threadsafe(
            http_auth.authenticate(cert, chain, claimed), self._loop.loop
        )
        try:
            return future.result(self.timeout)
        except TimeoutError:
            future.cancel()
            return http_auth.deny("not-authenticated", "timeout")
