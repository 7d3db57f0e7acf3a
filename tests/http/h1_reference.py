"""The h11-based strict reader dance used before llhttp (a copy of dance.http.h1 as of commit
2604146), kept as the oracle of tests/http/test_h1_reference.py: the new reader must refuse
everything it refused, with the same reason, and read the same requests from everything else.

Strict HTTP/1.1 request reading, sans I/O: bytes in, h11 events out.

h11 parses (request line, header fields, Content-Length and chunked bodies); this module adds the
checks where h11 is lenient, and decides where each request head starts, so that h11 only ever
sees heads that passed them:

- a head ends at the first CRLF CRLF and is at most ``max_head`` bytes (``head-too-large``);
- in the head, a CR not followed by LF or an LF not preceded by CR (h11 reads a bare LF as a
  line end), a NUL or any other control character but HTAB, and obsolete line folding (h11
  unfolds it) are refused (``bare-cr``, ``bare-lf``, ``control-character``, ``obs-fold``);
- more than one Content-Length field, or a list value (h11 merges equal copies) is refused
  (``several-content-length``); Transfer-Encoding together with Content-Length (h11 lets
  Transfer-Encoding win) is refused (``te-and-cl``); Transfer-Encoding must be exactly one
  field whose value is ``chunked`` (``bad-transfer-encoding``); HTTP/1.0 with Transfer-Encoding
  is refused (RFC 9112 section 6.1);
- chunk-size lines must be 1 to 16 hex digits and CRLF: no chunk extension, no whitespace (h11
  accepts and drops extensions, and trailing whitespace); a request with trailer fields is
  refused (``bad-chunk``, ``trailers``);
- only HTTP/1.0 and HTTP/1.1 (``bad-version``); no ``CONNECT`` and no ``Upgrade`` (``upgrade``):
  the bytes after a protocol switch are not HTTP;
- everything h11 refuses (bad token characters, whitespace before the colon, a bad request line,
  a missing or repeated Host, a bad Content-Length, a bad chunk size, ...) is ``bad-request``.

Each request gets a fresh h11 connection: keep-alive is decided here (HTTP/1.1 unless
``Connection: close``; HTTP/1.0 only with ``Connection: keep-alive``, which h11 does not
support), so pipelined requests and HTTP/1.0 keep-alive requests all go through the same checks.
Every refusal is an `HttpError` with a stable ``reason`` and the ``events`` read before the
refused request in the same `feed` (pipelined requests before it); after one, the reader is dead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import h11

__all__ = [
    "DEFAULT_MAX_HEAD",
    "EndOfRequest",
    "HttpError",
    "RequestHead",
    "RequestReader",
    "normalize_name",
]

DEFAULT_MAX_HEAD: Final = 64 * 1024
_FEED: Final = 4096  # chunked bodies are handed to h11 in slices (bounded bookkeeping copies)

# One pass over the head: bare CR, bare LF, controls other than HTAB (CR/LF handled apart), and a
# line that starts with SP/HTAB (obs-fold; after CRLF, since a bare LF is refused anyway).
_BAD_HEAD = re.compile(rb"\r(?!\n)|(?<!\r)\n|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\n[ \t]")
_CTL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CHUNK_LINE = re.compile(rb"(?:\r\n)?[0-9A-Fa-f]{1,16}\r\n")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_LAST_CHUNK = re.compile(rb"(?:\r\n)?0+\r\n\r\n")


class HttpError(ValueError):
    """A request refused; ``reason`` is stable (counted, logged), the message is for logs."""

    def __init__(self, reason: str, message: str = "", status: int = 400) -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.status = status
        # Events read before the refused request (a `RequestReader` sets them): the requests
        # before it were valid and are still to be handled, in order.
        self.events: list[RequestHead | h11.Data | EndOfRequest] = []
        self.forward = b""  # `IdentityRelay`: the bytes of those requests, for the backend


def normalize_name(name: bytes | str) -> str:
    """A header name as the identity-header rules compare it: lower case, ``_`` read as ``-``
    (WSGI/CGI servers map both to the same ``HTTP_`` key)."""
    text = name.decode("latin-1") if isinstance(name, bytes) else name
    return text.lower().replace("_", "-")


@dataclass(frozen=True)
class RequestHead:
    """A parsed request head: ``request`` is h11's event (validated by h11)."""

    request: h11.Request
    keep_alive: bool
    chunked: bool
    length: int  # Content-Length (0 when chunked or absent)


@dataclass(frozen=True)
class EndOfRequest:
    keep_alive: bool


Event = RequestHead | h11.Data | EndOfRequest


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    out: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            out.update(t.strip().lower() for t in value.split(b","))
    return out


class RequestReader:
    """Feed it the client's bytes; it returns the requests' events in order, or raises."""

    def __init__(self, *, max_head: int = DEFAULT_MAX_HEAD) -> None:
        self.max_head = max_head
        self._buf = bytearray()
        self._scanned = 0  # head bytes of _buf already checked by _BAD_HEAD
        self._conn: h11.Connection | None = None  # the current request's (None: between)
        self._head: RequestHead | None = None
        self._raw = bytearray()  # chunked: bytes given to h11, not yet accounted for
        self._fed = 0
        self._consumed = 0
        self._lines = bytearray()  # chunked: non-data bytes since the last data
        self._chunks = 0
        self._remaining = 0  # Content-Length bytes not yet given to h11
        self.closed = False  # no more requests on this connection (Connection: close, error)
        self.dead = False

    @property
    def in_head(self) -> bool:
        """True between requests (waiting for or reading a head)."""
        return self._conn is None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        if self.dead:
            raise HttpError("dead", "reader used after an error")
        if self.closed:
            return []  # bytes after the last request of the connection are ignored
        self._buf += data
        out: list[Event] = []
        try:
            self._run(out)
        except HttpError as exc:
            self.dead = True
            exc.events = out
            raise
        except h11.ProtocolError as exc:
            self.dead = True
            error = HttpError("bad-request", str(exc))
            error.events = out
            raise error from None
        return out

    def feed_eof(self) -> None:
        """The client closed: an error unless it stopped between requests."""
        if not self.dead and not self.closed and (self._conn is not None or self._buf):
            self.dead = True
            raise HttpError("incomplete", "connection closed inside a request")

    # -- internals ------------------------------------------------------------------------------

    def _run(self, out: list[Event]) -> None:
        while not self.closed:
            if self._conn is None:
                head = self._take_head()
                if head is None:
                    break
                out.append(self._start(head))
            if not self._body(out):
                break

    def _take_head(self) -> bytes | None:
        buf = self._buf
        if not buf:
            return None
        end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        stop = end + 4 if end >= 0 else len(buf) - (1 if buf.endswith(b"\r") else 0)
        if stop > self.max_head:
            raise HttpError("head-too-large", f"request head over {self.max_head} bytes")
        start = max(0, self._scanned - 1)
        region = bytes(buf[start:stop])
        crlf = region.count(b"\r\n")
        clean = (  # the common case, at C speed; anything else gets the precise scan
            region.count(b"\r") == crlf == region.count(b"\n")
            and b"\n " not in region
            and b"\n\t" not in region
            and _CTL.search(region) is None
        )
        bad = None if clean else _BAD_HEAD.search(buf, start, stop)
        if bad is not None:
            found = bad.group()
            reason = (
                "bare-cr"
                if found == b"\r"
                else "bare-lf"
                if found == b"\n"
                else "obs-fold"
                if found[:1] == b"\n"
                else "control-character"
            )
            raise HttpError(reason, f"{reason} in the request head")
        if end < 0:
            self._scanned = stop
            return None
        head = region if start == 0 else bytes(buf[:stop])
        del buf[:stop]
        self._scanned = 0
        return head

    def _start(self, head: bytes) -> RequestHead:
        lengths = 0
        te: list[bytes] = []
        for line in head[:-4].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lname = name.lower()
            if lname == b"content-length":
                lengths += 1
                if b"," in value:
                    lengths += 1
            elif lname == b"transfer-encoding":
                te.append(value.strip(b" \t"))
        if lengths > 1:
            raise HttpError("several-content-length", "several Content-Length values")
        if te and lengths:
            raise HttpError("te-and-cl", "Transfer-Encoding with Content-Length")
        if te and te != [b"chunked"]:
            raise HttpError("bad-transfer-encoding", f"Transfer-Encoding {te!r}")
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)
        conn.receive_data(head)
        event = conn.next_event()
        if not isinstance(event, h11.Request):  # a whole head always gives a Request
            raise HttpError("bad-request", "no request in the head")
        if event.http_version not in (b"1.0", b"1.1"):
            raise HttpError("bad-version", f"HTTP/{event.http_version.decode()}")
        if te and event.http_version == b"1.0":
            raise HttpError("bad-transfer-encoding", "Transfer-Encoding in HTTP/1.0")
        headers = list(event.headers)
        if event.method == b"CONNECT" or any(n == b"upgrade" for n, _ in headers):
            raise HttpError("upgrade", "CONNECT and Upgrade are not relayed")
        tokens = _connection_tokens(headers)
        if event.http_version == b"1.1":
            keep_alive = b"close" not in tokens
        else:
            keep_alive = b"keep-alive" in tokens and b"close" not in tokens
        length = 0
        for n, v in headers:
            if n == b"content-length":
                length = int(v)
        self._conn = conn
        self._head = RequestHead(event, keep_alive, bool(te), length)
        self._raw.clear()
        self._lines.clear()
        self._fed = self._consumed = self._chunks = 0
        self._remaining = length
        return self._head

    def _body(self, out: list[Event]) -> bool:
        """Run h11 over the body; True when the request ended (and _buf holds what follows)."""
        conn, head = self._conn, self._head
        assert conn is not None and head is not None
        if not head.chunked:
            if self._remaining and self._buf:  # never more than the body: h11 holds nothing more
                piece = bytes(self._buf[: self._remaining])
                del self._buf[: self._remaining]
                self._remaining -= len(piece)
                conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if isinstance(event, h11.Data):
                    out.append(event)
                elif isinstance(event, h11.EndOfMessage):
                    return self._end(conn, head, out)
                else:
                    return False
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                self._account(conn, 0)
                if not self._buf:
                    return False
                piece = bytes(self._buf[:_FEED])
                del self._buf[:_FEED]
                self._raw += piece
                self._fed += len(piece)
                conn.receive_data(piece)
                continue
            if isinstance(event, h11.Data):
                self._account(conn, len(event.data))
                out.append(event)
            elif isinstance(event, h11.EndOfMessage):
                self._account(conn, 0)
                if event.headers:
                    raise HttpError("trailers", "trailer fields are not relayed")
                if not _LAST_CHUNK.fullmatch(self._lines) or (
                    self._lines.startswith(b"\r\n") != (self._chunks > 0)
                ):
                    raise HttpError("bad-chunk", f"last chunk {bytes(self._lines[:40])!r}")
                return self._end(conn, head, out)
            else:
                raise HttpError("bad-request", f"unexpected {event!r}")

    def _account(self, conn: h11.Connection, data: int) -> None:
        """Chunked bodies: check the bytes h11 consumed that were not data (chunk-size lines)."""
        consumed = self._fed - len(conn.trailing_data[0])
        delta = consumed - self._consumed
        self._consumed = consumed
        lines = delta - data
        if lines:
            self._lines += self._raw[:lines]
        del self._raw[:delta]
        if data and self._lines:
            if not _CHUNK_LINE.fullmatch(self._lines) or (
                self._lines.startswith(b"\r\n") != (self._chunks > 0)
            ):
                raise HttpError("bad-chunk", f"chunk-size line {bytes(self._lines[:40])!r}")
            self._lines.clear()
            self._chunks += 1
        elif self._lines:  # a size line h11 took before its data arrived: check it now
            skip = 2 if self._chunks else 0
            end = self._lines.find(b"\r\n", skip)
            if (end >= 0 and not _HEX.fullmatch(self._lines, skip, end)) or len(self._lines) > 64:
                raise HttpError("bad-chunk", f"chunk-size line {bytes(self._lines[:40])!r}")

    def _end(self, conn: h11.Connection, head: RequestHead, out: list[Event]) -> bool:
        rest, _ = conn.trailing_data  # given to h11, not consumed: it comes before _buf
        if rest:
            self._buf[:0] = rest
        self._conn = None
        self._head = None
        self._raw.clear()
        out.append(EndOfRequest(head.keep_alive))
        if not head.keep_alive:
            self.closed = True
            self._buf.clear()
        return True
