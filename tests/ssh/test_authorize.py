"""authorize(): SSH keys through the Authenticator, against DNSSEC-signed testkit zones."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from dance.auth import Authenticator
from dance.identity import Identity, Reason, Rejection, Result
from dance.ssh import authorize, ssh_tlsa_record
from dance.testkit import Fault
from tests.ssh.common import ABSENT, ALICE, BOB, CAROL, LEGACY, World, ssh_pub, to_key

ROOT_NAMES = (ALICE, CAROL)


def check(world: World, private: Any, names: Sequence[str], user: str = "root") -> Result:
    keytype, blob = ssh_pub(private)

    async def go() -> Result:
        resolver = world.resolver()
        async with resolver:
            auth = Authenticator(resolver, allow=list(names) or ["unused.example.test"])
            return await authorize(auth, user, keytype, blob, names)

    return asyncio.run(go())


def test_published_key_accepted(world: World) -> None:
    result = check(world, world.keys["alice"], ROOT_NAMES)
    assert isinstance(result, Identity)
    assert result.client_name == ALICE and result.record == "3 1 1" and result.raw_public_key


def test_second_name_full_spki_record(world: World) -> None:
    """CAROL publishes 3 1 0 (the full SPKI) of an ECDSA P-256 key."""
    result = check(world, world.keys["carol"], ROOT_NAMES)
    assert isinstance(result, Identity)
    assert result.client_name == CAROL and result.record == "3 1 0"


def test_rsa_sha512(world: World) -> None:
    result = check(world, world.keys["rsa"], ["rsa._user.example.test"])
    assert isinstance(result, Identity) and result.record == "3 1 2"


def test_wrong_key_refused(world: World) -> None:
    result = check(world, world.keys["mallory"], ROOT_NAMES)
    assert isinstance(result, Rejection) and result.reason is Reason.NO_MATCH


def test_key_published_for_a_name_not_authorized(world: World) -> None:
    """BOB's key is correctly published at BOB, but BOB is not one of root's names."""
    result = check(world, world.keys["bob"], ROOT_NAMES)
    assert isinstance(result, Rejection) and result.reason is Reason.NO_MATCH
    assert check(world, world.keys["bob"], [BOB]).accepted  # the control: BOB itself works


def test_no_names_for_the_account(world: World) -> None:
    result = check(world, world.keys["alice"], [])
    assert isinstance(result, Rejection) and result.reason is Reason.NOT_ALLOWED


def test_authenticator_allow_list_is_enforced(world: World) -> None:
    """Names outside the Authenticator's allow-list are refused before any DNS query."""
    keytype, blob = ssh_pub(world.keys["bob"])

    async def go() -> tuple[Result, dict[str, int]]:
        resolver = world.resolver()
        async with resolver:
            auth = Authenticator(resolver, allow=[ALICE])
            result = await authorize(auth, "root", keytype, blob, [BOB])
            return result, auth.stats()

    result, stats = asyncio.run(go())
    assert isinstance(result, Rejection) and result.reason is Reason.NOT_ALLOWED
    assert stats["dns_lookups"] == 0


def test_bogus_refused(world: World) -> None:
    with world.zones.inject(Fault("bad-signature", ALICE)):
        result = check(world, world.keys["alice"], [ALICE])
    assert isinstance(result, Rejection) and result.reason is Reason.DNS_BOGUS
    assert check(world, world.keys["alice"], [ALICE]).accepted


def test_insecure_zone_refused(world: World) -> None:
    """LEGACY has a matching record, in an unsigned zone: never enough."""
    result = check(world, world.keys["dave"], [LEGACY])
    assert isinstance(result, Rejection) and result.reason is Reason.DNS_INSECURE


def test_absent_record_refused(world: World) -> None:
    result = check(world, world.keys["alice"], [ABSENT])
    assert isinstance(result, Rejection) and result.reason is Reason.DNS_SECURE_ABSENT


def test_most_telling_rejection_reported(world: World) -> None:
    with world.zones.inject(Fault("bad-signature", CAROL)):
        result = check(world, world.keys["mallory"], [ABSENT, CAROL, ALICE])
    assert isinstance(result, Rejection) and result.reason is Reason.DNS_BOGUS


def test_malformed_key_is_a_rejection(world: World) -> None:
    async def go() -> Result:
        resolver = world.resolver()
        async with resolver:
            auth = Authenticator(resolver, allow=[ALICE])
            return await authorize(auth, "root", "ssh-ed25519", "%%%", [ALICE])

    result = asyncio.run(go())
    assert isinstance(result, Rejection) and result.reason is Reason.MALFORMED_INPUT


def test_removed_record_refused(world: World) -> None:
    """Revocation: the administrator removes the record; the next check refuses the key."""
    assert check(world, world.keys["alice"], ROOT_NAMES).accepted
    world.users.remove("alice", "TLSA")
    world.resign()
    try:
        result = check(world, world.keys["alice"], [ALICE])
        assert isinstance(result, Rejection) and result.reason is Reason.DNS_SECURE_ABSENT
        assert not check(world, world.keys["alice"], ROOT_NAMES).accepted
    finally:  # the zone is shared by the module: put the record back
        world.users.add("alice", "TLSA", ssh_tlsa_record(to_key(world.keys["alice"])).to_text())
        world.resign()
    assert check(world, world.keys["alice"], ROOT_NAMES).accepted
