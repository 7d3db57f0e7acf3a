"""SMTP line framing without I/O: bytes in, events out (the core of ``dance smtp-proxy``).

One line discipline for commands and message data (RFC 5321 sections 2.3.8, 4.1.1.4, 4.5.3.1):

* a line ends only at CRLF; a CR that is not followed by LF (a *bare CR*), a LF that does not
  follow a CR (a *bare LF*) and NUL are violations wherever they appear, in commands and in
  message text alike. Nothing is ever "normalized": a violation ends the session (the caller
  answers with :attr:`Violation.reply` and closes), so no byte sequence can be one line for the
  proxy and two for the backend, or the end of the message for one of them only (SMTP smuggling);
* a command line is at most ``max_command`` octets including CRLF (RFC 5321: 512), a text line
  at most ``max_line`` (RFC 5321: 1000); longer lines are violations, found as soon as the limit
  is passed (no buffering of unbounded input);
* the message ends only at a line that is exactly ``.`` (CRLF ``.`` CRLF); a line ``. `` or
  ``.`` followed by anything else is message text.

Usage::

    framer = Framer()
    framer.feed(data)                   # bytes as they arrive
    event = framer.next_event()         # None: more bytes are needed
    # command mode: Line(text) (without CRLF) | Violation
    framer.start_data()                 # after the backend said 354
    # data mode: Data(raw lines with CRLF, dot-stuffing kept) | END_OF_DATA | Violation;
    # after END_OF_DATA the framer is in command mode again.

A violation is sticky: every later :meth:`Framer.next_event` returns it again. The events do
not depend on how the input was split into ``feed`` calls (tested with hypothesis), except that
consecutive :class:`Data` events may be grouped differently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_MAX_COMMAND",
    "DEFAULT_MAX_LINE",
    "END_OF_DATA",
    "Data",
    "EndOfData",
    "Event",
    "Framer",
    "Line",
    "Violation",
]

DEFAULT_MAX_COMMAND: Final = 512  # RFC 5321 4.5.3.1.4, including CRLF
DEFAULT_MAX_LINE: Final = 1000  # RFC 5321 4.5.3.1.6, including CRLF

_CR, _LF = 0x0D, 0x0A

_REPLIES: Final = {
    "bare-cr": "550 5.5.2 Error: bare <CR> received",
    "bare-lf": "550 5.5.2 Error: bare <LF> received",
    "nul": "550 5.5.2 Error: NUL character received",
    "command-too-long": "500 5.5.2 Error: command line too long",
    "line-too-long": "500 5.5.2 Error: message line too long",
}


@dataclass(frozen=True, slots=True)
class Line:
    """One command line, without its CRLF (it contains no CR, LF or NUL)."""

    text: bytes


@dataclass(frozen=True, slots=True)
class Data:
    """One or more complete message lines, exactly as received (each ends with CRLF)."""

    raw: bytes


@dataclass(frozen=True, slots=True)
class EndOfData:
    """The line ``.`` CRLF that ends the message."""


END_OF_DATA: Final = EndOfData()


@dataclass(frozen=True, slots=True)
class Violation:
    """Input that breaks the line discipline; ``reason`` is a stable code, ``offset`` the
    position of the offending byte in the stream (counted from the first byte fed)."""

    reason: str
    offset: int

    @property
    def reply(self) -> str:
        return _REPLIES[self.reason]


Event = Line | Data | EndOfData | Violation


def _scan_line(buf: bytes, start: int, limit: int) -> tuple[str, int] | int | None:
    """Examine the line starting at ``buf[start]`` under a limit of ``limit`` octets with CRLF.

    Returns the index just after its CRLF when the line is complete and valid, ``(reason,
    index)`` for its first violation (in stream order) once it is certain, or None when more
    bytes are needed. A byte at ``start + limit`` makes the line too long, whatever it is.
    """
    end = len(buf)
    stop = min(end, start + limit)
    lf = buf.find(b"\n", start, stop)
    seg_end = lf if lf >= 0 else stop
    nul = buf.find(b"\0", start, seg_end)
    if nul >= 0:
        seg_end = nul
    # only the first CR matters: followed by LF it ends the line, followed by anything else it
    # is bare, and as the last byte received it is not decided yet (nothing follows it)
    cr = buf.find(b"\r", start, seg_end)
    if cr >= 0 and cr + 1 < end and buf[cr + 1] != _LF:
        return ("bare-cr", cr)
    if nul >= 0:
        return ("nul", nul)
    if lf >= 0:
        if lf == start or buf[lf - 1] != _CR:
            return ("bare-lf", lf)
        return lf + 1
    if end > start + limit:
        return ("too-long", start + limit)
    return None


class Framer:
    """The sans-I/O SMTP line reader (see the module documentation)."""

    def __init__(
        self, *, max_command: int = DEFAULT_MAX_COMMAND, max_line: int = DEFAULT_MAX_LINE
    ) -> None:
        if max_command < 3 or max_line < 3:
            raise ValueError("line limits must allow at least one character and CRLF")
        self.max_command = max_command
        self.max_line = max_line
        self._buf = b""
        self._consumed = 0  # stream offset of self._buf[0]
        self._data = False
        self._violation: Violation | None = None

    @property
    def in_data(self) -> bool:
        return self._data

    @property
    def pending(self) -> int:
        """Bytes received and not yet returned in an event."""
        return len(self._buf)

    @property
    def violation(self) -> Violation | None:
        return self._violation

    def feed(self, data: bytes) -> None:
        if self._violation is None:
            self._buf += data

    def discard(self) -> bytes:
        """Drop and return everything buffered (for the caller that refuses it)."""
        dropped, self._buf = self._buf, b""
        self._consumed += len(dropped)
        return dropped

    def start_data(self) -> None:
        """Switch to message text (after the 354 reply)."""
        if self._violation is None:
            self._data = True

    def _fail(self, reason: str, index: int) -> Violation:
        if reason == "too-long":
            reason = "line-too-long" if self._data else "command-too-long"
        self._violation = Violation(reason, self._consumed + index)
        self._buf = b""
        return self._violation

    def _take(self, upto: int) -> bytes:
        taken, self._buf = self._buf[:upto], self._buf[upto:]
        self._consumed += upto
        return taken

    def next_event(self) -> Event | None:
        """The next event, or None when more bytes are needed."""
        if self._violation is not None:
            return self._violation
        if not self._buf:
            return None
        if not self._data:
            found = _scan_line(self._buf, 0, self.max_command)
            if found is None:
                return None
            if isinstance(found, tuple):
                return self._fail(*found)
            return Line(self._take(found)[:-2])
        return self._next_data()

    def _next_data(self) -> Event | None:
        buf = self._buf
        if buf.startswith(b".\r\n"):
            self._take(3)
            self._data = False
            return END_OF_DATA
        # fast path: the run of complete lines up to the last CRLF, checked with C-speed methods
        last = buf.rfind(b"\r\n")
        if last >= 0:
            run = buf[: last + 2]
            if (
                b"\0" not in run
                and run.count(b"\r") == run.count(b"\n") == run.count(b"\r\n")
                and b"\r\n.\r\n" not in run
                and max(map(len, run.split(b"\r\n"))) + 2 <= self.max_line
            ):
                # every CR and LF pairs up as CRLF, no NUL, no "." line, no line over the
                # limit: the whole run is message text
                return Data(self._take(last + 2))
        # slow path, line by line: the complete lines before a "." line, a violation or an
        # incomplete line come first, as one Data event
        pos = 0
        while True:
            if pos and buf.startswith(b".\r\n", pos):
                return Data(self._take(pos))
            found = _scan_line(buf, pos, self.max_line)
            if found is None:
                return Data(self._take(pos)) if pos else None
            if isinstance(found, tuple):
                return Data(self._take(pos)) if pos else self._fail(*found)
            pos = found
