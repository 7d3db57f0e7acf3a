"""TLSA record parsing and emission (presentation, RFC 3597 generic, wire); fuzzing."""

from __future__ import annotations

import contextlib
import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dance import CertificateChain, RawPublicKey, Reason, verify
from dance.tlsa import MalformedRecord, TLSARecord, all_records, make_record
from tests.pki import NOW, key
from tests.test_vectors import CERT_DER, K256, SPKI


def test_presentation_forms() -> None:
    plain = TLSARecord.from_text(f"3 1 1 {K256}")
    assert plain == TLSARecord(3, 1, 1, bytes.fromhex(K256))
    wrapped = TLSARecord.from_text(f"3 1 1 ( {K256[:20]}\n {K256[20:].upper()} )")
    assert wrapped == plain
    assert TLSARecord.from_text(f"DANE-EE SPKI SHA2-256 {K256}") == plain
    generic = TLSARecord.from_text(f"\\# 35 030101 {K256}")
    assert generic == plain
    assert plain.to_text() == f"3 1 1 {K256}"
    assert plain.describe() == "DANE-EE SPKI SHA2-256"
    assert TLSARecord.from_wire(plain.to_wire()) == plain
    assert plain.to_zone_line("sensor7._device.example.com", 300) == (
        f"sensor7._device.example.com. 300 IN TLSA 3 1 1 {K256}"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "3 1 1",
        "3 1 1 xyz",
        "3 1 1 abc",
        "256 1 1 " + "00" * 32,
        "-1 1 1 00",
        "3 1 foo 00",
        "\\# 3 0301",
        "\\# x 00",
    ],
)
def test_malformed_text(text: str) -> None:
    with pytest.raises(MalformedRecord):
        TLSARecord.from_text(text)


def test_well_formed() -> None:
    assert not TLSARecord(3, 1, 1, b"\x00" * 31).well_formed
    assert not TLSARecord(3, 1, 2, b"\x00" * 32).well_formed
    assert TLSARecord(3, 1, 0, b"\x00").well_formed
    assert TLSARecord(3, 1, 7, b"\x00").well_formed  # unknown mtype: readable, just unusable
    with pytest.raises(MalformedRecord):
        TLSARecord.from_wire(b"\x03\x01")


def test_generation_every_combination() -> None:
    chain = CertificateChain.from_der([CERT_DER])
    cert = chain.end_entity.certificate
    records = list(all_records(cert))
    assert len(records) == 4 * 2 * 3
    for record in records:
        if record.usage == 3:
            assert verify("sensor7._device.example.com", chain, [record], now=NOW).accepted
    key_records = list(all_records(key(0).public_key()))
    assert {(r.selector) for r in key_records} == {1} and len(key_records) == 12
    with pytest.raises(ValueError, match="selector 0"):
        make_record(key(0).public_key(), 3, 0, 1)


@given(st.binary(max_size=200))
def test_fuzz_wire(data: bytes) -> None:
    try:
        record = TLSARecord.from_wire(data)
    except MalformedRecord:
        assert len(data) < 3
    else:
        assert record.to_wire() == data
        assert TLSARecord.from_text(record.to_text()) == record if record.data else True


@given(st.text(max_size=200))
def test_fuzz_text(text: str) -> None:
    try:
        record = TLSARecord.from_text(text)
    except MalformedRecord:
        return
    assert TLSARecord.from_text(record.to_text()) == record


@given(
    st.builds(
        TLSARecord,
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(0, 255),
        st.binary(min_size=1, max_size=80),
    )
)
def test_roundtrip(record: TLSARecord) -> None:
    assert TLSARecord.from_wire(record.to_wire()) == record
    assert TLSARecord.from_text(record.to_text()) == record


RPK = RawPublicKey.from_spki(SPKI)
CHAIN = CertificateChain.from_der([CERT_DER])


@given(
    st.lists(st.binary(max_size=80), max_size=6),
    st.sampled_from(["sensor7._device.example.com", "_user.example.com", "x"]),
)
def test_fuzz_verify_never_accepts_random_records(rdatas: list[bytes], name: str) -> None:
    for presented in (RPK, CHAIN):
        result = verify(name, presented, rdatas, now=datetime.datetime.now(datetime.UTC))
        assert not result.accepted
        assert isinstance(result.reason, Reason)  # type: ignore[union-attr]


@given(st.binary(max_size=600))
def test_fuzz_certificate_bytes(data: bytes) -> None:
    # Random or mutated DER never crashes the loaders.
    from dance.credentials import CredentialError, load_certificates, load_public_key

    for loader in (load_certificates, load_public_key):
        with contextlib.suppress(CredentialError):
            loader(data)


@given(st.integers(0, len(CERT_DER) - 1), st.integers(0, 255))
def test_mutated_certificate_never_accepted_by_other_record(pos: int, value: int) -> None:
    mutated = bytearray(CERT_DER)
    if mutated[pos] == value:
        return
    mutated[pos] = value
    from dance.credentials import CredentialError

    try:
        chain = CertificateChain.from_der([bytes(mutated)])
    except CredentialError:
        return
    # 3 0 1 over the original DER must not match any mutation.
    c256 = "483f8f6a69c9a2c6c65fc9ffa7110766f4a6e611f56210ea94dea001a5741ccc"
    result = verify("sensor7._device.example.com", chain, [f"3 0 1 {c256}"], now=NOW)
    assert not result.accepted


def test_verify_accepts_dnspython_tlsa_rdata() -> None:
    """What dns.resolver returns (an RRset of TLSA rdata) can be passed to verify() as it is."""
    import datetime

    import dns.rdataclass
    import dns.rdatatype
    import dns.rrset
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from dance import RawPublicKey, Reason, make_record, verify

    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    from cryptography.hazmat.primitives import serialization

    def raw() -> RawPublicKey:
        pub = ed25519.Ed25519PrivateKey.generate().public_key()
        return RawPublicKey.from_spki(
            pub.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    key, other = raw(), raw()
    record = make_record(key.spki, 3, 1, 1)
    rrset = dns.rrset.from_text(
        "a._device.example.com.", 300, dns.rdataclass.IN, dns.rdatatype.TLSA, record.to_text()
    )
    result = verify("a._device.example.com", key, rrset, now=now)
    assert result.accepted, result
    refused = verify("a._device.example.com", other, rrset, now=now)
    assert not refused.accepted and refused.reason is Reason.NO_MATCH
    # an rdata of another type is not read as TLSA
    a = dns.rrset.from_text("x.", 300, "IN", "A", "192.0.2.1")
    assert verify("a._device.example.com", key, a, now=now).reason is Reason.NO_USABLE_RECORDS
