"""Fuzz JOSE tokens as a whole (tests/message/test_fuzz.py covers header value types):
byte mutations of real signed JWS (compact and JSON) and JWE, JSON with duplicate members in
every object, JSON outside RFC 8259, and non-canonical base64url.

Properties: only MessageError, never ``internal``; a mutated token that still parses and
verifies with the signer's key is the same token (compact: byte for byte, JSON: the same
base64url strings), says the same signer, alg and payload; a JWE that still decrypts is the
same token and gives the same plaintext; duplicate members anywhere are refused; base64url must
be canonical (no padding, no other alphabet, no white space, zero pad bits)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given
from hypothesis import strategies as st

from dance.message import (
    MessageError,
    MessageReason,
    decrypt_jwe,
    encrypt_jwe,
    parse_message,
    sign_jws,
)
from dance.message.jose import b64e
from dance.names import parse_client_name
from tests.fuzz.common import fuzz_settings, hit, time_limit

DOOR = "jose"
NAME = "sensor7._device.example.test"
EC = ec.generate_private_key(ec.SECP256R1())
ED = ed25519.Ed25519PrivateKey.generate()
PAYLOAD = b'{"t":21.5,"unit":"C"}'
TOKENS = {
    "es256-compact": (sign_jws(PAYLOAD, EC, NAME), EC),
    "eddsa-compact": (sign_jws(PAYLOAD, ED, NAME), ED),
    "es256-json": (sign_jws(PAYLOAD, EC, NAME, serialization="json"), EC),
    "eddsa-json-x5u": (sign_jws(PAYLOAD, ED, NAME, serialization="json", x5u=True), ED),
}
JWE = encrypt_jwe(PAYLOAD, EC.public_key(), NAME)
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _json_parts(token: str | bytes) -> dict[str, Any]:
    doc = json.loads(token)
    member = doc["signatures"][0] if "signatures" in doc else doc
    # The unprotected header is not signed (RFC 7515 7.2.1): it is not compared (dance refuses
    # alg, kid, x5u, x5c and crit there, tested in tests/message).
    return {
        "payload": doc["payload"],
        "protected": member["protected"],
        "signature": member["signature"],
    }


def through_the_door(token: str | bytes, original: str, key: Any) -> bool:
    """Parse and verify ``token``; True when it was accepted (then it must mean ``original``)."""
    hit(DOOR)
    with time_limit():
        try:
            msg = parse_message(token)
            verified = msg.verify_with(key.public_key())
        except MessageError as exc:
            assert exc.reason is not MessageReason.INTERNAL, exc
            return False
    assert parse_client_name(msg.signer).text == msg.signer  # canonical signer name
    if not verified:
        return False
    assert msg.signer == NAME and msg.payload == PAYLOAD
    text = token.decode("utf-8") if isinstance(token, bytes) else token
    if original.startswith("{"):
        assert _json_parts(text) == _json_parts(original), "another JSON JWS verified"
    else:
        assert text.strip() == original, f"another compact JWS verified: {text!r}"
    return True


def decrypt(token: str | bytes) -> None:
    hit(DOOR)
    with time_limit():
        try:
            plain = decrypt_jwe(token, EC)
        except MessageError as exc:
            assert exc.reason is not MessageReason.INTERNAL, exc
            return
    assert plain == PAYLOAD
    text = token.decode("utf-8", "replace") if isinstance(token, bytes) else token
    assert text.strip() == JWE, f"another JWE decrypted: {text!r}"


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for pos, kind, value in edits:
        at = pos % (len(buf) + 1)
        if kind == 0 and buf:
            buf[at % len(buf)] = value
        elif kind == 1:
            buf[at:at] = bytes([value])
        elif kind == 2 and buf:
            del buf[at % len(buf) : at % len(buf) + 1 + value % 8]
        elif kind == 3:  # a printable byte, often a base64url one
            buf[at:at] = _ALPHABET[value % 64].encode()
        elif kind == 4 and buf:  # swap a base64url character for its neighbour
            i = at % len(buf)
            c = chr(buf[i])
            if c in _ALPHABET:
                buf[i] = ord(_ALPHABET[_ALPHABET.index(c) ^ (1 + value % 3)])
        elif buf:  # duplicate a slice
            i = at % len(buf)
            buf[i:i] = buf[i : i + 1 + value % 16]
    return bytes(buf)


EDITS = st.lists(
    st.tuples(st.integers(0, 4000), st.integers(0, 5), st.integers(0, 255)), min_size=1, max_size=4
)


@fuzz_settings(400)
@given(st.sampled_from(sorted(TOKENS)), EDITS, st.booleans())
def test_mutated_jws(which: str, edits: list[tuple[int, int, int]], as_bytes: bool) -> None:
    token, key = TOKENS[which]
    mutated = mutate(token.encode(), edits)
    try:
        arg: str | bytes = mutated if as_bytes else mutated.decode("utf-8")
    except UnicodeDecodeError:
        arg = mutated
    through_the_door(arg, token, key)


@fuzz_settings(200)
@given(EDITS)
def test_mutated_jwe(edits: list[tuple[int, int, int]]) -> None:
    decrypt(mutate(JWE.encode(), edits))


@fuzz_settings(150)
@given(st.sampled_from(sorted(TOKENS)), st.integers(0, 2), st.integers(1, 3))
def test_non_canonical_base64url_pad_bits(which: str, part: int, flip: int) -> None:
    """The same octets with non-zero pad bits in the last character (RFC 4648 3.5): the token
    is not the one signed, and must be refused, not read as the signed one."""
    token, key = TOKENS[which]
    if token.startswith("{"):
        doc = json.loads(token)
        field = ["payload", "protected", "signature"][part]
        member = doc if field == "payload" else doc["signatures"][0] if "signatures" in doc else doc
        value = member[field]
        if len(value) % 4 in (2, 3):
            member[field] = value[:-1] + _ALPHABET[_ALPHABET.index(value[-1]) ^ flip]
        mutated = json.dumps(doc)
    else:
        parts = token.split(".")
        value = parts[part]
        if len(value) % 4 in (2, 3):
            parts[part] = value[:-1] + _ALPHABET[_ALPHABET.index(value[-1]) ^ flip]
        mutated = ".".join(parts)
    through_the_door(mutated, token, key)


@pytest.mark.parametrize("which", sorted(TOKENS))
@pytest.mark.parametrize(
    "change",
    ["pad", "std-alphabet", "space", "newline", "tab", "percent", "final-newline", "final-cr"],
)
def test_other_non_canonical_base64url(which: str, change: str) -> None:
    token, key = TOKENS[which]

    def alter(value: str) -> str:
        if change == "pad":
            return value + "=" * (-len(value) % 4 or 4)
        if change == "std-alphabet":
            return (
                value.replace("-", "+").replace("_", "/")
                if ("-" in value or "_" in value)
                else value + "+"
            )
        if change == "final-newline":
            return value + "\n"
        if change == "final-cr":
            return value + "\r"
        if change == "percent":
            return value[:4] + "%41" + value[4:]
        return value[:5] + {"space": " ", "newline": "\n", "tab": "\t"}[change] + value[5:]

    if token.startswith("{"):
        doc = json.loads(token)
        member = doc["signatures"][0] if "signatures" in doc else doc
        member["signature"] = alter(member["signature"])
        mutated = json.dumps(doc)
    else:
        h, p, s = token.split(".")
        if change.startswith("final-"):  # at the very end it is white space around the token
            mutated = ".".join((alter(h), p, s))
        else:
            mutated = ".".join((h, p, alter(s)))
    assert not through_the_door(mutated, token, key)


def test_jwe_non_canonical_base64url() -> None:
    parts = JWE.split(".")
    for i, value in enumerate(parts):
        if len(value) % 4 in (2, 3):
            altered = [
                *parts[:i],
                value[:-1] + _ALPHABET[_ALPHABET.index(value[-1]) ^ 1],
                *parts[i + 1 :],
            ]
            decrypt(".".join(altered))


# -- JSON ---------------------------------------------------------------------------------------

_SPELLINGS = {"alg": ['"alg"', '"\\u0061lg"', '"al\\u0067"'], "kid": ['"kid"', '"\\u006bid"']}


@fuzz_settings(150)
@given(st.sampled_from(["alg", "kid"]), st.integers(0, 2), st.integers(0, 1), st.booleans())
def test_duplicate_members_in_the_protected_header(
    name: str, s1: int, s2: int, same_value: bool
) -> None:
    """A member given twice, in any spelling of its name (JSON escapes), with equal or
    different values: duplicate-header, never the first or last value silently."""
    spell = _SPELLINGS[name]
    first = spell[s1 % len(spell)]
    second = spell[s2 % len(spell)]
    value = {"alg": '"ES256"', "kid": json.dumps(NAME)}[name]
    other = value if same_value else {"alg": '"EdDSA"', "kid": '"evil._device.example.test"'}[name]
    rest = {"alg": f'"kid":{json.dumps(NAME)}', "kid": '"alg":"ES256"'}[name]
    header = f"{{{first}:{value},{rest},{second}:{other}}}".encode()
    token = f"{b64e(header)}.{b64e(PAYLOAD)}.{b64e(b'x' * 64)}"
    hit(DOOR)
    with pytest.raises(MessageError) as info:
        parse_message(token)
    assert info.value.reason is MessageReason.DUPLICATE_HEADER


@pytest.mark.parametrize(
    "template",
    [
        '{{"payload":"{p}","payload":"{p}","protected":"{h}","signature":"{s}"}}',
        '{{"payload":"{p}","protected":"{h}","protected":"{h}","signature":"{s}"}}',
        '{{"payload":"{p}","protected":"{h}","signature":"{s}","signature":"{s}"}}',
        '{{"payload":"{p}","signatures":[{{"protected":"{h}","protected":"{h}","signature":"{s}"}}]}}',
        '{{"payload":"{p}","signatures":[{{"protected":"{h}","signature":"{s}"}}],'
        '"signatures":[{{"protected":"{h}","signature":"{s}"}}]}}',
        '{{"payload":"{p}","protected":"{h}","header":{{"typ":"a","typ":"b"}},"signature":"{s}"}}',
        '{{"payload":"{p}","\\u0070rotected":"{h}","protected":"{h}","signature":"{s}"}}',
    ],
)
def test_duplicate_members_in_json_serialization(template: str) -> None:
    token, _key = TOKENS["es256-json"]
    parts = _json_parts(token)
    text = template.format(p=parts["payload"], h=parts["protected"], s=parts["signature"])
    hit(DOOR)
    with pytest.raises(MessageError) as info:
        parse_message(text)
    assert info.value.reason is MessageReason.DUPLICATE_HEADER


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_constants_outside_rfc8259_refused(constant: str) -> None:
    """NaN and Infinity are not JSON (RFC 8259 section 6); Python's json reads them."""
    header = f'{{"alg":"ES256","kid":{json.dumps(NAME)},"x":{constant}}}'.encode()
    token = f"{b64e(header)}.{b64e(PAYLOAD)}.{b64e(b'x' * 64)}"
    hit(DOOR)
    with pytest.raises(MessageError) as info:
        parse_message(token)
    assert info.value.reason is MessageReason.MALFORMED


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=12,
)


@fuzz_settings(200)
@given(JSONISH, st.sampled_from(["header", "doc", "member"]))
def test_json_serialization_shapes(value: Any, where: str) -> None:
    """Random JSON in place of the header, the document or the signature member."""
    token, key = TOKENS["es256-json"]
    doc = json.loads(token)
    if where == "header":
        doc["header"] = value
    elif where == "doc":
        doc = value
    else:
        doc["signatures"] = [value]
    through_the_door(json.dumps(doc), token, key)


@fuzz_settings(150)
@given(st.integers(1, 200_000), st.sampled_from(["[", '{"a":', '[[{"a":']))
def test_deep_json(depth: int, opener: str) -> None:
    """Deeply nested JSON in the header and in the JSON serialization: malformed or
    too-large, never a RecursionError escaping."""
    nested = (opener * depth).encode()
    for token in (f"{b64e(nested)}.{b64e(PAYLOAD)}.{b64e(b'x')}", nested):
        through_the_door(token, TOKENS["es256-compact"][0], EC)


def test_untouched_tokens_verify() -> None:
    """Sanity for the properties above: the untouched tokens verify."""
    for token, key in TOKENS.values():
        assert through_the_door(token, token, key)
        assert through_the_door(token.encode(), token, key)
    decrypt(JWE)
