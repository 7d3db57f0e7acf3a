"""The `_user` profile (architecture-10 section 4.1.3; dance-specs 2.6 and 8.6)."""

from __future__ import annotations

from cryptography import x509

from dance import Reason, make_record, verify
from dance import certs as gen
from dance.userid import OID_UID, encode_utf8_string
from tests.pki import NOW, chain, key

CA_KEY = key(0)
USER_CA = gen.new_ca(CA_KEY, "Example Users", now=NOW, path_length=0)
R = make_record(USER_CA, 2, 0, 1)
CLIENT = "_user.example.com"


def user_cert(dns: str = "example.com", **kwargs: object) -> x509.Certificate:
    return gen.issue_certificate(
        USER_CA,
        CA_KEY,
        key(2).public_key(),
        dns_names=[dns],
        now=NOW,
        **kwargs,  # type: ignore[arg-type]
    )


def test_u1_uid() -> None:
    result = verify(CLIENT, chain(user_cert(uid="Alice"), USER_CA), [R], now=NOW)
    assert result.accepted, result
    assert result.identity == "alice@example.com"  # type: ignore[union-attr]
    assert result.user_id == "alice" and result.domain == "example.com"  # type: ignore[union-attr]
    assert result.client_name == CLIENT  # type: ignore[union-attr]
    assert result.depth == 1  # type: ignore[union-attr]


def test_u2_idn_domain() -> None:
    ca_key = key(4)
    ca = gen.new_ca(ca_key, "Bücher Users", now=NOW)
    cert = gen.issue_certificate(
        ca, ca_key, key(2).public_key(), dns_names=["xn--bcher-kva.example"], uid="Bob", now=NOW
    )
    result = verify(
        "_user.xn--bcher-kva.example", chain(cert, ca), [make_record(ca, 2, 0, 1)], now=NOW
    )
    assert result.identity == "bob@bücher.example"  # type: ignore[union-attr]


def test_u3_case() -> None:
    result = verify(CLIENT, chain(user_cert("EXAMPLE.COM", uid="ALICE"), USER_CA), [R], now=NOW)
    assert result.identity == "alice@example.com"  # type: ignore[union-attr]


def test_u4_other_domain_in_san() -> None:
    result = verify(CLIENT, chain(user_cert("other.example", uid="alice"), USER_CA), [R], now=NOW)
    assert result.reason is Reason.NAME_MISMATCH  # type: ignore[union-attr]


def test_u5_mailbox_fallback() -> None:
    result = verify(CLIENT, chain(user_cert(mailbox="alice@example.com"), USER_CA), [R], now=NOW)
    assert result.identity == "alice@example.com"  # type: ignore[union-attr]


def test_u6_conflicting_ids() -> None:
    cert = user_cert(uid="alice", mailbox="bob@example.com")
    assert verify(CLIENT, chain(cert, USER_CA), [R], now=NOW).reason is Reason.AMBIGUOUS_USER_ID  # type: ignore[union-attr]
    same = user_cert(uid="Alice", mailbox="alice@example.com")
    assert verify(CLIENT, chain(same, USER_CA), [R], now=NOW).identity == "alice@example.com"  # type: ignore[union-attr]


def test_mailbox_of_other_domain_ignored() -> None:
    cert = user_cert(mailbox="alice@other.example")
    assert verify(CLIENT, chain(cert, USER_CA), [R], now=NOW).reason is Reason.NO_USER_ID  # type: ignore[union-attr]


def test_u7_smtputf8_mailbox() -> None:
    ca_key = key(5)
    ca = gen.new_ca(ca_key, "CJK Users", now=NOW)
    domain = "xn--fsqu00a.xn--4rr70v"
    cert = gen.issue_certificate(
        ca, ca_key, key(2).public_key(), dns_names=[domain], mailbox="用户@例子.广告", now=NOW
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    other = san.get_values_for_type(x509.OtherName)[0]
    assert other.value == bytes.fromhex("0c14e794a8e688b740e4be8be5ad902ee5b9bfe5918a")
    result = verify("_user." + domain, chain(cert, ca), [make_record(ca, 2, 0, 1)], now=NOW)
    assert result.identity == "用户@例子.广告"  # type: ignore[union-attr]


def test_no_user_id() -> None:
    assert verify(CLIENT, chain(user_cert(), USER_CA), [R], now=NOW).reason is Reason.NO_USER_ID  # type: ignore[union-attr]


def test_uid_encoding_vector() -> None:
    assert encode_utf8_string("alice").hex() == "0c05616c696365"


def test_invalid_uid_rejected() -> None:
    bad = user_cert(uid="eve@evil.example")
    assert verify(CLIENT, chain(bad, USER_CA), [R], now=NOW).reason is Reason.BAD_USER_ID  # type: ignore[union-attr]


def test_two_uids_disagree() -> None:
    cert = gen.issue_certificate(
        USER_CA, CA_KEY, key(2).public_key(), dns_names=["example.com"], uid="a", now=NOW
    )
    # Add a second uid by re-issuing with an explicit SAN list.
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(USER_CA.subject)
        .public_key(key(2).public_key())
        .serial_number(11)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("example.com"),
                    x509.OtherName(OID_UID, encode_utf8_string("a")),
                    x509.OtherName(OID_UID, encode_utf8_string("b")),
                ]
            ),
            critical=False,
        )
    )
    from cryptography.hazmat.primitives import hashes

    two = builder.sign(CA_KEY, hashes.SHA256())
    assert verify(CLIENT, chain(two, USER_CA), [R], now=NOW).reason is Reason.AMBIGUOUS_USER_ID  # type: ignore[union-attr]


def test_other_domains_ca_cannot_claim_user() -> None:
    # other.example's CA issues a certificate claiming alice@example.com.
    evil_key = key(6)
    evil_ca = gen.new_ca(evil_key, "Example Users", now=NOW)  # even the same subject DN
    forged = gen.issue_certificate(
        evil_ca, evil_key, key(2).public_key(), dns_names=["example.com"], uid="alice", now=NOW
    )
    # example.com publishes its own CA; the forged chain leads elsewhere.
    result = verify(CLIENT, chain(forged, evil_ca), [R], now=NOW)
    assert result.reason is Reason.NO_MATCH  # type: ignore[union-attr]
    # Even when the attacker also presents the real CA certificate.
    result = verify(CLIENT, chain(forged, evil_ca, USER_CA), [R], now=NOW)
    assert not result.accepted


def test_name_constrained_user_ca() -> None:
    ca_key = key(3)
    ca = gen.new_ca(
        ca_key,
        "Constrained",
        now=NOW,
        permitted_dns=["example.com"],
        permitted_email=["example.com"],
    )
    ok = gen.issue_certificate(
        ca,
        ca_key,
        key(2).public_key(),
        dns_names=["example.com"],
        uid="alice",
        mailbox="alice@example.com",
        now=NOW,
    )
    assert verify(CLIENT, chain(ok, ca), [make_record(ca, 2, 0, 1)], now=NOW).accepted
    # The same CA issuing for another domain fails the constraint even if that domain's record
    # pointed at it (defence in depth for CAs shared across domains).
    bad = gen.issue_certificate(
        ca, ca_key, key(2).public_key(), dns_names=["other.example"], uid="alice", now=NOW
    )
    result = verify("_user.other.example", chain(bad, ca), [make_record(ca, 2, 0, 1)], now=NOW)
    assert result.reason is Reason.BAD_CHAIN  # type: ignore[union-attr]


def test_user_profile_ignores_dane_ee() -> None:
    ee = user_cert(uid="alice")
    result = verify(CLIENT, chain(ee, USER_CA), [make_record(ee)], now=NOW)
    assert result.reason is Reason.NO_USABLE_RECORDS  # type: ignore[union-attr]


def test_u8_wildcard_does_not_cover_parent() -> None:
    # The owner name `*._user.example.com` is not a client name: a query for `_user.example.com`
    # never returns it. At the matching layer this means: no records.
    from dance import InvalidName, parse_client_name

    try:
        parse_client_name("*._user.example.com")
    except InvalidName as exc:
        assert exc.reason == "wildcard"
    else:
        raise AssertionError("wildcard accepted")
    assert (
        verify(CLIENT, chain(user_cert(uid="alice"), USER_CA), [], now=NOW).reason
        is Reason.NO_RECORDS
    )  # type: ignore[union-attr]
