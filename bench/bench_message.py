"""Signed messages: ES256 JWS verifications per second with a cached identity (target >= 10,000/s
per core), next to joserfc's own verify (the peer) and cryptography's bare ECDSA verify, and the
size of a COSE_Sign1 measurement with the signer's name only versus the certificate embedded.

The TLSA answer comes from an in-memory source (as a warm resolver cache would give it), so the
figures are those of `MessageVerifier.verify_cached` / `verify` on a cache hit: strict parsing,
the allow-list, the Authenticator's decision cache and the signature check.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws
from joserfc.jwk import ECKey

from dance import certs, make_record
from dance.auth import Authenticator
from dance.dns import LookupResult, Outcome
from dance.message import MessageVerifier, sign_cose, sign_jws
from dance.message.jose import _jws_registry
from dance.message.keys import spki_of
from dance.tlsa import TLSARecord

NAME = "sensor7._device.example.com"
NOW = datetime.datetime.now(datetime.UTC)
MEASUREMENT = json.dumps({"sensor": NAME, "t": 21.5, "unit": "C", "ts": 1764390000}).encode()


class Source:
    def __init__(self, result: LookupResult) -> None:
        self.result = result

    async def lookup_tlsa(self, name: str) -> LookupResult:
        return self.result

    def cached(self, name: str) -> LookupResult | None:
        return self.result


def rate(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.process_time()
    fn(n)
    return n / (time.process_time() - start)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certs.self_signed(key, NAME, now=NOW)
    records = (
        TLSARecord(3, 1, 0, spki_of(key)).to_wire(),
        make_record(cert).to_wire(),
    )
    source = Source(LookupResult(Outcome.SECURE, records, 3600.0, "ok", NAME))
    verifier = MessageVerifier(Authenticator(source, allow=["._device.example.com"]))

    token = sign_jws(MEASUREMENT, key, NAME)
    token_x5c = sign_jws(MEASUREMENT, key, NAME, certificates=[cert])
    cose = sign_cose(MEASUREMENT, key, NAME)
    cose_x5c = sign_cose(MEASUREMENT, key, NAME, certificates=[cert])
    cose_x5u = sign_cose(MEASUREMENT, key, NAME, x5u=True)

    asyncio.run(verifier.verify(token))  # warm the decision cache
    for t in (token, token_x5c, cose, cose_x5c):
        assert verifier.verify_cached(t) is not None

    public = key.public_key()
    # joserfc's default registry refuses a dns: x5u; the peer uses dance's registry (ES256 only)
    registry = _jws_registry("ES256")
    jwk = ECKey.import_key(public)
    signing_input, _, _ = token.rpartition(".")
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))

    def bare(k: int) -> None:
        for _ in range(k):
            public.verify(der, signing_input.encode(), ec.ECDSA(hashes.SHA256()))

    def peer(k: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(k):
                jws.deserialize_compact(token, jwk, registry=registry)

    def cached(tok: str | bytes):  # type: ignore[no-untyped-def]
        def run(k: int) -> None:
            for _ in range(k):
                verifier.verify_cached(tok)

        return run

    def async_verify(k: int) -> None:
        async def go() -> None:
            for _ in range(k):
                await verifier.verify(token)

        asyncio.run(go())

    rows = [
        ("cryptography ECDSA P-256 verify (floor)", bare),
        ("joserfc deserialize_compact ES256 (peer)", peer),
        ("dance JWS verify_cached, name only (3 1 0)", cached(token)),
        ("dance JWS await verify, name only (cache hit)", async_verify),
        ("dance JWS verify_cached, x5c embedded", cached(token_x5c)),
        ("dance COSE_Sign1 verify_cached, name only", cached(cose)),
        ("dance COSE_Sign1 verify_cached, x5chain", cached(cose_x5c)),
    ]
    print(f"ES256 verifications per second on one core (n={n}, process time)")
    results = {}
    for label, fn in rows:
        fn(min(n, 500))  # warm-up
        results[label] = rate(fn, n)
        print(f"  {label:<48} {results[label]:>10,.0f}/s")
    ours = results["dance JWS verify_cached, name only (3 1 0)"]
    base = results["joserfc deserialize_compact ES256 (peer)"]
    verdict = "meets" if ours >= 10_000 else "MISSES"
    print(f"  dance / joserfc peer: {ours / base:.2f}x; {verdict} the 10,000/s target")

    print(f"\nSizes of one measurement ({len(MEASUREMENT)}-byte JSON payload), bytes")
    print(f"  COSE_Sign1 name only (kid)           {len(cose):>6}")
    print(f"  COSE_Sign1 name only (kid + x5u)     {len(cose_x5u):>6}")
    print(f"  COSE_Sign1 certificate embedded      {len(cose_x5c):>6}")
    print(f"  JWS compact name only (kid + x5u)    {len(token):>6}")
    print(f"  JWS compact certificate embedded     {len(token_x5c):>6}")


if __name__ == "__main__":
    main()
