"""The StartTLS listener admits its own connections: per-address and total caps, counted by
reason, and cut on shutdown (no slapd needed: nothing gets as far as a bind)."""

from __future__ import annotations

import asyncio
import contextlib

from dance.auth import Authenticator
from dance.ldap import LDAPProxyConfig, start_ldap_proxy
from tests.ldap.conftest import ALLOW, Users, resolver


async def _refused(port: int, source: str) -> bool:
    """Whether the proxy closes a new connection from ``source`` without a word."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        return await asyncio.wait_for(reader.read(), 30) == b""
    except ConnectionResetError:
        return True
    finally:
        writer.close()


def test_starttls_listener_caps(users: Users) -> None:
    async def main() -> None:
        async with resolver(users) as res:
            proxy = await start_ldap_proxy(
                "127.0.0.1",
                ldaps_port=None,
                starttls_port=0,
                config=LDAPProxyConfig(
                    "/nonexistent/ldapi", bind_timeout=60.0, max_connections=2, max_per_address=1
                ),
                cert=users.server.cert,
                key=users.server.key,
                authenticator=Authenticator(res, allow=ALLOW),
            )
            port = proxy.starttls_port
            held = []
            try:
                held.append(await asyncio.open_connection("127.0.0.1", port))
                while proxy.slots.active < 1:
                    await asyncio.sleep(0.01)
                assert await _refused(port, "127.0.0.1")
                assert proxy.stats.refused == {"per-address": 1}
                held.append(
                    await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
                )
                while proxy.slots.active < 2:
                    await asyncio.sleep(0.01)
                assert await _refused(port, "127.0.0.3")
                assert proxy.stats.refused == {"per-address": 1, "max-connections": 1}
                held[0][1].close()  # a slot freed is usable again, from the same address
                while proxy.slots.active > 1:
                    await asyncio.sleep(0.01)
                held.append(await asyncio.open_connection("127.0.0.1", port))
                while proxy.slots.active < 2:
                    await asyncio.sleep(0.01)
                assert proxy.stats.refused == {"per-address": 1, "max-connections": 1}
            finally:
                cut = await proxy.shutdown(0.1)
                for _, writer in held:
                    writer.close()
            assert cut == 2 and proxy.slots.active == 0 and not proxy.slots.tasks

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(asyncio.wait_for(main(), 120))
