"""PKIX-TA(0) and PKIX-EE(1) against a configurable local trust store."""

from __future__ import annotations

import datetime

from dance import MatchPolicy, Reason, make_record, verify
from dance import certs as gen
from tests.pki import NOW, chain, key, make_pki

PKI = make_pki()
FREEFORM = "device73.example.com"
EE = gen.issue_certificate(PKI.ica, PKI.ica_key, key(2).public_key(), dns_names=[FREEFORM], now=NOW)
STORE = MatchPolicy.with_pkix([PKI.ca])


def test_pkix_unusable_without_store() -> None:
    result = verify(FREEFORM, chain(EE, PKI.ica), [make_record(EE, 1, 1, 1)], now=NOW)
    assert result.reason is Reason.NO_USABLE_RECORDS  # type: ignore[union-attr]


def test_pkix_ee() -> None:
    result = verify(FREEFORM, chain(EE, PKI.ica), [make_record(EE, 1, 1, 1)], now=NOW, policy=STORE)
    assert result.accepted, result
    assert (result.usage, result.depth) == (1, 0)  # type: ignore[union-attr]


def test_pkix_ta_matches_root_in_store() -> None:
    result = verify(
        FREEFORM, chain(EE, PKI.ica), [make_record(PKI.ca, 0, 0, 1)], now=NOW, policy=STORE
    )
    assert result.accepted and result.depth == 2  # type: ignore[union-attr]
    result = verify(
        FREEFORM, chain(EE, PKI.ica), [make_record(PKI.ica, 0, 1, 1)], now=NOW, policy=STORE
    )
    assert result.accepted and result.depth == 1  # type: ignore[union-attr]


def test_pkix_untrusted_root() -> None:
    other = MatchPolicy.with_pkix([make_pki(ca_key_index=5).ca])
    result = verify(FREEFORM, chain(EE, PKI.ica), [make_record(EE, 1, 1, 1)], now=NOW, policy=other)
    assert result.reason is Reason.BAD_CHAIN  # type: ignore[union-attr]


def test_pkix_expired() -> None:
    later = NOW + datetime.timedelta(days=800)
    result = verify(
        FREEFORM, chain(EE, PKI.ica), [make_record(EE, 1, 1, 1)], now=later, policy=STORE
    )
    assert not result.accepted


def test_pkix_name_mismatch() -> None:
    result = verify(
        "device74.example.com",
        chain(EE, PKI.ica),
        [make_record(EE, 1, 1, 1)],
        now=NOW,
        policy=STORE,
    )
    assert result.reason is Reason.NAME_MISMATCH  # type: ignore[union-attr]


def test_pkix_ta_record_not_matching_validated_chain() -> None:
    unrelated = make_pki(ca_key_index=6).ca
    result = verify(
        FREEFORM, chain(EE, PKI.ica), [make_record(unrelated, 0, 0, 1)], now=NOW, policy=STORE
    )
    assert result.reason is Reason.NO_MATCH  # type: ignore[union-attr]
