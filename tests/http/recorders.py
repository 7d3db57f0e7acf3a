"""Backends that record the identity headers of every request their parser reads.

Each recorder appends one `Seen` per request it parses (path + every header whose name, lower-cased
with ``_`` read as ``-``, is an identity header), so a test can assert that a backend never saw a
request with an identity other than the authenticated one, nor zero or two identity headers.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dance.http.h1 import normalize_name
from tests.http.frontends import Proc, start_nginx
from tests.integration.servers import free_port

IDENTITY = ("x-dance-client-id", "x-dance-user")


@dataclass(frozen=True)
class Seen:
    path: str
    identities: tuple[tuple[str, str], ...]  # (normalized name, value)

    def client_ids(self) -> list[str]:
        return [v for n, v in self.identities if n == "x-dance-client-id"]

    def users(self) -> list[str]:
        return [v for n, v in self.identities if n == "x-dance-user"]


@dataclass
class Recorder:
    name: str
    port: int
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, path: str, headers: list[tuple[str, str]]) -> None:
        ids = tuple((normalize_name(n), v) for n, v in headers if normalize_name(n) in IDENTITY)
        with self.lock:
            self.seen.append(Seen(path, ids))

    def take(self) -> list[Seen]:
        with self.lock:
            out, self.seen = self.seen, []
        return out


def _handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            recorder.record(self.path, list(self.headers.items()))
            length = self.headers.get("Content-Length")
            if length and length.isdigit():
                self.rfile.read(int(length))
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def http_server_recorder() -> Iterator[Recorder]:
    """Python's http.server (email-style header parsing)."""
    recorder = Recorder("http.server", 0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder))
    server.daemon_threads = True
    recorder.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


Scope = dict[str, Any]


def asgi_app(recorder: Recorder) -> Callable[..., Awaitable[None]]:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        recorder.record(scope["path"], headers)
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False) and message["type"] == "http.request"
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]}
        )
        await send({"type": "http.response.body", "body": b"ok\n"})

    return app


@contextlib.contextmanager
def uvicorn_recorder(http: str) -> Iterator[Recorder]:
    """uvicorn with its h11 or httptools parser."""
    import uvicorn

    recorder = Recorder(f"uvicorn-{http}", free_port())
    config = uvicorn.Config(
        asgi_app(recorder),
        host="127.0.0.1",
        port=recorder.port,
        http=http,  # type: ignore[arg-type]
        lifespan="off",
        log_level="critical",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield recorder
    finally:
        server.should_exit = True
        thread.join(10)


def nginx_backend_conf(workdir: Path, port: int, upstream: int) -> str:
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {workdir}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 256; }}
http {{
{temp}
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_recorder(workdir: Path) -> Iterator[Recorder]:
    """nginx as the backend's parser (it forwards what it parsed to a recorder behind it)."""
    with http_server_recorder() as inner:
        port = free_port()
        proc: Proc = start_nginx(workdir, nginx_backend_conf(workdir, port, inner.port), port)
        try:
            outer = Recorder("nginx", port)
            outer.seen = inner.seen
            outer.lock = inner.lock
            # One list shared with the inner recorder: what nginx forwarded is what it parsed.
            outer.take = inner.take  # type: ignore[method-assign]
            yield outer
        finally:
            proc.stop()
