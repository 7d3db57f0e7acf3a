"""The Authenticator with a scripted TLSA source: allow-list before DNS, outcomes, caching.

End-to-end tests with real DNSSEC validation live in tests/dns and tests/integration.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass, field

import pytest

from dance import CertificateChain, Identity, RawPublicKey, Reason, make_record
from dance import certs as gen
from dance.auth import AllowList, Authenticator
from dance.dns import LookupResult, Outcome
from dance.names import parse_client_name
from tests.pki import NAME, NOW, chain, device, key, make_pki

SS = gen.self_signed(key(2), NAME, now=NOW)
SS_CHAIN = chain(SS)
RECORD = make_record(SS).to_wire()


@dataclass
class FakeSource:
    answers: dict[str, LookupResult] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)

    async def lookup_tlsa(self, name: str) -> LookupResult:
        self.queries.append(name)
        await asyncio.sleep(0)
        return self.answers.get(
            name, LookupResult(Outcome.SECURE_ABSENT, reason="nxdomain", name=name)
        )

    def cached(self, name: str) -> LookupResult | None:
        return self.answers.get(name)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(
    answers: dict[str, LookupResult], allow: list[str] | None = None
) -> tuple[Authenticator, FakeSource, Clock]:
    source = FakeSource(answers)
    mono = Clock()
    auth = Authenticator(source, allow=allow or [NAME], clock=lambda: NOW, monotonic=mono)
    return auth, source, mono


def secure(*records: bytes, ttl: float = 300) -> LookupResult:
    return LookupResult(Outcome.SECURE, records, ttl, "ok", NAME)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_accept_and_counters() -> None:
    auth, source, _ = make({NAME: secure(RECORD)})
    result = run(auth.authenticate(NAME, SS_CHAIN))
    assert isinstance(result, Identity) and result.identity == NAME
    assert source.queries == [NAME]
    assert auth.stats()["accepted"] == 1


def test_not_allowed_makes_no_query() -> None:  # TC-D1
    auth, source, _ = make({NAME: secure(RECORD)}, allow=["other._device.example.com"])
    result = run(auth.authenticate(NAME, SS_CHAIN))
    assert result.reason is Reason.NOT_ALLOWED  # type: ignore[union-attr]
    assert source.queries == []
    assert auth.authenticate_cached(NAME, SS_CHAIN).reason is Reason.NOT_ALLOWED  # type: ignore[union-attr]


def test_malformed_name_makes_no_query() -> None:
    auth, source, _ = make({}, allow=[".example.com"])
    for bad in ("*._device.example.com", "a..example.com", "x" * 300, "bücher.example.com"):
        assert run(auth.authenticate(bad, SS_CHAIN)).reason is Reason.MALFORMED_INPUT  # type: ignore[union-attr]
    assert source.queries == []


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (Outcome.SECURE_ABSENT, Reason.DNS_SECURE_ABSENT),  # TC-D2
        (Outcome.INSECURE, Reason.DNS_INSECURE),  # TC-D3
        (Outcome.BOGUS, Reason.DNS_BOGUS),  # TC-D4
        (Outcome.INDETERMINATE, Reason.DNS_INDETERMINATE),  # TC-D5
    ],
)
def test_dns_outcomes_never_authenticate(outcome: Outcome, reason: Reason) -> None:
    # Even when the (unvalidated) data would match.
    auth, _, _ = make({NAME: LookupResult(outcome, (RECORD,), 0, "x", NAME)})
    result = run(auth.authenticate(NAME, SS_CHAIN))
    assert result.reason is reason  # type: ignore[union-attr]
    assert result.dns_outcome == outcome.value  # type: ignore[union-attr]


def test_secure_without_records() -> None:
    auth, _, _ = make({NAME: secure()})
    assert run(auth.authenticate(NAME, SS_CHAIN)).reason is Reason.NO_RECORDS  # type: ignore[union-attr]


def test_wrong_key() -> None:
    auth, _, _ = make({NAME: secure(RECORD)})
    other = chain(gen.self_signed(key(5), NAME, now=NOW))
    assert run(auth.authenticate(NAME, other)).reason is Reason.NO_MATCH  # type: ignore[union-attr]


def test_decision_cache_bounded_by_ttl() -> None:  # TC-D10
    auth, source, mono = make({NAME: secure(RECORD, ttl=60)})
    run(auth.authenticate(NAME, SS_CHAIN))
    run(auth.authenticate(NAME, SS_CHAIN))
    assert source.queries == [NAME]
    assert auth.stats()["decision_cache_hits"] == 1
    mono.t += 61
    run(auth.authenticate(NAME, SS_CHAIN))
    assert source.queries == [NAME, NAME]


def test_decision_cache_keyed_by_credential() -> None:
    auth, source, _ = make({NAME: secure(RECORD)})
    assert run(auth.authenticate(NAME, SS_CHAIN)).accepted
    other = chain(gen.self_signed(key(5), NAME, now=NOW))
    assert not run(auth.authenticate(NAME, other)).accepted
    assert len(source.queries) == 2


def test_cached_path_for_handshakes() -> None:
    auth, source, _ = make({})
    assert auth.authenticate_cached(NAME, SS_CHAIN) is None  # needs a lookup
    source.answers[NAME] = secure(RECORD)
    assert auth.authenticate_cached(NAME, SS_CHAIN).accepted  # type: ignore[union-attr]
    assert source.queries == []


def test_raw_public_key() -> None:
    auth, _, _ = make({NAME: secure(RECORD)})
    rpk = RawPublicKey.from_spki(CertificateChain.from_certificates([SS]).end_entity.spki)
    assert run(auth.authenticate(NAME, rpk)).accepted


def test_decision_cache_not_past_certificate_expiry() -> None:
    pki = make_pki()
    short = device(pki, now=NOW - datetime.timedelta(days=1), days=1.0 + 10 / 86400)  # 10 s left
    ta = make_record(pki.ca, 2, 0, 1).to_wire()
    auth, source, mono = make({NAME: secure(ta, ttl=3600)})
    assert run(auth.authenticate(NAME, chain(short, pki.ica, pki.ca))).accepted
    mono.t += 20
    run(auth.authenticate(NAME, chain(short, pki.ica, pki.ca)))
    assert len(source.queries) == 2


def test_source_that_raises_fails_closed() -> None:
    class Broken(FakeSource):
        async def lookup_tlsa(self, name: str) -> LookupResult:
            raise RuntimeError("boom")

    auth = Authenticator(Broken(), allow=[NAME])
    assert run(auth.authenticate(NAME, SS_CHAIN)).reason is Reason.DNS_INDETERMINATE  # type: ignore[union-attr]


def test_allow_list_semantics() -> None:
    allow = AllowList.parse(["device1.example.com", ".fleet.example.net", "*._device.example.org"])
    ok = [
        "device1.example.com",
        "DEVICE1.example.com",
        "a.fleet.example.net",
        "a.b.fleet.example.net",
        "s._device.example.org",
    ]
    no = [
        "x.device1.example.com",
        "fleet.example.net",
        "afleet.example.net",
        "_device.example.org",
        "example.com",
    ]
    assert all(allow.allows(parse_client_name(n)) for n in ok)
    assert not any(allow.allows(parse_client_name(n)) for n in no)
    with pytest.raises(ValueError, match="allow-list"):
        AllowList.parse(["bad..entry"])


def test_user_profile_through_authenticator() -> None:
    ca_key = key(0)
    ca = gen.new_ca(ca_key, "Users", now=NOW)
    alice = gen.issue_certificate(
        ca, ca_key, key(2).public_key(), dns_names=["example.com"], uid="Alice", now=NOW
    )
    source = FakeSource(
        {
            "_user.example.com": LookupResult(
                Outcome.SECURE,
                (make_record(ca, 2, 0, 1).to_wire(),),
                300,
                "ok",
                "_user.example.com",
            )
        }
    )
    auth = Authenticator(source, allow=["_user.example.com"], clock=lambda: NOW)
    result = run(auth.authenticate("_user.example.com", chain(alice, ca)))
    assert result.identity == "alice@example.com"  # type: ignore[union-attr]


def test_lookup_is_policy_first() -> None:
    """`lookup` (the records themselves, for name-only messages): allow-list before any query."""
    auth, source, _ = make({NAME: secure(RECORD)}, allow=["other._device.example.com"])
    refused = run(auth.lookup(NAME))
    assert refused.reason is Reason.NOT_ALLOWED  # type: ignore[union-attr]
    assert auth.lookup_cached(NAME).reason is Reason.NOT_ALLOWED  # type: ignore[union-attr]
    assert run(auth.lookup("bad..name")).reason is Reason.MALFORMED_INPUT  # type: ignore[union-attr]
    assert source.queries == []
    assert auth.admit(NAME).reason is Reason.NOT_ALLOWED  # type: ignore[union-attr]


def test_lookup_returns_the_answer() -> None:
    auth, source, _ = make({NAME: secure(RECORD)})
    answer = run(auth.lookup(NAME))
    assert answer.outcome is Outcome.SECURE and answer.records == (RECORD,)  # type: ignore[union-attr]
    assert source.queries == [NAME]
    assert auth.lookup_cached(NAME) is source.answers[NAME]
    assert auth.admit(NAME).text == NAME  # type: ignore[union-attr]


def test_lookup_source_that_raises_fails_closed() -> None:
    class Broken(FakeSource):
        async def lookup_tlsa(self, name: str) -> LookupResult:
            raise RuntimeError("boom")

    auth = Authenticator(Broken(), allow=[NAME], clock=lambda: NOW)
    assert run(auth.lookup(NAME)).reason is Reason.DNS_INDETERMINATE  # type: ignore[union-attr]
