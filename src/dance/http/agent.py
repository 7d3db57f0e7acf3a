"""`dance agent`: an HTTP authorization service for nginx ``auth_request`` and HAProxy.

The front end terminates TLS (any client certificate, proof of possession only) and asks the
agent, per request, ``GET /auth`` with the certificate in a header (``Client-Cert`` by default:
nginx ``$ssl_client_escaped_cert``, RFC 9440 or HAProxy base64 DER) and optionally the claimed
ClientName (``X-DANCE-Client-Name``). The agent answers

- ``200`` with ``X-DANCE-Client-ID`` (the identity), ``X-DANCE-Client-Name`` and, for ``_user``
  identities, ``X-DANCE-User``; or
- ``403`` with ``X-DANCE-Error: <public code>``. Never anything else for bad input.

``GET /healthz`` answers 200, ``GET /stats`` the counters as JSON. Connections from addresses
outside ``trusted_proxies`` (loopback by default) get 403 ``untrusted-source`` for everything.

A small asyncio protocol (HTTP/1.1 keep-alive, no framework): cached decisions are answered
synchronously in ``data_received``; only a DNS lookup suspends the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from typing import Final

from dance.http.core import (
    BAD_CERTIFICATE,
    LOOPBACK,
    UNTRUSTED_SOURCE,
    Denied,
    HttpAuth,
    TrustedProxies,
    identity_headers,
)
from dance.identity import Identity

__all__ = ["Agent"]

log = logging.getLogger("dance.http.agent")

MAX_HEAD: Final = 64 * 1024
MAX_BODY: Final = 64 * 1024
IDLE_TIMEOUT: Final = 75.0
HEAD_TIMEOUT: Final = 10.0

_REASONS = {200: b"OK", 403: b"Forbidden", 404: b"Not Found"}


def _response(status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error"))]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in headers]
    lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Cache-Control: no-store")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Agent:
    """The authorization service; `serve()` starts it on the running loop."""

    def __init__(
        self,
        http_auth: HttpAuth,
        *,
        cert_header: str = "Client-Cert",
        chain_header: str = "Client-Cert-Chain",
        name_header: str = "X-DANCE-Client-Name",
        trusted_proxies: Iterable[str] = LOOPBACK,
        auth_path: str = "/auth",
    ) -> None:
        self.http_auth = http_auth
        self.cert_header = cert_header.lower()
        self.chain_header = chain_header.lower()
        self.name_header = name_header.lower()
        self.trusted = TrustedProxies(trusted_proxies)
        self.auth_path = auth_path
        self.connections: set[_Connection] = set()
        self.connections_total = 0
        self.server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def serve(self, host: str, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Connection(self), host, port)
        self._sweeper = asyncio.create_task(self._sweep())
        return self.server

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.close()
        if self.server is not None:
            await self.server.wait_closed()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for conn in list(self.connections):
                limit = HEAD_TIMEOUT if conn.buffer else IDLE_TIMEOUT
                if not conn.busy and now - conn.last > limit:
                    conn.close()

    # -- requests ------------------------------------------------------------------------------

    def answer(self, ident: Identity | Denied) -> bytes:
        if isinstance(ident, Identity):
            return _response(200, identity_headers(ident))
        return _response(403, [("X-DANCE-Error", ident.code)])

    def refuse(self, reason: str, code: str = BAD_CERTIFICATE) -> bytes:
        return self.answer(self.http_auth.refuse(code, reason))

    def other(self, method: str, path: str) -> bytes:
        if path == "/healthz":
            return _response(200, body=b"ok\n")
        if path == "/stats" and method == "GET":
            stats = self.http_auth.stats()
            stats["connections"] = len(self.connections)
            stats["connections_total"] = self.connections_total
            return _response(
                200, [("Content-Type", "application/json")], json.dumps(stats).encode()
            )
        return _response(404)


class _Connection(asyncio.Protocol):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False
        self.closing = False
        self.trusted = False
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.trusted = self.agent.trusted.trusts(peer[0] if peer else None)
        self.agent.connections.add(self)
        self.agent.connections_total += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.agent.connections.discard(self)
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.last = time.monotonic()
        self.buffer += data
        if not self.busy:
            try:
                self._process()
            except Exception:  # never a traceback to the peer; fail closed
                log.exception("agent: internal error")
                self._send(self.agent.refuse("internal-error", "not-authenticated"), close=True)

    def _send(self, payload: bytes, *, close: bool = False) -> None:
        if self.transport is None:
            return
        self.transport.write(payload)
        if close:
            self.closing = True
            self.buffer = b""
            self.transport.close()

    def _process(self) -> None:
        while self.buffer and not self.busy and not self.closing:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self._send(self.agent.refuse("request-too-large"), close=True)
                return
            if end > MAX_HEAD:
                self._send(self.agent.refuse("request-too-large"), close=True)
                return
            head = self.buffer[:end].decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                self._send(self.agent.refuse("bad-request"), close=True)
                return
            method, target, version = parts
            headers: dict[str, str] = {}
            duplicated: set[str] = set()
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep or not name or name != name.strip():
                    self._send(self.agent.refuse("bad-request"), close=True)
                    return
                key = name.lower()
                if key in headers:
                    duplicated.add(key)
                headers[key] = value.strip(" \t")
            if "transfer-encoding" in headers:
                self._send(self.agent.refuse("bad-request"), close=True)
                return
            length_text = headers.get("content-length", "0")
            if not length_text.isdigit() or int(length_text) > MAX_BODY:
                self._send(self.agent.refuse("bad-request"), close=True)
                return
            total = end + 4 + int(length_text)
            if len(self.buffer) < total:
                return  # wait for the body (discarded)
            self.buffer = self.buffer[total:]
            conn = headers.get("connection", "").lower()
            close = conn == "close" or (version == "HTTP/1.0" and conn != "keep-alive")
            self._request(method, target, headers, duplicated, close)

    def _request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        duplicated: set[str],
        close: bool,
    ) -> None:
        agent = self.agent
        if not self.trusted:
            self._send(agent.refuse("untrusted-source", UNTRUSTED_SOURCE), close=True)
            return
        path = target.split("?", 1)[0]
        if path != agent.auth_path:
            self._send(agent.other(method, path), close=close)
            return
        if duplicated & {agent.cert_header, agent.chain_header}:
            self._send(agent.refuse("cert-several-headers"), close=close)
            return
        if agent.name_header in duplicated:
            self._send(agent.refuse("name-several-headers", "bad-client-name"), close=close)
            return
        http_auth = agent.http_auth
        prepared = http_auth.prepare(
            headers.get(agent.cert_header),
            headers.get(agent.chain_header),
            headers.get(agent.name_header),
        )
        if isinstance(prepared, Denied):
            self._send(agent.answer(prepared), close=close)
            return
        result = http_auth.decide_cached(*prepared)
        if result is not None:
            self._send(agent.answer(result), close=close)
            return
        self.busy = True
        if self.transport is not None:
            self.transport.pause_reading()
        task = asyncio.ensure_future(http_auth.decide(*prepared))
        task.add_done_callback(lambda t: self._resume(t, close))

    def _resume(self, task: asyncio.Future[Identity | Denied], close: bool) -> None:
        self.busy = False
        self.last = time.monotonic()
        if task.cancelled():
            self.close()
            return
        exc = task.exception()
        if exc is not None:
            log.error("agent: authentication raised", exc_info=exc)
            self._send(self.agent.refuse("internal-error", "not-authenticated"), close=True)
            return
        self._send(self.agent.answer(task.result()), close=close)
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()
            self.data_received(b"")
