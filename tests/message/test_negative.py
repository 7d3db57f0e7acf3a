"""Every refusal reason, with DNS where the decision needs it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization

from dance.identity import Reason, Rejection
from dance.message import (
    Limits,
    MessageError,
    MessageReason,
    MessageVerifier,
    MissingExtra,
    parse_message,
    sign_cose,
    sign_jws,
)
from dance.message import verify as verify_mod
from dance.message.jose import b64e
from dance.testkit import Fault
from tests.message import forge
from tests.message.kit import (
    ABSENT,
    CERTONLY_ID,
    GATEWAY_ID,
    INSECURE_ID,
    RSA_ID,
    SENSOR,
    SENSOR_ID,
    World,
)

P = b'{"t":21.5}'
URI = f"dns:{SENSOR}?type=TLSA"


def reason_of(world: World | None, token: str | bytes, **kw: object) -> MessageReason:
    with pytest.raises(MessageError) as err:
        if world is None:
            parse_message(token)
        else:
            world.verify(token, **kw)
    return err.value.reason


def test_bad_signature_altered_payload(world: World) -> None:
    token = sign_jws(P, SENSOR_ID.key, SENSOR)
    h, _, s = token.split(".")
    altered = ".".join([h, b64e(b'{"t":99.9}'), s])
    assert reason_of(world, altered) is MessageReason.BAD_SIGNATURE
    cose = bytearray(sign_cose(P, SENSOR_ID.key, SENSOR))
    cose[cose.index(b"21.5")] ^= 1
    assert reason_of(world, bytes(cose)) is MessageReason.BAD_SIGNATURE


def test_bad_signature_embedded_certificate(world: World) -> None:
    token = sign_jws(P, SENSOR_ID.key, SENSOR, certificates=[SENSOR_ID.cert])
    h, _p, s = token.split(".")
    assert reason_of(world, f"{h}.{b64e(b'x')}.{s}") is MessageReason.BAD_SIGNATURE


def test_alg_none_and_unsecured(world: World) -> None:
    header = {"alg": "none", "kid": SENSOR}
    unsecured = f"{b64e(json.dumps(header).encode())}.{b64e(P)}."
    assert reason_of(None, unsecured) is MessageReason.ALG_NONE
    assert reason_of(None, unsecured + "AAAA") is MessageReason.ALG_NONE
    upper = forge.jws({"alg": "NONE", "kid": SENSOR}, P, SENSOR_ID.key)
    assert reason_of(world, upper) is MessageReason.ALG_NONE
    assert reason_of(None, forge.cose({1: "none", 4: SENSOR.encode()}, P, SENSOR_ID.key)) in (
        MessageReason.UNKNOWN_ALGORITHM,
        MessageReason.ALG_NONE,
    )


def test_hmac_algorithm_confusion_refused(world: World) -> None:
    # HS256 keyed with the signer's published public key: the classic confusion attack
    spki = SENSOR_ID.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = forge.jws_hmac({"alg": "HS256", "kid": SENSOR}, P, spki)
    assert reason_of(world, token) is MessageReason.UNKNOWN_ALGORITHM
    assert reason_of(world, forge.cose({1: 5, 4: SENSOR.encode()}, P, SENSOR_ID.key)) is (
        MessageReason.UNKNOWN_ALGORITHM
    )
    token = forge.jws({"alg": "ES512", "kid": SENSOR}, P, SENSOR_ID.key)
    assert reason_of(world, token) is MessageReason.UNKNOWN_ALGORITHM


def test_algorithm_key_mismatch(world: World) -> None:
    # RS256 claimed for a name whose published key is P-256
    token = forge.jws({"alg": "RS256", "kid": SENSOR}, P, RSA_ID.key, alg="RS256")
    assert reason_of(world, token) is MessageReason.ALGORITHM_KEY_MISMATCH
    # x5c with an EC certificate but alg PS256
    x5c = [base64.b64encode(SENSOR_ID.cert.public_bytes(serialization.Encoding.DER)).decode()]
    token = forge.jws({"alg": "PS256", "kid": SENSOR, "x5c": x5c}, P, RSA_ID.key, alg="PS256")
    assert reason_of(world, token) is MessageReason.ALGORITHM_KEY_MISMATCH


def test_kid_x5u_mismatch(world: World) -> None:
    for x5u in (
        f"dns:{CERTONLY_ID.name}?type=TLSA",
        "https://evil.example/cert.pem",
        f"dns:{SENSOR}?type=A",
        f"dns://8.8.8.8/{SENSOR}?type=TLSA",
        42,
    ):
        token = forge.jws({"alg": "ES256", "kid": SENSOR, "x5u": x5u}, P, SENSOR_ID.key)
        assert reason_of(None, token) is MessageReason.KID_X5U_MISMATCH, x5u
    ok = forge.jws(
        {"alg": "ES256", "kid": SENSOR, "x5u": URI.replace("TLSA", "tlsa")}, P, SENSOR_ID.key
    )
    assert world.verify(ok).identity.identity == SENSOR
    cose = forge.cose(
        {1: -7, 4: SENSOR.encode(), 35: f"dns:{GATEWAY_ID.name}?type=TLSA"}, P, SENSOR_ID.key
    )
    assert reason_of(None, cose) is MessageReason.KID_X5U_MISMATCH


def test_signer_name_missing_or_bad() -> None:
    assert reason_of(None, forge.jws({"alg": "ES256"}, P, SENSOR_ID.key)) is (
        MessageReason.NO_SIGNER_NAME
    )
    assert reason_of(None, forge.jws({"alg": "ES256", "kid": "not a name!"}, P, SENSOR_ID.key)) is (
        MessageReason.BAD_SIGNER_NAME
    )
    assert reason_of(None, forge.jws({"alg": "ES256", "kid": 7}, P, SENSOR_ID.key)) is (
        MessageReason.BAD_SIGNER_NAME
    )
    assert reason_of(None, forge.cose({1: -7}, P, SENSOR_ID.key)) is MessageReason.NO_SIGNER_NAME


def test_duplicate_headers() -> None:
    raw = f'{{"alg":"ES256","kid":"{SENSOR}","alg":"ES256"}}'
    assert reason_of(None, forge.jws(raw, P, SENSOR_ID.key)) is MessageReason.DUPLICATE_HEADER
    flat = json.loads(json.dumps(sign_jws(P, SENSOR_ID.key, SENSOR, serialization="json")))
    doc = json.loads(flat)
    doc["header"] = {"kid": SENSOR}
    assert reason_of(None, json.dumps(doc)) is MessageReason.DUPLICATE_HEADER
    text = json.dumps(json.loads(flat))
    assert reason_of(None, text[:-1] + ',"payload":"AA"}') is MessageReason.DUPLICATE_HEADER
    # COSE: a map key twice in the protected header (hand-encoded), and in both buckets
    prot = bytes([0xA3, 0x01, 0x26, 0x04, 0x41, 0x61, 0x01, 0x26])
    assert reason_of(None, forge.cose(prot, P, SENSOR_ID.key)) is MessageReason.DUPLICATE_HEADER
    cose = forge.cose({1: -7, 4: SENSOR.encode()}, P, SENSOR_ID.key, unprotected={4: b"x"})
    assert reason_of(None, cose) is MessageReason.DUPLICATE_HEADER


def test_crit_not_understood() -> None:
    token = forge.jws({"alg": "ES256", "kid": SENSOR, "crit": ["exp"], "exp": 1}, P, SENSOR_ID.key)
    assert reason_of(None, token) is MessageReason.CRIT_NOT_UNDERSTOOD
    token = forge.jws({"alg": "ES256", "kid": SENSOR, "b64": False}, P, SENSOR_ID.key)
    assert reason_of(None, token) is MessageReason.CRIT_NOT_UNDERSTOOD
    cose = forge.cose({1: -7, 2: [99], 4: SENSOR.encode(), 99: 1}, P, SENSOR_ID.key)
    assert reason_of(None, cose) is MessageReason.CRIT_NOT_UNDERSTOOD


def test_too_large() -> None:
    big = forge.jws({"alg": "ES256", "kid": SENSOR, "pad": "x" * 20_000}, P, SENSOR_ID.key)
    assert reason_of(None, big) is MessageReason.TOO_LARGE
    huge = sign_jws(b"x" * 300_000, SENSOR_ID.key, SENSOR)
    assert reason_of(None, huge) is MessageReason.TOO_LARGE
    with pytest.raises(MessageError) as err:
        parse_message(sign_cose(b"x" * 2000, SENSOR_ID.key, SENSOR), Limits(max_message=1000))
    assert err.value.reason is MessageReason.TOO_LARGE
    deep = bytes([0x84, 0x40, 0xA1, 0x07]) + bytes([0x81] * 50) + bytes([0x00, 0x40, 0x40])
    assert reason_of(None, deep) is MessageReason.TOO_LARGE
    x5c = ["AAAA"] * 20
    token = forge.jws({"alg": "ES256", "kid": SENSOR, "x5c": x5c}, P, SENSOR_ID.key)
    assert reason_of(None, token) is MessageReason.TOO_LARGE


@pytest.mark.parametrize(
    "token",
    [
        b"",
        "",
        "a.b",
        "a.b.c.d",
        "!!!.e30.AA",
        "e30.e30.AA",
        "W10.e30.AA",
        "eyJ.e30.AA",
        b"\xd2\x84",
        b"\xd2\x83\x40\xa0\x40",
        b"\x84\x40\xa0\x40\x40",
        "{}",
        '{"payload":1}',
        '{"signatures":[],"payload":""}',
        "\u00e9.a.b",
        b"\xff\xfe",
    ],
)
def test_malformed(token: str | bytes) -> None:
    assert reason_of(None, token) in (MessageReason.MALFORMED, MessageReason.NO_SIGNER_NAME)


def test_malformed_x5c(world: World) -> None:
    token = forge.jws({"alg": "ES256", "kid": SENSOR, "x5c": ["AAAA"]}, P, SENSOR_ID.key)
    assert reason_of(world, token) is MessageReason.MALFORMED
    token = forge.jws({"alg": "ES256", "kid": SENSOR, "x5c": "AAAA"}, P, SENSOR_ID.key)
    assert reason_of(world, token) is MessageReason.MALFORMED


def test_key_not_published(world: World) -> None:
    # the gateway's own (valid) certificate embedded, claiming to be the sensor
    token = sign_jws(P, GATEWAY_ID.key, SENSOR, certificates=[GATEWAY_ID.cert])
    assert reason_of(world, token) is MessageReason.KEY_NOT_PUBLISHED
    # only a digest (3 1 1) published: name-only messages cannot be verified
    token = sign_cose(P, CERTONLY_ID.key, CERTONLY_ID.name)
    assert reason_of(world, token) is MessageReason.KEY_NOT_PUBLISHED


def test_not_allowed_makes_no_dns_query(world: World) -> None:
    token = sign_jws(P, SENSOR_ID.key, SENSOR)

    async def go(verifier: MessageVerifier) -> tuple[MessageReason, int]:
        try:
            await verifier.verify(token)
        except MessageError as exc:
            return exc.reason, verifier.authenticator.source.stats()["lookups"]  # type: ignore[attr-defined]
        raise AssertionError("accepted")

    reason, lookups = world.run(go, allow=["other._device.example.test"])
    assert reason is MessageReason.NOT_ALLOWED and lookups == 0
    embedded = sign_jws(P, SENSOR_ID.key, SENSOR, certificates=[SENSOR_ID.cert])
    assert reason_of(world, embedded, allow=[".other.test"]) is MessageReason.NOT_ALLOWED


def test_insecure_zone_refused(world: World) -> None:
    token = sign_jws(P, INSECURE_ID.key, INSECURE_ID.name)
    assert reason_of(world, token) is MessageReason.DNS_INSECURE
    token = sign_jws(P, INSECURE_ID.key, INSECURE_ID.name, certificates=[INSECURE_ID.cert])
    assert reason_of(world, token) is MessageReason.DNS_INSECURE


def test_bogus_signature_refused(world: World) -> None:
    token = sign_jws(P, SENSOR_ID.key, SENSOR)
    cose = sign_cose(P, SENSOR_ID.key, SENSOR, certificates=[SENSOR_ID.cert])
    with world.hierarchy.inject(Fault("bad-signature", SENSOR)):
        assert reason_of(world, token) is MessageReason.DNS_BOGUS
        assert reason_of(world, cose) is MessageReason.DNS_BOGUS
    assert world.verify(token).identity.identity == SENSOR  # fault removed: accepted again


def test_secure_absent(world: World) -> None:
    token = sign_jws(P, SENSOR_ID.key, ABSENT)
    assert reason_of(world, token) is MessageReason.DNS_SECURE_ABSENT


def test_dns_unreachable_is_indeterminate(world: World) -> None:
    import asyncio

    from dance.auth import Authenticator
    from dance.dns import TLSAResolver
    from tests.message.kit import NOW, NOW_POSIX  # noqa: F401

    async def go() -> MessageReason:
        resolver = TLSAResolver(
            ("127.0.0.1", 9),
            anchors=world.anchors,
            timeout=0.2,
            deadline=0.4,
            recursion_desired=False,
        )
        verifier = MessageVerifier(Authenticator(resolver, allow=[".example.test"]))
        async with resolver:
            try:
                await verifier.verify(sign_jws(P, SENSOR_ID.key, SENSOR))
            except MessageError as exc:
                return exc.reason
        raise AssertionError("accepted")

    assert asyncio.run(go()) is MessageReason.DNS_INDETERMINATE


def test_certificate_rejections_map_to_certificate_rejected() -> None:
    for reason in (Reason.EXPIRED, Reason.NAME_MISMATCH, Reason.BAD_CHAIN, Reason.BAD_EKU):
        err = verify_mod._refused(Rejection(reason, "x"), SENSOR)
        assert err.reason is MessageReason.CERTIFICATE_REJECTED
    assert verify_mod._refused(Rejection(Reason.NO_MATCH), SENSOR).reason is (
        MessageReason.KEY_NOT_PUBLISHED
    )


def test_unexpected_library_error_is_wrapped(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    token = sign_jws(P, SENSOR_ID.key, SENSOR)

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("library bug")

    monkeypatch.setattr(verify_mod, "_published", boom)
    assert reason_of(world, token) is MessageReason.INTERNAL


def test_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "joserfc", None)
    monkeypatch.setitem(sys.modules, "joserfc.jws", None)
    with pytest.raises(MissingExtra) as err:
        sign_jws(P, SENSOR_ID.key, SENSOR)
    assert err.value.reason is MessageReason.MISSING_EXTRA
    assert "dance-dane[messages]" in err.value.detail


def test_package_imports_without_extras() -> None:
    code = (
        "import sys; sys.modules['joserfc'] = None; sys.modules['cbor2'] = None\n"
        "import dance.message as m\n"
        "from dance.message import MissingExtra\n"
        "from dance.certs import generate_key\n"
        "try:\n    m.sign_cose(b'x', generate_key(), 'a.example.com')\n"
        "except MissingExtra as e:\n    print(e.reason.value)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "missing-extra"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({1: [-7], 4: SENSOR.encode()}, MessageReason.MALFORMED),  # alg as an array
        ({1: {1: -7}, 4: SENSOR.encode()}, MessageReason.MALFORMED),  # alg as a map
        ({1: True, 4: SENSOR.encode()}, MessageReason.MALFORMED),
        ({1: -7.0, 4: SENSOR.encode()}, MessageReason.MALFORMED),
        ({1: "ES256", 4: SENSOR.encode()}, MessageReason.UNKNOWN_ALGORITHM),  # text: a valid type
        ({1: -7, 4: 7}, MessageReason.BAD_SIGNER_NAME),  # kid as an integer
        ({1: -7, 4: SENSOR.encode(), 2: 5}, MessageReason.MALFORMED),  # crit not an array
        ({1: -7, 4: SENSOR.encode(), 2: []}, MessageReason.MALFORMED),  # crit empty
        ({1: -7, 4: SENSOR.encode(), 2: [b"x"]}, MessageReason.MALFORMED),  # crit of bytes
        ({1: -7, 4: SENSOR.encode(), 3: -1}, MessageReason.MALFORMED),  # content type < 0
        ({1: -7, 4: SENSOR.encode(), 5: "iv"}, MessageReason.MALFORMED),  # IV as text
        ({1: -7, 4: SENSOR.encode(), 33: [1]}, MessageReason.MALFORMED),  # x5chain of ints
        ({1: -7, 4: SENSOR.encode(), 35: 35}, MessageReason.KID_X5U_MISMATCH),
    ],
)
def test_cose_header_value_types(header: dict[int, object], reason: MessageReason) -> None:
    assert reason_of(None, forge.cose(header, P, SENSOR_ID.key)) is reason


def test_cose_unprotected_header_value_types() -> None:
    cose = forge.cose({1: -7, 4: SENSOR.encode()}, P, SENSOR_ID.key, unprotected={5: [1]})
    assert reason_of(None, cose) is MessageReason.MALFORMED


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"alg": ["ES256"]}, MessageReason.MALFORMED),
        ({"kid": 7}, MessageReason.BAD_SIGNER_NAME),
        ({"crit": "exp"}, MessageReason.MALFORMED),
        ({"crit": []}, MessageReason.MALFORMED),
        ({"crit": [1]}, MessageReason.MALFORMED),
        ({"typ": 1}, MessageReason.MALFORMED),
        ({"cty": ["x"]}, MessageReason.MALFORMED),
        ({"jwk": "key"}, MessageReason.MALFORMED),
        ({"x5t": {}}, MessageReason.MALFORMED),
        ({"b64": "false"}, MessageReason.MALFORMED),
        ({"x5c": "AAAA"}, MessageReason.MALFORMED),
    ],
)
def test_jose_header_value_types(extra: dict[str, object], reason: MessageReason) -> None:
    token = forge.jws({"alg": "ES256", "kid": SENSOR, **extra}, P, SENSOR_ID.key)
    assert reason_of(None, token) is reason
