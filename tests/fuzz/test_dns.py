"""Fuzz the embedded authority's message handler (`Authority.handle`, which the UDP and TCP
listeners call for every message) with queries, TSIG-signed and unsigned UPDATEs, and random or
mutated wire messages.

Properties: no exception escapes and none is swallowed and logged as a failure (``handle``
catches everything, so a logged traceback is the crash); every reply parses with dnspython,
is a response (QR) with the query's ID and opcode, fits the UDP limit, and is TSIG-signed
verifiably when the query was; an UPDATE without a valid TSIG signature of a known key (none,
wrong secret, unknown key, truncated or altered MAC, replayed, mutated) never changes the zone
(SOA serial and the applied-updates counter stay as they were)."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.update
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dance.authority import Authority, Limits, generate_tsig_key
from dance.tsig import TSIGKey
from tests.authority.conftest import ZONE, make_zone_dir
from tests.fuzz.common import fuzz_settings, hit, time_limit

DOOR = "dns"
ORIGIN = dns.name.from_text(ZONE)
KEY = generate_tsig_key("dance-update")
WRONG_SECRET = TSIGKey(KEY.name, KEY.algorithm, bytes(32))  # same name, another secret
UNKNOWN = generate_tsig_key("someone-else")


class _Failures(logging.Handler):
    """Records with a traceback (``log.exception``): the handler caught a crash."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)


@pytest.fixture(scope="module")
def authority() -> Iterator[Authority]:
    with tempfile.TemporaryDirectory() as tmp:
        zone_dir, _ = make_zone_dir(Path(tmp))
        auth = Authority(zone_dir, tsig_keys=[KEY], limits=Limits(rate=0))
        try:
            yield auth
        finally:
            auth.close()


FAILURES = _Failures()
logging.getLogger("dance.authority").addHandler(FAILURES)


def send(
    auth: Authority,
    wire: bytes,
    *,
    transport: str = "udp",
    may_change: bool = False,
    signed_with: TSIGKey | None = None,
) -> list[bytes] | None:
    """Hand ``wire`` to the authority and check everything said in the module docstring."""
    hit(DOOR)
    serial, applied = auth.serial(ORIGIN), auth.stats.updates_applied
    FAILURES.records.clear()
    with time_limit():
        replies = auth.handle(wire, transport)
    assert not FAILURES.records, [r.getMessage() for r in FAILURES.records]
    if not may_change:
        assert auth.serial(ORIGIN) == serial, "the zone changed without a valid TSIG"
        assert auth.stats.updates_applied == applied
    if replies is None:
        return None
    assert isinstance(replies, list) and replies
    query = None
    with contextlib.suppress(Exception):
        query = dns.message.from_wire(wire, keyring=False)
    for reply in replies:
        assert isinstance(reply, bytes) and len(reply) >= 12
        assert reply[2] & 0x80, "a reply without QR"
        assert reply[:2] == wire[:2], "a reply with another ID"
        assert (reply[2] >> 3) & 0xF == (wire[2] >> 3) & 0xF, "a reply with another opcode"
        if transport == "udp":
            limit = max(512, query.payload) if query is not None and query.edns >= 0 else 512
            assert len(reply) <= limit, "a UDP reply over the requester's size"
        if reply[11] or reply[10] or reply[9] or reply[8] or reply[7] or reply[6]:  # sections
            parsed = dns.message.from_wire(reply, keyring=False)
            assert parsed.flags & dns.flags.QR
    if signed_with is not None and query is not None and len(replies) == 1:
        # A signed query that was accepted gets a reply signed with the same key.
        parsed = dns.message.from_wire(replies[0], keyring=False)
        if parsed.rcode() != dns.rcode.NOTAUTH and parsed.tsig is not None:
            verify = dns.message.from_wire(
                replies[0],
                keyring={signed_with.dns_name: signed_with.to_dnspython()},
                request_mac=query.mac or b"",
            )
            assert verify.had_tsig
    return replies


# -- structured messages -------------------------------------------------------------------------

NAMES = st.sampled_from(
    [
        "example.test.",
        "sensor7._device.example.test.",
        "www.example.test.",
        "nope.example.test.",
        "a.b.c.d.example.test.",
        "EXAMPLE.TEST.",
        "example.org.",
        ".",
        "*.example.test.",
        "x" * 63 + ".example.test.",
    ]
)
TYPES = st.sampled_from(
    [1, 2, 5, 6, 15, 16, 28, 41, 43, 46, 47, 48, 50, 51, 52, 250, 251, 252, 255, 0, 65535, 65280]
) | st.integers(0, 65535)
CLASSES = st.sampled_from([1, 1, 1, 3, 254, 255, 0, 2]) | st.integers(0, 65535)


def _rdata(rdclass: int, rdtype: int, data: bytes) -> dns.rdata.Rdata:
    return dns.rdata.GenericRdata(rdclass, rdtype, data)


@st.composite
def queries(draw: st.DrawFn) -> tuple[bytes, TSIGKey | None]:
    qname = dns.name.from_text(draw(NAMES))
    message = dns.message.make_query(qname, draw(TYPES), draw(CLASSES), use_edns=False)
    message.id = draw(st.integers(0, 65535))
    message.flags = draw(st.integers(0, 0x7FFF)) & ~dns.flags.QR & 0x87F0  # no opcode change
    if draw(st.booleans()):
        options = [
            dns.edns.GenericOption(draw(st.integers(0, 65535)), draw(st.binary(max_size=8)))
            for _ in range(draw(st.integers(0, 2)))
        ]
        message.use_edns(
            draw(st.sampled_from([0, 0, 1, 255])),
            draw(st.sampled_from([0, dns.flags.DO])),
            draw(st.sampled_from([0, 1, 511, 512, 1232, 4096, 65535])),
            options=options,
        )
    for section in (message.answer, message.authority):
        for _ in range(draw(st.integers(0, 2))):
            rdtype = draw(TYPES)
            if rdtype in (41, 250):  # OPT and TSIG only where they belong (dnspython refuses)
                continue
            section.append(
                dns.rrset.from_rdata(
                    dns.name.from_text(draw(NAMES)),
                    300,
                    _rdata(1, rdtype, draw(st.binary(max_size=12))),
                )
            )
    if len(message.question) and draw(st.booleans()):
        message.question.append(message.question[0])  # two questions
    key = draw(st.sampled_from([None, None, KEY, WRONG_SECRET, UNKNOWN]))
    if key is not None:
        message.use_tsig({key.dns_name: key.to_dnspython()}, key.dns_name)
    return message.to_wire(), key


@st.composite
def updates(draw: st.DrawFn) -> tuple[dns.update.UpdateMessage, int]:
    zone = draw(st.sampled_from([ZONE, ZONE, "example.org.", "sub.example.test.", "."]))
    rdclass = draw(st.sampled_from([1, 1, 1, 3, 255]))
    message = dns.update.UpdateMessage(zone, rdclass=rdclass)
    message.id = draw(st.integers(0, 65535))
    for _ in range(draw(st.integers(0, 2))):
        name = draw(NAMES)
        if draw(st.booleans()):
            message.present(name, draw(st.sampled_from(["A", "TLSA", "SOA", "NS"])))
        else:
            message.absent(name)
    for _ in range(draw(st.integers(0, 3))):
        name = draw(NAMES)
        rdtype = draw(TYPES)
        if rdtype in (41, 250):
            continue
        how = draw(st.sampled_from(["add", "add", "delete", "delete-rrset", "delete-name"]))
        if how == "add":
            data = draw(
                st.sampled_from([bytes(4), bytes(16), b"\x03\x01\x01" + bytes(32)])
                | st.binary(max_size=20)
            )
            message.add(name, draw(st.sampled_from([0, 300, 2**31])), _rdata(rdclass, rdtype, data))
        elif how == "delete":
            message.delete(name, _rdata(rdclass, rdtype, draw(st.binary(max_size=8))))
        elif how == "delete-rrset":
            message.delete(name, dns.rdatatype.RdataType.make(rdtype))
        else:
            message.delete(name)
    return message, draw(st.integers(0, 5))


@st.composite
def sane_updates(draw: st.DrawFn) -> tuple[dns.update.UpdateMessage, int]:
    """Updates the zone accepts: adds and deletes of A, AAAA, TXT and TLSA below the apex."""
    message = dns.update.UpdateMessage(ZONE)
    message.id = draw(st.integers(0, 65535))
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(["www", "f1._device", "f2._device", "_user", "a.b"]))
        rdtype, text = draw(
            st.sampled_from(
                [
                    ("A", "192.0.2.7"),
                    ("AAAA", "2001:db8::7"),
                    ("TXT", '"fuzz"'),
                    ("TLSA", "3 1 1 " + "ef" * 32),
                    ("TLSA", "2 0 1 " + "01" * 32),
                ]
            )
        )
        if draw(st.integers(0, 3)):
            message.add(name, 300, rdtype, text)
        else:
            message.delete(name, rdtype)
    return message, 0


def sign(message: dns.message.Message, key: TSIGKey, *, when: int | None = None) -> bytes:
    message.use_tsig({key.dns_name: key.to_dnspython()}, key.dns_name)
    if when is None:
        return message.to_wire()
    with mock.patch("time.time", return_value=float(when)):
        return message.to_wire()


def with_mac(wire: bytes, signed: dns.message.Message, mac: bytes) -> bytes:
    """``wire`` (just rendered from ``signed``) with the MAC of its TSIG record (the last
    record) replaced by ``mac``."""
    assert signed.tsig is not None
    old = signed.tsig[0]
    old_wire = old.to_wire()
    assert wire.endswith(old_wire)
    new_wire = old.replace(mac=mac).to_wire()
    head = wire[: -len(old_wire) - 2]
    return head + len(new_wire).to_bytes(2, "big") + new_wire


@fuzz_settings(150)
@given(queries(), st.sampled_from(["udp", "tcp"]))
def test_structured_queries(
    authority: Authority, query: tuple[bytes, TSIGKey | None], transport: str
) -> None:
    wire, key = query
    send(authority, wire, transport=transport, signed_with=key if key is KEY else None)


@fuzz_settings(120)
@given(sane_updates() | updates())
def test_updates_without_valid_tsig_change_nothing(
    authority: Authority, update: tuple[dns.update.UpdateMessage, int]
) -> None:
    """Unsigned, wrong secret, unknown key, truncated / zeroed / flipped MAC, signed long ago
    or in the future, replayed: never a change."""
    message, how = update
    if how == 0:
        wire = message.to_wire()
    elif how == 1:
        wire = sign(message, WRONG_SECRET)
    elif how == 2:
        wire = sign(message, UNKNOWN)
    elif how == 3:
        good = sign(message, KEY)
        mac = message.tsig[0].mac
        wire = with_mac(good, message, mac[: [0, 1, 10, 16, 31][len(good) % 5]])
    elif how == 4:
        good = sign(message, KEY)
        mac = bytearray(message.tsig[0].mac)
        mac[len(good) % len(mac)] ^= 0x01
        wire = with_mac(good, message, bytes(mac))
    else:
        import time

        skew = -86400 if message.id % 2 else 3600  # BADTIME either way (fudge is 300 s)
        wire = sign(message, KEY, when=int(time.time()) + skew)
    replies = send(authority, wire, transport="tcp")
    assert replies is not None and len(replies) == 1
    rcode = dns.message.from_wire(replies[0], keyring=False).rcode()
    assert rcode != dns.rcode.NOERROR, "an update without a valid signature got NOERROR"


@fuzz_settings(40)
@given(
    sane_updates() | updates(),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_signed_updates_then_mutated_copies(
    authority: Authority,
    update: tuple[dns.update.UpdateMessage, int],
    edits: list[tuple[int, int]],
) -> None:
    """A correctly signed update may change the zone once; its replay and every byte-mutated
    copy (same MAC, or a MAC that no longer fits) never again."""
    message, _ = update
    wire = sign(message, KEY)
    send(authority, wire, transport="tcp", may_change=True, signed_with=KEY)
    replay = send(authority, wire, transport="tcp")
    assert replay is not None
    assert dns.message.from_wire(replay[0], keyring=False).rcode() != dns.rcode.NOERROR
    buf = bytearray(wire)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    send(authority, bytes(buf), transport="tcp")
    # The same update with the header ID changed keeps a valid MAC (the TSIG original ID is
    # what is signed), and is a replay.
    other_id = bytes([wire[0] ^ 0xFF]) + wire[1:]
    send(authority, other_id, transport="tcp")


CORPUS: list[bytes] = []


def _corpus() -> list[bytes]:
    if not CORPUS:
        q = dns.message.make_query("sensor7._device.example.test.", "TLSA", want_dnssec=True)
        CORPUS.append(q.to_wire())
        CORPUS.append(dns.message.make_query("nope.example.test.", "A").to_wire())
        CORPUS.append(dns.message.make_query("example.test.", "AXFR").to_wire())
        CORPUS.append(dns.message.make_query("example.test.", "IXFR").to_wire())
        u = dns.update.UpdateMessage(ZONE)
        u.add("fuzz._device", 300, "TLSA", "3 1 1 " + "ef" * 32)
        CORPUS.append(u.to_wire())
        u2 = dns.update.UpdateMessage(ZONE)
        u2.delete("www", "A")
        CORPUS.append(sign(u2, WRONG_SECRET))
        q2 = dns.message.make_query("example.test.", "SOA")
        CORPUS.append(sign(q2, KEY))
    return CORPUS


@fuzz_settings(250)
@given(
    st.integers(0, 6),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 2), st.integers(0, 255)), max_size=6),
    st.sampled_from(["udp", "tcp"]),
)
def test_mutated_wire(
    authority: Authority, which: int, edits: list[tuple[int, int, int]], transport: str
) -> None:
    """Byte edits (overwrite, insert, delete) of valid messages; none of the updates in the
    corpus carries a valid signature, so none may change the zone."""
    buf = bytearray(_corpus()[which])
    for pos, kind, value in edits:
        at = pos % (len(buf) + 1)
        if kind == 0 and buf:
            buf[at % len(buf)] = value
        elif kind == 1:
            buf[at:at] = bytes([value])
        elif buf:
            del buf[at % len(buf)]
    send(authority, bytes(buf), transport=transport)


@fuzz_settings(150)
@given(st.binary(min_size=0, max_size=300), st.integers(0, 15), st.booleans())
def test_random_wire(authority: Authority, data: bytes, opcode: int, counts: bool) -> None:
    """Random bytes, and random bytes behind a plausible header (query flags, any opcode,
    small section counts)."""
    send(authority, data)
    header = bytearray(data[:12].ljust(12, b"\0"))
    header[2] = (opcode << 3) | (header[2] & 0x07)
    if counts:
        header[4:12] = bytes([0, 1, 0, header[7] % 3, 0, header[9] % 3, 0, header[11] % 3])
    send(authority, bytes(header) + data[12:], transport="tcp")


def test_the_properties_are_not_vacuous(authority: Authority) -> None:
    """A correctly signed update does change the zone (so the checks above could fail), and
    its replay, the same bytes with another header ID, and a one-bit change do not."""
    message = dns.update.UpdateMessage(ZONE)
    message.add("sanity._device", 300, "TLSA", "3 1 1 " + "5a" * 32)
    wire = sign(message, KEY)
    serial, applied = authority.serial(ORIGIN), authority.stats.updates_applied
    (reply,) = send(authority, wire, transport="tcp", may_change=True, signed_with=KEY) or [b""]
    assert dns.message.from_wire(reply, keyring=False).rcode() == dns.rcode.NOERROR
    assert authority.serial(ORIGIN) != serial and authority.stats.updates_applied == applied + 1
    for copy in (
        wire,
        bytes([wire[0] ^ 0xFF]) + wire[1:],
        wire[:20] + bytes([wire[20] ^ 1]) + wire[21:],
    ):
        (reply,) = send(authority, copy, transport="tcp") or [b""]
        assert dns.message.from_wire(reply, keyring=False).rcode() != dns.rcode.NOERROR
