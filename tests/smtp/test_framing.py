"""The sans-I/O SMTP line framing of ``dance.smtp.framing``, without sockets: every published
end-of-data variant, bare CR/LF and NUL in commands and message text, line limits, and
hypothesis properties (the events equal those of a byte-by-byte reference model, whatever the
chunking of the input; nothing but CRLF ever ends a line)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dance.smtp.framing import END_OF_DATA, Data, EndOfData, Framer, Line, Violation

MAX_COMMAND, MAX_LINE = 24, 32  # small limits so that hypothesis reaches them
# `make fuzz` may raise this (e.g. DANCE_FUZZ_EXAMPLES=200000); `make test` runs the default
EXAMPLES = int(os.environ.get("DANCE_FUZZ_EXAMPLES", "400"))


def drive(chunks: list[bytes], framer: Framer | None = None) -> list[object]:
    """Feed ``chunks`` one by one, pull every event; switch to data mode after a DATA line.

    Data events are split into their lines (``("data", line)``), so the result does not depend
    on how lines were grouped; a violation ends the list."""
    framer = framer or Framer(max_command=MAX_COMMAND, max_line=MAX_LINE)
    out: list[object] = []
    for chunk in chunks:
        framer.feed(chunk)
        while (event := framer.next_event()) is not None:
            if isinstance(event, Violation):
                out.append(event)
                return out
            if isinstance(event, Data):
                assert event.raw.endswith(b"\r\n")
                out.extend(("data", line) for line in event.raw.split(b"\r\n")[:-1])
            else:
                out.append(event)
                if isinstance(event, Line) and event.text.upper() == b"DATA":
                    framer.start_data()
    return out


def reference(stream: bytes) -> list[object]:
    """An independent, byte-by-byte model of the line discipline."""
    out: list[object] = []
    i, data = 0, False
    while True:
        limit = MAX_LINE if data else MAX_COMMAND
        j = i
        while True:
            if j >= len(stream):
                return out
            if j - i == limit:
                out.append(Violation("line-too-long" if data else "command-too-long", j))
                return out
            byte = stream[j]
            if byte == 0:
                out.append(Violation("nul", j))
                return out
            if byte == 0x0A:
                out.append(Violation("bare-lf", j))
                return out
            if byte == 0x0D:
                if j + 1 >= len(stream):
                    return out
                if stream[j + 1] != 0x0A:
                    out.append(Violation("bare-cr", j))
                    return out
                if j + 1 - i == limit:
                    out.append(Violation("line-too-long" if data else "command-too-long", j + 1))
                    return out
                line, i = stream[i:j], j + 2
                break
            j += 1
        if data:
            if line == b".":
                out.append(END_OF_DATA)
                data = False
            else:
                out.append(("data", line))
        else:
            out.append(Line(line))
            data = line.upper() == b"DATA"


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    parts, last = [], 0
    for p in points:
        parts.append(stream[last:p])
        last = p
    parts.append(stream[last:])
    return parts


# streams made of SMTP-ish pieces, so that DATA, "." lines, CR, LF, NUL and long lines all occur
PIECES = st.sampled_from(
    [
        b"DATA",
        b".",
        b"..",
        b". ",
        b"\r\n",
        b"\r",
        b"\n",
        b"\0",
        b"a",
        b"XCLIENT LOGIN=x",
        b" ",
        b"L" * 20,
    ]
)
STREAMS = st.lists(PIECES | st.binary(max_size=6), max_size=40).map(b"".join)


@settings(max_examples=EXAMPLES, deadline=None)
@given(stream=STREAMS, cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_events_match_reference_for_any_chunking(stream: bytes, cuts: list[int]) -> None:
    expected = reference(stream)
    assert drive([stream]) == expected
    assert drive(split(stream, cuts)) == expected
    assert drive([bytes([b]) for b in stream]) == expected


@settings(max_examples=max(300, EXAMPLES // 4), deadline=None)
@given(lines=st.lists(st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b)))
def test_only_crlf_ends_a_line(lines: list[bytes]) -> None:
    """A stream of CRLF-terminated lines without NUL yields exactly those lines (limits apart):
    no other byte sequence is ever taken as a line end."""
    lines = [line.replace(b"\0", b"") for line in lines]
    framer = Framer(max_command=1000, max_line=1000)
    framer.feed(b"".join(line + b"\r\n" for line in lines))
    got = []
    while (event := framer.next_event()) is not None:
        assert isinstance(event, Line)
        got.append(event.text)
    assert got == lines and framer.pending == 0


@settings(max_examples=max(300, EXAMPLES // 4), deadline=None)
@given(body=st.binary(max_size=200), tail=st.binary(max_size=20))
def test_message_ends_only_at_crlf_dot_crlf(body: bytes, tail: bytes) -> None:
    """Whatever the message text, the framer never reports the end of data unless the text
    seen so far ends with CRLF "." CRLF (or the message was just "." CRLF)."""
    framer = Framer(max_line=10_000)
    framer.feed(b"DATA\r\n")
    assert framer.next_event() == Line(b"DATA")
    framer.start_data()
    stream = body + tail
    framer.feed(stream)
    seen = b""
    while (event := framer.next_event()) is not None:
        if isinstance(event, Data):
            seen += event.raw
        elif isinstance(event, EndOfData):
            assert seen == b"" or seen.endswith(b"\r\n")
            assert (seen + b".\r\n") == stream[: len(seen) + 3]
            return
        else:
            assert isinstance(event, Violation | Line)
            return


def data_framer() -> Framer:
    framer = Framer()
    framer.feed(b"DATA\r\n")
    assert framer.next_event() == Line(b"DATA")
    framer.start_data()
    return framer


# the published SMTP smuggling end-of-data variants (SEC Consult 2023 and follow-ups)
@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"text\n.\nMAIL FROM:<x>\r\n", "bare-lf"),
        (b"text\n.\r\nMAIL FROM:<x>\r\n", "bare-lf"),
        (b"text\r.\rMAIL FROM:<x>\r\n", "bare-cr"),
        (b"text\r\n.\rMAIL FROM:<x>\r\n", "bare-cr"),
        (b"text\r\n.\nMAIL FROM:<x>\r\n", "bare-lf"),
        (b"text\r\n.\r\r\nMAIL FROM:<x>\r\n", "bare-cr"),
        (b"text\r\n\x00.\r\nMAIL FROM:<x>\r\n", "nul"),
        (b"text\r\n.\x00\r\nMAIL FROM:<x>\r\n", "nul"),
        (b"text\r\r\n.\r\r\n", "bare-cr"),
        (b"text\n\r\n.\r\n", "bare-lf"),
        (b"text\r\n\n.\r\n", "bare-lf"),
        (b"text\r\n.\n\r\n", "bare-lf"),
    ],
)
def test_smuggling_end_of_data_variants_refused(payload: bytes, reason: str) -> None:
    framer = data_framer()
    framer.feed(payload)
    events = []
    while not isinstance(event := framer.next_event(), Violation):
        assert event is not None and not isinstance(event, EndOfData)
        events.append(event)
    assert event.reason == reason and event.reply.startswith("550 5.5.2")
    assert framer.next_event() == event  # sticky
    framer.feed(b"\r\n.\r\nMAIL FROM:<y>\r\n")
    assert framer.next_event() == event  # nothing after a violation is ever read


def test_dot_with_trailing_space_is_text() -> None:
    framer = data_framer()
    framer.feed(b"a\r\n. \r\n.x\r\n..\r\n.\r\nQUIT\r\n")
    assert framer.next_event() == Data(b"a\r\n. \r\n.x\r\n..\r\n")
    assert framer.next_event() == END_OF_DATA
    assert not framer.in_data and framer.pending == 6
    assert framer.next_event() == Line(b"QUIT")


def test_empty_message_and_dot_at_chunk_borders() -> None:
    framer = data_framer()
    for byte in b".\r\n":
        assert framer.next_event() is None
        framer.feed(bytes([byte]))
    assert framer.next_event() == END_OF_DATA


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"NOOP\nXCLIENT LOGIN=x\r\n", "bare-lf"),
        (b"NOOP\rXCLIENT LOGIN=x\r\n", "bare-cr"),
        (b"NOOP\x00\r\n", "nul"),
        (b"\n", "bare-lf"),
        (b"MAIL FROM:<a>\r\r\n", "bare-cr"),
    ],
)
def test_command_violations(stream: bytes, reason: str) -> None:
    framer = Framer()
    framer.feed(stream)
    event = framer.next_event()
    assert isinstance(event, Violation) and event.reason == reason


def test_command_limit_512_with_crlf() -> None:
    framer = Framer()
    framer.feed(b"N" * 510 + b"\r\n")
    assert framer.next_event() == Line(b"N" * 510)
    framer.feed(b"N" * 511 + b"\r")
    assert framer.next_event() is None  # 512 octets so far, the LF would make 513
    framer.feed(b"\n")
    event = framer.next_event()
    assert isinstance(event, Violation) and event.reason == "command-too-long"
    assert event.offset == 512 + 512


def test_overlong_partial_line_refused_without_its_end() -> None:
    """A line is refused as soon as it passes the limit: no unbounded buffering."""
    framer = Framer()
    framer.feed(b"A" * 600)
    event = framer.next_event()
    assert isinstance(event, Violation) and event.reason == "command-too-long"
    assert framer.pending == 0
    framer = data_framer()
    framer.feed(b"x" * 998 + b"\r\n" + b"y" * 5000)
    assert framer.next_event() == Data(b"x" * 998 + b"\r\n")
    event = framer.next_event()
    assert isinstance(event, Violation) and event.reason == "line-too-long"
    framer = data_framer()  # a complete over-long line inside a run of lines
    framer.feed(b"a\r\n" + b"y" * 999 + b"\r\nb\r\n")
    assert framer.next_event() == Data(b"a\r\n")
    event = framer.next_event()
    assert isinstance(event, Violation) and event.reason == "line-too-long"
    assert event.offset == 6 + 3 + 1000


def test_discard_and_limits_validation() -> None:
    framer = Framer()
    framer.feed(b"STARTTLS\r\nMAIL FROM:<a>\r\n")
    assert framer.next_event() == Line(b"STARTTLS")
    assert framer.discard() == b"MAIL FROM:<a>\r\n" and framer.pending == 0
    with pytest.raises(ValueError):
        Framer(max_command=2)
