"""Matching benchmarks (issue: core). Prints medians; compare ratios measured in the same run.

Targets: `3 1 1` against a P-256 leaf <= 15 us median; a DANE-TA chain with one intermediate
<= 200 us median. Inputs are DER bytes as a TLS stack hands them over, so parsing is included.
"""

from __future__ import annotations

import datetime
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from benchlib import Results
from dance import CertificateChain, certs, make_record, verify

NOW = datetime.datetime.now(datetime.UTC)
NAME = "sensor7._device.example.com"


def median_us(fn: Callable[[], object], rounds: int = 7, inner: int = 2000) -> float:
    for _ in range(200):
        fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner * 1e6)
    return statistics.median(samples)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="dance matching benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (make bench-quick)")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    der = serialization.Encoding.DER
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = certs.self_signed(leaf_key, NAME, now=NOW)
    leaf_der = leaf.public_bytes(der)
    rec_311 = make_record(leaf)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certs.new_ca(ca_key, "Bench CA", now=NOW, path_length=1)
    ica_key = ec.generate_private_key(ec.SECP256R1())
    ica = certs.new_ca(ica_key, "Bench ICA", now=NOW, issuer=(ca, ca_key))
    ee = certs.issue_certificate(ica, ica_key, leaf_key.public_key(), dns_names=[NAME], now=NOW)
    chain_der = [c.public_bytes(der) for c in (ee, ica, ca)]
    rec_ta_root = make_record(ca, 2, 0, 1)
    rec_ta_ica = make_record(ica, 2, 0, 1)

    def ee_match() -> None:
        assert verify(NAME, CertificateChain.from_der([leaf_der]), [rec_311], now=NOW).accepted

    def ta_root() -> None:
        chain = CertificateChain.from_der(chain_der)
        assert verify(NAME, chain, [rec_ta_root], now=NOW).accepted

    def ta_ica() -> None:
        chain = CertificateChain.from_der(chain_der[:2])
        assert verify(NAME, chain, [rec_ta_ica], now=NOW).accepted

    tbs, sig = ee.tbs_certificate_bytes, ee.signature
    ica_pub = ica_key.public_key()

    def ecdsa_floor() -> None:
        ica_pub.verify(sig, tbs, ec.ECDSA(hashes.SHA256()))

    n, k = int(2000 * scale), int(500 * scale)
    floor = median_us(ecdsa_floor, inner=k)
    results = [
        ("3 1 1 vs P-256 leaf (parse + match)", median_us(ee_match, inner=n), 15.0),
        ("DANE-TA, EE+ICA, anchor = ICA (1 signature)", median_us(ta_ica, inner=k), None),
        ("DANE-TA, EE+ICA+CA, anchor = root (2 signatures)", median_us(ta_root, inner=k), 200.0),
        ("peer floor: one ECDSA P-256 verify (cryptography)", floor, None),
    ]
    out = Results("bench_match", quick=args.quick)
    for label, value, target in results[:3]:
        out.add(label, value, "us", peer="one ECDSA P-256 verify", peer_value=floor,
                target=f"<= {target:.0f}" if target else None)  # fmt: skip
    out.note("Inputs are DER as a TLS stack hands them over: parsing is included.")
    print(f"dance matching benchmark (python {sys.version.split()[0]}, median of 7 rounds)")
    for label, value, target in results:
        verdict = "" if target is None else ("  OK" if value <= target else "  OVER TARGET")
        goal = "" if target is None else f"  (target <= {target:.0f} us)"
        print(f"  {label:<52} {value:8.1f} us{goal}{verdict}")
    out.write()


if __name__ == "__main__":
    main()
