"""Hypothesis: truncated, mutated and random tokens only ever raise MessageError."""

from __future__ import annotations

import base64
import json

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dance.message import (
    MessageError,
    decrypt_cose,
    decrypt_jwe,
    encrypt_cose,
    encrypt_jwe,
    parse_message,
    sign_cose,
    sign_jws,
)
from dance.message.cbor import decode
from tests.message.kit import CERTONLY_ID, SENSOR, SENSOR_ID

P = b'{"t":21.5}'
JWS = sign_jws(P, SENSOR_ID.key, SENSOR, certificates=[SENSOR_ID.cert])
JWS_JSON = sign_jws(P, SENSOR_ID.key, SENSOR, serialization="json")
COSE = sign_cose(P, SENSOR_ID.key, SENSOR, certificates=[SENSOR_ID.cert], x5u=True)
JWE = encrypt_jwe(P, SENSOR_ID.key.public_key(), SENSOR)
COSE_ENC = encrypt_cose(P, SENSOR_ID.key.public_key(), SENSOR)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def only_typed(fn, data) -> None:  # type: ignore[no-untyped-def]
    """Run ``fn(data)``: a result or MessageError are fine; any other exception fails."""
    try:
        fn(data)
    except MessageError as exc:
        assert exc.reason.value and exc.reason.value != "internal", exc


def _check_parsed(token: str | bytes) -> None:
    msg = parse_message(token)
    msg.verify_with(SENSOR_ID.key.public_key())
    msg.verify_with(CERTONLY_ID.key.public_key())


@FAST
@given(st.integers(min_value=0, max_value=len(JWS)), st.sampled_from([JWS, JWS_JSON]))
def test_truncated_jws(cut: int, token: str) -> None:
    only_typed(lambda t: _check_parsed(t) or True, token[:cut])


@FAST
@given(st.integers(min_value=0, max_value=len(COSE)))
def test_truncated_cose(cut: int) -> None:
    only_typed(lambda t: _check_parsed(t) or True, COSE[:cut])


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    buf = bytearray(data)
    for pos, val in edits:
        if buf:
            buf[pos % len(buf)] = val
    return bytes(buf)


EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6)


@FAST
@given(EDITS)
def test_mutated_cose(edits: list[tuple[int, int]]) -> None:
    only_typed(lambda t: _check_parsed(t) or True, _mutate(COSE, edits))
    only_typed(lambda t: decrypt_cose(t, SENSOR_ID.key), _mutate(COSE_ENC, edits))


@FAST
@given(EDITS)
def test_mutated_jws_and_jwe(edits: list[tuple[int, int]]) -> None:
    for token in (JWS, JWS_JSON):
        only_typed(lambda t: _check_parsed(t) or True, _mutate(token.encode(), edits))
    only_typed(lambda t: decrypt_jwe(t, SENSOR_ID.key), _mutate(JWE.encode(), edits))


@FAST
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    only_typed(lambda t: _check_parsed(t) or True, data)
    only_typed(lambda t: _check_parsed(t) or True, b"\xd2" + data)
    only_typed(lambda t: decrypt_cose(t, SENSOR_ID.key), b"\xd8\x60" + data)
    only_typed(decode, data)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["alg", "kid", "x5u", "x5c", "crit", "b64", "typ"]), JSONISH, max_size=6
    )
)
def test_random_headers(header: dict[str, object]) -> None:
    from dance.message.jose import b64e

    token = f"{b64e(json.dumps(header).encode())}.{b64e(P)}.{b64e(b'x' * 64)}"
    only_typed(lambda t: _check_parsed(t) or True, token)
    doc = {"payload": b64e(P), "protected": b64e(json.dumps(header).encode()), "signature": "AA"}
    only_typed(lambda t: _check_parsed(t) or True, json.dumps(doc))


# -- header values of every type (issue 19 item 7) ------------------------------------------------

CBORISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.binary(max_size=12),
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(st.integers(-40, 40) | st.text(max_size=4), c, max_size=3)
        | st.builds(lambda v: cbor2.CBORTag(24, v), c)
    ),
    max_leaves=8,
)
COSE_LABELS = st.sampled_from([1, 2, 3, 4, 5, 6, 32, 33, 34, 35, -1, -2, "alg", "x"])
COSE_HEADER = st.dictionaries(COSE_LABELS, CBORISH, max_size=4)


def _cose_sign1(protected: dict[object, object], unprotected: dict[object, object]) -> bytes:
    body = [cbor2.dumps(protected), unprotected, P, b"\x01" * 64]
    return cbor2.dumps(cbor2.CBORTag(18, body))


@FAST
@given(COSE_HEADER, COSE_HEADER, st.booleans())
def test_cose_header_values_of_any_type(
    protected: dict[object, object], unprotected: dict[object, object], on_valid: bool
) -> None:
    """alg as an array or a map, kid as an integer, crit of any shape, ...: always a
    MessageError with a reason other than ``internal``."""
    if on_valid:  # the random values replace fields of a well-formed header
        protected = {1: -7, 4: SENSOR.encode(), **protected}
    only_typed(lambda t: _check_parsed(t) or True, _cose_sign1(protected, unprotected))


@FAST
@given(st.integers(0, 3), COSE_HEADER)
def test_cose_encrypt_header_values_of_any_type(where: int, values: dict[object, object]) -> None:
    tag = cbor2.loads(COSE_ENC)
    protected, unprotected, ciphertext, recipients = tag.value
    r_protected, r_unprotected, r_cipher = recipients[0]
    if where == 0:
        protected = cbor2.dumps({**cbor2.loads(protected), **values})
    elif where == 1:
        unprotected = {**unprotected, **values}
    elif where == 2:
        r_protected = cbor2.dumps({**cbor2.loads(r_protected), **values})
    else:
        r_unprotected = {**r_unprotected, **values}
    body = [protected, unprotected, ciphertext, [[r_protected, r_unprotected, r_cipher]]]
    only_typed(lambda t: decrypt_cose(t, SENSOR_ID.key), cbor2.dumps(cbor2.CBORTag(96, body)))


JOSE_NAMES = st.sampled_from(
    ["alg", "kid", "x5u", "x5c", "crit", "b64", "typ", "cty", "jku", "jwk", "x5t", "x5t#S256",
     "enc", "zip", "epk", "apu", "apv", "iv", "tag", "p2s", "p2c"]
)  # fmt: skip


@FAST
@given(st.dictionaries(JOSE_NAMES, JSONISH, max_size=4))
def test_jose_header_values_of_any_type(values: dict[str, object]) -> None:
    from dance.message.jose import b64e

    header = {"alg": "ES256", "kid": SENSOR, **values}
    token = f"{b64e(json.dumps(header).encode())}.{b64e(P)}.{b64e(b'x' * 64)}"
    only_typed(lambda t: _check_parsed(t) or True, token)
    parts = JWE.split(".")
    jwe_header = {**json.loads(base64.urlsafe_b64decode(parts[0] + "==")), **values}
    parts[0] = b64e(json.dumps(jwe_header).encode())
    only_typed(lambda t: decrypt_jwe(t, SENSOR_ID.key), ".".join(parts))
