"""Hostile and edge BER: the framer and the strict decoder refuse with a reason code (unit), the
front refuses through TLS, counts and keeps serving, and whatever it relays means the same to
slapd as when sent to slapd directly (differential, real slapd)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dance.ldap import messages as m
from dance.ldap.ber import BERError, PDUReader, minimal_lengths
from tests.ldap.client import context, ldaps
from tests.ldap.conftest import DOMAIN, Front, Slapd, Users, user_dn

WHOAMI = m.extended_request(7, m.WHO_AM_I)  # 30 1c 02 01 07 77 17 80 15 <oid>


def _long(pdu: bytes) -> bytes:
    """The same PDU with every length in the 4-octet long form (liblber style, valid BER)."""

    def walk(start: int, end: int) -> bytes:
        res = bytearray()
        p = start
        while p < end:
            tag, first = pdu[p], pdu[p + 1]
            if first < 0x80:
                length, content = first, p + 2
            else:
                n = first & 0x7F
                length, content = int.from_bytes(pdu[p + 2 : p + 2 + n], "big"), p + 2 + n
            body = (
                walk(content, content + length) if tag & 0x20 else pdu[content : content + length]
            )
            res += bytes([tag, 0x84]) + len(body).to_bytes(4, "big") + body
            p = content + length
        return bytes(res)

    return walk(0, len(pdu))


def _deep(levels: int) -> bytes:
    """A search whose filter is ``levels`` nested NOTs around (objectClass=*)."""
    flt = b"\x87\x0bobjectClass"
    for _ in range(levels):
        flt = b"\xa2" + _len(len(flt)) + flt
    body = (
        b"\x04\x00\x0a\x01\x00\x0a\x01\x00\x02\x01\x00\x02\x01\x00\x01\x01\x00" + flt + b"\x30\x00"
    )
    op = b"\x63" + _len(len(body)) + body
    inner = b"\x02\x01\x09" + op
    return b"\x30" + _len(len(inner)) + inner


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


HOSTILE = {
    "indefinite-length": b"\x30\x80" + WHOAMI[2:] + b"\x00\x00",
    "huge-length": b"\x30\x85\x00\x00\x00\x00\x1c" + WHOAMI[2:],
    "too-large": b"\x30\x84\x7f\xff\xff\xff" + WHOAMI[2:],
    "too-deep": _deep(40),
    "bad-nesting": b"\x30\x05\x02\x01\x07\x04\x05abcde",  # a child runs past its parent
    "high-tag": b"\x30\x05\x1f\x81\x01\x01\x00",
    "not-sequence": b"\x31\x03\x02\x01\x01",
    "non-canonical": WHOAMI[:2] + b"\x02\x02\x00\x07" + WHOAMI[5:],  # fixed below
    "undecodable": b"\x30\x05\x02\x01\x07\x04\x00",
    "trailing-element": WHOAMI[:1] + bytes([WHOAMI[1] + 2]) + WHOAMI[2:] + b"\x04\x00",
}
EXPECTED = {"trailing-element": "undecodable"}
# messageID 7 as 02 02 00 07: one octet longer than the original; fix the outer length
HOSTILE["non-canonical"] = b"\x30" + bytes([WHOAMI[1] + 1]) + b"\x02\x02\x00\x07" + WHOAMI[5:]


@pytest.mark.parametrize("reason", sorted(HOSTILE))
def test_refused_with_reason(reason: str) -> None:
    pdu = HOSTILE[reason]
    with pytest.raises((BERError, m.LDAPProtocolError)) as info:
        for raw in PDUReader(max_pdu=64 * 1024).feed(pdu):
            m.decode_request(raw)
    assert info.value.reason == EXPECTED.get(reason, reason)  # type: ignore[union-attr]


def test_truncated() -> None:
    reader = PDUReader()
    assert reader.feed(WHOAMI[:-3]) == []
    with pytest.raises(BERError) as info:
        reader.eof()
    assert info.value.reason == "truncated"


def test_long_form_lengths_accepted() -> None:
    long = _long(WHOAMI)
    assert long != WHOAMI and minimal_lengths(long) == WHOAMI
    (raw,) = PDUReader().feed(long)
    assert m.decode_request(raw).extended_name() == m.WHO_AM_I


def test_nested_filter_within_limit_decodes() -> None:
    (raw,) = PDUReader().feed(_deep(20))
    assert m.decode_request(raw).op == "searchRequest"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    reader = PDUReader(max_pdu=4096)
    try:
        for raw in reader.feed(data):
            m.decode_request(raw)
    except (BERError, m.LDAPProtocolError):
        pass


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(WHOAMI) - 1), st.integers(0, 255))
def test_mutations_are_refused_or_canonical(pos: int, value: int) -> None:
    """A one-octet change is either refused or decodes to a PDU whose canonical encoding is
    exactly its bytes (then it is relayed as it is)."""
    data = bytearray(WHOAMI)
    data[pos] = value
    try:
        for raw in PDUReader().feed(bytes(data)):
            request = m.decode_request(raw)
            assert minimal_lengths(request.raw) == raw
    except (BERError, m.LDAPProtocolError):
        pass


# -- through the front, against the real slapd ------------------------------------------------


async def _session(front: Front, users: Users) -> object:
    client = await ldaps(front.ldaps, context(users, users.alice, f"_user.{DOMAIN}"))
    result = await client.bind()
    assert result.code == 0
    return client


@pytest.mark.integration
@pytest.mark.parametrize(
    "reason",
    [
        "indefinite-length",
        "huge-length",
        "too-deep",
        "non-canonical",
        "bad-nesting",
        "trailing-element",
    ],
)
def test_front_refuses_and_keeps_serving(front: Front, users: Users, reason: str) -> None:
    async def main() -> tuple[bytes | None, bytes | None, str]:
        client = await _session(front, users)
        await client.send(HOSTILE[reason])  # type: ignore[attr-defined]
        notice = await client.read()  # type: ignore[attr-defined]
        end = await client.read()  # type: ignore[attr-defined]
        await client.close()  # type: ignore[attr-defined]
        again = await _session(front, users)
        who = await again.whoami()  # type: ignore[attr-defined]
        await again.close()  # type: ignore[attr-defined]
        return notice, end, who

    counted = EXPECTED.get(reason, reason)
    before = front.stats().get(counted, 0)
    relayed = front.proxy.stats.relayed
    notice, end, who = asyncio.run(main())
    assert notice is not None and end is None
    result = m.decode_result(notice)
    assert result.message_id == 0 and result.code == m.PROTOCOL_ERROR  # notice of disconnection
    assert front.stats()[counted] == before + 1
    assert who == f"dn:{user_dn('alice')}"  # the front keeps serving
    assert front.proxy.stats.relayed == relayed + 1  # only the second session's whoami


def _direct(slapd: Slapd, pdu: bytes) -> bytes:
    """Bind to slapd over ldapi as the proxy would for alice, send ``pdu``, return the reply."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(15)
        s.connect(str(slapd.socket))
        s.sendall(m.bind_request(1, f"u:alice@{DOMAIN}"))
        reader = PDUReader(check=False)
        replies: list[bytes] = []
        for want in (1, 2):
            if want == 2:
                s.sendall(pdu)
            while len(replies) < want:
                data = s.recv(65536)
                assert data
                replies.extend(reader.feed(data))
        return replies[1]


@pytest.mark.integration
@pytest.mark.parametrize("variant", ["minimal", "long-lengths", "deep-20"])
def test_relayed_means_the_same_to_slapd(
    front: Front, users: Users, slapd: Slapd, variant: str
) -> None:
    """Edge encodings the front accepts get the same answer from slapd through the front as
    sent directly (same identity)."""
    pdu = {"minimal": WHOAMI, "long-lengths": _long(WHOAMI), "deep-20": _deep(20)}[variant]
    direct = _direct(slapd, pdu)

    async def main() -> bytes | None:
        client = await _session(front, users)
        await client.send(pdu)  # type: ignore[attr-defined]
        reply = await client.read()  # type: ignore[attr-defined]
        await client.close()  # type: ignore[attr-defined]
        return reply

    through = asyncio.run(main())
    assert through == direct
