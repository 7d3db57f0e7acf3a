"""dance ldap-proxy in front of a real slapd: users authenticated by their domain's user CA in
DNS bind with SASL EXTERNAL; slapd sees their identity (whoami, ACLs) and decides on authzids."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from dance.ldap import messages as m
from tests.ldap.client import Client, context, ldaps, plain, starttls
from tests.ldap.conftest import (
    DOMAIN,
    OTHER,
    OUTSIDE,
    UNPUBLISHED,
    Front,
    Users,
    user_dn,
)

pytestmark = pytest.mark.integration
T = TypeVar("T")
ALICE = f"_user.{DOMAIN}"


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, 60)

    return asyncio.run(main())  # type: ignore[arg-type]


def bound(
    front: Front, users: Users, who: str = "alice", *, tls: str = "ldaps", authzid: str = ""
) -> Callable[[Callable[[Client], Awaitable[T]]], T]:
    files = getattr(users, who)

    def scenario(body: Callable[[Client], Awaitable[T]]) -> T:
        async def main() -> T:
            ctx = context(users, files, ALICE)
            if tls == "ldaps":
                client = await ldaps(front.ldaps, ctx)
            else:
                client = await starttls(front.starttls, ctx)
            try:
                result = await client.bind(authzid)
                assert result.code == 0, result
                return await body(client)
            finally:
                await client.close()

        return run(main())

    return scenario


@pytest.mark.parametrize("tls", ["ldaps", "starttls"])
def test_whoami_is_the_user(front: Front, users: Users, tls: str) -> None:
    assert bound(front, users, tls=tls)(lambda c: c.whoami()) == f"dn:{user_dn('alice')}"


def test_acls_apply(front: Front, users: Users) -> None:
    async def body(c: Client) -> tuple[list[str], list[str]]:
        return await c.search(user_dn("alice")), await c.search(user_dn("bob"))

    own, other = bound(front, users)(body)
    assert own == [user_dn("alice")]
    assert other == []  # slapd's ACL: people read only their own entry
    # carol may read everyone's (her ACL clause), through the same proxy
    assert bound(front, users, "carol")(lambda c: c.search(user_dn("bob"))) == [user_dn("bob")]


def test_explicit_own_authzid(front: Front, users: Users) -> None:
    who = bound(front, users, authzid=f"u:alice@{DOMAIN}")(lambda c: c.whoami())
    assert who == f"dn:{user_dn('alice')}"


def test_authzid_allowed_by_slapd(front: Front, users: Users) -> None:
    # alice's entry has authzTo: bob; slapd allows it, not dance
    before = front.proxy.stats.authz_changes
    who = bound(front, users, authzid=f"u:bob@{DOMAIN}")(lambda c: c.whoami())
    assert who == f"dn:{user_dn('bob')}"
    assert front.proxy.stats.authz_changes == before + 1


def _refused_bind(front: Front, users: Users, who: str, authzid: str, name: str = ALICE) -> int:
    async def main() -> int:
        client = await ldaps(front.ldaps, context(users, getattr(users, who), name))
        try:
            result = await client.bind(authzid)
            assert await client.read() is None  # and the session ends
            return result.code
        finally:
            await client.close()

    return run(main())


def test_authzid_refused_by_slapd(front: Front, users: Users) -> None:
    before = front.stats().get("authz-refused", 0)
    # bob has no authzTo: bob may not act as alice
    assert _refused_bind(front, users, "bob", f"u:alice@{DOMAIN}") == m.INSUFFICIENT_ACCESS
    assert _refused_bind(front, users, "bob", f"dn:{user_dn('carol')}") == m.INSUFFICIENT_ACCESS
    assert front.stats()["authz-refused"] == before + 2


def test_other_domain_refused_by_slapd(front: Front, users: Users) -> None:
    # dance authenticates dave@other.test (allowed, published), slapd's authzTo for the
    # proxy covers example.test's people only: the bind is refused
    before = front.stats().get("upstream-refused", 0)
    assert _refused_bind(front, users, "other", "", f"_user.{OTHER}") == m.INVALID_CREDENTIALS
    assert front.stats()["upstream-refused"] == before + 1


def _tls_refused(front: Front, users: Users, who: str, name: str) -> None:
    async def main() -> None:
        try:
            client = await ldaps(front.ldaps, context(users, getattr(users, who), name))
        except (ssl.SSLError, ConnectionError):
            return  # refused in the handshake
        try:
            # refused after the handshake (pending DNS lookup): closed, nothing answered
            await client.send(m.bind_request(1, ""))
            assert await client.read() is None
        except (ssl.SSLError, ConnectionError):
            pass
        finally:
            await client.close()

    run(main())


@pytest.mark.parametrize(
    ("who", "name", "reason"),
    [
        ("impostor", ALICE, "rejected_no-match"),  # alice@example.test from a CA not in DNS
        (
            "gone",
            f"_user.{UNPUBLISHED}",
            "rejected_dns-secure-absent",
        ),  # its user CA record removed
        ("outside", f"_user.{OUTSIDE}", "rejected_not-allowed"),  # not in the allow-list
        ("alice", f"_user.{OTHER}", "rejected_no-match"),  # another domain's name
    ],
)
def test_refused_by_dance(front: Front, users: Users, who: str, name: str, reason: str) -> None:
    stats = front.proxy.core.stats
    before = stats.get(reason)
    binds = front.proxy.stats.binds
    _tls_refused(front, users, who, name)
    assert stats.get(reason) == before + 1, stats.snapshot()
    assert front.proxy.stats.binds == binds


def test_bind_before_tls_refused(front: Front) -> None:
    async def main() -> tuple[m.Result, bytes | None]:
        client = await plain(front.starttls)
        try:
            result = await client.result(m.bind_request(1, ""))
            return result, await client.read()
        finally:
            await client.close()

    before = front.stats().get("bind-before-tls", 0)
    result, after = run(main())
    assert result.op == "bindResponse" and result.code == m.CONFIDENTIALITY_REQUIRED
    assert after is None
    assert front.stats()["bind-before-tls"] == before + 1


def test_search_before_tls_refused(front: Front, users: Users) -> None:
    async def main() -> m.Result:
        client = await plain(front.starttls)
        try:
            await client.send(m.extended_request(5, m.WHO_AM_I))
            raw = await client.read()
            assert raw is not None and await client.read() is None
            return m.decode_result(raw)
        finally:
            await client.close()

    result = run(main())
    assert result.message_id == 0 and result.code == m.CONFIDENTIALITY_REQUIRED  # notice


def test_starttls_pipelined_refused(front: Front) -> None:
    async def main() -> list[bytes | None]:
        client = await plain(front.starttls)
        try:
            await client.send(m.extended_request(1, m.START_TLS) + m.bind_request(2, ""))
            return [await client.read(), await client.read()]
        finally:
            await client.close()

    before = front.stats().get("starttls-pipelined", 0)
    run(main())
    assert front.stats()["starttls-pipelined"] == before + 1


def test_second_bind_refused_session_goes_on(front: Front, users: Users) -> None:
    async def body(c: Client) -> tuple[m.Result, str]:
        again = await c.bind(f"u:bob@{DOMAIN}")
        return again, await c.whoami()

    before = front.stats().get("second-bind", 0)
    again, who = bound(front, users)(body)
    assert again.code == m.UNWILLING_TO_PERFORM
    assert who == f"dn:{user_dn('alice')}"  # still alice
    assert front.stats()["second-bind"] == before + 1


def test_starttls_inside_tls_refused(front: Front, users: Users) -> None:
    async def body(c: Client) -> m.Result:
        return await c.result(m.extended_request(c.mid(), m.START_TLS))

    assert bound(front, users)(body).code == m.OPERATIONS_ERROR
