"""Certificate header parsing: the three encodings, strict limits, stable error codes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dance.http import headers as h
from dance.http.core import Denied, TrustedProxies, encode_header_value, name_from_json_body
from dance.http.headers import CertFormat, CertificateHeaderParser, HeaderError, sole_dns_name
from dance.identity import Identity
from tests.http.common import (
    DEVICE,
    USER,
    Identities,
    b64,
    der,
    make_http_auth,
    make_identities,
    nginx_header,
    pem,
    rfc9440,
)

# RFC 9440 Client-Cert vector of the spec digest (8.2).
VECTOR_DER = bytes.fromhex(
    "3081fc3081afa003020102020101300506032b657030123110300e06035504030c0773656e736f7237301e170d"
    "3235303130313030303030305a170d3236303130313030303030305a30123110300e06035504030c0773656e"
    "736f7237302a300506032b6570032100d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68"
    "f707511aa32a302830260603551d11041f301d821b73656e736f72372e5f6465766963652e6578616d706c65"
    "2e636f6d300506032b6570034100d62d1f80a3195e44625841cbb35bcc0feb4f7b0161641da6219c6361fafc"
    "edba964ef0683403ae2d25131799f5d804a9c6542141fc2136fda6b3224e836dfa03"
)
VECTOR_HEADER = (
    ":MIH8MIGvoAMCAQICAQEwBQYDK2VwMBIxEDAOBgNVBAMMB3NlbnNvcjcwHhcNMjUwMTAxMDAwMDAwWhcNMjYwMTAx"
    "MDAwMDAwWjASMRAwDgYDVQQDDAdzZW5zb3I3MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIa"
    "aPcHURqjKjAoMCYGA1UdEQQfMB2CG3NlbnNvcjcuX2RldmljZS5leGFtcGxlLmNvbTAFBgMrZXADQQDWLR+Aoxle"
    "RGJYQcuzW8wP6097AWFkHaYhnGNh+vztupZO8Gg0A64tJRMXmfXYBKnGVCFB/CE2/aazIk6DbfoD:"
)


@pytest.fixture(scope="module")
def ids() -> Identities:
    return make_identities()


def code_of(parser: CertificateHeaderParser, value: str | None, chain: str | None = None) -> str:
    with pytest.raises(HeaderError) as info:
        parser.parse(value, chain)
    return info.value.code


def test_rfc9440_vector() -> None:
    chain = CertificateHeaderParser("rfc9440").parse(VECTOR_HEADER)
    assert chain.end_entity.der == VECTOR_DER
    assert sole_dns_name(chain) == "sensor7._device.example.com"
    assert CertificateHeaderParser().parse(VECTOR_HEADER).end_entity.der == VECTOR_DER


def test_three_encodings_give_the_same_certificate(ids: Identities) -> None:
    want = der(ids.device)
    for fmt, value in (
        ("nginx", nginx_header(ids.device)),
        ("rfc9440", rfc9440(ids.device)),
        ("base64", b64(ids.device)),
    ):
        assert CertificateHeaderParser(fmt).parse(value).end_entity.der == want  # type: ignore[arg-type]
        assert CertificateHeaderParser("auto").parse(value).end_entity.der == want
    # nginx may also pass an unescaped PEM (e.g. through a variable); CRLF line ends too.
    raw = pem(ids.device).replace("\n", "\r\n")
    assert CertificateHeaderParser("nginx").parse(raw).end_entity.der == want


def test_pinned_format_refuses_the_others(ids: Identities) -> None:
    assert code_of(CertificateHeaderParser("base64"), rfc9440(ids.device)) == h.BAD_ENCODING
    assert code_of(CertificateHeaderParser("rfc9440"), b64(ids.device)) == h.BAD_ENCODING
    assert code_of(CertificateHeaderParser("nginx"), b64(ids.device)) == h.BAD_ENCODING


def test_missing_and_empty() -> None:
    p = CertificateHeaderParser()
    for value in (None, "", "   "):
        assert code_of(p, value) == h.MISSING


def test_size_cap_before_decoding(ids: Identities) -> None:
    p = CertificateHeaderParser(max_header_bytes=256)
    assert code_of(p, b64(ids.device)) == h.TOO_LARGE
    assert code_of(CertificateHeaderParser(), "A" * 20000) == h.TOO_LARGE
    big_chain = ", ".join([rfc9440(ids.ca)] * 200)
    parser = CertificateHeaderParser(allow_chain=True)
    assert code_of(parser, rfc9440(ids.device), big_chain) == h.TOO_LARGE


@pytest.mark.parametrize(
    "value",
    [
        "!!!!",
        "QUJD",  # valid base64, not DER
        ":QUJD",  # unterminated byte sequence
        ":QUJD:;a=1",  # parameters
        "MIIB" + "=" * 3,
        "%ZZ",  # bad escape
        "%FF%FE",  # not UTF-8
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "\u00e9\u00e9\u00e9",
    ],
)
def test_bad_encodings(value: str) -> None:
    assert code_of(CertificateHeaderParser(), value) in (h.BAD_ENCODING, h.BAD_CERTIFICATE)


def test_non_canonical_base64_and_trailing_bytes(ids: Identities) -> None:
    p = CertificateHeaderParser()
    good = b64(ids.device)
    assert code_of(p, good[:-1]) == h.BAD_ENCODING  # length not a multiple of 4
    assert code_of(p, "QR==") == h.BAD_ENCODING  # non-zero padding bits
    urlsafe = good.replace("+", "-").replace("/", "_")
    if urlsafe != good:
        assert code_of(p, urlsafe) == h.BAD_ENCODING
    assert code_of(p, good[:10] + " " + good[10:]) == h.BAD_ENCODING
    trailing = base64.b64encode(der(ids.device) + b"\x00\x00").decode()
    assert code_of(p, trailing) == h.BAD_CERTIFICATE
    truncated = base64.b64encode(der(ids.device)[:-3]).decode()
    assert code_of(p, truncated) == h.BAD_CERTIFICATE
    # A DER SEQUENCE of the right shape that is not a certificate.
    assert code_of(p, base64.b64encode(b"\x30\x03\x02\x01\x01").decode()) == h.BAD_CERTIFICATE


def test_text_around_pem_is_refused(ids: Identities) -> None:
    p = CertificateHeaderParser()
    for value in ("junk" + pem(ids.device), pem(ids.device) + "junk"):
        assert code_of(p, urllib.parse.quote(value, safe="")) == h.BAD_ENCODING


def test_exactly_one_certificate_unless_chains_allowed(ids: Identities) -> None:
    strict = CertificateHeaderParser()
    assert code_of(strict, nginx_header(ids.chained, ids.ca)) == h.SEVERAL
    assert code_of(strict, rfc9440(ids.chained) + ", " + rfc9440(ids.ca)) == h.SEVERAL
    assert code_of(strict, rfc9440(ids.chained), rfc9440(ids.ca)) == h.SEVERAL
    chains = CertificateHeaderParser(allow_chain=True, max_chain=2)
    assert len(chains.parse(nginx_header(ids.chained, ids.ca)).certs) == 2
    assert len(chains.parse(rfc9440(ids.chained), rfc9440(ids.ca)).certs) == 2
    assert code_of(chains, nginx_header(ids.chained, ids.ca, ids.ca)) == h.CHAIN_TOO_LONG
    three = rfc9440(ids.ca) + ", " + rfc9440(ids.ca)
    assert code_of(chains, rfc9440(ids.chained), three) == h.CHAIN_TOO_LONG


def test_parse_cache_returns_the_same_chain(ids: Identities) -> None:
    p = CertificateHeaderParser(cache_size=2)
    value = b64(ids.device)
    assert p.parse(value) is p.parse(value)
    p.parse(b64(ids.ca))
    p.parse(b64(ids.issued))
    assert len(p._cache) == 2


def test_sole_dns_name(ids: Identities) -> None:
    p = CertificateHeaderParser()
    assert sole_dns_name(p.parse(b64(ids.device))) == DEVICE
    assert sole_dns_name(p.parse(b64(ids.two_names))) is None
    assert sole_dns_name(p.parse(b64(ids.ca))) is None  # no SAN


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_fuzz_parser_only_raises_header_errors(value: str) -> None:
    fmt: CertFormat
    for fmt in ("auto", "nginx", "rfc9440", "base64"):
        with contextlib.suppress(HeaderError):
            CertificateHeaderParser(fmt).parse(value)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.text(max_size=80) | st.none())
def test_fuzz_decision_is_always_a_403_or_identity(value: str, claimed: str | None) -> None:
    http_auth, _ = make_http_auth(_IDS)
    result = asyncio.run(http_auth.authenticate(value, None, claimed))
    assert isinstance(result, Denied) and result.status == 403


_IDS = make_identities()


def test_decisions_and_counted_reasons(ids: Identities) -> None:
    http_auth, source = make_http_auth(ids)

    async def go() -> list[str]:
        cases = [
            (b64(ids.device), None),  # sole SAN
            (b64(ids.device), DEVICE.upper()),  # claimed, case-insensitive
            (b64(ids.impostor), None),  # wrong key
            (b64(ids.outsider), None),  # outside the allow-list
            (b64(ids.two_names), None),  # two SANs, no claim
            (b64(ids.two_names), "sensor8._device.example.test"),  # claim not in the cert
            (b64(ids.device), "not a name!"),
            (b64(ids.alice), USER),
            ("%%%", None),
            (None, DEVICE),
        ]
        out = []
        for cert, claimed in cases:
            r = await http_auth.authenticate(cert, None, claimed)
            out.append(r.identity if isinstance(r, Identity) else f"{r.code}/{r.reason}")
        return out

    assert asyncio.run(go()) == [
        DEVICE,
        DEVICE,
        "not-authenticated/no-match",
        "not-authenticated/not-allowed",
        "bad-client-name/name-missing",
        "not-authenticated/claimed-name-not-in-certificate",
        "bad-client-name/name-malformed",
        "alice@example.test",
        "bad-client-certificate/cert-bad-encoding",
        "no-client-certificate/cert-missing",
    ]
    stats = http_auth.stats()
    assert stats["accepted"] == 3 and stats["denied"] == 7
    assert stats["denied_no-match"] == 1 and stats["denied_cert-bad-encoding"] == 1
    # The allow-list is applied before any query; the second DEVICE decision came from cache.
    assert "host.example.org" not in source.queries
    assert source.queries.count(DEVICE) == 2  # device, then impostor (other credential)
    assert stats["auth_decision_cache_hits"] >= 1


def test_prepared_headers_are_remembered_per_exact_values(ids: Identities) -> None:
    """prepare() keeps its successful results by the exact header values (a front end repeats
    them for every request): the same values give the same (name, chain) object, every request
    is still counted, and other values (a claim not in the certificate, another certificate)
    are decided on their own; refusals are not remembered."""
    http_auth, _ = make_http_auth(ids)
    first = http_auth.prepare(b64(ids.two_names), None, DEVICE)
    assert not isinstance(first, Denied)
    assert http_auth.prepare(b64(ids.two_names), None, DEVICE) is first
    refused = http_auth.prepare(b64(ids.two_names), None, "sensor8._device.example.test")
    assert isinstance(refused, Denied) and refused.reason == "claimed-name-not-in-certificate"
    assert isinstance(http_auth.prepare(b64(ids.two_names), None, None), Denied)  # two SANs
    other = http_auth.prepare(b64(ids.impostor), None, DEVICE)
    assert not isinstance(other, Denied) and other[1] != first[1]
    for _ in range(2):
        assert isinstance(http_auth.prepare(b64(ids.device), None, "not a name!"), Denied)
    stats = http_auth.stats()
    assert stats["requests"] == 7 and stats["denied_name-malformed"] == 2


def test_small_helpers() -> None:
    assert encode_header_value("sensor7._device.example.test") == "sensor7._device.example.test"
    assert encode_header_value("jürgen@bücher.example") == "j%C3%BCrgen@b%C3%BCcher.example"
    assert encode_header_value("a b%\r\n") == "a%20b%25%0D%0A"
    assert name_from_json_body(b'{"dane_clientid": "x.example"}', "dane_clientid") == "x.example"
    for body in (b"", b"[]", b'{"dane_clientid": 3}', b"{", b"[" * 100000):
        assert name_from_json_body(body, "dane_clientid") is None
    proxies = TrustedProxies(["127.0.0.0/8", "::1", "10.1.2.3"])
    assert proxies.trusts("127.0.0.1") and proxies.trusts("::1") and proxies.trusts("10.1.2.3")
    assert proxies.trusts("::ffff:127.0.0.1")
    for other in ("10.1.2.4", "192.0.2.1", "testclient", "", None):
        assert not proxies.trusts(other)


def test_cached_decisions_end_with_the_tlsa_ttl(ids: Identities) -> None:
    """The HTTP layer keeps no decision of its own: after the TTL the Authenticator asks again."""
    from dance.auth import Authenticator
    from dance.http.core import HttpAuth
    from tests.http.common import ALLOW, FakeSource, records

    clock = [1000.0]
    source = FakeSource(records(ids), ttl=60)
    http_auth = HttpAuth(Authenticator(source, allow=ALLOW, monotonic=lambda: clock[0]))

    def decide() -> bool:
        return isinstance(asyncio.run(http_auth.authenticate(b64(ids.device))), Identity)

    assert decide() and decide()
    assert source.queries == [DEVICE]
    clock[0] += 59
    assert decide() and source.queries == [DEVICE]
    clock[0] += 2
    assert decide() and source.queries == [DEVICE, DEVICE]
    # Revocation: the record is gone at the next lookup, and the decision follows.
    source.zone[DEVICE] = []
    clock[0] += 61
    assert not decide()
