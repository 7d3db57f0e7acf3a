"""Strict HTTP/1.1 request reading, sans I/O: bytes in, request events out.

Request heads are parsed by llhttp (Node.js's parser, through ``httptools``), chunked bodies by
h11; both are maintained parsers. This module adds the checks where they are lenient or disagree
with other servers, and decides where each request head starts, so that the parsers only ever
see heads that passed them:

- a head ends at the first CRLF CRLF and is at most ``max_head`` bytes (``head-too-large``);
- in the head, a CR not followed by LF or an LF not preceded by CR (h11, http.server and others
  read a bare LF as a line end), a NUL or any other control character but HTAB, and obsolete
  line folding are refused (``bare-cr``, ``bare-lf``, ``control-character``, ``obs-fold``);
- the head must match the RFC 9112 grammar as h11 reads it (request line ``token SP
  1*VCHAR SP HTTP/d.d``, fields ``token ":" OWS value OWS``, no blank line first); llhttp must
  parse it too and agree (same method, target, version, one field per line); anything else is
  ``bad-request``, as are a missing (HTTP/1.1) or repeated Host, a Content-Length that is not 1
  to 20 digits, and a method llhttp does not know;
- more than one Content-Length field, or a list value, is refused (``several-content-length``);
  Transfer-Encoding together with Content-Length is refused (``te-and-cl``); Transfer-Encoding
  must be exactly one field whose value is ``chunked`` (``bad-transfer-encoding``); HTTP/1.0 with
  Transfer-Encoding is refused (RFC 9112 section 6.1);
- chunk-size lines must be 1 to 16 hex digits and CRLF: no chunk extension, no whitespace (h11
  accepts and drops extensions, and trailing whitespace); a request with trailer fields is
  refused (``bad-chunk``, ``trailers``);
- only HTTP/1.0 and HTTP/1.1 (``bad-version``); no ``CONNECT`` and no ``Upgrade`` (``upgrade``):
  the bytes after a protocol switch are not HTTP.

The reasons do not depend on which check finds a defect first: the checks run in a fixed order
(raw bytes, framing fields, grammar and Host, version, upgrade, llhttp) on every head.

Keep-alive is decided here (HTTP/1.1 unless ``Connection: close``; HTTP/1.0 only with
``Connection: keep-alive``), so pipelined requests and HTTP/1.0 keep-alive requests all go
through the same checks. A Content-Length body is handed on exactly as counted (nothing to
parse); a chunked body is read by an h11 connection given the same head. Every refusal is an
`HttpError` with a stable ``reason`` and the ``events`` read before the refused request in the
same `feed` (pipelined requests before it); after one, the reader is dead.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

import h11
import httptools

__all__ = [
    "DEFAULT_MAX_HEAD",
    "EndOfRequest",
    "HeaderFields",
    "HttpError",
    "Request",
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

# The whole head, as h11 reads it (h11/_abnf.py, RFC 9112 sections 3 and 5), in one fullmatch at
# C speed: request line ``token SP 1*VCHAR SP HTTP/d.d``, then fields ``token ":" OWS value OWS``
# where the value is visible characters (obs-text included) separated by SP/HTAB runs. Any run
# of VCHAR/obs-text/SP/HTAB splits that way, hence the single character class after the colon.
# A head that matches has no control but HTAB, no bare CR or LF and no obs-fold.
_TOKEN: Final = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_REQUEST_LINE: Final = rb"(%s) ([\x21-\x7e]+) HTTP/([0-9]\.[0-9])\r\n" % _TOKEN
_VALUE: Final = rb"[\t \x21-\x7e\x80-\xff]*"
_HEAD: Final = re.compile(rb"%s(?:%s:%s\r\n)*\r\n" % (_REQUEST_LINE, _TOKEN, _VALUE))
# The same, canonical: every field ``Name: value`` (one SP, a value that neither starts nor ends
# with SP/HTAB), as `dance.http.relay` would write it again from the parsed fields. Tried first:
# most heads are canonical (tests/http/test_h1_grammar.py: both agree with h11's grammar).
_CANONICAL: Final = re.compile(
    rb"%s(?:%s: (?![ \t])%s(?<![ \t])\r\n)*\r\n" % (_REQUEST_LINE, _TOKEN, _VALUE)
)
# The fields that decide framing and keep-alive, in a head in the grammar.
_FRAMING_FIELD: Final = re.compile(
    rb"\r\n(?=[CcHhTtUu])(?i:(host|content-length|transfer-encoding|connection|upgrade)):"
    rb"[ \t]*([^\r]*)"
)
_CONTENT_LENGTH: Final = re.compile(rb"[0-9]{1,20}")  # h11: digits, at most 20
_HOST, _CL, _TE, _CONNECTION, _UPGRADE = 1, 2, 3, 4, 5
_FRAMING: Final = {
    b"host": _HOST,
    b"content-length": _CL,
    b"transfer-encoding": _TE,
    b"connection": _CONNECTION,
    b"upgrade": _UPGRADE,
}


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


class HeaderFields(list[tuple[bytes, bytes]]):
    """A request's header fields in order: (name as sent, value without surrounding OWS)."""

    __slots__ = ()

    def raw_items(self) -> list[tuple[bytes, bytes]]:
        """The fields (the name `h11.Headers` gives this)."""
        return self


class Request:
    """A request line, and the header fields parsed by llhttp when first asked for."""

    __slots__ = ("_fields", "http_version", "method", "raw", "target")

    def __init__(self, method: bytes, target: bytes, http_version: bytes, raw: bytes) -> None:
        self.method = method
        self.target = target
        self.http_version = http_version  # b"1.0" or b"1.1"
        self.raw = raw  # the whole head, as validated (see the module docstring)
        self._fields: HeaderFields | None = None

    @property
    def headers(self) -> HeaderFields:
        fields = self._fields
        if fields is None:
            fields = self._fields = _parse_fields(self.raw)
        return fields

    def __repr__(self) -> str:
        return f"Request({self.method!r}, {self.target!r}, HTTP/{self.http_version.decode()})"


class RequestHead(NamedTuple):
    """A parsed request head."""

    request: Request
    keep_alive: bool
    chunked: bool
    length: int  # Content-Length (0 when chunked or absent)
    # The head is written as `dance.http.relay` would write it again: request line, fields
    # ``Name: value`` (one SP, no other OWS), Content-Length without leading zeros.
    canonical: bool = False


class EndOfRequest(NamedTuple):
    keep_alive: bool


Event = RequestHead | h11.Data | EndOfRequest
_KEEP_ALIVE: Final = EndOfRequest(True)
_CLOSE: Final = EndOfRequest(False)


class _Framing:
    """llhttp's view of a request's framing: where the message ends."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def on_message_complete(self) -> None:
        self.done = True


class _Fields:
    """llhttp's header fields."""

    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields = HeaderFields()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value.strip(b" \t")))


def _parse_fields(head: bytes) -> HeaderFields:
    """The header fields of a head the reader accepted, by llhttp (which accepted it too)."""
    sink = _Fields()
    try:
        httptools.HttpRequestParser(sink).feed_data(head)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
        raise HttpError("bad-request", f"llhttp: {exc}") from None
    if len(sink.fields) + 2 != head.count(b"\r\n"):  # one field per line
        raise HttpError("bad-request", "llhttp and the grammar disagree on the fields")
    return sink.fields


def _split_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """The fields of a head refused by the grammar, split on CRLF and the first colon: only to
    find the reason for refusing it."""
    fields = []
    for line in head[:-4].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields.append((name, value))
    return fields


class RequestReader:
    """Feed it the client's bytes; it returns the requests' events in order, or raises."""

    def __init__(self, *, max_head: int = DEFAULT_MAX_HEAD) -> None:
        self.max_head = max_head
        self._buf = bytearray()
        self._scanned = 0  # head bytes of _buf already checked by _BAD_HEAD
        self._head: RequestHead | None = None  # the current request's (None: between)
        self._conn: h11.Connection | None = None  # chunked: h11 reads the body
        self._raw = bytearray()  # chunked: bytes given to h11, not yet accounted for
        self._fed = 0
        self._consumed = 0
        self._lines = bytearray()  # chunked: non-data bytes since the last data
        self._chunks = 0
        self._remaining = 0  # Content-Length bytes still to come
        # llhttp, over the connection's heads and Content-Length bodies (a new one after a
        # chunked body, which h11 reads)
        self._llhttp: httptools.HttpRequestParser | None = None
        self._framing = _Framing()
        self.closed = False  # no more requests on this connection (Connection: close, error)
        self.dead = False

    @property
    def in_head(self) -> bool:
        """True between requests (waiting for or reading a head)."""
        return self._head is None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def partial_head(self) -> bool:
        """True when the start of a request head is buffered, not the whole head yet."""
        return self._head is None and bool(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        if self.dead:
            raise HttpError("dead", "reader used after an error")
        if self.closed:
            return []  # bytes after the last request of the connection are ignored
        buf = self._buf
        buf += data
        out: list[Event] = []
        try:
            # (h11 holds no chunked bytes once it asks for more: nothing to do without bytes)
            while buf and not self.closed:
                head = self._head
                if head is None:
                    head = self._next_head()
                    if head is None:
                        break
                    out.append(head)
                    if not head.chunked and not head.length:  # no body: the common case
                        self._head = None
                        if head.keep_alive:
                            out.append(_KEEP_ALIVE)
                        else:
                            out.append(_CLOSE)
                            self.closed = True
                            buf.clear()
                        continue
                if head.chunked:
                    if not self._chunked(head, out):
                        break
                elif not self._counted(head, out):
                    break
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
        if not self.dead and not self.closed and (self._head is not None or self._buf):
            self.dead = True
            raise HttpError("incomplete", "connection closed inside a request")

    # -- internals ------------------------------------------------------------------------------

    def _next_head(self) -> RequestHead | None:
        """The next request head once it is whole; raises on bad bytes as soon as they come."""
        buf = self._buf
        if not buf:
            return None
        end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if 0 <= end <= self.max_head - 4:
            # The common case, a whole head: the grammar admits no control but HTAB, CR only
            # before LF, LF only after CR and no line starting with whitespace, so a head that
            # matches it passes the byte checks below.
            head = bytes(buf[: end + 4])
            match = _CANONICAL.fullmatch(head)
            canonical = match is not None
            if match is None:
                match = _HEAD.fullmatch(head)
            if match is not None:
                del buf[: end + 4]
                self._scanned = 0
                return self._start(head, match, canonical)
        stop = end + 4 if end >= 0 else len(buf) - (1 if buf.endswith(b"\r") else 0)
        if stop > self.max_head:
            raise HttpError("head-too-large", f"request head over {self.max_head} bytes")
        start = max(0, self._scanned - 1)
        region = bytes(buf[start:stop])
        crlf = region.count(b"\r\n")
        clean = (  # at C speed; anything else gets the precise scan
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
        return self._start(head, None, False)  # not in the grammar (it would have matched above)

    def _start(self, head: bytes, match: re.Match[bytes] | None, canonical: bool) -> RequestHead:
        failure = ""  # why llhttp refused the head
        method = target = version = b""
        seen = self._framing
        if match is not None:
            method, target, version = match.groups()
            framing = _FRAMING_FIELD.findall(head)
            parser = self._llhttp  # kept from the request before when it saw all of it
            if parser is None:
                parser = self._llhttp = httptools.HttpRequestParser(seen)
            seen.done = False
            try:
                parser.feed_data(head)
            except httptools.HttpParserUpgrade:
                pass  # CONNECT or Upgrade: refused below, with its own reason
            except httptools.HttpParserError as exc:
                failure = f"llhttp: {exc}"
            if not failure and parser.get_method() != method:
                failure = "llhttp and the grammar disagree on the method"
        else:
            framing = [(n, v) for n, v in _split_fields(head) if n.lower() in _FRAMING]
        # The checks, always in this order (the reason must not depend on which parser saw what).
        lengths = hosts = 0
        length_value = b""
        te: list[bytes] = []
        connection: list[bytes] = []
        upgrade = False
        for name, value in framing:
            kind = _FRAMING[name.lower()]
            if kind == _HOST:
                hosts += 1
            elif kind == _CL:
                length_value = value.strip(b" \t")
                lengths += 2 if b"," in length_value else 1
            elif kind == _TE:
                te.append(value.strip(b" \t"))
            elif kind == _CONNECTION:
                connection.append(value)
            else:
                upgrade = True
        if lengths > 1:
            raise HttpError("several-content-length", "several Content-Length values")
        if te and lengths:
            raise HttpError("te-and-cl", "Transfer-Encoding with Content-Length")
        if te and te != [b"chunked"]:
            raise HttpError("bad-transfer-encoding", f"Transfer-Encoding {te!r}")
        if match is None:
            raise HttpError("bad-request", "request head not in the HTTP/1.1 grammar")
        if hosts > 1 or (hosts == 0 and version == b"1.1"):
            raise HttpError("bad-request", f"{hosts} Host fields")
        if lengths and _CONTENT_LENGTH.fullmatch(length_value) is None:
            raise HttpError("bad-request", f"Content-Length {length_value[:40]!r}")
        if version not in (b"1.1", b"1.0"):
            raise HttpError("bad-version", f"HTTP/{version.decode()}")
        if te and version == b"1.0":
            raise HttpError("bad-transfer-encoding", "Transfer-Encoding in HTTP/1.0")
        if method == b"CONNECT" or upgrade:
            raise HttpError("upgrade", "CONNECT and Upgrade are not relayed")
        if failure:
            raise HttpError("bad-request", failure)
        length = int(length_value) if lengths else 0
        if seen.done != (not te and not length):  # llhttp must see the same framing
            raise HttpError("bad-request", "llhttp and the checks disagree on the body")
        if connection:
            tokens = {t.strip().lower() for v in connection for t in v.split(b",")}
            keep_alive = b"close" not in tokens and (version == b"1.1" or b"keep-alive" in tokens)
        else:
            keep_alive = version == b"1.1"
        if canonical and lengths and length_value != b"%d" % length:
            canonical = False  # leading zeros: the relay writes the length again
        result = RequestHead(
            Request(method, target, version, head), keep_alive, bool(te), length, canonical
        )
        if te:
            # h11 reads the chunked body; it parses the same head first (and must accept it).
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)
            conn.receive_data(head)
            if not isinstance(conn.next_event(), h11.Request):
                raise HttpError("bad-request", "no request in the head")
            self._conn = conn
            self._raw.clear()
            self._lines.clear()
            self._fed = self._consumed = self._chunks = 0
            self._llhttp = None  # it does not see the chunks: a new one for the next request
        # else llhttp reads the Content-Length body too (_counted): it must end where it ends
        self._remaining = length
        self._head = result
        return result

    def _counted(self, head: RequestHead, out: list[Event]) -> bool:
        """A Content-Length body: exactly that many bytes. True when the request ended."""
        if self._buf:
            take = self._remaining
            if len(self._buf) <= take:
                piece = bytes(self._buf)
                self._buf.clear()
            else:
                piece = bytes(self._buf[:take])
                del self._buf[:take]
            self._remaining -= len(piece)
            assert self._llhttp is not None
            try:
                self._llhttp.feed_data(piece)
            except httptools.HttpParserError as exc:
                raise HttpError("bad-request", f"llhttp: {exc}") from None
            if self._framing.done != (not self._remaining):
                raise HttpError("bad-request", "llhttp and the count disagree on the body")
            out.append(h11.Data(data=piece))
        if self._remaining:
            return False
        self._end(head, out)
        return True

    def _chunked(self, head: RequestHead, out: list[Event]) -> bool:
        """Run h11 over a chunked body; True when the request ended (_buf holds what follows)."""
        conn = self._conn
        assert conn is not None
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
                rest, _ = conn.trailing_data  # given to h11, not consumed: it comes before _buf
                if rest:
                    self._buf[:0] = rest
                self._conn = None
                self._raw.clear()
                self._end(head, out)
                return True
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

    def _end(self, head: RequestHead, out: list[Event]) -> None:
        self._head = None
        out.append(_KEEP_ALIVE if head.keep_alive else _CLOSE)
        if not head.keep_alive:
            self.closed = True
            self._buf.clear()
