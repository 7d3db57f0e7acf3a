"""Cached authentication decisions per second on one core (target >= 100,000/s).

Measures `Authenticator.authenticate` (async, decision-cache hit) and `authenticate_cached`
(the synchronous path a TLS handshake uses), with the DER chain as a TLS stack hands it over,
so parsing the presented certificate is included in the "from DER" rows.
"""

from __future__ import annotations

import asyncio
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dance import CertificateChain, certs, make_record
from dance.auth import Authenticator
from dance.dns import LookupResult, Outcome

NAME = "sensor7._device.example.com"
NOW = datetime.datetime.now(datetime.UTC)


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
    import argparse

    from benchlib import Results

    parser = argparse.ArgumentParser(description="dance cached-decision benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (make bench-quick)")
    args = parser.parse_args()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certs.self_signed(key, NAME, now=NOW)
    der = cert.public_bytes(serialization.Encoding.DER)
    record = make_record(cert).to_wire()
    auth = Authenticator(
        Source(LookupResult(Outcome.SECURE, (record,), 3600, "ok", NAME)), allow=[".example.com"]
    )
    chain = CertificateChain.from_der([der])

    async def async_hits(n: int) -> None:
        for _ in range(n):
            await auth.authenticate(NAME, chain)

    def sync_hits(n: int) -> None:
        for _ in range(n):
            auth.authenticate_cached(NAME, chain)

    def sync_hits_der(n: int) -> None:
        for _ in range(n):
            auth.authenticate_cached(NAME, CertificateChain.from_der([der]))

    asyncio.run(async_hits(1000))
    n = 40_000 if args.quick else 200_000
    rows = [
        (
            "authenticate() decision-cache hit (async)",
            rate(lambda k: asyncio.run(async_hits(k)), n),
        ),
        ("authenticate_cached() hit (sync, handshake path)", rate(sync_hits, n)),
        ("authenticate_cached() hit, chain parsed from DER", rate(sync_hits_der, n)),
    ]
    print("dance cached-decision benchmark (one core, CPU time)")
    for label, value in rows:
        verdict = "OK" if value >= 100_000 else "BELOW TARGET"
        print(f"  {label:<52} {value:>10,.0f} /s  (target >= 100,000/s) {verdict}")
    print(f"  counters: {auth.stats()}")
    out = Results("bench_auth", quick=args.quick)
    for i, (label, value) in enumerate(rows):  # the target is on the first
        out.add(label, value, "/CPU-s", target=">= 100000" if i == 0 else None)
    out.write()


if __name__ == "__main__":
    main()
