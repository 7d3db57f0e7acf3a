"""``dance.smtp`` against an in-test SMTP sink (a stand-in for Postfix that records XCLIENT):
authenticated MTAs are announced with LOGIN=<identity>; refused ones never reach the backend."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from dance.auth import Authenticator
from dance.smtp import SmtpProxy, SmtpProxyConfig, SmtpProxyError, start_smtp_proxy, xtext
from tests.smtp.common import RELAY_RCPT, Sink, SmtpClient, start_sink
from tests.smtp.world import ALLOW, MTA1, MTA2, OUTSIDER, World, make_world

T = TypeVar("T")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("smtp"))


def run(
    world: World,
    scenario: Callable[[SmtpProxy, Sink], Awaitable[T]],
    *,
    allow: list[str] | None = None,
    san_fallback: bool = False,
    **config: Any,
) -> T:
    async def main() -> T:
        sink = await start_sink()
        async with world.resolver() as res:
            auth = Authenticator(res, allow=allow if allow is not None else ALLOW)
            proxy = await start_smtp_proxy(
                "127.0.0.1",
                0,
                config=SmtpProxyConfig(("127.0.0.1", sink.port), **config),
                cert=world.server.cert,
                key=world.server.key,
                authenticator=auth,
                san_fallback=san_fallback,
            )
            async with proxy:
                try:
                    return await scenario(proxy, sink)
                finally:
                    sink.server.close()

    return asyncio.run(main())


async def tls_session(world: World, proxy: SmtpProxy, files: Any, name: str | None) -> SmtpClient:
    client, greeting = await SmtpClient.open(proxy.port)
    assert "ESMTP" in greeting
    code, caps = await client.cmd("EHLO mta1.example.test")
    assert code == 250 and "STARTTLS" in caps and "SIZE" in caps
    await client.starttls(world.context(files, name))
    return client


async def refused(client: SmtpClient) -> bool:
    """Under TLS 1.3 a refused client learns it on its first read after the handshake."""
    try:
        await client.cmd("EHLO mta1.example.test")
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        return True
    return False


def test_authenticated_mta_relays_with_login(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client = await tls_session(world, proxy, world.mta1, MTA1)
        code, caps = await client.cmd("EHLO mta1.example.test")
        assert code == 250 and "STARTTLS" not in caps  # answered by the proxy, after TLS
        assert "XCLIENT" not in caps and "AUTH" not in caps
        assert await client.send_mail("a@mta1.example.test", RELAY_RCPT) == (250, 250, 250)
        assert (await client.cmd("QUIT"))[0] == 221
        client.close()
        assert sink.connections == 1
        assert sink.xclients == [
            {
                "NAME": "[UNAVAILABLE]",
                "ADDR": "127.0.0.1",
                "HELO": "mta1.example.test",
                "PROTO": "ESMTP",
                "LOGIN": MTA1,
            }
        ]
        assert sink.messages == [b"Subject: hi\r\n\r\nhello\r\n"]
        assert proxy.stats.authenticated == 1
        assert proxy.core.stats.snapshot().get("accepted") == 1

    run(world, scenario)


def test_two_messages_and_rset_in_one_session(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client = await tls_session(world, proxy, world.mta2, MTA2)
        await client.cmd("EHLO mta2.example.test")
        assert await client.send_mail("a@x.test", RELAY_RCPT) == (250, 250, 250)
        assert (await client.cmd("RSET"))[0] == 250
        body = "Subject: two\r\n\r\n..dot-stuffed line\r\nend\r\n"
        assert await client.send_mail("b@x.test", RELAY_RCPT, body) == (250, 250, 250)
        client.close()
        assert sink.connections == 1 and len(sink.messages) == 2
        assert sink.messages[1] == body.encode()
        assert sink.xclients[0]["LOGIN"] == MTA2

    run(world, scenario)


@pytest.mark.parametrize(
    ("files", "name", "reason"),
    [
        ("impostor", MTA1, "rejected_no-match"),  # wrong key
        ("mta1", OUTSIDER, "rejected_not-allowed"),  # name outside the allow-list
        ("mta1", None, "rejected_extension-absent"),  # no dane_clientid extension
    ],
)
def test_refused_tls_client_never_reaches_backend(
    world: World, files: str, name: str | None, reason: str
) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client = await tls_session(world, proxy, getattr(world, files), name)
        assert await refused(client)
        client.close()
        await asyncio.sleep(0.05)
        assert sink.connections == 0
        assert proxy.core.stats.snapshot().get(reason) == 1
        assert proxy.stats.authenticated == 0

    run(world, scenario)


def test_removed_record_refused(world: World) -> None:
    world.example.remove("_smtp-client.mta2", "TLSA")
    world.zones.sign(algorithm=13, denial="nsec3")
    try:

        async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
            client = await tls_session(world, proxy, world.mta2, MTA2)
            assert await refused(client)
            client.close()
            await asyncio.sleep(0.05)
            assert sink.connections == 0
            assert proxy.core.stats.snapshot().get("rejected_dns-secure-absent") == 1

        run(world, scenario)
    finally:
        from pathlib import Path

        from dance import make_record
        from dance.credentials import load_certificates

        cert = load_certificates(Path(world.mta2.cert).read_bytes())[0]
        world.example.add("_smtp-client.mta2", "TLSA", make_record(cert).to_text())
        world.zones.sign(algorithm=13, denial="nsec3")


def test_mail_before_starttls_530(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client, _ = await SmtpClient.open(proxy.port)
        await client.cmd("EHLO mta1.example.test")
        code, text = await client.cmd("MAIL FROM:<a@x.test>")
        assert code == 530 and text == "530 5.7.0 Must issue a STARTTLS command first"
        assert (await client.cmd("RCPT TO:<b@relay.test>"))[0] == 503
        assert (await client.cmd("QUIT"))[0] == 221
        client.close()
        assert sink.connections == 0

    run(world, scenario)


def test_client_xclient_and_auth_never_forwarded(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client, _ = await SmtpClient.open(proxy.port)
        await client.cmd("EHLO evil.example")
        # before TLS
        assert (await client.cmd(f"XCLIENT LOGIN={MTA1}"))[0] == 502
        assert (await client.cmd("AUTH PLAIN AGF1dGgAc2VjcmV0"))[0] == 502
        await client.starttls(world.context(world.mta1, MTA1))
        await client.cmd("EHLO mta1.example.test")
        assert (await client.cmd("MAIL FROM:<a@x.test>"))[0] == 250
        # inside a relayed transaction, with the backend connected
        assert (await client.cmd("XCLIENT LOGIN=postmaster ADDR=10.0.0.1"))[0] == 502
        assert (await client.cmd("XFORWARD ADDR=10.0.0.1"))[0] == 502
        assert (await client.cmd("AUTH LOGIN"))[0] == 502
        assert (await client.cmd("STARTTLS"))[0] == 503
        assert (await client.cmd("BDAT 10 LAST"))[0] == 502
        client.close()
        await asyncio.sleep(0.05)
        assert len(sink.xclients) == 1 and sink.xclients[0]["LOGIN"] == MTA1
        assert not any(line.upper().startswith(("AUTH", "XFORWARD", "BDAT")) for line in sink.lines)
        assert proxy.stats.refused_commands["XCLIENT"] == 2

    run(world, scenario)


def test_plaintext_pipelined_after_starttls_refused(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client, _ = await SmtpClient.open(proxy.port)
        await client.cmd("EHLO x.example")
        client.writer.write(b"STARTTLS\r\nMAIL FROM:<a@x.test>\r\n")
        code, _ = await client.read_reply()
        assert code == 501
        assert await client.reader.read() == b""
        assert sink.connections == 0

    run(world, scenario)


def test_unauthenticated_allowed_has_no_login(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client, _ = await SmtpClient.open(proxy.port)
        await client.cmd("EHLO plain.example")
        assert await client.send_mail("a@x.test", RELAY_RCPT) == (250, 554, 0)
        assert await client.send_mail("a@x.test", "user@local.test") == (250, 250, 250)
        client.close()
        assert sink.connections == 1
        assert "LOGIN" not in sink.xclients[0]

    run(world, scenario, require_tls=False, allow_unauthenticated=True)


def test_no_require_tls_without_allow_unauthenticated(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client, _ = await SmtpClient.open(proxy.port)
        await client.cmd("EHLO plain.example")
        assert (await client.cmd("MAIL FROM:<a@x.test>"))[0] == 530
        client.close()
        assert sink.connections == 0

    run(world, scenario, require_tls=False)


def test_config_errors() -> None:
    with pytest.raises(SmtpProxyError):
        SmtpProxyConfig(("127.0.0.1", 25), allow_unauthenticated=True)
    with pytest.raises(SmtpProxyError):
        SmtpProxyConfig(("127.0.0.1", 25), hostname="bad host")
    with pytest.raises(SmtpProxyError):
        SmtpProxyConfig(("127.0.0.1", 25), max_size=0)


def test_xtext() -> None:
    assert xtext("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext(MTA1) == MTA1


def test_san_fallback_accepts_client_without_extension(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client = await tls_session(world, proxy, world.mta1, None)
        await client.cmd("EHLO mta1.example.test")
        assert await client.send_mail("a@x.test", RELAY_RCPT) == (250, 250, 250)
        client.close()
        assert sink.xclients[0]["LOGIN"] == MTA1

    run(world, scenario, san_fallback=True)


def test_xclient_with_tab_or_bare_cr_not_forwarded(world: World) -> None:
    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client = await tls_session(world, proxy, world.mta1, MTA1)
        await client.cmd("EHLO mta1.example.test")
        assert (await client.cmd("MAIL FROM:<a@x.test>"))[0] == 250
        assert (await client.cmd("xclient\tLOGIN=postmaster"))[0] == 502
        assert (await client.cmd("  XClient LOGIN=postmaster"))[0] == 502
        code, text = await client.cmd("NOOP\rXCLIENT LOGIN=postmaster")
        assert code == 550 and "bare <CR>" in text
        assert await client.reader.read() == b""  # the session is over
        client.close()
        await asyncio.sleep(0.05)
        assert [x["LOGIN"] for x in sink.xclients] == [MTA1]
        assert not any("postmaster" in line for line in sink.lines)
        assert proxy.stats.refused["bare-cr"] == 1

    run(world, scenario)


def test_bare_lf_in_message_refused_and_message_dropped(world: World) -> None:
    """A bare-LF end of data is refused (never normalized): the session ends with 550, the
    backend connection is dropped in the middle of DATA, so no message is queued."""

    async def scenario(proxy: SmtpProxy, sink: Sink) -> None:
        client = await tls_session(world, proxy, world.mta1, MTA1)
        await client.cmd("EHLO mta1.example.test")
        await client.cmd("MAIL FROM:<a@x.test>")
        await client.cmd(f"RCPT TO:<{RELAY_RCPT}>")
        assert (await client.cmd("DATA"))[0] == 354
        client.writer.write(b"Subject: x\r\n\r\nline\n.\nXCLIENT LOGIN=postmaster\r\n")
        await client.writer.drain()
        code, text = await client.read_reply()
        assert code == 550 and "bare <LF>" in text
        assert await client.reader.read() == b""
        client.close()
        for _ in range(100):
            if sink.closed == sink.connections:
                break
            await asyncio.sleep(0.02)
        assert sink.closed == sink.connections == 1
        assert sink.messages == []  # the sink saw the connection end inside DATA
        assert not any("postmaster" in line for line in sink.lines)
        assert proxy.stats.backend_open == 0 and proxy.stats.refused["bare-lf"] == 1

    run(world, scenario)


def test_demo_step() -> None:
    import io

    from dance.demo.smtp import run_smtp

    out = io.StringIO()
    assert run_smtp(out) == 0, out.getvalue()
    assert "BAD" not in out.getvalue()
