"""Sign -> verify round trips over real DNSSEC (dance.testkit on loopback): every algorithm, JWS
compact / JSON and COSE_Sign1, name only (key from 3 1 0 / 3 0 0) and certificate embedded."""

from __future__ import annotations

import pytest

from dance.identity import Identity
from dance.message import (
    MessageError,
    MessageReason,
    VerifiedMessage,
    decrypt_cose,
    decrypt_jwe,
    encrypt_cose,
    encrypt_jwe,
    sign_cose,
    sign_jws,
)
from tests.message.kit import (
    CERTONLY_ID,
    ED_ID,
    GATEWAY_ID,
    RSA_ID,
    SENSOR_ID,
    World,
)

PAYLOAD = b'{"sensor":"sensor7","t":21.5,"unit":"C"}'

CASES = [
    (SENSOR_ID, "ES256", "3 1 0"),
    (ED_ID, "EdDSA", "3 1 0"),
    (RSA_ID, "RS256", "3 1 0"),
    (RSA_ID, "PS256", "3 1 0"),
    (GATEWAY_ID, "ES256", "3 0 0"),
]
FORMATS = ["jws", "jws-json", "cose"]


def _sign(fmt: str, ident, alg: str, embed: bool = False) -> str | bytes:  # type: ignore[no-untyped-def]
    chain = [ident.cert] if embed else []
    if fmt == "cose":
        return sign_cose(PAYLOAD, ident.key, ident.name, alg=alg, certificates=chain)
    ser = "json" if fmt == "jws-json" else "compact"
    return sign_jws(PAYLOAD, ident.key, ident.name, alg=alg, serialization=ser, certificates=chain)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("ident", "alg", "record"), CASES, ids=lambda c: getattr(c, "name", c))
def test_name_only_round_trip(world: World, fmt: str, ident, alg: str, record: str) -> None:  # type: ignore[no-untyped-def]
    token = _sign(fmt, ident, alg)
    result = world.verify(token)
    assert isinstance(result, VerifiedMessage)
    identity, payload = result
    assert isinstance(identity, Identity)
    assert identity.identity == ident.name
    assert payload == PAYLOAD
    assert result.alg == alg and not result.certificate_embedded
    assert identity.record.startswith(record[:4])  # sensor7 also has 3 1 1


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("ident", [SENSOR_ID, CERTONLY_ID, ED_ID, RSA_ID], ids=lambda i: i.name)
def test_embedded_certificate_round_trip(world: World, fmt: str, ident) -> None:  # type: ignore[no-untyped-def]
    alg = {ED_ID.name: "EdDSA", RSA_ID.name: "PS256"}.get(ident.name, "ES256")
    token = _sign(fmt, ident, alg, embed=True)
    identity, payload = world.verify(token)
    assert identity.identity == ident.name and payload == PAYLOAD
    assert world.verify(token).certificate_embedded


def test_certonly_name_only_is_key_not_published(world: World) -> None:
    token = sign_jws(PAYLOAD, CERTONLY_ID.key, CERTONLY_ID.name)
    with pytest.raises(MessageError) as err:
        world.verify(token)
    assert err.value.reason is MessageReason.KEY_NOT_PUBLISHED


def test_cached_verification_needs_no_dns(world: World) -> None:
    token = sign_jws(PAYLOAD, SENSOR_ID.key, SENSOR_ID.name)

    async def go(verifier):  # type: ignore[no-untyped-def]
        assert verifier.verify_cached(token) is None  # nothing cached yet: needs a lookup
        first = await verifier.verify(token)
        lookups = verifier.authenticator.stats()["dns_lookups"]
        again = [verifier.verify_cached(token) for _ in range(5)]
        assert verifier.authenticator.stats()["dns_lookups"] == lookups
        return first, again

    first, again = world.run(go)
    assert all(a is not None and a.identity == first.identity for a in again)


@pytest.mark.parametrize("ident", [SENSOR_ID, RSA_ID], ids=lambda i: i.name)
def test_jwe_round_trip(ident) -> None:  # type: ignore[no-untyped-def]
    algs = ["ECDH-ES+A256KW", "ECDH-ES"] if ident is SENSOR_ID else ["RSA-OAEP-256"]
    for alg in algs:
        token = encrypt_jwe(PAYLOAD, ident.key.public_key(), ident.name, alg=alg)
        assert decrypt_jwe(token, ident.key) == PAYLOAD


@pytest.mark.parametrize("ident", [SENSOR_ID, RSA_ID], ids=lambda i: i.name)
def test_cose_encrypt_round_trip(ident) -> None:  # type: ignore[no-untyped-def]
    data = encrypt_cose(PAYLOAD, ident.key.public_key(), ident.name)
    assert decrypt_cose(data, ident.key) == PAYLOAD


def test_encrypt_to_ed25519_refused() -> None:
    for fn in (encrypt_jwe, encrypt_cose):
        with pytest.raises(MessageError) as err:
            fn(PAYLOAD, ED_ID.key.public_key(), ED_ID.name)
        assert err.value.reason is MessageReason.UNSUPPORTED_KEY


def test_decrypt_with_wrong_key_or_altered_ciphertext() -> None:
    token = encrypt_jwe(PAYLOAD, SENSOR_ID.key.public_key(), SENSOR_ID.name)
    with pytest.raises(MessageError) as err:
        decrypt_jwe(token, GATEWAY_ID.key)
    assert err.value.reason is MessageReason.DECRYPT_FAILED
    parts = token.split(".")
    parts[3] = ("B" if parts[3][0] == "A" else "A") + parts[3][1:]
    with pytest.raises(MessageError) as err:
        decrypt_jwe(".".join(parts), SENSOR_ID.key)
    assert err.value.reason is MessageReason.DECRYPT_FAILED
    data = bytearray(encrypt_cose(PAYLOAD, SENSOR_ID.key.public_key(), SENSOR_ID.name))
    with pytest.raises(MessageError) as err:
        decrypt_cose(bytes(data), GATEWAY_ID.key)
    assert err.value.reason is MessageReason.DECRYPT_FAILED
    data[-20] ^= 1  # inside the recipient's ephemeral key or the ciphertext
    with pytest.raises(MessageError) as err:
        decrypt_cose(bytes(data), SENSOR_ID.key)
    assert err.value.reason in (MessageReason.DECRYPT_FAILED, MessageReason.MALFORMED)


def test_general_json_serialization_with_one_signature(world: World) -> None:
    import json

    flat = json.loads(sign_jws(PAYLOAD, SENSOR_ID.key, SENSOR_ID.name, serialization="json"))
    member = {"protected": flat["protected"], "signature": flat["signature"]}
    general = {"payload": flat["payload"], "signatures": [member]}
    identity, payload = world.verify(json.dumps(general))
    assert identity.identity == SENSOR_ID.name and payload == PAYLOAD
    general["signatures"] = [member, member]
    with pytest.raises(MessageError) as err:
        world.verify(json.dumps(general))
    assert err.value.reason is MessageReason.MALFORMED


def test_untagged_cose_sign1_accepted(world: World) -> None:
    from dance.message import cbor

    tagged = sign_cose(PAYLOAD, SENSOR_ID.key, SENSOR_ID.name)
    untagged = cbor.encode(cbor.decode(tagged).value)
    assert untagged[:1] == b"\x84"
    assert world.verify(untagged).identity.identity == SENSOR_ID.name
