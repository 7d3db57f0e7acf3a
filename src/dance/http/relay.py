"""`dance proxy --mode http`: relay HTTP/1.1 requests to a backend with the identity header.

`IdentityRelay` is sans I/O: client bytes in, backend bytes out. Requests are read by
`dance.http.h1.RequestReader` (h11 plus the strict checks h11 lacks) and written again from their
parsed form by an h11 client connection, so the backend sees only what the proxy understood:
canonical request line, one header field per line, ``Content-Length`` or ``chunked`` framing
re-encoded by h11. On every request (pipelined, HTTP/1.0 keep-alive, ...):

- every field whose name, lower-cased with ``_`` read as ``-``, is the identity header (or one of
  dance's identity headers ``X-DANCE-Client-ID`` / ``X-DANCE-User``) is removed and counted;
- exactly one identity header is added, with the authenticated identity.

A request that fails a check is not forwarded; `relay_http` answers it with a 400 and closes the
connection. When requests before it were forwarded, the 400 waits until the backend has been
silent for ``quiet_time`` (1 s; at most ``drain_timeout``), so their answers come first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Final, Protocol

import h11

from dance.http.core import IDENTITY_HEADERS, encode_header_value
from dance.http.h1 import (
    DEFAULT_MAX_HEAD,
    EndOfRequest,
    HttpError,
    RequestHead,
    RequestReader,
    normalize_name,
)

__all__ = ["IdentityRelay", "RelayStats", "relay_http"]

log = logging.getLogger("dance.http.relay")

_CHUNK: Final = 64 * 1024
HEAD_TIMEOUT: Final = 30.0  # a whole request head, counted from its first byte
IDLE_TIMEOUT: Final = 120.0  # between requests, and between reads of a body
DRAIN_TIMEOUT: Final = 10.0  # backend answers still awaited after the client stopped
QUIET_TIME: Final = 1.0  # after a refusal: backend silence before the 400 is sent


class RelayStats(Protocol):
    requests: int
    stripped_headers: int
    refused: dict[str, int]


def _bad_request(reason: str) -> bytes:
    body = f"bad request: {reason}\n".encode("ascii", "replace")
    return (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


class IdentityRelay:
    """One client connection's requests, rewritten for the backend (sans I/O)."""

    def __init__(
        self,
        header: str,
        identity: str,
        *,
        strip: Iterable[str] = IDENTITY_HEADERS,
        max_head: int = DEFAULT_MAX_HEAD,
    ) -> None:
        self.reader = RequestReader(max_head=max_head)
        self.header = header.encode("ascii")
        self.value = encode_header_value(identity).encode("ascii")
        self.strip = frozenset({normalize_name(header), *(normalize_name(h) for h in strip)})
        self.requests = 0
        self.stripped = 0
        self.forwarded = 0  # requests sent to the backend, in all
        self._client: h11.Connection | None = None
        self._version = b"1.1"

    @property
    def closed(self) -> bool:
        """No further request will be read (the last one asked to close)."""
        return self.reader.closed

    def feed(self, data: bytes) -> bytes:
        """Bytes for the backend. Raises `HttpError`, with ``forward``: the bytes of the
        requests before the refused one (nothing of the refused request's head)."""
        out: list[bytes] = []
        error: HttpError | None = None
        try:
            events = self.reader.feed(data)
        except HttpError as exc:
            events, error = exc.events, exc
        start: int | None = None  # where the request still open began in `out`
        try:
            for event in events:
                if isinstance(event, RequestHead):
                    start = len(out)
                    out.append(self._head(event))
                elif isinstance(event, EndOfRequest):
                    out.append(self._send(h11.EndOfMessage()))
                    self._client = None
                    start = None
                else:
                    out.append(self._send(h11.Data(data=bytes(event.data))))
        except HttpError as exc:
            self.reader.dead = True
            error = exc
        if error is not None:
            if start is not None:  # the refused request began in this feed: none of it is sent
                del out[start:]
                self.forwarded -= 1
            error.forward = b"".join(out)  # the requests before the refused one
            raise error
        return b"".join(out)

    def feed_eof(self) -> None:
        self.reader.feed_eof()

    def _send(self, event: h11.Event) -> bytes:
        assert self._client is not None
        data = self._client.send(event)
        return data or b""

    def _head(self, head: RequestHead) -> bytes:
        request = head.request
        headers: list[tuple[bytes, bytes]] = [(self.header, self.value)]
        stripped = 0
        has_host = False
        for raw, value in request.headers.raw_items():
            if normalize_name(raw) in self.strip:
                stripped += 1
                continue
            has_host = has_host or raw.lower() == b"host"
            headers.append((raw, value))
        if not has_host:
            # h11 writes HTTP/1.1 only, and an HTTP/1.1 request needs a Host; an HTTP/1.0 request
            # without one is refused rather than given a Host it did not send.
            raise HttpError("missing-host", "HTTP/1.0 request without Host")
        self.requests += 1
        self.forwarded += 1
        self.stripped += stripped
        self._client = h11.Connection(h11.CLIENT)
        event = h11.Request(method=request.method, target=request.target, headers=headers)
        data = self._send(event)
        if request.http_version == b"1.0":
            # h11 only writes HTTP/1.1 request lines: keep the client's version (the backend's
            # answer must stay HTTP/1.0-compatible, e.g. no chunked response, keep-alive rules).
            end = data.index(b" HTTP/1.1\r\n")
            data = data[:end] + b" HTTP/1.0\r\n" + data[end + 11 :]
        return data


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, last: list[float]
) -> None:
    loop = asyncio.get_running_loop()
    try:
        while data := await reader.read(_CHUNK):
            last[0] = loop.time()
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass


async def _quiet(down: asyncio.Future[None], last: list[float], quiet: float, limit: float) -> None:
    """Wait until ``down`` ends, or has been silent for ``quiet`` seconds, or ``limit``."""
    loop = asyncio.get_running_loop()
    start = last[0] = max(last[0], loop.time())
    while not down.done():
        now = loop.time()
        if now - last[0] >= quiet or now - start >= limit:
            return
        await asyncio.wait({down}, timeout=min(quiet - (now - last[0]), limit - (now - start)))


async def relay_http(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    backend_reader: asyncio.StreamReader,
    backend_writer: asyncio.StreamWriter,
    *,
    header: str,
    identity: str,
    stats: RelayStats,
    max_head: int = DEFAULT_MAX_HEAD,
    head_timeout: float = HEAD_TIMEOUT,
    idle_timeout: float = IDLE_TIMEOUT,
    drain_timeout: float = DRAIN_TIMEOUT,
    quiet_time: float = QUIET_TIME,
) -> None:
    """Relay one authenticated client connection to its backend connection, both ways.

    Ends when the backend closes, or when the client stops (end of stream, error, refusal,
    timeout) and the backend has answered (at most ``drain_timeout`` later). A refused request
    gets a 400 after the backend's answers to the requests before it."""
    relay = IdentityRelay(header, identity, max_head=max_head)
    loop = asyncio.get_running_loop()
    refused: list[HttpError] = []

    async def upstream() -> None:
        deadline: float | None = None
        try:
            while not relay.closed:
                reader = relay.reader
                if reader.in_head and reader.buffered:
                    if deadline is None:
                        deadline = loop.time() + head_timeout
                    timeout = deadline - loop.time()
                else:
                    deadline = None
                    timeout = idle_timeout
                try:
                    async with asyncio.timeout(max(timeout, 0.0)):
                        data = await client_reader.read(_CHUNK)
                except TimeoutError:
                    if deadline is not None:
                        raise HttpError("head-timeout", "head not complete in time") from None
                    log.info("http relay: client idle for %.0f s", idle_timeout)
                    return
                if not data:
                    relay.feed_eof()
                    return
                out = relay.feed(data)
                if relay.reader.in_head and not relay.reader.buffered:
                    deadline = None
                stats.requests += relay.requests
                stats.stripped_headers += relay.stripped
                relay.requests = relay.stripped = 0
                if out:
                    backend_writer.write(out)
                    await backend_writer.drain()
        except HttpError as exc:
            refused.append(exc)
            if exc.forward:
                with contextlib.suppress(OSError):
                    backend_writer.write(exc.forward)
                    await backend_writer.drain()
            stats.requests += relay.requests
            stats.stripped_headers += relay.stripped
            stats.refused[exc.reason] = stats.refused.get(exc.reason, 0) + 1
            log.info("http relay: refusing a request (%s): %s", exc.reason, exc)
        except (OSError, asyncio.IncompleteReadError):
            return
        finally:
            if not relay.closed and not refused:  # after "Connection: close" it closes itself
                with contextlib.suppress(OSError):
                    if backend_writer.can_write_eof():
                        backend_writer.write_eof()

    last = [0.0]
    down = asyncio.ensure_future(_pipe(backend_reader, client_writer, last))
    up = asyncio.ensure_future(upstream())
    try:
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        if down in done:
            up.cancel()  # the backend is gone: nothing more can be relayed
            with contextlib.suppress(asyncio.CancelledError):
                await up
        elif refused:
            # Answers to the requests before the refused one first (the backend is not sent an
            # end of stream: some servers drop requests in progress when they see one); the
            # 400 goes out once the backend has been silent for a moment.
            if relay.forwarded:
                await _quiet(down, last, quiet_time, drain_timeout)
        elif not relay.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(down), drain_timeout)
        else:
            await down  # "Connection: close": the backend answers, then closes
    finally:
        for task in (up, down):
            task.cancel()
    if refused:
        with contextlib.suppress(OSError):
            client_writer.write(_bad_request(refused[0].reason))
            await client_writer.drain()
