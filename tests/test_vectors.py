"""The digest's test vectors (dance-specs.md section 8.2, 8.3 TC-M*), exactly."""

from __future__ import annotations

import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from dance import CertificateChain, RawPublicKey, Reason, TLSARecord, make_record, verify

PRIV = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
SPKI = bytes.fromhex(
    "302a300506032b6570032100d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
)
K256 = "06e3fd8fda29bb60ab59557de61edb0aecdb231134be30e75b455f8e1b792fa9"
K512 = (
    "0f2c8a3454a468b75f32e76a051953139dc7c5c652cd67868784cafa1948f8ac"
    "96aa63e76e3b08932488fb4b4419dde18c99ce2c097edde19fbe8bca1f73bbb3"
)
CERT_DER = bytes.fromhex(
    "3081fc3081afa003020102020101300506032b657030123110300e06035504030c0773656e736f7237301e170d"
    "3235303130313030303030305a170d3236303130313030303030305a30123110300e06035504030c0773656e73"
    "6f7237302a300506032b6570032100d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707"
    "511aa32a302830260603551d11041f301d821b73656e736f72372e5f6465766963652e6578616d706c652e636f"
    "6d300506032b6570034100d62d1f80a3195e44625841cbb35bcc0feb4f7b0161641da6219c6361fafcedba964e"
    "f0683403ae2d25131799f5d804a9c6542141fc2136fda6b3224e836dfa03"
)
C256 = "483f8f6a69c9a2c6c65fc9ffa7110766f4a6e611f56210ea94dea001a5741ccc"
C512 = (
    "7e2d937cf75450e8122976e297210915c2ad7f8fe047c40ca07662c5e03a94c5"
    "f993786da165a0c4695259608349aeff67487cc588627f24e05c67981ee02b98"
)
NAME = "sensor7._device.example.com"
NOW = datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC)
C = CertificateChain.from_der([CERT_DER])
K = RawPublicKey.from_spki(SPKI)


def rec(text: str) -> TLSARecord:
    return TLSARecord.from_text(text)


def test_key_vectors() -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(PRIV)
    assert make_record(key.public_key()).to_text() == f"3 1 1 {K256}"
    assert make_record(key.public_key(), 3, 1, 2).data.hex() == K512
    assert make_record(SPKI, 3, 1, 0).data == SPKI
    assert rec(f"3 1 1 {K256}").to_wire().hex() == "030101" + K256
    assert len(rec(f"3 1 1 {K256}").to_wire()) == 35


def test_certificate_vectors() -> None:
    cert = C.end_entity
    assert cert.der == CERT_DER and len(CERT_DER) == 255
    assert cert.spki == SPKI
    assert make_record(cert.certificate, 3, 0, 1).data.hex() == C256
    assert make_record(cert.certificate, 3, 0, 2).data.hex() == C512


WRONG64 = "ab" * 64


@pytest.mark.parametrize(
    ("case", "records", "presented", "now", "accepted", "reason"),
    [
        ("TC-M1", [f"3 1 1 {K256}"], C, NOW, True, None),
        (
            "TC-M2",
            [f"3 1 1 {K256}"],
            C,
            datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC),
            True,
            None,
        ),
        ("TC-M3", [f"3 0 1 {C256}"], C, NOW, True, None),
        ("TC-M4", [f"3 1 1 {K256}", f"3 1 2 {WRONG64}"], C, NOW, False, Reason.NO_MATCH),
        ("TC-M5", [f"3 1 1 {K256}", "3 1 2 " + "ab" * 10], C, NOW, True, None),
        ("TC-M6", [f"3 1 0 {SPKI.hex()}", f"3 1 2 {WRONG64}"], C, NOW, True, None),
        ("TC-M7", [f"3 1 1 {K256}", "3 1 3 abcdef"], C, NOW, True, None),
        ("TC-M8", ["3 1 255 abcdef"], C, NOW, False, Reason.NO_USABLE_RECORDS),
        ("TC-M9", ["3 1 1 " + "11" * 32], C, NOW, False, Reason.NO_MATCH),
        ("TC-M10", [f"3 1 1 {K256}"], K, NOW, True, None),
        ("TC-M11", [f"3 0 1 {C256}"], K, NOW, False, Reason.NO_USABLE_RECORDS),
        ("TC-M12", [f"2 0 1 {C256}"], K, NOW, False, Reason.NO_USABLE_RECORDS),
        ("TC-M13", [f"3 1 1 {K256}", "2 0 1 " + "22" * 32], C, NOW, True, None),
    ],
)
def test_matching_cases(
    case: str,
    records: list[str],
    presented: CertificateChain | RawPublicKey,
    now: datetime.datetime,
    accepted: bool,
    reason: Reason | None,
) -> None:
    result = verify(NAME, presented, records, now=now)
    assert result.accepted is accepted, (case, result)
    if reason is not None:
        assert result.reason is reason  # type: ignore[union-attr]


def test_tc_m14_short_rdata_discarded() -> None:
    assert verify(NAME, C, [b"", b"\x03\x01"], now=NOW).reason is Reason.NO_USABLE_RECORDS  # type: ignore[union-attr]
    good = bytes.fromhex("030101" + K256)
    assert verify(NAME, C, [b"", b"\x03\x01", good], now=NOW).accepted


def test_identity_fields() -> None:
    result = verify(NAME.upper(), K, [f"3 1 2 {K512}"], now=NOW)
    assert result.accepted
    assert result.identity == NAME  # type: ignore[union-attr]
    assert (result.usage, result.selector, result.mtype, result.depth) == (3, 1, 2, 0)  # type: ignore[union-attr]
    assert result.raw_public_key is True  # type: ignore[union-attr]


def test_rfc7671_agility_example() -> None:
    # 3 1 0, 3 1 1 and 3 1 2 present: a key matching only 3 1 1 is not accepted.
    other = "44" * 64
    assert not verify(
        NAME, K, [f"3 1 1 {K256}", f"3 1 0 {'55' * 44}", f"3 1 2 {other}"], now=NOW
    ).accepted
    assert verify(
        NAME, K, [f"3 1 1 {'00' * 32}", f"3 1 0 {SPKI.hex()}", f"3 1 2 {other}"], now=NOW
    ).accepted
    assert verify(NAME, K, [f"3 1 1 {'00' * 32}", f"3 1 2 {K512}"], now=NOW).accepted


def test_agility_is_per_usage_selector_pair() -> None:
    # A SHA-512 record for 3 0 does not suppress 3 1 1.
    assert verify(NAME, C, [f"3 1 1 {K256}", f"3 0 2 {WRONG64}"], now=NOW).accepted


def test_digest_preference_configurable() -> None:
    from dance import MatchPolicy

    sha256_only = MatchPolicy(digest_preference=(1,))
    # SHA-512 unsupported by this policy: it cannot suppress SHA-256.
    assert verify(
        NAME, C, [f"3 1 1 {K256}", f"3 1 2 {WRONG64}"], now=NOW, policy=sha256_only
    ).accepted


def test_dane_ee_ignores_name_and_dates() -> None:
    # DANE-EE: no name check (the certificate names sensor7, we claim another name).
    assert verify("other.example.com", C, [f"3 1 1 {K256}"], now=NOW).accepted
    far_past = datetime.datetime(1990, 1, 1, tzinfo=datetime.UTC)
    assert verify(NAME, C, [f"3 0 1 {C256}"], now=far_past).accepted
