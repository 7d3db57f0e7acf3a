"""DANE authentication of TLS servers (RFC 6698/7671, RFC 7672's rules): `verify_server`."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509

from dance import CertificateChain, Reason, make_record
from dance import certs as gen
from dance.tlsa import server_owner, verify_server
from tests.pki import NOW, key, make_pki

HOST = "api.example.com"


def _server_cert(
    names: tuple[str, ...], *, key_index: int = 3, days: float = 90
) -> x509.Certificate:
    """A self-signed certificate (DANE-EE servers need nothing more)."""
    return gen.self_signed(key(key_index), names[0], now=NOW, days=days)


def test_owner_name() -> None:
    assert server_owner("API.Example.com.", 443) == "_443._tcp.api.example.com"
    assert server_owner("mx.example.com", 25) == "_25._tcp.mx.example.com"


def test_dane_ee_matches_key_without_name_or_date_checks() -> None:
    cert = _server_cert(("other.example.net",), days=1)  # wrong name, expired: irrelevant
    chain = CertificateChain.from_certificates([cert])
    late = NOW + datetime.timedelta(days=30)
    ok = verify_server(HOST, chain, [make_record(cert, 3, 1, 1)], now=late)
    assert ok.accepted and ok.identity == HOST and ok.client_name == "_443._tcp.api.example.com"
    other = _server_cert(("x.example.com",), key_index=4)
    bad = verify_server(HOST, chain, [make_record(other, 3, 1, 1)], now=NOW)
    assert not bad.accepted and bad.reason is Reason.NO_MATCH


def test_dane_ta_needs_the_host_name_and_a_valid_chain() -> None:
    pki = make_pki()
    cert = gen.issue_certificate(
        pki.ica, pki.ica_key, key(5).public_key(), dns_names=(HOST,), now=NOW, days=90,
        client_auth=False, server_auth=True,
    )  # fmt: skip
    chain = CertificateChain.from_certificates([cert, pki.ica, pki.ca])
    ta = make_record(pki.ca, 2, 0, 1)
    assert verify_server(HOST, chain, [ta], now=NOW).accepted
    # the wrong name: refused (RFC 7671 5.2.2), even with a valid chain
    wrong = verify_server("www.example.com", chain, [ta], now=NOW)
    assert not wrong.accepted and wrong.reason is Reason.NAME_MISMATCH
    # an extra reference name (e.g. the MX host of RFC 7672) may match instead
    assert verify_server("example.com", chain, [ta], now=NOW, reference_names=[HOST]).accepted
    # expired end entity
    late = NOW + datetime.timedelta(days=200)
    expired = verify_server(HOST, chain, [ta], now=late)
    assert not expired.accepted and expired.reason is Reason.EXPIRED


def test_dane_ta_wildcards_follow_rfc6125() -> None:
    pki = make_pki()

    def chain_for(*names: str) -> CertificateChain:
        cert = gen.issue_certificate(
            pki.ica, pki.ica_key, key(6).public_key(), dns_names=names, now=NOW, days=90,
            client_auth=False,
        )  # fmt: skip
        return CertificateChain.from_certificates([cert, pki.ica, pki.ca])

    ta = [make_record(pki.ca, 2, 0, 1)]
    assert verify_server(HOST, chain_for("*.example.com"), ta, now=NOW).accepted
    for host in ("a.b.example.com", "example.com"):  # one label only, and not the bare domain
        assert verify_server(host, chain_for("*.example.com"), ta, now=NOW).reason is (
            Reason.NAME_MISMATCH
        )
    for pattern in ("*.com", "a*.example.com", "*.*.example.com"):
        assert not verify_server(HOST, chain_for(pattern), ta, now=NOW).accepted, pattern


def test_dane_ta_refuses_a_client_only_eku() -> None:
    pki = make_pki()
    cert = gen.issue_certificate(
        pki.ica, pki.ica_key, key(7).public_key(), dns_names=(HOST,), now=NOW, days=90,
        client_auth=True,
    )  # fmt: skip
    chain = CertificateChain.from_certificates([cert, pki.ica, pki.ca])
    result = verify_server(HOST, chain, [make_record(pki.ca, 2, 0, 1)], now=NOW)
    assert not result.accepted and result.reason is Reason.BAD_EKU


@pytest.mark.parametrize(
    ("host", "records", "reason"),
    [
        ("bad host!", ["3 1 1 " + "00" * 32], Reason.MALFORMED_INPUT),
        (HOST, [], Reason.NO_RECORDS),
        (HOST, ["3 1 9 00"], Reason.NO_USABLE_RECORDS),
        (HOST, ["0 0 1 " + "00" * 32], Reason.NO_USABLE_RECORDS),  # PKIX without a store
    ],
)
def test_bad_input_is_a_typed_rejection(host: str, records: list[str], reason: Reason) -> None:
    chain = CertificateChain.from_certificates([_server_cert((HOST,))])
    result = verify_server(host, chain, records, now=NOW)
    assert not result.accepted and result.reason is reason, result
