"""Differential SMTP smuggling tests: a corpus of payloads from the published classes, sent by an
authenticated MTA through ``dance smtp-proxy`` to a REAL Postfix that trusts the proxy's XCLIENT.

For every payload: Postfix never sees an identity other than the authenticated one (every
``sasl_username`` in its log and every ``Authenticated sender`` in the delivered messages is
the MTA's), never a command that came from message text (no smuggled envelope, no second
message, nothing logged about ``smuggled``/``postmaster``), and the proxy answers as expected.

The corpus runs twice: against a Postfix with ``smtpd_forbid_bare_newline = reject`` and empty
exclusions (defence in depth, as docs/smtp.md recommends) and against a Postfix with the
default (``no``): the proxy must be safe on its own. Control tests send the same bytes straight
to the default Postfix, as a proxy that forwarded bytes verbatim would: the smuggled message is
then delivered as ``postmaster``, so the corpus can detect smuggling.
"""

from __future__ import annotations

import asyncio
import email
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dance.auth import Authenticator
from dance.smtp import SmtpProxyConfig, start_smtp_proxy
from tests.conftest import require_binary
from tests.smtp.common import SmtpClient
from tests.smtp.postfix import Postfix, postfix_instance
from tests.smtp.world import ALLOW, MTA1, World, make_world

pytestmark = pytest.mark.integration


def smuggled(n: int) -> bytes:
    """Commands hidden in message text: a forged identity and a second message."""
    return (
        b"RSET\r\nXCLIENT LOGIN=postmaster\r\nEHLO evil.example\r\n"
        b"MAIL FROM:<smuggled-%d@evil.test>\r\nRCPT TO:<smuggled-%d@box.test>\r\nDATA\r\n"
        b"Subject: smuggled %d\r\n\r\nsmuggled\r\n" % (n, n, n)
    )


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "data": fragment inside DATA; "command": a command line; "burst": no waiting
    payload: bytes
    code: int  # the proxy's reply to the payload
    delivered: bool  # the legitimate message of this case is delivered


# fragments placed after "hello" CRLF inside the message, followed by smuggled(n) and CRLF.CRLF
CASES = [
    Case("lf-dot-lf", "data", b"\n.\n", 550, False),
    Case("lf-dot-crlf", "data", b"\n.\r\n", 550, False),
    Case("cr-dot-cr", "data", b"\r.\r", 550, False),
    Case("crlf-dot-cr", "data", b".\r", 550, False),
    Case("crlf-dot-lf", "data", b".\n", 550, False),
    Case("dot-cr-cr-lf", "data", b".\r\r\n", 550, False),
    Case("crlf-nul-dot-crlf", "data", b"\x00.\r\n", 550, False),
    Case("dot-nul-crlf", "data", b".\x00\r\n", 550, False),
    Case("cr-crlf-dot-crlf", "data", b"x\r\r\n.\r\n", 550, False),
    Case("lf-crlf-dot-crlf", "data", b"x\n\r\n.\r\n", 550, False),
    Case("crlf-lf-dot-crlf", "data", b"\n.\r\n", 550, False),
    Case("bare-cr-in-line", "data", b"x\ry\r\n", 550, False),
    Case("nul-in-line", "data", b"x\x00y\r\n", 550, False),
    Case("overlong-line", "data", b"x" * 1200 + b"\r\n", 500, False),
    # message text that only looks like an end or like commands: delivered as text
    Case("dot-space", "data", b". \r\n", 250, True),
    Case("dot-tab", "data", b".\t\r\n", 250, True),
    Case("dot-stuffed", "data", b"..\r\n", 250, True),
    Case("commands-in-text", "data", b"", 250, True),
    # pipelining: the client does not wait for the 354 or for the reply to the end of data
    Case("pipelined-after-data", "burst", b"DATA\r\nSubject: x\r\n\r\nhello\r\n.\r\n", 554, False),
    Case("pipelined-after-end", "data", b".\r\n", 554, False),
    # commands from the client itself
    Case("xclient-command", "command", b"XCLIENT LOGIN=postmaster\r\n", 502, True),
    Case("xclient-lower-tab", "command", b"xclient\tLOGIN=postmaster\r\n", 502, True),
    Case("xforward-command", "command", b"XFORWARD NAME=evil ADDR=10.0.0.1\r\n", 502, True),
    Case("auth-command", "command", b"AUTH PLAIN AHBvc3RtYXN0ZXIAeA==\r\n", 502, True),
    Case("bdat-command", "command", b"BDAT 5 LAST\r\n", 502, True),
    Case("mail-auth-param", "command", b"MAIL FROM:<a@x.test> AUTH=<postmaster@x>\r\n", 555, True),
    Case("bare-lf-command", "command", b"NOOP\nXCLIENT LOGIN=postmaster\r\n", 550, False),
    Case("bare-cr-command", "command", b"NOOP\rXCLIENT LOGIN=postmaster\r\n", 550, False),
    Case("nul-command", "command", b"NOOP\x00XCLIENT LOGIN=postmaster\r\n", 550, False),
]


@dataclass
class Outcome:
    replies: dict[str, tuple[int, bool]]  # case -> (reply code, connection closed after)
    log: str
    messages: list[Any]  # email.message.Message


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("smtp-smuggling"))


@pytest.fixture(scope="module", params=[True, False], ids=["forbid-bare-newline", "default"])
def postfix(request: pytest.FixtureRequest) -> Iterator[Postfix]:
    binary = require_binary("postfix")
    if os.geteuid() != 0:
        if os.environ.get("DANCE_REQUIRE_INTEGRATION") == "1":
            pytest.fail("a private Postfix instance needs root (DANCE_REQUIRE_INTEGRATION=1)")
        pytest.skip("a private Postfix instance needs root")
    with postfix_instance(binary, forbid_bare_newline=request.param) as instance:
        yield instance


async def _closed(client: SmtpClient) -> bool:
    try:
        return await asyncio.wait_for(client.reader.read(), 10) == b""
    except ConnectionError:
        return True


async def _one_case(world: World, port: int, n: int, case: Case) -> tuple[int, bool]:
    client, _ = await SmtpClient.open(port)
    await client.cmd("EHLO mta1.example.test")
    await client.starttls(world.context(world.mta1, MTA1))
    assert (await client.cmd("EHLO mta1.example.test"))[0] == 250
    sender, rcpt = f"case-{n}@mta1.example.test", f"case-{n}@box.test"
    head = b"Subject: case %d\r\n\r\nhello\r\n" % n
    try:
        if case.kind == "command":
            client.writer.write(case.payload)
            code, _ = await client.read_reply()
            if code >= 500 and code not in (502, 555):
                return code, await _closed(client)
            # the session goes on: a legitimate message after the refused command
            assert await client.send_mail(sender, rcpt, head.decode()) == (250, 250, 250)
            assert (await client.cmd("QUIT"))[0] == 221
            return code, True
        assert (await client.cmd(f"MAIL FROM:<{sender}>"))[0] == 250
        assert (await client.cmd(f"RCPT TO:<{rcpt}>"))[0] == 250
        if case.kind == "burst":
            client.writer.write(case.payload + smuggled(n) + b"\r\n.\r\n")
        else:
            assert (await client.cmd("DATA"))[0] == 354
            tail = b"" if case.name == "pipelined-after-end" else b"\r\n.\r\n"
            client.writer.write(head + case.payload + smuggled(n) + tail)
        code, _ = await client.read_reply()
        if code == 250:
            assert (await client.cmd("QUIT"))[0] == 221
            return code, True
        return code, await _closed(client)
    finally:
        client.close()


# Postfix sessions: the readiness probe, then one per case that gets as far as MAIL
SESSIONS = 1 + sum(case.kind != "command" or case.delivered for case in CASES)
QMGR = re.compile(r"postfix/qmgr\[\d+\]: ([0-9A-F]+): from=")  # messages Postfix took


def _settle(postfix: Postfix, expected: int) -> None:
    """Wait until Postfix delivered ``expected`` messages and logged every session's end, then
    a little longer so that a late extra delivery would be seen too."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log = postfix.log_text()
        sessions = log.count("]: disconnect from")
        if (
            len(postfix.delivered()) >= expected
            and len(QMGR.findall(log)) == log.count(": removed")
            and sessions >= SESSIONS
        ):
            break
        time.sleep(0.1)
    time.sleep(1.0)


@pytest.fixture(scope="module")
def outcome(world: World, postfix: Postfix) -> Outcome:
    """Run the whole corpus once per Postfix (before the control tests touch it)."""

    async def main() -> dict[str, tuple[int, bool]]:
        async with world.resolver() as res:
            proxy = await start_smtp_proxy(
                "127.0.0.1",
                0,
                config=SmtpProxyConfig(("127.0.0.1", postfix.port)),
                cert=world.server.cert,
                key=world.server.key,
                authenticator=Authenticator(res, allow=ALLOW),
            )
            async with proxy:
                replies = {}
                for n, case in enumerate(CASES):
                    replies[case.name] = await _one_case(world, proxy.port, n, case)
                await asyncio.sleep(0.2)
                assert proxy.stats.backend_open == 0 and proxy.stats.active == 0
                return replies

    replies = asyncio.run(main())
    _settle(postfix, sum(case.delivered for case in CASES))
    messages = [email.message_from_bytes(raw) for raw in postfix.delivered()]
    return Outcome(replies, postfix.log_text(), messages)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_payload(outcome: Outcome, case: Case) -> None:
    n = CASES.index(case)
    code, closed = outcome.replies[case.name]
    assert code == case.code
    assert closed  # refused framing ends the session; accepted sessions ended with QUIT
    mine = [m for m in outcome.messages if m["Subject"] == f"case {n}"]
    assert len(mine) == (1 if case.delivered else 0)
    for message in mine:
        assert f"(Authenticated sender: {MTA1})" in message["Received"]
        assert message["Return-Path"] == f"<case-{n}@mta1.example.test>"
    # nothing from the message text ever became a command
    assert f"smuggled-{n}@" not in outcome.log
    assert not [m for m in outcome.messages if m["Subject"] == f"smuggled {n}"]


def test_postfix_saw_only_the_authenticated_identity(outcome: Outcome) -> None:
    names = set(re.findall(r"sasl_username=(\S+)", outcome.log))
    assert names == {MTA1}
    assert "postmaster" not in outcome.log and "smuggled" not in outcome.log
    assert "sasl_sender" not in outcome.log
    senders = {re.search(r"Authenticated sender: (\S+)\)", m["Received"]) for m in outcome.messages}
    assert {s.group(1) if s else None for s in senders} == {MTA1}
    # every message Postfix took (aborted transactions never reach qmgr) was delivered
    assert len(QMGR.findall(outcome.log)) == len(outcome.messages)
    assert len(outcome.messages) == sum(c.delivered for c in CASES)


def _naive_relay(postfix: Postfix, fragment: bytes) -> list[bytes]:
    """What a proxy that forwards the client's bytes verbatim would make Postfix do: the
    replies Postfix sends after the message (one 250 per message it took)."""

    async def main() -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", postfix.port)

        async def reply() -> bytes:
            while True:
                line = await asyncio.wait_for(reader.readline(), 10)
                if line[3:4] != b"-":
                    return line

        await reply()
        for line in (
            f"EHLO proxy\r\nXCLIENT LOGIN={MTA1}\r\nEHLO mta1.example.test\r\n"
            "MAIL FROM:<control@mta1.example.test>\r\nRCPT TO:<control@box.test>\r\nDATA\r\n"
        ).splitlines(keepends=True):
            writer.write(line.encode())
            await reply()
        writer.write(b"Subject: control\r\n\r\nhello\r\n" + fragment + smuggled(999) + b"\r\n.\r\n")
        replies = []
        try:
            while sum(r.startswith(b"250 2.0.0 Ok: queued") for r in replies) < 2:
                replies.append(await asyncio.wait_for(reply(), 3))
                if replies[-1].startswith(b"5"):
                    break
        except (TimeoutError, ConnectionError):
            pass
        writer.close()
        return replies

    return asyncio.run(main())


def test_control_verbatim_relay_is_smuggled_by_default_postfix(
    outcome: Outcome, postfix: Postfix
) -> None:
    """The corpus can fail: the issue's payload, forwarded verbatim, makes the default Postfix
    take a second message as postmaster."""
    if postfix.forbid_bare_newline:
        replies = _naive_relay(postfix, b"\n.\n")
        assert replies and replies[0].startswith(b"550 5.5.2") and b"bare <LF>" in replies[0]
        # the setting does not cover a CR before the CRLF: "." CR CR LF still ends the message
        replies = _naive_relay(postfix, b".\r\r\n")
        assert replies and replies[0].startswith(b"250 2.0.0 Ok: queued")
        return
    replies = _naive_relay(postfix, b".\r\r\n")
    assert sum(r.startswith(b"250 2.0.0 Ok: queued") for r in replies) == 2
    log = postfix.wait_log("sasl_username=postmaster", timeout=10)
    assert "sasl_username=postmaster" in log
