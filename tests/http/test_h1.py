"""Strict request reading (dance.http.h1) and the proxy's identity relay (dance.http.relay),
sans I/O: every refusal case, identity header rules, and hypothesis over heads and splits."""

from __future__ import annotations

import re

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dance.http.h1 import EndOfRequest, HttpError, RequestHead, RequestReader, normalize_name
from dance.http.relay import IdentityRelay

ME = "sensor7._device.example.test"
C = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
P = b"POST / HTTP/1.1\r\nHost: x\r\n"


def reads(data: bytes) -> list[object]:
    return RequestReader().feed(data)


REFUSED = [
    # bare CR / LF anywhere in the head
    (b"GET / HTTP/1.1\nHost: x\r\n\r\n", "bare-lf"),
    (b"GET / HTTP/1.1\r\nHost: x\n\r\n", "bare-lf"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\nX-DANCE-Client-ID: evil\r\n\r\n", "bare-lf"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\rX-DANCE-Client-ID: evil\r\n\r\n", "bare-cr"),
    (b"GET / HTTP/1.1\r\nHost: x\r\r\n\r\n", "bare-cr"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\n", "bare-lf"),
    # obs-fold, whitespace before the colon, bad token characters, NUL and controls
    (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n X-DANCE-Client-ID: evil\r\n\r\n", "obs-fold"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n\tc\r\n\r\n", "obs-fold"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-DANCE-Client-ID : evil\r\n\r\n", "bad-request"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-DANCE-Client-ID\t: evil\r\n\r\n", "bad-request"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX(DANCE): evil\r\n\r\n", "bad-request"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX\x00: y\r\n\r\n", "control-character"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", "control-character"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x0bb\r\n\r\n", "control-character"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n", "control-character"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x7fb\r\n\r\n", "control-character"),
    (b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", "control-character"),
    # request line
    (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", "bad-request"),
    (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", "bad-version"),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", "bad-version"),
    (b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", "bad-request"),
    (b"GET / HTTP/1.1\r\n\r\n", "bad-request"),  # no Host
    (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "bad-request"),
    (b"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\n", "upgrade"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", "upgrade"),
    # Content-Length
    (
        P + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nabcde",
        "several-content-length",
    ),
    (P + b"Content-Length: 5, 5\r\n\r\nabcde", "several-content-length"),
    (
        P + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "several-content-length",
    ),
    (P + b"Content-Length: +5\r\n\r\nabcde", "bad-request"),
    (P + b"Content-Length: -1\r\n\r\n", "bad-request"),
    (P + b"Content-Length: 0x5\r\n\r\nabcde", "bad-request"),
    (P + b"Content-Length: 5 5\r\n\r\nabcde", "bad-request"),
    # Transfer-Encoding
    (
        P + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "te-and-cl",
    ),
    (
        P + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        "te-and-cl",
    ),
    (P + b"Transfer-Encoding: xchunked\r\n\r\n", "bad-transfer-encoding"),
    (P + b"Transfer-Encoding: Chunked\r\n\r\n", "bad-transfer-encoding"),
    (
        P + b"Transfer-Encoding: chunked, identity\r\n\r\n",
        "bad-transfer-encoding",
    ),
    (
        P + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
        "bad-transfer-encoding",
    ),
    (
        P + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "bad-transfer-encoding",
    ),
    (P + b"Transfer-Encoding: identity\r\n\r\n", "bad-transfer-encoding"),
    (
        b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "bad-transfer-encoding",
    ),
    # chunk sizes and trailers
    (
        C + b"0x5\r\nabcde\r\n0\r\n\r\n",
        "bad-request",
    ),
    (
        C + b"+5\r\nabcde\r\n0\r\n\r\n",
        "bad-request",
    ),
    (
        C + b" 5\r\nabcde\r\n0\r\n\r\n",
        "bad-request",
    ),
    (
        C + b"5 \r\nabcde\r\n0\r\n\r\n",
        "bad-chunk",
    ),
    (
        C + b"5;a=b\r\nabcde\r\n0\r\n\r\n",
        "bad-chunk",
    ),
    (
        C + b"5;\r\r\nabcde\r\n0\r\n\r\n",
        "bad-chunk",
    ),
    (
        C + b"5\r\nabcdeX\r\n0\r\n\r\n",
        "bad-request",
    ),
    (
        C + b"5\r\nabcde\n0\r\n\r\n",
        "bad-request",
    ),
    (
        C + b"5\r\nabcde\r\n0\r\n\n",
        "bad-chunk",
    ),
    (
        C + b"5\r\nabcde\r\n0;x\r\n\r\n",
        "bad-chunk",
    ),
    (
        C + b"5\r\nabcde\r\n0\r\nX-DANCE-Client-ID: evil\r\n\r\n",
        "trailers",
    ),
    (
        C + b"11111111111111111\r\n",
        "bad-chunk",
    ),
]


@pytest.mark.parametrize(("payload", "reason"), REFUSED)
def test_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(HttpError) as info:
        reads(payload)
    assert info.value.reason == reason
    assert info.value.status == 400
    # The same bytes one at a time: same verdict, and no event for the refused request.
    reader = RequestReader()
    events: list[object] = []
    with pytest.raises(HttpError) as info:
        for i in range(len(payload)):
            events += reader.feed(payload[i : i + 1])
    assert info.value.reason == reason
    assert not any(isinstance(e, EndOfRequest) for e in events)


def test_head_too_large_refused_early() -> None:
    reader = RequestReader(max_head=1024)
    reader.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 900)
    with pytest.raises(HttpError) as info:
        reader.feed(b"a" * 200)  # before any end of head arrives
    assert info.value.reason == "head-too-large"
    with pytest.raises(HttpError):
        reader.feed(b"\r\n\r\n")  # dead after a refusal


def test_accepted_forms() -> None:
    events = reads(
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n00A\r\n0123456789\r\n000\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length:  2 \r\n\r\nhi"
        b"GET /c HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
        b"GET /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked \r\n\r\n0\r\n\r\n"
        b"GET /e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        b"GET /ignored HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert [h.request.target for h in heads] == [b"/a", b"/b", b"/c", b"/d", b"/e"]
    assert [h.keep_alive for h in heads] == [True, True, True, True, False]
    body = b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data))
    assert body == b"abc0123456789hi"
    # HTTP/1.0 without keep-alive closes
    reader = RequestReader()
    out = reader.feed(b"GET / HTTP/1.0\r\n\r\nGET /x HTTP/1.0\r\n\r\n")
    assert [type(e) for e in out] == [RequestHead, EndOfRequest] and reader.closed


def test_incomplete_at_eof() -> None:
    reader = RequestReader()
    reader.feed(P + b"Content-Length: 5\r\n\r\nab")
    with pytest.raises(HttpError) as info:
        reader.feed_eof()
    assert info.value.reason == "incomplete"
    reader = RequestReader()
    reader.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reader.feed_eof()  # between requests: fine


def test_normalize_name() -> None:
    assert normalize_name(b"X_Dance_Client_ID") == "x-dance-client-id"
    assert normalize_name("x-DANCE_client-id") == "x-dance-client-id"


# -- the relay: what the backend gets ----------------------------------------------------------


def backend_view(data: bytes) -> list[tuple[h11.Request, bytes]]:
    """Parse what the relay sends the backend with h11 (the backend's parser)."""
    out: list[tuple[h11.Request, bytes]] = []
    rest = data
    while rest:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(rest)
        request = conn.next_event()
        assert isinstance(request, h11.Request)
        body = b""
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Data):
                body += event.data
            elif event is h11.NEED_DATA:  # a request cut short by a refusal: nothing follows
                out.append((request, body))
                return out
            else:
                assert isinstance(event, h11.EndOfMessage), event
                break
        out.append((request, body))
        rest = conn.trailing_data[0]
    return out


def identities(request: h11.Request) -> list[bytes]:
    return [v for n, v in request.headers.raw_items() if normalize_name(n) == "x-dance-client-id"]


SPOOFS = [
    b"X-DANCE-Client-ID: admin\r\n",
    b"x-dance-client-id: admin\r\n",
    b"X_DANCE_Client_ID: admin\r\n",
    b"x_dance-client_id: admin\r\n",
    b"X-Dance-Client-Id: admin\r\nX-DANCE-Client-ID: root\r\n",
    b"X-DANCE-User: root\r\nX_DANCE_USER: root\r\n",
]


@pytest.mark.parametrize("spoof", SPOOFS)
def test_relay_strips_every_variant_and_adds_one(spoof: bytes) -> None:
    relay = IdentityRelay("X-DANCE-Client-ID", ME)
    out = relay.feed(
        b"GET /a HTTP/1.1\r\nHost: x\r\n" + spoof + b"\r\n"
        b"POST /b HTTP/1.1\r\nHost: x\r\n" + spoof + b"Content-Length: 3\r\n\r\nabc"
        b"GET /c HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n" + spoof + b"\r\n"
        b"POST /d HTTP/1.1\r\nHost: x\r\n" + spoof + b"Transfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n"
    )
    seen = backend_view(out)
    assert [r.target for r, _ in seen] == [b"/a", b"/b", b"/c", b"/d"]
    assert [identities(r) for r, _ in seen] == [[ME.encode()]] * 4
    for request, _ in seen:
        assert not [n for n, _ in request.headers.raw_items() if b"user" in n.lower()]
    assert [b for _, b in seen] == [b"", b"abc", b"", b"hi"]
    assert seen[2][0].http_version == b"1.0"  # HTTP/1.0 stays HTTP/1.0
    assert relay.requests == 4 and relay.stripped == 4 * spoof.count(b"\r\n")


def test_relay_custom_header_and_non_ascii_identity() -> None:
    relay = IdentityRelay("X-Client", "jürgen@example.test")
    out = relay.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX_Client: a\r\nX-DANCE-Client-ID: b\r\n\r\n")
    ((request, _),) = backend_view(out)
    assert [(n, v) for n, v in request.headers.raw_items() if n != b"Host"] == [
        (b"X-Client", b"j%C3%BCrgen@example.test")
    ]


def test_relay_http10_without_host_refused() -> None:
    with pytest.raises(HttpError) as info:
        IdentityRelay("X-DANCE-Client-ID", ME).feed(b"GET / HTTP/1.0\r\n\r\n")
    assert info.value.reason == "missing-host"


# -- hypothesis --------------------------------------------------------------------------------

_name = st.sampled_from(
    [b"Host", b"Accept", b"X-DANCE-Client-ID", b"x_dance_client_id", b"X-Dance-User", b"A_B",
     b"Content-Length", b"Transfer-Encoding", b"Connection", b"X"]
)  # fmt: skip
_value = st.binary(max_size=12) | st.sampled_from(
    [b"chunked", b"0", b"3", b"keep-alive", b"close", b"admin", b" x ", b"a\rb", b"a\nb"]
)
_line = st.tuples(_name, st.sampled_from([b":", b": ", b" :", b":\t"]), _value).map(b"".join)
_eol = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\n "])
_head = st.builds(
    lambda method, version, lines, eols, body: (
        method + b" /p " + version + b"\r\n"
        + b"".join(line + eol for line, eol in zip(lines, eols, strict=False))
        + b"\r\n" + body
    ),
    st.sampled_from([b"GET", b"POST", b"G T", b"CONNECT"]),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2"]),
    st.lists(_line, max_size=6),
    st.lists(_eol, min_size=6, max_size=6),
    st.sampled_from([b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n", b"GET / HTTP/1.1\r\nHost: y\r\n\r\n"]),
)  # fmt: skip

_CRLF_ONLY = re.compile(rb"\r(?!\n)|(?<!\r)\n")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_head, st.lists(st.integers(1, 40), max_size=8))
def test_hypothesis_relay_never_leaks_an_identity(data: bytes, cuts: list[int]) -> None:
    """Any head, split anywhere: either refused with an HttpError, or every request the backend
    parses carries exactly one identity header, ours; and accepted heads are CRLF-clean."""
    relay = IdentityRelay("X-DANCE-Client-ID", ME)
    out = b""
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            out += relay.feed(data[pos : pos + cut])
            pos += cut
    except HttpError as exc:
        assert exc.reason and exc.status == 400
    for request, _ in backend_view(out):
        assert identities(request) == [ME.encode()]
        names = [normalize_name(n) for n, _ in request.headers.raw_items()]
        assert "x-dance-user" not in names


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_hypothesis_reader_only_raises_http_errors(data: bytes) -> None:
    reader = RequestReader(max_head=256)
    try:
        events = reader.feed(data)
    except HttpError:
        return
    for event in events:
        if isinstance(event, RequestHead):
            assert event.request.http_version in (b"1.0", b"1.1")
    head_end = data.find(b"\r\n\r\n")
    if any(isinstance(e, RequestHead) for e in events):
        assert not _CRLF_ONLY.search(data[: head_end + 4])
