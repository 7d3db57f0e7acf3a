"""The llhttp-based reader (dance.http.h1) against the h11-based reader it replaced
(tests/http/h1_reference.py), and the relay's two ways of writing a head.

- Same verdicts: on every generated input, split anywhere, the new reader refuses exactly what the
  old one refused, with the same reason, and reads the same requests (method, target, version,
  fields, keep-alive, framing, body bytes) from everything else. The one intended difference:
  methods llhttp does not know are refused (``bad-request``).
- A canonical head (the relay's fast path: identity lines cut, ours inserted) gives the bytes the
  relay writes from the parsed fields, and the full-head grammar agrees with the canonical one.
"""

from __future__ import annotations

import h11
import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dance.http import h1
from dance.http.relay import IdentityRelay
from tests.http import h1_reference as ref
from tests.http.test_h1 import ME, REFUSED
from tests.http.test_h1 import _head as heads_strategy

Summary = tuple[list[tuple[object, ...]], str | None]


def summarize(
    reader: h1.RequestReader | ref.RequestReader, data: bytes, cuts: list[int]
) -> Summary:
    """Every event (data merged), and the refusal reason if any."""
    events: list[object] = []
    reason = None
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            events += reader.feed(data[pos : pos + cut])
            pos += cut
    except (h1.HttpError, ref.HttpError) as exc:
        events += exc.events
        reason = exc.reason
    out: list[tuple[object, ...]] = []
    for event in events:
        if isinstance(event, h1.RequestHead | ref.RequestHead):
            request = event.request
            fields = [(bytes(n), bytes(v)) for n, v in request.headers.raw_items()]
            line = (request.method, request.target, request.http_version)
            out.append(("head", *line, fields, event.keep_alive, event.chunked, event.length))
        elif isinstance(event, h11.Data):
            if out and out[-1][0] == "data":
                out[-1] = ("data", bytes(out[-1][1]) + bytes(event.data))  # type: ignore[arg-type]
            else:
                out.append(("data", bytes(event.data)))
        else:
            out.append(("end", event.keep_alive))  # type: ignore[union-attr]
    return out, reason


def assert_same(data: bytes, cuts: list[int], max_head: int = h1.DEFAULT_MAX_HEAD) -> Summary:
    new = summarize(h1.RequestReader(max_head=max_head), data, cuts)
    old = summarize(ref.RequestReader(max_head=max_head), data, cuts)
    assert new == expected_from_reference(old), (data, cuts)
    return new


def expected_from_reference(old: Summary) -> Summary:
    """The reference's reading with the one intended difference applied: the first request
    whose method llhttp does not know (a body the reference left unread can make one, as in
    ``GET ...\r\n\r\nabcGET ...``) is refused as ``bad-request``, and nothing after it read."""
    events, _ = old
    for index, event in enumerate(events):
        if event[0] == "head" and not llhttp_knows(event[1]):  # type: ignore[arg-type]
            return events[:index], "bad-request"
    return old


def llhttp_knows(method: bytes) -> bool:
    try:
        httptools.HttpRequestParser(object()).feed_data(method + b" / HTTP/1.1\r\nHost: x\r\n\r\n")
    except httptools.HttpParserInvalidMethodError:
        return False
    except httptools.HttpParserError:
        return True
    return True


@pytest.mark.parametrize(("payload", "reason"), REFUSED)
def test_refusal_cases_same_verdict(payload: bytes, reason: str) -> None:
    assert assert_same(payload, [])[1] == reason
    assert assert_same(payload, [1] * len(payload))[1] == reason


_names = st.sampled_from(
    [b"Host", b"host", b"HOST", b"Content-Length", b"content-length", b"Content_Length",
     b"Transfer-Encoding", b"transfer-encoding", b"Connection", b"Upgrade", b"Accept",
     b"X-DANCE-Client-ID", b"x_dance_user", b"A", b"Expect"]
)  # fmt: skip
_values = st.sampled_from(
    [b"", b"x", b"0", b"3", b"007", b" 3", b"3 ", b"3, 3", b"+3", b"1" * 21, b"chunked",
     b"Chunked", b"chunked, identity", b"close", b"keep-alive", b"Keep-Alive, foo", b"upgrade",
     b"websocket", b"a b", b"a\tb", b"\xc3\xa9", b"100-continue", b"x ", b"\tx"]
)  # fmt: skip
_seps = st.sampled_from([b": ", b":", b":  ", b":\t", b" : "])
_field = st.tuples(_names, _seps, _values).map(b"".join)
_request = st.builds(
    lambda method, target, version, fields, body: (
        method + b" " + target + b" HTTP/" + version + b"\r\n"
        + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body
    ),
    st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PURGE", b"CONNECT"]),
    st.sampled_from([b"/", b"/a?b=c", b"*", b"http://h/p", b"/a#f", b'/"{}|'],),
    st.sampled_from([b"1.1", b"1.1", b"1.0", b"1.2", b"2.0", b"0.9"]),
    st.lists(_field, max_size=6),
    st.sampled_from(
        [b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n", b"0\r\n\r\n", b"1;x\r\na\r\n0\r\n\r\n"]
    ),
)  # fmt: skip


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_request, min_size=1, max_size=3).map(b"".join), st.lists(st.integers(1, 60)))
def test_hypothesis_same_verdicts_as_h11_reader(data: bytes, cuts: list[int]) -> None:
    assert_same(data, cuts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heads_strategy, st.lists(st.integers(1, 40), max_size=8))
def test_hypothesis_same_verdicts_on_test_h1_heads(data: bytes, cuts: list[int]) -> None:
    assert_same(data, cuts)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_hypothesis_same_verdicts_on_bytes(data: bytes) -> None:
    assert_same(data, [], max_head=256)


def test_unread_bytes_before_the_next_request_make_an_unknown_method() -> None:
    """Found by hypothesis in CI: the reference reads ``abcGET`` as a method; we refuse it after
    the first request, which both read the same."""
    data = b"GET / HTTP/1.1\r\nHost: \r\n\r\nabcGET / HTTP/1.1\r\nHost: \r\n\r\n"
    events, reason = assert_same(data, [])
    assert reason == "bad-request"
    assert [e[0] for e in events] == ["head", "end"]


@pytest.mark.parametrize("method", [b"FOO", b"get", b"M-SEARCHX"])
def test_methods_llhttp_does_not_know_are_refused(method: bytes) -> None:
    """The one intended difference: h11 takes any token as a method, llhttp its list."""
    assert not llhttp_knows(method)
    data = method + b" / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert summarize(ref.RequestReader(), data, [])[1] is None
    with pytest.raises(h1.HttpError) as info:
        h1.RequestReader().feed(data)
    assert info.value.reason == "bad-request"


# -- the relay: canonical heads copied, the others rewritten: the same bytes --------------------

BENCH = (  # bench/bench_proxy_http.py's request: the fast path must apply to it
    b"GET /v1/readings?since=1700000000 HTTP/1.1\r\nHost: api.example.test\r\n"
    b"User-Agent: bench/1.0\r\nAccept: application/json\r\nAccept-Encoding: identity\r\n"
    b"X-Request-ID: 0123456789abcdef\r\nX-DANCE-Client-ID: spoofed.example.test\r\n\r\n"
)


def check_copy_equals_rewrite(data: bytes) -> int:
    """For every request the reader accepts: canonical heads give the same bytes both ways."""
    relay = IdentityRelay("X-DANCE-Client-ID", ME)
    try:
        events = relay.reader.feed(data)
    except h1.HttpError as exc:
        events = exc.events
    copied = 0
    for event in events:
        if isinstance(event, h1.RequestHead) and event.canonical:
            assert relay._copy(event) == relay._rewrite(event), data
            copied += 1
    return copied


def test_bench_request_is_canonical_and_copied() -> None:
    assert check_copy_equals_rewrite(BENCH) == 1
    out = IdentityRelay("X-DANCE-Client-ID", ME).feed(BENCH)
    assert out == BENCH.replace(b"X-DANCE-Client-ID: spoofed.example.test\r\n", b"").replace(
        b"HTTP/1.1\r\n", b"HTTP/1.1\r\nX-DANCE-Client-ID: " + ME.encode() + b"\r\n"
    )


@pytest.mark.parametrize(
    ("head", "canonical"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\nA: b c\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost:x\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost:  x\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x \r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\t\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\nA: \r\n\r\n", False),  # empty value: rewritten
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 03\r\n\r\nabc", False),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", True),
    ],
)
def test_canonical_flag(head: bytes, canonical: bool) -> None:
    (event, *_) = h1.RequestReader().feed(head)
    assert isinstance(event, h1.RequestHead) and event.canonical is canonical
    relay = IdentityRelay("X-DANCE-Client-ID", ME)
    written = relay._rewrite(event)[0]
    assert written.startswith(event.request.method + b" ")
    assert b": \r\n" not in written or b"A: \r\n" in written  # one SP, values without OWS
    assert b" \r\n" not in written.replace(b"A: \r\n", b"")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_request, min_size=1, max_size=3).map(b"".join))
def test_hypothesis_copy_equals_rewrite(data: bytes) -> None:
    check_copy_equals_rewrite(data)


@settings(max_examples=400, deadline=None)
@given(_request)
def test_hypothesis_canonical_grammar_within_grammar(data: bytes) -> None:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return
    head = data[: end + 4]
    if h1._CANONICAL.fullmatch(head):
        assert h1._HEAD.fullmatch(head)
