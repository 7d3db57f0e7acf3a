"""``--metrics HOST:PORT``: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz`` on one port.

Served by the standard library's HTTP server (its own request parser) in a thread beside the
service's event loop, so a scrape never waits for the loop and the loop never waits for a scrape.
``/healthz`` answers 200 while the process runs. ``/readyz`` answers 200 when the service's
readiness check passes (trust anchors loaded, the DNS server answering) and 503 with the reason
otherwise. The listener binds loopback unless told otherwise; it takes GET and HEAD only, and
small requests (the stdlib server bounds the request line and headers).
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import logging
import threading
from collections.abc import Callable

from dance.service.observe import Observer

__all__ = ["MetricsEndpoint", "Readiness"]

log = logging.getLogger("dance.service")

Readiness = Callable[[], tuple[bool, str]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 10  # seconds for a slow client (socket timeout in the handler thread)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics" and self.server.observer.metrics is not None:
            body = self.server.observer.metrics.exposition()
            self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/healthz":
            self._send(200, b"alive\n", "text/plain")
        elif path == "/readyz":
            try:
                ok, why = self.server.readiness()
            except Exception as exc:  # a failing check means not ready, never a crash
                ok, why = False, f"readiness check failed: {type(exc).__name__}"
            self._send(200 if ok else 503, (why + "\n").encode(), "text/plain")
        else:
            self._send(404, b"not found\n", "text/plain")

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics endpoint: " + format, *args)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    observer: Observer
    readiness: Readiness


class MetricsEndpoint:
    """The metrics/health listener of one service; ``start()`` and ``close()``."""

    def __init__(
        self,
        host: str,
        port: int,
        observer: Observer,
        readiness: Readiness = lambda: (True, "ready"),
        *,
        allow_public: bool = False,
    ) -> None:
        if not allow_public and not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"--metrics {host}: not a loopback address (bind it deliberately)")
        self._server = _Server((host, port), _Handler, bind_and_activate=True)
        self._server.observer = observer
        self._server.readiness = readiness
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dance-metrics", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", *self.address)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._server.shutdown()
        self._server.server_close()


def dns_readiness(
    server: tuple[str, int], zone: str, *, timeout: float = 1.0, every: float = 5.0
) -> Readiness:
    """Ready when the DNS server answers a query for ``zone`` (any answer: it is reachable).

    The probe runs at most every ``every`` seconds; the trust anchors were loaded before the
    service started (a bad anchor file never gets this far).
    """
    import time

    import dns.message
    import dns.query

    state: dict[str, object] = {"at": -1e9, "ok": False, "why": "not probed yet"}
    lock = threading.Lock()

    def check() -> tuple[bool, str]:
        with lock:
            now = time.monotonic()
            if now - float(state["at"]) >= every:  # type: ignore[arg-type]
                query = dns.message.make_query(zone, "SOA")
                try:
                    dns.query.udp(query, server[0], port=server[1], timeout=timeout)
                    state.update(ok=True, why=f"ready: DNS {server[0]}:{server[1]} answers")
                except Exception as exc:
                    why = f"DNS {server[0]}:{server[1]} does not answer ({type(exc).__name__})"
                    state.update(ok=False, why=why)
                state["at"] = now
            return bool(state["ok"]), str(state["why"])

    return check
