"""``dance smtp-proxy`` in front of a REAL Postfix (Debian package ``postfix``), started by the
test as a private instance on a free loopback port: an MTA authenticated by DANCE relays to a
remote domain (Postfix logs ``sasl_username=<identity>``); refused clients never reach Postfix;
an unauthenticated session cannot relay."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from dance.auth import Authenticator
from dance.smtp import SmtpProxy, SmtpProxyConfig, start_smtp_proxy
from tests.conftest import require_binary
from tests.smtp.common import RELAY_RCPT, SmtpClient
from tests.smtp.postfix import Postfix, postfix_instance
from tests.smtp.test_proxy_sink import refused, tls_session
from tests.smtp.world import ALLOW, MTA1, World, make_world

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("smtp-postfix"))


@pytest.fixture(scope="module")
def postfix() -> Iterator[Postfix]:
    binary = require_binary("postfix")
    if os.geteuid() != 0:
        if os.environ.get("DANCE_REQUIRE_INTEGRATION") == "1":
            pytest.fail("a private Postfix instance needs root (DANCE_REQUIRE_INTEGRATION=1)")
        pytest.skip("a private Postfix instance needs root")
    with postfix_instance(binary) as instance:
        yield instance


def run(world: World, postfix: Postfix, scenario: Any, **config: Any) -> Any:
    async def main() -> Any:
        async with world.resolver() as res:
            proxy = await start_smtp_proxy(
                "127.0.0.1",
                0,
                config=SmtpProxyConfig(("127.0.0.1", postfix.port), **config),
                cert=world.server.cert,
                key=world.server.key,
                authenticator=Authenticator(res, allow=ALLOW),
            )
            async with proxy:
                return await scenario(proxy)

    return asyncio.run(main())


def connects(postfix: Postfix) -> int:
    return postfix.log_text().count("postfix/smtpd[")


def test_authenticated_mta_relays_through_postfix(world: World, postfix: Postfix) -> None:
    async def scenario(proxy: SmtpProxy) -> None:
        client = await tls_session(world, proxy, world.mta1, MTA1)
        await client.cmd("EHLO mta1.example.test")
        result = await client.send_mail("sender@mta1.example.test", RELAY_RCPT)
        assert result == (250, 250, 250)
        assert (await client.cmd("QUIT"))[0] == 221
        client.close()

    run(world, postfix, scenario)
    log = postfix.wait_log("status=sent (relay.test)")
    assert f"sasl_method=XCLIENT, sasl_username={MTA1}" in log
    assert "to=<someone@relay.test>" in log and "status=sent (relay.test)" in log


def test_refused_mta_never_reaches_postfix(world: World, postfix: Postfix) -> None:
    before = postfix.log_text().count("]: connect from")

    async def scenario(proxy: SmtpProxy) -> None:
        for files, name in ((world.impostor, MTA1), (world.mta1, None)):
            client = await tls_session(world, proxy, files, name)
            assert await refused(client)
            client.close()
        plain, _ = await SmtpClient.open(proxy.port)
        await plain.cmd("EHLO plain.example")
        assert (await plain.cmd("MAIL FROM:<a@x.test>"))[0] == 530
        plain.close()
        await asyncio.sleep(0.2)

    run(world, postfix, scenario)
    assert postfix.log_text().count("]: connect from") == before


def test_unauthenticated_session_cannot_relay(world: World, postfix: Postfix) -> None:
    async def scenario(proxy: SmtpProxy) -> None:
        client, _ = await SmtpClient.open(proxy.port)
        await client.cmd("EHLO plain.example")
        code, _ = await client.cmd("MAIL FROM:<a@x.test>")
        assert code == 250
        rcode, rtext = await client.cmd(f"RCPT TO:<{RELAY_RCPT}>")
        assert rcode == 554 and "Relay access denied" in rtext
        rcode, _ = await client.cmd("RCPT TO:<user@local.test>")
        assert rcode == 250
        # a spoofed XCLIENT is answered by the proxy, never by Postfix
        assert (await client.cmd(f"XCLIENT LOGIN={MTA1}"))[0] == 502
        rcode, _ = await client.cmd(f"RCPT TO:<{RELAY_RCPT}>")
        assert rcode == 554
        client.close()

    run(world, postfix, scenario, require_tls=False, allow_unauthenticated=True)
    log = postfix.wait_log("Relay access denied")
    assert "Relay access denied" in log
    assert "helo=<plain.example>" in log
