"""Fuzz the HTTP front door: `dance.http.h1.RequestReader` (strict reading in front of h11) and
`dance.http.relay.IdentityRelay` (what `dance proxy --mode http` sends the backend), through
their public API only (the implementation is being optimised; these properties must hold for
any implementation).

Properties, on random heads, mutated valid requests (CR, LF, NUL, spaces, folds, duplicated
headers, case and underscore variants of the identity header, smuggled requests) and random
splits of the byte stream:

* only HttpError is ever raised, and the verdict does not depend on how the bytes are split;
* no accepted invalid input: every request the reader completes is also completed, with the
  same method, target, version, header fields and body, by an independent strict reading of
  RFC 9112 written here (`strict_requests`), and the reader never completes a request that
  reading refuses;
* the relay's output carries, on every request, exactly one identity header (ours) as seen by
  three different parsers (h11, httptools/llhttp, and a lenient LF-splitting reader like
  Python's http.server); the output is accepted again by the reader with the same meaning, and
  relaying it again gives the same bytes (idempotence).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import h11
import httptools
from hypothesis import example, given
from hypothesis import strategies as st

from dance.http.h1 import EndOfRequest, HttpError, RequestHead, RequestReader, normalize_name
from dance.http.relay import IdentityRelay
from tests.fuzz.common import fuzz_settings, hit, time_limit

DOOR = "http"
ME = "sensor7._device.example.test"
HEADER = "X-DANCE-Client-ID"
MAX_HEAD = 2048
IDENTITY_NAMES = {"x-dance-client-id", "x-dance-user"}


@dataclass
class Req:
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    keep_alive: bool = True

    def meaning(self) -> tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]], bytes]:
        return (
            self.method,
            self.target,
            self.version,
            [(n.lower(), v) for n, v in self.headers],
            self.body,
        )


# -- an independent strict reading of RFC 9112 --------------------------------------------------

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(1\.[01])")
_FIELD = re.compile(
    rb"(" + _TOKEN + rb"):[ \t]*((?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?)[ \t]*"
)
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


@dataclass
class StrictResult:
    requests: list[Req] = field(default_factory=list)
    refused_at: int | None = None  # index of the refused request
    refused_in_head: bool = False


def strict_requests(data: bytes, max_head: int = MAX_HEAD) -> StrictResult:
    """Complete requests of ``data`` as RFC 9112 reads them, strictly (CRLF only, no obs-fold,
    one Content-Length of digits, Transfer-Encoding only a single ``chunked`` and never with
    Content-Length or in HTTP/1.0, chunk sizes of 1-16 hex digits without extensions, no
    trailers, no CONNECT/Upgrade, HTTP/1.1 with exactly one Host)."""
    out = StrictResult()
    pos = 0
    while pos < len(data):
        index = len(out.requests)

        def refuse(in_head: bool, index: int = index) -> StrictResult:
            out.refused_at, out.refused_in_head = index, in_head
            return out

        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return refuse(True) if len(data) - pos > max_head else out
        if end + 4 - pos > max_head:
            return refuse(True)
        lines = data[pos:end].split(b"\r\n")
        if any(b"\r" in line or b"\n" in line for line in lines):
            return refuse(True)
        line = _REQUEST_LINE.fullmatch(lines[0])
        if line is None:
            return refuse(True)
        method, target, version = line.groups()
        headers: list[tuple[bytes, bytes]] = []
        for raw in lines[1:]:
            f = _FIELD.fullmatch(raw)
            if f is None:
                return refuse(True)
            headers.append((f.group(1), f.group(2)))
        names = [n.lower() for n, _ in headers]
        lengths = [v for n, v in headers if n.lower() == b"content-length"]
        te = [v for n, v in headers if n.lower() == b"transfer-encoding"]
        if (
            (version == b"1.1" and names.count(b"host") != 1)
            or names.count(b"host") > 1
            or len(lengths) > 1
            or any(not v.isdigit() for v in lengths)
            or (te and (lengths or te != [b"chunked"] or version == b"1.0"))
            or method == b"CONNECT"
            or b"upgrade" in names
        ):
            return refuse(True)
        tokens = {
            t.strip().lower()
            for n, v in headers
            if n.lower() == b"connection"
            for t in v.split(b",")
        }
        if version == b"1.1":
            keep = b"close" not in tokens
        else:
            keep = b"keep-alive" in tokens and b"close" not in tokens
        req = Req(method, target, version, headers, keep_alive=keep)
        pos = end + 4
        if te:
            body = bytearray()
            while True:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if len(data) - pos > 18 or not re.fullmatch(
                        rb"[0-9A-Fa-f]{0,16}\r?", data[pos:]
                    ):
                        return refuse(False)
                    return out
                if not _HEX.fullmatch(data, pos, eol):
                    return refuse(False)
                size = int(data[pos:eol], 16)
                pos = eol + 2
                if size == 0:
                    if data[pos : pos + 2] != b"\r\n"[: len(data) - pos]:
                        return refuse(False)
                    if len(data) - pos < 2:
                        return out
                    pos += 2
                    break
                if len(data) - pos < size + 2:
                    if len(data) - pos > size and data[pos + size : pos + size + 1] != b"\r":
                        return refuse(False)
                    return out
                body += data[pos : pos + size]
                if data[pos + size : pos + size + 2] != b"\r\n":
                    return refuse(False)
                pos += size + 2
            req.body = bytes(body)
        elif lengths:
            size = int(lengths[0])
            if len(data) - pos < size:
                return out
            req.body = data[pos : pos + size]
            pos += size
        out.requests.append(req)
        if not keep:
            return out
    return out


# -- the reader under test ----------------------------------------------------------------------


@dataclass
class ReaderResult:
    requests: list[Req]
    heads: int  # RequestHead events (a head may be read and its body refused later)
    error: str | None


def read_all(data: bytes, cuts: list[int] = ()) -> ReaderResult:  # type: ignore[assignment]
    reader = RequestReader(max_head=MAX_HEAD)
    events: list[object] = []
    error = None
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            events += reader.feed(data[pos : pos + cut])
            pos += cut
            if pos >= len(data):
                break
    except HttpError as exc:
        assert isinstance(exc.reason, str) and exc.reason and exc.status == 400, exc
        events += exc.events
        error = exc.reason
    done: list[Req] = []
    heads = 0
    current: Req | None = None
    for event in events:
        if isinstance(event, RequestHead):
            heads += 1
            r = event.request
            current = Req(r.method, r.target, r.http_version, list(r.headers.raw_items()))
        elif isinstance(event, h11.Data):
            assert current is not None
            current.body += bytes(event.data)
        else:
            assert isinstance(event, EndOfRequest) and current is not None
            current.keep_alive = event.keep_alive
            done.append(current)
            current = None
    return ReaderResult(done, heads, error)


def check_reader(data: bytes, cuts: list[int]) -> ReaderResult:
    """Only HttpError; split-invariant; nothing the strict reading refuses is accepted."""
    hit(DOOR)
    with time_limit():
        whole = read_all(data)
        split = read_all(data, cuts)
        strict = strict_requests(data)
    assert [r.meaning() for r in split.requests] == [r.meaning() for r in whole.requests]
    assert (split.error is None) == (whole.error is None), (whole.error, split.error)
    n = len(whole.requests)
    assert [r.meaning() for r in whole.requests] == [r.meaning() for r in strict.requests[:n]], (
        "the reader completed a request differently from the strict reading"
    )
    assert [r.keep_alive for r in whole.requests] == [r.keep_alive for r in strict.requests[:n]]
    if strict.refused_at is not None:
        assert n <= strict.refused_at, "a request the strict reading refuses was accepted"
        if strict.refused_in_head:
            assert whole.heads <= strict.refused_at, "a refused head was handed on"
    return whole


# -- what the backend sees ----------------------------------------------------------------------


def h11_view(data: bytes) -> list[Req]:
    out: list[Req] = []
    rest = data
    while rest:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(rest)
        event = conn.next_event()
        if event is h11.NEED_DATA:
            break
        assert isinstance(event, h11.Request), event
        req = Req(event.method, event.target, event.http_version, list(event.headers.raw_items()))
        while True:
            ev = conn.next_event()
            if isinstance(ev, h11.Data):
                req.body += bytes(ev.data)
            elif ev is h11.NEED_DATA:  # the last request, cut short by a refusal
                out.append(req)
                return out
            else:
                assert isinstance(ev, h11.EndOfMessage), ev
                break
        out.append(req)
        rest = conn.trailing_data[0]
    return out


class _Collect:
    def __init__(self) -> None:
        self.requests: list[list[tuple[bytes, bytes]]] = []

    def on_message_begin(self) -> None:
        self.requests.append([])

    def on_header(self, name: bytes, value: bytes) -> None:
        self.requests[-1].append((bytes(name), bytes(value)))


def httptools_view(data: bytes) -> tuple[list[list[tuple[bytes, bytes]]], bool]:
    """The header fields of each request llhttp reads, and whether it refused the stream
    (llhttp is stricter than h11 on methods and targets: a refusal is a 400 at the backend,
    never an identity; the requests it read before refusing are still checked)."""
    sink = _Collect()
    parser = httptools.HttpRequestParser(sink)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        return sink.requests, True
    return sink.requests, False


def lenient_view(data: bytes) -> list[list[tuple[bytes, bytes]]]:
    """Header fields as a lenient server reads them: lines split on LF alone, CR stripped
    (http.server, many CGI/WSGI stacks). Bodies are skipped by Content-Length / chunked."""
    out = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\n\n", pos)
        end2 = data.find(b"\r\n\r\n", pos)
        ends = [e + k for e, k in ((end, 2), (end2, 4)) if e >= 0]
        if not ends:
            out.append(_lenient_fields(data[pos:]))
            break
        stop = min(ends)
        fields = _lenient_fields(data[pos:stop])
        out.append(fields)
        pos = stop
        lengths = [v for n, v in fields if n.lower() == b"content-length"]
        if any(n.lower() == b"transfer-encoding" for n, _ in fields):
            while pos < len(data):
                eol = data.find(b"\n", pos)
                if eol < 0:
                    return out
                size = int(data[pos:eol].strip() or b"0", 16)
                pos = eol + 1 + size + (2 if size else 0)
                if size == 0:
                    pos = data.find(b"\n", pos) + 1 or len(data)
                    break
        elif lengths:
            pos += int(lengths[0])
    return out


def _lenient_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    lines = [line.rstrip(b"\r") for line in head.split(b"\n")][1:]
    return [(n.strip(), v.strip()) for n, _, v in (line.partition(b":") for line in lines if line)]


def identities(fields: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [v for n, v in fields if normalize_name(n.strip()) in IDENTITY_NAMES]


def relay_all(data: bytes, cuts: list[int] = ()) -> tuple[bytes, str | None]:  # type: ignore[assignment]
    relay = IdentityRelay(HEADER, ME, max_head=MAX_HEAD)
    out = b""
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            out += relay.feed(data[pos : pos + cut])
            pos += cut
            if pos >= len(data):
                break
    except HttpError as exc:
        assert exc.reason and exc.status == 400
        return out + exc.forward, exc.reason
    return out, None


def check_relay(data: bytes, cuts: list[int]) -> None:
    with time_limit():
        out, error = relay_all(data)
        split, split_error = relay_all(data, cuts)
        read = read_all(data)
    assert (error is None) == (split_error is None), (error, split_error)
    seen = h11_view(out)
    seen_split = h11_view(split)
    # Chunk boundaries follow the reads, so compare meanings; after a refusal the split run may
    # also have sent the start of the refused request (its head and some body), never more.
    if error is None:
        assert [r.meaning() for r in seen_split] == [r.meaning() for r in seen]
    else:
        assert [r.meaning() for r in seen] == [r.meaning() for r in seen_split[: len(seen)]]
        assert len(seen_split) <= len(seen) + 1
    for stream, view in ((out, seen), (split, seen_split)):
        for req in view:
            assert identities(req.headers) == [ME.encode()], req.headers
        llhttp, refused = httptools_view(stream)
        assert len(llhttp) <= len(view) if refused else len(llhttp) == len(view), "llhttp count"
        for i, fields in enumerate(llhttp):
            if refused and i == len(llhttp) - 1:  # where llhttp stopped: a 400, at most ours
                assert identities(fields) in ([], [ME.encode()]), fields
            else:
                assert identities(fields) == [ME.encode()], fields
        lenient = lenient_view(stream)
        assert len(lenient) == len(view), "a lenient backend sees another number of requests"
        for fields in lenient:
            assert identities(fields) == [ME.encode()], fields
    if error is None and read.heads == len(read.requests):
        # Idempotence: the output is read again with the same meaning, and relayed unchanged.
        again = read_all(out)
        assert again.error is None, again.error
        assert [r.meaning() for r in again.requests] == [r.meaning() for r in seen]
        assert relay_all(out) == (out, None)


# -- inputs -------------------------------------------------------------------------------------

CORPUS = [
    b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nX-DANCE-Client-ID: admin\r\n\r\n",
    b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /d HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
    b"GET /e HTTP/1.0\r\nHost: x\r\n\r\n",
    b"GET /f HTTP/1.1\r\nHost: x\r\nX_DANCE_Client_ID: admin\r\n\r\n"
    b"GET /g HTTP/1.1\r\nHost: x\r\nx-dance-user: root\r\nConnection: close\r\n\r\n",
    b"POST /h HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    b"POST /i HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n000A\r\n0123456789\r\n0\r\n\r\n",
]
PIECES = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\x00",
    b" ",
    b"\t",
    b"\r\n ",
    b"\r\n\t",
    b"\x0b",
    b"\x7f",
    b"\x80",
    b":",
    b",",
    b";",
    b"_",
    b"-",
    b"0",
    b"00",
    b"f",
    b"0x",
    b"+",
    b"X-DANCE-Client-ID: evil\r\n",
    b"x_dance_client_id: evil\r\n",
    b"X-Dance-Client-Id:evil\r\n",
    b"X-DANCE-Client-ID : evil\r\n",
    b"X-DANCE-Client-ID\t: evil\r\n",
    b" X-DANCE-Client-ID: e\r\n",
    b"X-DANCE-Client-ID: evil\n",
    b"X-DANCE-Client-ID: evil\r",
    b"X-DANCE-User: root\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 5, 5\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked, identity\r\n",
    b"Transfer-Encoding:\tchunked\r\n",
    b"Transfer-Encoding: xchunked\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"Host: y\r\n",
    b"Upgrade: h2c\r\n",
    b"GET /smuggled HTTP/1.1\r\nHost: y\r\nX-DANCE-Client-ID: evil\r\n\r\n",
    b"0\r\n\r\n",
    b"5\r\nhello\r\n",
    b"HTTP/1.0",
    b"HTTP/1.1",
    b"HTTP/1.2",
]


def mutate(base: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Edits: insert a piece, delete a byte, flip the case of a byte, turn '-' into '_' (or
    back), duplicate a line, or overwrite a byte."""
    buf = bytearray(base)
    for pos, kind, arg in edits:
        at = pos % (len(buf) + 1)
        if kind == 0:
            buf[at:at] = PIECES[arg % len(PIECES)]
        elif kind == 1 and buf:
            del buf[at % len(buf)]
        elif kind == 2 and buf:
            i = at % len(buf)
            buf[i : i + 1] = bytes(buf[i : i + 1]).swapcase()
        elif kind == 3:
            i = buf.find(b"-", at)
            j = buf.find(b"_", at)
            if i >= 0:
                buf[i] = ord("_")
            elif j >= 0:
                buf[j] = ord("-")
        elif kind == 4:
            start = buf.rfind(b"\r\n", 0, at) + 2 if at else 0
            stop = buf.find(b"\r\n", at)
            if 0 <= start < stop:
                buf[stop + 2 : stop + 2] = buf[start : stop + 2]
        elif buf:
            buf[at % len(buf)] = arg % 256
    return bytes(buf)


EDITS = st.lists(
    st.tuples(st.integers(0, 400), st.integers(0, 5), st.integers(0, 255)), min_size=1, max_size=5
)
CUTS = st.lists(st.integers(1, 60), max_size=6)


@fuzz_settings(200)
@given(st.sampled_from(CORPUS), EDITS, CUTS)
@example(CORPUS[1], [(34, 0, PIECES.index(b"X-DANCE-Client-ID: evil\n"))], [])
@example(CORPUS[2], [(57, 0, PIECES.index(b"Transfer-Encoding: chunked\r\n"))], [3])
def test_mutated_requests(base: bytes, edits: list[tuple[int, int, int]], cuts: list[int]) -> None:
    data = mutate(base, edits)
    check_reader(data, cuts)
    check_relay(data, cuts)


@fuzz_settings(100)
@given(st.lists(st.sampled_from(CORPUS), min_size=1, max_size=4), EDITS, CUTS)
def test_mutated_pipelines(
    parts: list[bytes], edits: list[tuple[int, int, int]], cuts: list[int]
) -> None:
    data = mutate(b"".join(parts), edits)
    check_reader(data, cuts)
    check_relay(data, cuts)


@fuzz_settings(150)
@given(st.binary(max_size=400), CUTS)
def test_random_bytes(data: bytes, cuts: list[int]) -> None:
    check_reader(data, cuts)
    check_relay(data, cuts)


_NAME = st.sampled_from(
    [
        b"Host",
        b"Accept",
        b"X-DANCE-Client-ID",
        b"x_dance_client_id",
        b"X-Dance-User",
        b"X_DANCE-user",
        b"Content-Length",
        b"Transfer-Encoding",
        b"Connection",
        b"X",
        b"X-DANCE-Client-ID ",
        b"Up\x00",
    ]
) | st.binary(min_size=1, max_size=6)
_VALUE = st.binary(max_size=10) | st.sampled_from(
    [b"chunked", b"0", b"3", b"keep-alive", b"close", b"evil", b" x ", b"1, 1", b"\xff"]
)
_FIELD_LINE = st.tuples(_NAME, st.sampled_from([b":", b": ", b" :", b":\t", b""]), _VALUE)
_EOL = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\n ", b"\r\n\t"])


@fuzz_settings(200)
@given(
    st.sampled_from([b"GET", b"POST", b"PUT", b"G\x00T", b"CONNECT", b"get", b"X" * 40]),
    st.sampled_from([b"/", b"/p?q", b"*", b"http://h/x", b"/a b", b"/\x80", b""]),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2", b"http/1.1", b"HTTP/1.1 "]),
    st.lists(st.tuples(_FIELD_LINE, _EOL), max_size=7),
    st.sampled_from(
        [
            b"",
            b"abc",
            b"3\r\nabc\r\n0\r\n\r\n",
            b"0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: y\r\nX-DANCE-Client-ID: evil\r\n\r\n",
        ]
    ),
    CUTS,
)
def test_generated_heads(
    method: bytes,
    target: bytes,
    version: bytes,
    lines: list[tuple[tuple[bytes, bytes, bytes], bytes]],
    body: bytes,
    cuts: list[int],
) -> None:
    head = method + b" " + target + b" " + version + b"\r\n"
    head += b"".join(b"".join(f) + eol for f, eol in lines)
    data = head + b"\r\n" + body
    check_reader(data, cuts)
    check_relay(data, cuts)


def test_oracle_agrees_on_known_verdicts() -> None:
    """The independent reading itself: it refuses the published smuggling shapes and accepts
    the ordinary ones (so the differential above compares with something meaningful)."""
    bad = [
        b"GET / HTTP/1.1\r\nHost: x\r\nA: b\nX-DANCE-Client-ID: evil\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n X-DANCE-Client-ID: evil\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0x5\r\nabcde\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-DANCE-Client-ID : evil\r\n\r\n",
    ]
    for data in bad:
        assert strict_requests(data).refused_at == 0, data
        result = read_all(data)
        assert result.error is not None and not result.requests, data
    good = b"".join(CORPUS[:4])
    assert len(strict_requests(good).requests) == 4
    assert [r.meaning() for r in read_all(good).requests] == [
        r.meaning() for r in strict_requests(good).requests
    ]
