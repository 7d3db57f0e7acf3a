"""EAP-TLS bytes and round trips: a client sending its full chain against one sending only its
name and key (architecture-10 section 4.1.12: "the server can look the certificate up").

Real FreeRADIUS 3.2 (EAP-TLS, ``fragment_size`` 1024) and ``eapol_test`` (wpa_supplicant's
802.1X client, its default fragment_size 1398) on loopback; every figure is counted from
eapol_test's debug output, which dumps each RADIUS message it sends and receives with its
attributes: RADIUS packets and bytes each way, and the EAP bytes inside EAP-Message attributes.
The server side (certificate, CA, cipher suites) is the same in every row; only the client's
certificate file changes:

* ``full chain RSA``: leaf RSA-2048 + intermediate RSA-2048 + root RSA-4096, all three sent;
* ``full chain ECDSA``: leaf P-256 + intermediate P-256 + root P-384, all three sent;
* ``leaf from a CA``: one P-256 leaf issued by a CA the server already has;
* ``bare P-256`` / ``bare Ed25519``: a self-signed certificate that carries only the name (SAN
  dNSName, CN) and the key, the nearest to "only its name and key" TLS 1.2/1.3 allows with
  OpenSSL 3.0, which has no RFC 7250 raw public keys.

FreeRADIUS 3.2 checks the chain with OpenSSL before any hook, so for the bare rows its
``ca_file`` lists the self-signed leaf (it loads it with X509_V_FLAG_PARTIAL_CHAIN); a server
that looks the key up in DNS would need no such file. No verify hook runs here: it does not
change the bytes on the wire.

    .venv/bin/python bench/bench_eap_size.py [--quick] [--tls 1.2|1.3|both]
"""

from __future__ import annotations

import datetime
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from dance.certs import (
    certificate_pem,
    generate_key,
    issue_certificate,
    new_ca,
    private_key_pem,
    self_signed,
)
from dance.testkit.eapol import FreeRadius, eapol_test

NAME = "sensor1._device.example.test"


def _der_len(cert) -> int:  # type: ignore[no-untyped-def]
    return len(cert.public_bytes(serialization.Encoding.DER))


def clients(now: datetime.datetime):  # type: ignore[no-untyped-def]
    """(label, certificates sent, private key, what the server's ca_file must hold)."""
    out = []
    for label, root_key, mid_key, leaf_key in (
        ("full chain RSA", rsa.generate_private_key(65537, 4096),
         rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048)),
        ("full chain ECDSA", ec.generate_private_key(ec.SECP384R1()),
         ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())),
    ):  # fmt: skip
        root = new_ca(root_key, f"{label} root", now=now, path_length=1)
        mid = new_ca(mid_key, f"{label} issuing CA", now=now, issuer=(root, root_key))
        leaf = issue_certificate(mid, mid_key, leaf_key.public_key(), dns_names=[NAME], now=now)
        out.append((label, [leaf, mid, root], leaf_key, [root]))
    ca_key = generate_key("ec-p256")
    ca = new_ca(ca_key, "device CA", now=now)
    leaf_key = generate_key("ec-p256")
    leaf = issue_certificate(ca, ca_key, leaf_key.public_key(), dns_names=[NAME], now=now)
    out.append(("leaf from a CA (P-256)", [leaf], leaf_key, [ca]))
    for label, key in (
        ("bare P-256 (self-signed)", ec.generate_private_key(ec.SECP256R1())),
        ("bare Ed25519 (self-signed)", ed25519.Ed25519PrivateKey.generate()),
    ):
        cert = self_signed(key, NAME, now=now)
        out.append((label, [cert], key, [cert]))
    return out


def main() -> None:
    import argparse

    from benchlib import Results

    parser = argparse.ArgumentParser(description="EAP-TLS packet sizes, full chain vs bare key")
    parser.add_argument("--quick", action="store_true", help="accepted for make bench-quick")
    parser.add_argument("--tls", choices=("1.2", "1.3", "both"), default="both")
    args = parser.parse_args()
    now = datetime.datetime.now(datetime.UTC)
    server_ca_key = generate_key("ec-p256")
    server_ca = new_ca(server_ca_key, "RADIUS server CA", now=now)
    server_key = generate_key("ec-p256")
    server = issue_certificate(
        server_ca, server_ca_key, server_key.public_key(), dns_names=["radius.example.test"],
        now=now, client_auth=False, server_auth=True,
    )  # fmt: skip
    versions = ("1.2", "1.3") if args.tls == "both" else (args.tls,)
    results = Results("bench_eap_size", quick=args.quick)
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "server-ca.pem").write_bytes(certificate_pem(server_ca))
        for label, sent, key, trusted in clients(now):
            cert_file = d / "client.pem"
            cert_file.write_bytes(certificate_pem(*sent))
            key_file = d / "client.key"
            key_file.touch(mode=0o600)
            key_file.write_bytes(private_key_pem(key))
            for version in versions:
                radius = FreeRadius(
                    d / f"raddb-{len(table)}", certificate_pem(server), private_key_pem(server_key),
                    certificate_pem(*trusted), tls_max=version,
                )  # fmt: skip
                with radius:
                    res = eapol_test(
                        radius, identity=NAME, client_cert=cert_file, client_key=key_file,
                        ca_cert=d / "server-ca.pem", workdir=d, tls13=version == "1.3",
                    )  # fmt: skip
                if res.accepted and res.tls_version != f"TLSv{version}":
                    print(f"{label}: TLS {version} wanted, {res.tls_version} negotiated; skipped")
                    continue
                if not res.accepted:
                    print(f"{label} TLS {version}: not accepted; skipped\n{res.output[-1500:]}")
                    continue
                entry = {
                    "client": label,
                    "tls": version,
                    "certs_sent": len(sent),
                    "cert_bytes": sum(_der_len(c) for c in sent),
                    "radius_round_trips": res.radius_sent,
                    "radius_bytes_up": res.radius_bytes_sent,
                    "radius_bytes_down": res.radius_bytes_received,
                    "eap_bytes_up": res.eap_bytes_sent,
                    "eap_bytes_down": res.eap_bytes_received,
                }
                table.append(entry)
                tag = f"{label}, TLS {version}"
                results.add(f"EAP bytes client->server, {tag}", res.eap_bytes_sent, "B")
                results.add(f"RADIUS round trips, {tag}", res.radius_sent, "")
    head = f"{'client certificate':<28} {'TLS':>3} {'certs':>5} {'DER B':>6} {'RTT':>4} "
    head += f"{'EAP up':>7} {'EAP down':>8} {'RADIUS up':>9} {'RADIUS down':>11}"
    print(head)
    for e in table:
        print(
            f"{e['client']:<28} {e['tls']:>3} {e['certs_sent']:>5} {e['cert_bytes']:>6} "
            f"{e['radius_round_trips']:>4} {e['eap_bytes_up']:>7} {e['eap_bytes_down']:>8} "
            f"{e['radius_bytes_up']:>9} {e['radius_bytes_down']:>11}"
        )
    results.write()
    (Path(__file__).resolve().parent / "results" / "bench_eap_size.table.json").write_text(
        json.dumps(table, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
