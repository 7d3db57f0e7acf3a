"""Fuzz the SMTP line reader of `dance smtp-proxy` (the sans-I/O ``dance.smtp.framing.Framer``)
against an independent reference reading of RFC 5321 written here.

The driver plays the proxy: after a command line ``DATA`` it switches the reader to message
text (as on the backend's 354). Properties, for random, mutated and smuggling-shaped streams
split at random points:

* nothing is ever raised: a refusal is a Violation event (``bare-cr``, ``bare-lf``, ``nul``,
  ``command-too-long``, ``line-too-long``), sticky, at the offset of the offending byte;
* the events equal the reference reading exactly (lines, message text, end of data,
  violation and its offset): a line ends only at CRLF, a bare CR or LF or a NUL anywhere is a
  violation, a command line is at most 512 octets and a text line 1000 (with CRLF), and the
  message ends only at CRLF ``.`` CRLF;
* nothing is normalized: the events put back together are exactly the bytes consumed, and
  what was accepted contains no CR or LF outside CRLF pairs (so Postfix, which strips CRs
  before LF, reads the same lines);
* the events do not depend on how the stream was split.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz.common import fuzz_settings, hit, time_limit

framing = pytest.importorskip("dance.smtp.framing", reason="the sans-I/O SMTP reader is not merged")

DOOR = "smtp"
MAX_COMMAND, MAX_LINE = 64, 100  # small limits, so that the generators reach them
_BAD = re.compile(rb"\r(?!\n)|(?<!\r)\n|\x00")


def _is_data_command(text: bytes) -> bool:
    return text.upper() == b"DATA"


def reference(stream: bytes, max_command: int = MAX_COMMAND, max_line: int = MAX_LINE) -> list[Any]:
    """The events of ``stream`` as RFC 5321 reads it strictly (independent of the Framer)."""
    out: list[Any] = []
    pos, data = 0, False
    while True:
        limit = max_line if data else max_command
        j = pos
        end = None
        while True:
            if j >= pos + limit:
                if j < len(stream):
                    out.append(("violation", "line-too-long" if data else "command-too-long", j))
                return out
            if j >= len(stream):
                return out  # an incomplete line: more bytes are needed
            byte = stream[j]
            if byte == 0:
                out.append(("violation", "nul", j))
                return out
            if byte == 0x0D:
                if j + 1 >= len(stream):
                    return out
                if stream[j + 1] == 0x0A:
                    if j + 1 >= pos + limit:
                        out.append(("violation", "line-too-long" if data else "command-too-long",
                                    pos + limit))  # fmt: skip
                        return out
                    end = j + 2
                    break
                out.append(("violation", "bare-cr", j))
                return out
            if byte == 0x0A:
                out.append(("violation", "bare-lf", j))
                return out
            j += 1
        line = stream[pos:end]
        pos = end
        if not data:
            out.append(("line", line[:-2]))
            if _is_data_command(line[:-2]):
                data = True
        elif line == b".\r\n":
            out.append(("end",))
            data = False
        else:
            out.append(("data", line))


def merged(events: list[Any]) -> list[Any]:
    """Consecutive message text joined (the Framer may group lines differently)."""
    out: list[Any] = []
    for event in events:
        if event[0] == "data" and out and out[-1][0] == "data":
            out[-1] = ("data", out[-1][1] + event[1])
        else:
            out.append(event)
    return out


def run_framer(stream: bytes, cuts: list[int]) -> list[Any]:
    framer = framing.Framer(max_command=MAX_COMMAND, max_line=MAX_LINE)
    events: list[Any] = []
    pos = 0
    for cut in [*cuts, len(stream)]:
        framer.feed(stream[pos : pos + cut])
        pos += cut
        while True:
            event = framer.next_event()
            if event is None:
                break
            if isinstance(event, framing.Violation):
                events.append(("violation", event.reason, event.offset))
                assert framer.next_event() == event  # sticky
                assert event.reply[:1] in ("5",)
                return events
            if isinstance(event, framing.Line):
                events.append(("line", event.text))
                if _is_data_command(event.text):
                    framer.start_data()
            elif isinstance(event, framing.Data):
                events.append(("data", event.raw))
            else:
                assert event is framing.END_OF_DATA
                events.append(("end",))
        if pos >= len(stream):
            break
    return events


def check(stream: bytes, cuts: list[int]) -> list[Any]:
    hit(DOOR)
    with time_limit():
        got = merged(run_framer(stream, cuts))
        whole = merged(run_framer(stream, []))
        want = merged(reference(stream))
    assert got == whole, "the events depend on how the stream was split"
    assert got == want, f"framer {got!r} != reference {want!r}"
    consumed = b"".join(
        e[1] + b"\r\n" if e[0] == "line" else e[1] if e[0] == "data" else b".\r\n"
        for e in got
        if e[0] != "violation"
    )
    assert stream.startswith(consumed), "the events are not the bytes received"
    assert _BAD.search(consumed) is None, "accepted text with a bare CR, bare LF or NUL"
    for e in got:
        if e[0] == "line":
            assert len(e[1]) + 2 <= MAX_COMMAND
        elif e[0] == "data":
            lines = e[1].split(b"\r\n")[:-1]
            assert all(len(line) + 2 <= MAX_LINE and line != b"." for line in lines)
    return got


SESSION = (
    b"EHLO client.example\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"
    b"Subject: hi\r\n\r\nline one\r\n..dot-stuffed\r\n.\r\nQUIT\r\n"
)
# The published end-of-data variants (SMTP smuggling, Longin 2023) and friends.
SMUGGLING = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n.\n",
    b"\r\n.\r\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n .\r\n",
    b"\r\n. \r\n",
    b"\r\n.\r\n",
    b"\r\r\n.\r\r\n",
    b"\r\nXCLIENT LOGIN=admin\r\n",
    b"\r\nMAIL FROM:<evil@x>\r\n",
    b"\x00",
    b"\r",
    b"\n",
]


@fuzz_settings(300)
@given(
    st.lists(st.tuples(st.integers(0, 400), st.sampled_from(SMUGGLING)), min_size=1, max_size=4),
    st.lists(st.integers(1, 40), max_size=6),
)
@example([(len(SESSION) - 17, b"\r\n.\r\r\n")], [])
@example([(len(SESSION) - 17, b"\n.\n")], [3])
def test_smuggling_shapes(inserts: list[tuple[int, bytes]], cuts: list[int]) -> None:
    stream = bytearray(SESSION)
    for pos, piece in inserts:
        at = pos % (len(stream) + 1)
        stream[at:at] = piece
    check(bytes(stream), cuts)


@fuzz_settings(300)
@given(
    st.lists(
        st.sampled_from([b"DATA", b"data", b"NOOP", b"x" * 61, b"x" * 62, b".", b"..", b"", b" "])
        | st.binary(max_size=12),
        max_size=10,
    ),
    st.lists(
        st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b""]),
        min_size=10,
        max_size=10,
    ),
    st.lists(st.integers(1, 30), max_size=6),
)
def test_generated_lines(lines: list[bytes], eols: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(line + eol for line, eol in zip(lines, eols, strict=False))
    check(stream, cuts)


@fuzz_settings(200)
@given(st.binary(max_size=300), st.lists(st.integers(1, 50), max_size=6))
def test_random_bytes(data: bytes, cuts: list[int]) -> None:
    check(data, cuts)
    check(b"DATA\r\n" + data, cuts)


@fuzz_settings(100)
@given(st.integers(1, 3 * MAX_LINE), st.sampled_from([b"\r\n", b"\r", b"\n", b""]), st.booleans())
def test_line_length_limits(size: int, eol: bytes, in_data: bool) -> None:
    prefix = b"DATA\r\n" if in_data else b""
    check(prefix + b"a" * size + eol + b".\r\n", [])


def test_reference_agrees_on_known_verdicts() -> None:
    """The reference itself: the classic end-of-data variants are never an end of data."""
    for piece in SMUGGLING[:10]:
        events = reference(b"DATA\r\ntext" + piece + b"XCLIENT LOGIN=admin\r\n")
        assert ("end",) not in events, piece
    assert ("end",) in reference(b"DATA\r\ntext\r\n.\r\n")
