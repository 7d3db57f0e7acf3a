"""Hand-made tokens (valid signatures over unusual headers) for negative tests."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from dance.message import cbor
from dance.message.jose import b64e
from dance.message.keys import raw_sign


def jws(header: dict[str, Any] | str, payload: bytes, key: Any, alg: str = "ES256") -> str:
    raw = header if isinstance(header, str) else json.dumps(header)
    signing_input = f"{b64e(raw.encode())}.{b64e(payload)}"
    sig = raw_sign(alg, key, signing_input.encode("ascii"))
    return f"{signing_input}.{b64e(sig)}"


def jws_hmac(header: dict[str, Any], payload: bytes, secret: bytes) -> str:
    signing_input = f"{b64e(json.dumps(header).encode())}.{b64e(payload)}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64e(sig)}"


def cose(
    protected: dict[int, Any] | bytes,
    payload: bytes,
    key: Any,
    alg: str = "ES256",
    unprotected: dict[int, Any] | None = None,
) -> bytes:
    prot = protected if isinstance(protected, bytes) else cbor.encode(protected)
    to_sign = cbor.encode(["Signature1", prot, b"", payload])
    sig = raw_sign(alg, key, to_sign)
    return cbor.encode(cbor.Tag(18, [prot, unprotected or {}, payload, sig]))
