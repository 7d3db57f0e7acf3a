"""Sans-I/O framing of LDAP PDUs (RFC 4511 section 5.1) with the limits a proxy needs.

This module only cuts the byte stream into LDAPMessage envelopes and checks the *shape* of each
envelope's TLV tree before any decoder sees it; the meaning is decoded by pyasn1 against
ldap3's RFC 4511 schema (:mod:`dance.ldap.messages`). What is refused here, each with a stable
reason code (:class:`BERError.reason`):

* ``indefinite-length``: the indefinite form (``80``), anywhere (RFC 4511 5.1: definite only);
* ``huge-length``: a length in more than 4 octets, or the reserved ``FF``;
* ``too-large``: an envelope longer than the configured maximum (checked from its header,
  before the content is buffered);
* ``too-deep``: constructed elements nested deeper than the limit (pyasn1 decodes recursively;
  a deep LDAP filter would otherwise reach Python's recursion limit);
* ``high-tag``: a tag number in the multi-octet form (LDAP uses none);
* ``bad-nesting``: a child element that runs past its parent, or a constructed element whose
  children do not fill it exactly (trailing bytes inside an element);
* ``not-sequence``: an envelope that is not a universal constructed SEQUENCE (``30``);
* ``truncated``: the stream ended inside an envelope.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_PDU",
    "BERError",
    "PDUReader",
    "check_structure",
    "minimal_lengths",
]

DEFAULT_MAX_PDU = 256 * 1024
DEFAULT_MAX_DEPTH = 32
_MAX_LENGTH_OCTETS = 4


class BERError(ValueError):
    """A PDU refused before decoding; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _header(buf: bytes | bytearray, pos: int) -> tuple[int, int, int] | None:
    """(tag octet, content length, content offset) of the TLV at ``pos``; None if ``buf`` ends
    inside the header. Raises BERError for the forms this profile refuses."""
    if pos >= len(buf):
        return None
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise BERError("high-tag", f"tag octet {tag:#04x}")
    if pos + 1 >= len(buf):
        return None
    first = buf[pos + 1]
    if first < 0x80:
        return tag, first, pos + 2
    if first == 0x80:
        raise BERError("indefinite-length")
    count = first & 0x7F
    if count > _MAX_LENGTH_OCTETS:  # includes the reserved 0xFF
        raise BERError("huge-length", f"{count} length octets")
    if pos + 2 + count > len(buf):
        return None
    length = int.from_bytes(buf[pos + 2 : pos + 2 + count], "big")
    return tag, length, pos + 2 + count


def check_structure(pdu: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Walk the TLV tree of one complete envelope (iteratively): every length definite, every
    child inside its parent, every constructed element filled exactly, nesting bounded."""
    ends: list[int] = [len(pdu)]  # the end of each open constructed element
    pos = 0
    while True:
        while ends and pos == ends[-1]:
            ends.pop()
        if not ends:
            return
        head = _header(pdu, pos)
        if head is None:
            raise BERError("bad-nesting", "an element header runs past its parent")
        tag, length, start = head
        end = start + length
        if end > ends[-1]:
            raise BERError("bad-nesting", "an element runs past its parent")
        if tag & 0x20:  # constructed: descend
            if len(ends) > max_depth:
                raise BERError("too-deep", f"more than {max_depth} nested elements")
            ends.append(end)
            pos = start
        else:
            pos = end


def minimal_lengths(pdu: bytes) -> bytes:
    """The same TLV tree with every length in its shortest form (X.690 8.1.3.5 allows longer
    ones; they carry no meaning). Used to compare a client's PDU with its canonical encoding.
    ``pdu`` must have passed :func:`check_structure`."""

    def walk(start: int, end: int) -> bytes:
        out = bytearray()
        pos = start
        while pos < end:
            head = _header(pdu, pos)
            assert head is not None
            tag, length, content = head
            body = (
                walk(content, content + length) if tag & 0x20 else pdu[content : content + length]
            )
            out.append(tag)
            out += _length(len(body))
            out += body
            pos = content + length
        return bytes(out)

    return walk(0, len(pdu))


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


class PDUReader:
    """Cuts a byte stream into LDAPMessage envelopes. ``feed`` returns the complete envelopes
    (raw bytes) and keeps the rest; any refused form raises :class:`BERError` (the stream is
    then unusable: the caller ends the session). ``check``: also walk each envelope's tree
    (client input); off for the trusted server's output, which is only cut at envelopes."""

    def __init__(
        self,
        max_pdu: int = DEFAULT_MAX_PDU,
        max_depth: int = DEFAULT_MAX_DEPTH,
        *,
        check: bool = True,
    ) -> None:
        if max_pdu < 16 or max_depth < 4:
            raise ValueError("max_pdu must be at least 16 and max_depth at least 4")
        self.max_pdu = max_pdu
        self.max_depth = max_depth
        self.check = check
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received and not yet returned as an envelope."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            head = _header(self._buf, 0)
            if head is None:
                return out
            tag, length, start = head
            if tag != 0x30:
                raise BERError("not-sequence", f"envelope tag {tag:#04x}")
            total = start + length
            if total > self.max_pdu:
                raise BERError("too-large", f"{total} octets (limit {self.max_pdu})")
            if len(self._buf) < total:
                return out
            pdu = bytes(self._buf[:total])
            del self._buf[:total]
            if self.check:
                check_structure(pdu, self.max_depth)
            out.append(pdu)

    def eof(self) -> None:
        """The stream ended: refused when it ended inside an envelope."""
        if self._buf:
            raise BERError("truncated", f"{len(self._buf)} octets of an unfinished PDU")
