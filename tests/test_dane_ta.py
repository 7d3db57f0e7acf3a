"""DANE-TA(2): path building to a trust anchor from the chain or from DNS (dance-specs 8.3)."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from dance import MatchPolicy, Reason, make_record, verify
from dance import certs as gen
from tests.pki import NAME, NOW, chain, device, key, make_pki

PKI = make_pki()
E = device(PKI)
R_CA = make_record(PKI.ca, 2, 0, 1)  # *._device.example.com 2 0 1 sha256(CA)


def test_t1_full_chain() -> None:
    result = verify(NAME, chain(E, PKI.ica, PKI.ca), [R_CA], now=NOW)
    assert result.accepted, result
    assert (result.usage, result.selector, result.mtype, result.depth) == (2, 0, 1, 2)  # type: ignore[union-attr]


def test_chain_order_does_not_matter() -> None:
    assert verify(NAME, chain(E, PKI.ca, PKI.ica), [R_CA], now=NOW).accepted


def test_t2_anchor_digest_requires_anchor_in_chain() -> None:
    result = verify(NAME, chain(E, PKI.ica), [R_CA], now=NOW)
    assert not result.accepted and result.reason is Reason.NO_MATCH  # type: ignore[union-attr]


def test_t3_full_anchor_from_dns() -> None:
    record = make_record(PKI.ca, 2, 0, 0)
    result = verify(NAME, chain(E, PKI.ica), [record], now=NOW)
    assert result.accepted, result
    assert result.depth == 2  # type: ignore[union-attr]


def test_t4_anchor_at_intermediate() -> None:
    record = make_record(PKI.ica, 2, 0, 1)
    result = verify(NAME, chain(E, PKI.ica, PKI.ca), [record], now=NOW)
    assert result.accepted and result.depth == 1  # type: ignore[union-attr]
    assert verify(NAME, chain(E, PKI.ica), [make_record(PKI.ica, 2, 1, 2)], now=NOW).accepted


def test_t5_name_mismatch() -> None:
    other = device(PKI, ("sensor8._device.example.com",))
    result = verify(NAME, chain(other, PKI.ica, PKI.ca), [R_CA], now=NOW)
    assert result.reason is Reason.NAME_MISMATCH  # type: ignore[union-attr]


def test_t6_client_name_selects_among_sans() -> None:
    multi = device(PKI, ("a.example", NAME))
    assert verify(NAME, chain(multi, PKI.ica, PKI.ca), [R_CA], now=NOW).accepted
    assert verify("a.example", chain(multi, PKI.ica, PKI.ca), [R_CA], now=NOW).accepted
    assert not verify("b.example", chain(multi, PKI.ica, PKI.ca), [R_CA], now=NOW).accepted


def test_name_check_is_case_insensitive_and_no_wildcards() -> None:
    upper = device(PKI, (NAME.upper(),))
    assert verify(NAME, chain(upper, PKI.ica, PKI.ca), [R_CA], now=NOW).accepted
    wild = device(PKI, ("*._device.example.com",))
    result = verify(NAME, chain(wild, PKI.ica, PKI.ca), [R_CA], now=NOW)
    assert result.reason is Reason.NAME_MISMATCH  # type: ignore[union-attr]


def test_name_not_in_common_name_only() -> None:
    no_san_name = device(PKI, ("unrelated.example",))
    assert no_san_name.subject.rfc4514_string() == "CN=unrelated.example"
    result = verify(NAME, chain(no_san_name, PKI.ica, PKI.ca), [R_CA], now=NOW)
    assert result.reason is Reason.NAME_MISMATCH  # type: ignore[union-attr]


def test_t7_expired_end_entity() -> None:
    old = device(PKI, now=NOW - datetime.timedelta(days=400), days=30)
    result = verify(NAME, chain(old, PKI.ica, PKI.ca), [R_CA], now=NOW)
    assert result.reason is Reason.EXPIRED  # type: ignore[union-attr]


def test_not_yet_valid_end_entity() -> None:
    future = device(PKI, now=NOW + datetime.timedelta(days=10))
    assert verify(NAME, chain(future, PKI.ica, PKI.ca), [R_CA], now=NOW).reason is Reason.EXPIRED  # type: ignore[union-attr]


def test_expired_intermediate() -> None:
    then = NOW - datetime.timedelta(days=100)
    pki = make_pki(now=then, ica_days=50)
    ee = device(pki, now=NOW - datetime.timedelta(days=60), days=365)
    result = verify(NAME, chain(ee, pki.ica, pki.ca), [make_record(pki.ca, 2, 0, 1)], now=NOW)
    assert result.reason is Reason.EXPIRED  # type: ignore[union-attr]
    assert "depth 1" in result.detail  # type: ignore[union-attr]


def test_t8_expired_anchor_is_not_checked() -> None:
    then = NOW - datetime.timedelta(days=400)
    pki = make_pki(now=then, ca_days=300, ica_days=1000)
    ee = device(pki)
    assert verify(
        NAME, chain(ee, pki.ica, pki.ca), [make_record(pki.ca, 2, 0, 1)], now=NOW
    ).accepted


def test_t9_same_subject_different_key() -> None:
    # An impostor CA with the same subject DN but another key signs an end entity.
    impostor = make_pki(ca_key_index=5, ica_key_index=6)
    ee = device(impostor)
    # The chain claims the real CA on top: signatures do not link up.
    result = verify(NAME, chain(ee, impostor.ica, PKI.ca), [R_CA], now=NOW)
    assert result.reason is Reason.NO_MATCH  # type: ignore[union-attr]
    # The impostor's intermediate presented as if issued by the real CA: no path either.
    result = verify(NAME, chain(ee, PKI.ica, PKI.ca), [R_CA], now=NOW)
    assert not result.accepted


def test_t10_eku_without_client_auth() -> None:
    server_only = gen.issue_certificate(
        PKI.ica, PKI.ica_key, key(3).public_key(), dns_names=[NAME], now=NOW, client_auth=False
    )
    # No EKU at all is accepted...
    assert verify(NAME, chain(server_only, PKI.ica, PKI.ca), [R_CA], now=NOW).accepted
    # ...an EKU without clientAuth is not.
    builder = (
        x509.CertificateBuilder()
        .subject_name(server_only.subject)
        .issuer_name(PKI.ica.subject)
        .public_key(key(3).public_key())
        .serial_number(7)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    ee = builder.sign(PKI.ica_key, hashes.SHA256())
    result = verify(NAME, chain(ee, PKI.ica, PKI.ca), [R_CA], now=NOW)
    assert result.reason is Reason.BAD_EKU  # type: ignore[union-attr]


def test_t11_trust_store_irrelevant_for_dane_ta() -> None:
    policy = MatchPolicy.with_pkix([PKI.ca])
    assert verify(NAME, chain(E, PKI.ica, PKI.ca), [R_CA], now=NOW, policy=policy).accepted


def test_t12_spki_anchor_not_sent() -> None:
    record = make_record(PKI.ca.public_key(), 2, 1, 0)
    assert verify(NAME, chain(E, PKI.ica), [record], now=NOW).accepted
    strict = MatchPolicy(allow_dns_key_anchor=False)
    assert not verify(NAME, chain(E, PKI.ica), [record], now=NOW, policy=strict).accepted


def test_2_1_0_anchor_wrong_key() -> None:
    record = make_record(key(7).public_key(), 2, 1, 0)
    assert verify(NAME, chain(E, PKI.ica), [record], now=NOW).reason is Reason.NO_MATCH  # type: ignore[union-attr]


def test_2_1_1_anchor_in_chain() -> None:
    record = make_record(PKI.ca, 2, 1, 1)
    assert verify(NAME, chain(E, PKI.ica, PKI.ca), [record], now=NOW).accepted


def test_missing_intermediate() -> None:
    result = verify(NAME, chain(E, PKI.ca), [R_CA], now=NOW)
    assert result.reason is Reason.NO_MATCH  # type: ignore[union-attr]


def test_ta_record_does_not_match_end_entity_itself() -> None:
    # A usage-2 record of the end entity's own certificate is not a trust anchor for it.
    result = verify(NAME, chain(E, PKI.ica, PKI.ca), [make_record(E, 2, 0, 1)], now=NOW)
    assert not result.accepted


def test_non_ca_intermediate_rejected() -> None:
    # An end-entity certificate (CA=false) cannot act as an intermediate.
    fake_ica = gen.issue_certificate(
        PKI.ca, PKI.ca_key, key(4).public_key(), dns_names=["ica.example"], now=NOW
    )
    ee = gen.issue_certificate(
        fake_ica,
        key(4),
        key(2).public_key(),
        dns_names=[NAME],
        now=NOW,  # type: ignore[arg-type]
    )
    result = verify(NAME, chain(ee, fake_ica, PKI.ca), [R_CA], now=NOW)
    assert result.reason is Reason.BAD_CHAIN  # type: ignore[union-attr]


def test_path_length_constraint() -> None:
    # CA allows one intermediate (path_length=1) but the ICA allows none below it (0).
    sub = gen.new_ca(key(5), "Sub CA", now=NOW, issuer=(PKI.ica, PKI.ica_key))
    ee = gen.issue_certificate(sub, key(5), key(2).public_key(), dns_names=[NAME], now=NOW)
    result = verify(NAME, chain(ee, sub, PKI.ica, PKI.ca), [R_CA], now=NOW)
    assert result.reason is Reason.BAD_CHAIN  # type: ignore[union-attr]
    assert "path length" in result.detail  # type: ignore[union-attr]


def test_name_constraints_enforced() -> None:
    constrained = make_pki(permitted_dns=("_device.example.com",))
    ok = device(constrained)
    record = make_record(constrained.ca, 2, 0, 1)
    assert verify(NAME, chain(ok, constrained.ica, constrained.ca), [record], now=NOW).accepted
    outside = device(constrained, ("sensor7._device.evil.example",))
    result = verify(
        "sensor7._device.evil.example",
        chain(outside, constrained.ica, constrained.ca),
        [record],
        now=NOW,
    )
    assert result.reason is Reason.BAD_CHAIN  # type: ignore[union-attr]


def test_unknown_critical_extension_rejected() -> None:
    builder = (
        x509.CertificateBuilder()
        .subject_name(E.subject)
        .issuer_name(PKI.ica.subject)
        .public_key(key(2).public_key())
        .serial_number(9)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"),
            critical=True,
        )
    )
    ee = builder.sign(PKI.ica_key, hashes.SHA256())
    result = verify(NAME, chain(ee, PKI.ica, PKI.ca), [R_CA], now=NOW)
    assert result.reason is Reason.BAD_CHAIN  # type: ignore[union-attr]


def test_self_signed_end_entity_with_ta_record_of_other_ca() -> None:
    ss = gen.self_signed(key(2), NAME, now=NOW)
    assert verify(NAME, chain(ss), [R_CA], now=NOW).reason is Reason.NO_MATCH  # type: ignore[union-attr]


def test_many_bogus_certificates_bounded() -> None:
    # Forty certificates with the ICA's subject but wrong keys: bounded work, no accept.
    decoys = [
        gen.new_ca(key(6), "Example Device CA Intermediate", now=NOW, issuer=(PKI.ca, PKI.ca_key))
        for _ in range(15)
    ]
    result = verify(NAME, chain(E, *decoys), [R_CA], now=NOW)
    assert not result.accepted


def test_ta_and_ee_records_any_match_suffices() -> None:
    ee_record = make_record(key(7).public_key())  # does not match
    assert verify(NAME, chain(E, PKI.ica, PKI.ca), [ee_record, R_CA], now=NOW).accepted


def test_dane_ta_agility() -> None:
    # A 2 0 2 record for a different CA suppresses the matching 2 0 1 record.
    wrong512 = make_record(make_pki(ca_key_index=5).ca, 2, 0, 2)
    assert not verify(NAME, chain(E, PKI.ica, PKI.ca), [R_CA, wrong512], now=NOW).accepted
    # Full(0) is exempt from agility.
    full = make_record(PKI.ca, 2, 0, 0)
    assert verify(NAME, chain(E, PKI.ica, PKI.ca), [full, wrong512], now=NOW).accepted
