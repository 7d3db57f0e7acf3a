"""The ``dance-uid`` comparison profile for ``_user`` identities (docs/matching.md): based on
PRECIS UsernameCaseMapped (RFC 8265), but what width mapping, case mapping or NFC would change
is refused (``bad-user-id``), never folded; only ASCII A-Z is lowered."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dance import Reason, verify
from dance.userid import check_uid, uid_key
from tests.pki import NOW
from tests.test_user import CLIENT, USER_CA, R, chain, user_cert


def identity(**kwargs: str) -> object:
    result = verify(CLIENT, chain(user_cert(**kwargs), USER_CA), [R], now=NOW)
    return result.identity if result.accepted else result.reason  # type: ignore[union-attr]


def test_kelvin_sign_is_refused_not_folded() -> None:
    assert identity(uid="kevin") == "kevin@example.com"
    assert identity(uid="KEVIN") == "kevin@example.com"  # ASCII case folding stays
    assert identity(uid="KeViN") == "kevin@example.com"
    assert identity(uid="\u212aevin") is Reason.BAD_USER_ID  # KELVIN SIGN + "evin"
    assert identity(uid="\u212aEVIN") is Reason.BAD_USER_ID


@pytest.mark.parametrize(
    ("uid", "why"),
    [
        ("\uff4b\uff45\uff56\uff49\uff4e", "compatibility"),  # fullwidth "kevin"
        ("\uff2bevin", "capital"),  # FULLWIDTH LATIN CAPITAL K: a capital and a width form
        ("\ufb01nn", "compatibility"),  # LATIN SMALL LIGATURE FI
        ("\u017fam", "compatibility"),  # LATIN SMALL LETTER LONG S
        ("x\u00b2", "category"),  # SUPERSCRIPT TWO (No)
        ("e\u0301lodie", "NFC"),  # e + COMBINING ACUTE: NFC would compose it
        ("\u212b", "capital"),  # ANGSTROM SIGN
        ("\u0130stanbul", "capital"),  # LATIN CAPITAL I WITH DOT ABOVE
        ("\u00c9lodie", "capital"),  # a non-ASCII capital: case mapping would change it
        ("\u03a3\u03b1", "capital"),  # GREEK CAPITAL SIGMA
        ("\u01c5", "capital"),  # titlecase DZ WITH CARON
        ("a b", "space"),
        ("a\u00a0b", "category"),  # NO-BREAK SPACE
        ("ab\u200d", "category"),  # ZERO WIDTH JOINER
        ("a\u00adb", "category"),  # SOFT HYPHEN
        ("snow\u2603", "category"),  # a symbol
        ("a\x00", "control"),
        ("a\u0378", "category"),  # unassigned (Cn)
        ("\u1100\u1161", "jamo"),  # old Hangul jamo
        ("\u0628\u0640\u0628", "exceptions"),  # ARABIC TATWEEL (RFC 8264 9.6)
        ("eve@evil.example", "'@'"),
        ("", "1 to"),
        ("a" * 257, "1 to"),
        ("\u05e9\u05dc\u05d5\u05ddabc", "left-to-right"),  # Hebrew + Latin: Bidi Rule
        ("1\u05e9", "start"),
        ("\u0661\u06f1", "mixes"),  # two kinds of Arabic-Indic digits
    ],
)
def test_refused(uid: str, why: str) -> None:
    problem = check_uid(uid)
    assert problem is not None and why in problem, problem


@pytest.mark.parametrize(
    ("uid", "key"),
    [
        ("Alice", "alice"),
        ("\u00e9lodie", "\u00e9lodie"),  # precomposed, lowercase: kept as is
        ("stra\u00dfe", "stra\u00dfe"),  # sharp s stays (not "strasse")
        ("\u03c3\u03bf\u03c6\u03b9\u03b1\u03c2", "\u03c3\u03bf\u03c6\u03b9\u03b1\u03c2"),
        ("\u7528\u6237", "\u7528\u6237"),  # TC-U7
        ("\u05e9\u05dc\u05d5\u05dd", "\u05e9\u05dc\u05d5\u05dd"),  # right-to-left
        ("+mail+archive", "+mail+archive"),  # architecture Example 7
        ("O'Brien-Smith_2", "o'brien-smith_2"),
    ],
)
def test_accepted(uid: str, key: str) -> None:
    assert check_uid(uid) is None
    assert uid_key(uid) == key


def test_mailbox_local_part_follows_the_profile() -> None:
    assert identity(mailbox="\u212aevin@example.com") is Reason.BAD_USER_ID
    assert identity(mailbox="KEVIN@example.com") == "kevin@example.com"
    # a bad mailbox in the user's domain is refused even next to a good uid
    assert identity(uid="kevin", mailbox="\u212aevin@example.com") is Reason.BAD_USER_ID
    # one id in two spellings that differ only in ASCII case is still one id
    assert identity(uid="Kevin", mailbox="kevin@example.com") == "kevin@example.com"


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=12))
def test_accepted_ids_are_fixed_points_of_the_precis_mappings(uid: str) -> None:
    """Whatever is accepted is already in the form PRECIS would map it to (width mapping and
    compatibility forms via NFKC, toLowerCase, NFC), apart from ASCII case; so two accepted ids
    that PRECIS would confuse have the same key."""
    if check_uid(uid) is not None:
        return
    key = uid_key(uid)
    assert unicodedata.normalize("NFKC", uid.lower()) == key
    assert unicodedata.normalize("NFC", key) == key and key.lower() == key
