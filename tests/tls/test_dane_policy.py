"""`dance.tls.dane.server_policy`: what each policy makes of each DNS outcome (no sockets)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from dance.tls.dane import ServerNotAuthenticated, server_policy


@dataclass
class Answer:
    outcome: str
    records: tuple[bytes, ...] = ()
    reason: str = "ok"


class Source:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.asked: list[str] = []

    async def lookup_tlsa(self, name: str) -> Answer:
        self.asked.append(name)
        return self.answer


RECORD = bytes.fromhex("030101" + "00" * 32)


@pytest.mark.parametrize(
    ("policy", "answer", "expect"),
    [
        ("dane", Answer("secure", (RECORD,)), "check"),
        ("dane-or-pkix", Answer("secure", (RECORD,)), "check"),  # no fallback when present
        ("dane", Answer("secure-absent", reason="nodata"), "refused"),
        ("dane-or-pkix", Answer("secure-absent", reason="nodata"), "pkix"),
        ("dane-or-pkix", Answer("insecure", reason="unsigned-delegation"), "pkix"),
        ("dane", Answer("insecure", reason="unsigned-delegation"), "refused"),
        ("dane-or-pkix", Answer("bogus", reason="bad-signature"), "refused"),
        ("dane-or-pkix", Answer("indeterminate", reason="timeout"), "refused"),
        ("dane", Answer("secure"), "refused"),  # secure but empty: nothing to match
        ("pkix", Answer("bogus"), "pkix"),  # pkix never asks DNS
    ],
)
def test_policy_outcomes(policy: str, answer: Answer, expect: str) -> None:
    source = Source(answer)

    async def run() -> tuple[object, bool]:
        return await server_policy(source, "api.example.com", 8443, policy=policy)

    if expect == "refused":
        with pytest.raises(ServerNotAuthenticated, match=r"_8443\._tcp\.api\.example\.com"):
            asyncio.run(run())
        return
    check, use_pkix = asyncio.run(run())
    assert (check is not None, use_pkix) == (
        {"check": (True, False), "pkix": (False, True)}[expect]
    )
    assert source.asked == ([] if policy == "pkix" else ["_8443._tcp.api.example.com"])


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        asyncio.run(server_policy(Source(Answer("secure")), "a.example", 1, policy="trust-me"))
