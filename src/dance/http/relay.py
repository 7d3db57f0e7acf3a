"""`dance proxy --mode http`: relay HTTP/1.1 requests to a backend with the identity header.

`IdentityRelay` is sans I/O: client bytes in, backend bytes out. Requests are read by
`dance.http.h1.RequestReader` (llhttp and h11 behind the strict checks they lack) and written
again from their parsed form, so the backend sees only what the proxy understood: the request
line from the parsed method, target and version; one ``Name: value`` field per line (CRLF, one
space, the value without surrounding whitespace); ``Content-Length`` in digits with exactly that
many body bytes, or ``Transfer-Encoding: chunked`` with every chunk re-encoded (size in hex, no
extension, no trailer). On every request (pipelined, HTTP/1.0 keep-alive, ...):

- every field whose name, lower-cased with ``_`` read as ``-``, is the identity header (or one of
  dance's identity headers ``X-DANCE-Client-ID`` / ``X-DANCE-User``) is removed and counted;
- exactly one identity header is added, with the authenticated identity.

A request that fails a check is not forwarded; `relay_http` answers it with a 400 and closes the
connection. When requests before it were forwarded, the 400 waits until the backend has been
silent for ``quiet_time`` (1 s; at most ``drain_timeout``), so their answers come first.

Both copies run in the transports' callbacks (`_Upstream` on the client transport feeds the
relay, `_Downstream` on the backend transport writes to the client), each standing in for the
stream protocol it replaced and handing it write flow control and the connection's end; a task
only waits for the end, so the read timeouts cancel it as a reading task would be cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol, cast

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

_TOKEN: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_VALUE: Final = re.compile(rb"[\x21-\x7e]+")  # encode_header_value's output: visible ASCII


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
        if not _TOKEN.fullmatch(self.header) or not _VALUE.fullmatch(self.value):
            raise ValueError(f"not a header field: {header!r}: {self.value!r}")
        self.strip = frozenset({normalize_name(header), *(normalize_name(h) for h in strip)})
        self._strip = frozenset(name.encode("latin-1") for name in self.strip)
        self._strip_lengths = frozenset(len(name) for name in self._strip)
        self._strip_re = _strip_pattern(self._strip)
        self._ours = b"%s: %s" % (self.header, self.value)
        self._after_request_line = b"\r\n%s\r\n" % self._ours
        self.requests = 0
        self.stripped = 0
        self.forwarded = 0  # requests sent to the backend, in all
        self._chunked = False  # the request being relayed has a chunked body

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
                    head = self._head(event)
                    start = len(out)
                    out.append(head)
                elif isinstance(event, EndOfRequest):
                    if self._chunked:
                        out.append(b"0\r\n\r\n")
                    start = None
                elif self._chunked:  # re-encoded: size in hex, data, CRLF (never an empty chunk)
                    if event.data:
                        out += (b"%x\r\n" % len(event.data), bytes(event.data), b"\r\n")
                else:  # Content-Length: exactly the counted bytes
                    out.append(bytes(event.data))
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

    def _head(self, head: RequestHead) -> bytes:
        """The request head for the backend (`_copy` when the head is canonical, else
        `_rewrite`: the same bytes either way, tested)."""
        request = head.request
        if request.http_version != b"1.1" and not any(
            n.lower() == b"host" for n, _ in request.headers
        ):
            # HTTP/1.0 without Host: refused rather than given a Host it did not send (the
            # reader refuses HTTP/1.1 without Host).
            raise HttpError("missing-host", "HTTP/1.0 request without Host")
        data, stripped = self._copy(head) if head.canonical else self._rewrite(head)
        self.requests += 1
        self.forwarded += 1
        self.stripped += stripped
        self._chunked = head.chunked
        return data

    def _rewrite(self, head: RequestHead) -> tuple[bytes, int]:
        """Written from the parsed form: request line, our identity field, the client's fields
        but the identity ones (``Name: value``, OWS removed), Content-Length in digits."""
        request = head.request
        out = [request.method, b" ", request.target, b" HTTP/", request.http_version, b"\r\n"]
        out += (self._ours, b"\r\n")
        strip, lengths = self._strip, self._strip_lengths
        stripped = 0
        length = b"%d" % head.length if head.length else b""
        for name, value in request.headers:
            if len(name) in lengths and name.lower().replace(b"_", b"-") in strip:
                stripped += 1
                continue
            if length and name.lower() == b"content-length":
                out += (name, b": ", length, b"\r\n")
            else:
                out += (name, b": ", value, b"\r\n")
        out.append(b"\r\n")
        return b"".join(out), stripped

    def _copy(self, head: RequestHead) -> tuple[bytes, int]:
        """A canonical head is what `_rewrite` writes, less the identity fields and plus ours:
        remove those lines, insert ours after the request line."""
        kept, stripped = self._strip_re.subn(b"", head.request.raw)
        return kept.replace(b"\r\n", self._after_request_line, 1), stripped


@functools.lru_cache(maxsize=32)
def _strip_pattern(names: frozenset[bytes]) -> re.Pattern[bytes]:
    """``CRLF name ":" value`` for a field line (of a head in the grammar) whose name, lower-cased
    with ``_`` read as ``-``, is one of ``names`` (lower case, with ``-``)."""
    alternatives = (
        b"".join(b"[-_]" if c == 0x2D else re.escape(bytes([c])) for c in name)
        for name in sorted(names)
    )
    return re.compile(rb"\r\n(?i:%s):[^\r]*" % b"|".join(alternatives))


class _ReadClock:
    """The client read timeouts of `relay_http` with one timer per connection, not one per read
    (a read only records when it started): ``idle`` seconds for each read, and ``head`` seconds
    for a whole request head from the read that brought its first bytes. When one expires
    during a read, the reading task is cancelled with ``expired`` set."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[None], idle: float, head: float
    ) -> None:
        self.loop = loop
        self.task = task
        self.idle = idle
        self.head = head
        self.last = loop.time()  # when the current (or last) read started
        self.reading = False
        self.head_deadline: float | None = None
        self.expired: str | None = None
        self._handle = loop.call_at(self.last + idle, self._check)

    def start_head(self) -> None:
        self.head_deadline = deadline = self.loop.time() + self.head
        if deadline < self._handle.when():
            self._handle.cancel()
            self._handle = self.loop.call_at(deadline, self._check)

    def stop(self) -> None:
        self._handle.cancel()

    def _check(self) -> None:
        now = self.loop.time()
        deadline = self.head_deadline
        if self.reading:
            if deadline is not None and now >= deadline:
                self.expired = "head-timeout"
            elif now - self.last >= self.idle:
                self.expired = "idle-timeout"
            if self.expired is not None:
                self.task.cancel()
                return
        when = (self.last if self.reading else now) + self.idle
        if deadline is not None:
            when = min(when, deadline)
        self._handle = self.loop.call_at(when, self._check)


class _Downstream(asyncio.Protocol):
    """The backend's bytes written to the client from the backend transport's callbacks, with
    no task in between (one fewer wake-up per answer). It takes the place of the backend
    stream's protocol, to which it hands on what the stream needs: write flow control (the
    upstream copy drains the backend writer) and the connection's end (the writer's
    ``wait_closed``). Reading pauses while the client's write buffer is over ``_CHUNK``.
    ``done`` ends at the backend's end of stream or loss; ``last`` is when it last sent bytes."""

    def __init__(
        self,
        stream: asyncio.BaseProtocol,
        backend: asyncio.Transport,
        client_writer: asyncio.StreamWriter,
        loop: asyncio.AbstractEventLoop,
        activity: Callable[[], None] | None = None,
    ) -> None:
        self.stream = stream
        self.backend = backend
        self.activity = activity
        self.client_writer = client_writer
        self.client = client_writer.transport
        self.loop = loop
        self.done: asyncio.Future[None] = loop.create_future()
        self.last = 0.0
        self.stopped = False
        self._draining: asyncio.Task[None] | None = None

    def last_bytes(self) -> float:
        return self.last

    def stop(self) -> None:
        self.stopped = True
        self._end()
        if self._draining is not None:
            self._draining.cancel()

    def data_received(self, data: bytes) -> None:
        self.last = self.loop.time()
        client = self.client
        if self.stopped or client.is_closing():
            self._end()
            return
        client.write(data)
        if self.activity is not None:
            self.activity()
        if client.get_write_buffer_size() > _CHUNK and self._draining is None:
            self.backend.pause_reading()
            self._draining = self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            await self.client_writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            self._end()
            return
        finally:
            self._draining = None
        if not self.done.done():
            self.backend.resume_reading()

    def eof_received(self) -> bool:
        self._end()
        return True  # half-closed: requests may still be written (as the stream protocol does)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        if self._draining is not None:
            self._draining.cancel()
        self.stream.connection_lost(exc)

    def pause_writing(self) -> None:
        self.stream.pause_writing()

    def resume_writing(self) -> None:
        self.stream.resume_writing()

    def _end(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _Upstream(asyncio.Protocol):
    """The client's bytes fed to the relay from the client transport's callbacks, with no
    task in between (one fewer wake-up per request). It takes the place of the client
    stream's protocol, to which it hands on write flow control and the connection's end.
    ``done`` ends with None (end of stream, ``Connection: close``, connection lost) or the
    `HttpError` that refused a request; the read timeouts stay with the task that awaits it
    (`_ReadClock`). Reading pauses while the backend's write buffer is over ``_CHUNK``."""

    def __init__(
        self,
        stream: asyncio.BaseProtocol,
        client: asyncio.Transport,
        relay: IdentityRelay,
        backend_writer: asyncio.StreamWriter,
        stats: RelayStats,
        clock: _ReadClock,
        loop: asyncio.AbstractEventLoop,
        activity: Callable[[], None] | None = None,
    ) -> None:
        self.stream = stream
        self.activity = activity
        self.client = client
        self.relay = relay
        self.backend_writer = backend_writer
        self.backend = backend_writer.transport
        self.stats = stats
        self.clock = clock
        self.loop = loop
        self.done: asyncio.Future[HttpError | None] = loop.create_future()
        # the client's connection is lost (or closing): no answer can reach it any more
        self.lost: asyncio.Future[None] = loop.create_future()
        self._draining: asyncio.Task[None] | None = None

    def data_received(self, data: bytes) -> None:
        done = self.done
        if done.done():
            return
        clock, relay = self.clock, self.relay
        clock.last = self.loop.time()
        if self.activity is not None:
            self.activity()
        try:
            out = relay.feed(data)
        except HttpError as exc:
            self._end(exc)
            return
        except Exception as exc:  # not expected: ends the relay (the awaiting task raises it)
            self.client.pause_reading()
            done.set_exception(exc)
            return
        if relay.reader.partial_head:
            if clock.head_deadline is None:  # the first bytes of a head: its deadline
                clock.start_head()
        elif clock.head_deadline is not None:
            clock.head_deadline = None
        if relay.requests:
            stats = self.stats
            stats.requests += relay.requests
            stats.stripped_headers += relay.stripped
            relay.requests = relay.stripped = 0
        if out:
            self.backend_writer.write(out)
            if self.backend.get_write_buffer_size() > _CHUNK and self._draining is None:
                # Flow control: no more reading (nor idle timeout) until the backend takes it.
                self.client.pause_reading()
                clock.reading = False
                self._draining = self.loop.create_task(self._drain())
        if relay.closed:  # "Connection: close": no further request
            self._end(None)

    async def _drain(self) -> None:
        try:
            await self.backend_writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            self._end(None)
            return
        finally:
            self._draining = None
        if not self.done.done():
            self.clock.last = self.loop.time()
            self.clock.reading = True
            self.client.resume_reading()

    def eof_received(self) -> bool | None:
        self._eof()
        return self.stream.eof_received()  # type: ignore[attr-defined,no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self._eof()  # as a stream read would end: an unfinished request is refused
        else:
            self._end(None)  # a reset: nothing more to do (as a read raising OSError)
        if not self.lost.done():
            self.lost.set_result(None)
        if self._draining is not None:
            self._draining.cancel()
        self.stream.connection_lost(exc)

    def pause_writing(self) -> None:
        self.stream.pause_writing()

    def resume_writing(self) -> None:
        self.stream.resume_writing()

    def stop(self) -> None:
        """The relay is over: no more reading, no flow-control task left behind."""
        self._end(None)
        if self._draining is not None:
            self._draining.cancel()

    def _eof(self) -> None:
        if not self.done.done():
            try:
                self.relay.feed_eof()
            except HttpError as exc:
                self._end(exc)
            else:
                self._end(None)

    def _end(self, error: HttpError | None) -> None:
        if not self.done.done():
            with contextlib.suppress(RuntimeError):
                self.client.pause_reading()  # bytes after the end stay unread, as before
            self.done.set_result(error)


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


async def _quiet(
    down: asyncio.Future[None], last: Callable[[], float], quiet: float, limit: float
) -> None:
    """Wait until ``down`` ends, or has been silent for ``quiet`` seconds (since ``last()``, the
    time of its last bytes, or since now), or ``limit``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not down.done():
        now = loop.time()
        since = max(last(), start)
        if now - since >= quiet or now - start >= limit:
            return
        await asyncio.wait({down}, timeout=min(quiet - (now - since), limit - (now - start)))


async def _answers(
    down: asyncio.Future[None],
    client_writer: asyncio.StreamWriter,
    feeding: list[_Upstream],
    timeout: float | None,
) -> None:
    """Wait for the backend's end (its answers relayed meanwhile) for ``timeout`` seconds at
    most (None: no limit), unless the client's connection is closing or lost: then there is
    no one to answer (a TLS client that sent close_notify is closed by asyncio's TLS transport
    at once; a reset or the idle timeout's abort), and the backend is not waited for."""
    if client_writer.transport.is_closing():
        return
    waits: set[asyncio.Future[Any]] = {down}
    if feeding:
        waits.add(feeding[0].lost)
    await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)


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
    feeding: list[_Upstream] = []  # the client transport's protocol, once switched
    # Bytes copied from transport callbacks bypass the client's stream: tell its protocol (the
    # idle timeout of dance.tls.serve counts them), if it asks to be told.
    activity: Callable[[], None] | None = getattr(
        client_writer.transport.get_protocol(), "note_activity", None
    )

    async def upstream() -> None:
        task = asyncio.current_task()
        assert task is not None
        clock = _ReadClock(loop, task, idle_timeout, head_timeout)
        reader = relay.reader
        backend = backend_writer.transport
        client = cast(asyncio.Transport, client_writer.transport)  # (uvloop: no subclass)
        try:
            if hasattr(client, "set_protocol") and not (
                client.is_closing() or client_reader.at_eof() or client_reader.exception()
            ):
                # Client -> backend from the transport's callbacks; this task only waits (and
                # is cancelled by the clock). What the stream read before the switch first.
                proto = _Upstream(
                    client.get_protocol(), client, relay, backend_writer, stats, clock, loop,
                    activity,
                )  # fmt: skip
                feeding.append(proto)
                client.set_protocol(proto)
                client_reader.feed_eof()
                early = await client_reader.read()
                clock.reading = True
                if early:
                    proto.data_received(early)
                try:
                    error = await proto.done
                except asyncio.CancelledError:
                    if clock.expired is None or task.uncancel() > 0:
                        raise  # not (only) ours: the relay is being stopped
                    if clock.expired == "head-timeout":
                        raise HttpError("head-timeout", "head not complete in time") from None
                    log.info("http relay: client idle for %.0f s", idle_timeout)
                    return
                finally:
                    clock.reading = False
                if error is not None:
                    raise error
                return
            while not reader.closed:  # (a transport without set_protocol: a reading loop)
                clock.last = loop.time()
                clock.reading = True
                try:
                    data = await client_reader.read(_CHUNK)
                except asyncio.CancelledError:
                    if clock.expired is None or task.uncancel() > 0:
                        raise  # not (only) ours: the relay is being stopped
                    if clock.expired == "head-timeout":
                        raise HttpError("head-timeout", "head not complete in time") from None
                    log.info("http relay: client idle for %.0f s", idle_timeout)
                    return
                finally:
                    clock.reading = False
                if not data:
                    relay.feed_eof()
                    return
                out = relay.feed(data)
                if reader.partial_head:
                    if clock.head_deadline is None:  # the first bytes of a head: its deadline
                        clock.start_head()
                elif clock.head_deadline is not None:
                    clock.head_deadline = None
                if relay.requests:
                    stats.requests += relay.requests
                    stats.stripped_headers += relay.stripped
                    relay.requests = relay.stripped = 0
                if out:
                    backend_writer.write(out)
                    if backend.get_write_buffer_size():
                        # Flow control: wait while the backend is not reading (with nothing
                        # buffered, drain would return at once; a lost backend ends `down`).
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
            clock.stop()
            if not relay.closed and not refused:  # after "Connection: close" it closes itself
                with contextlib.suppress(OSError):
                    if backend_writer.can_write_eof():
                        backend_writer.write_eof()

    protocol: _Downstream | None = None
    # (a cast: uvloop's transports are not asyncio.Transport subclasses, same methods)
    backend = cast(asyncio.Transport, backend_writer.transport)
    if hasattr(backend, "pause_reading") and not (
        backend.is_closing() or backend_reader.at_eof() or backend_reader.exception()
    ):
        # Backend -> client from the transport's callbacks. What the stream read before the
        # switch goes first (its end is fed: read() returns it without waiting).
        proto = protocol = _Downstream(
            backend.get_protocol(), backend, client_writer, loop, activity
        )
        backend.set_protocol(proto)
        backend_reader.feed_eof()
        early = await backend_reader.read()
        if early:
            proto.data_received(early)
        down: asyncio.Future[None] = proto.done
        last: Callable[[], float] = proto.last_bytes
    else:  # already closed, or not a plain transport: a copying task
        times = [0.0]
        down = asyncio.ensure_future(_pipe(backend_reader, client_writer, times))
        last = functools.partial(times.__getitem__, 0)
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
            await _answers(down, client_writer, feeding, drain_timeout)
        else:  # "Connection: close": the backend answers, then closes
            await _answers(down, client_writer, feeding, None)
    finally:
        for task in (up, down):
            task.cancel()
        if protocol is not None:
            protocol.stop()  # nothing more for the client once the relay is over
        for feeder in feeding:
            feeder.stop()
    if refused:
        with contextlib.suppress(OSError):
            client_writer.write(_bad_request(refused[0].reason))
            await client_writer.drain()
