"""Real servers: Knot DNS (authoritative, online signing) and Unbound (validating resolver).

The same lookups must give the same outcomes whether dance asks Knot directly or goes through
Unbound (validating itself with CD set), and authentication through the Authenticator must agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from dance import CertificateChain, make_record
from dance import certs as gen
from dance.auth import Authenticator
from dance.dns import LookupResult, Outcome, TLSAResolver, TrustAnchors
from tests.integration.servers import (
    KnotZone,
    Server,
    child_ds,
    dnskey_anchor,
    knotc,
    start_knot,
    start_unbound,
)
from tests.pki import NOW, key

pytestmark = pytest.mark.integration

SOA = "@ SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60"


@dataclass
class Deployment:
    knot: Server
    unbound: Server
    anchor: str
    device_chain: CertificateChain
    ca_issued_chain: CertificateChain
    impostor_chain: CertificateChain
    freeform: x509.Certificate


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("knot")
    device = gen.self_signed(key(2), "sensor7._device.example.test", now=NOW)
    ca = gen.new_ca(key(0), "Example Test Device CA", now=NOW)
    issued = gen.issue_certificate(
        ca, key(0), key(3).public_key(), dns_names=["sensor9._device.example.test"], now=NOW
    )
    freeform = gen.self_signed(key(4), "device73.example.test", now=NOW)
    parent = KnotZone(
        "example.test",
        "\n".join(
            [
                SOA,
                "@ NS ns1",
                "ns1 A 127.0.0.1",
                "_device NS ns1._device",
                "ns1._device A 127.0.0.1",
                "_unsigned NS ns1._unsigned",
                "ns1._unsigned A 127.0.0.1",
                f"device73 TLSA {make_record(freeform).to_text()}",
            ]
        ),
    )
    child = KnotZone(
        "_device.example.test",
        "\n".join(
            [
                SOA,
                "@ NS ns1",
                "ns1 A 127.0.0.1",
                f"sensor7 TLSA {make_record(device).to_text()}",
                f"* TLSA {make_record(ca, 2, 0, 1).to_text()}",
            ]
        ),
        nsec3=True,
    )
    unsigned = KnotZone(
        "_unsigned.example.test",
        "\n".join(
            [SOA, "@ NS ns1", "ns1 A 127.0.0.1", f"host TLSA {make_record(device).to_text()}"]
        ),
        signed=False,
    )
    knot = start_knot(base / "knot", [parent, child, unsigned])
    unbound = None
    try:
        knotc(knot, "zone-begin", "example.test")
        for ds in child_ds(knot.port, "_device.example.test"):
            knotc(knot, "zone-set", "example.test", "_device", "300", "DS", *ds.split())
        knotc(knot, "zone-commit", "example.test")
        anchor = dnskey_anchor(knot.port, "example.test")
        unbound = start_unbound(
            base / "unbound",
            anchor,
            {z.name: knot.port for z in (parent, child, unsigned)},
        )
        yield Deployment(
            knot,
            unbound,
            anchor,
            CertificateChain.from_certificates([device]),
            CertificateChain.from_certificates([issued, ca]),
            CertificateChain.from_certificates(
                [gen.self_signed(key(5), "sensor7._device.example.test", now=NOW)]
            ),
            freeform,
        )
    finally:
        if unbound is not None:
            unbound.stop()
        knot.stop()


EXPECTED = {
    "sensor7._device.example.test": Outcome.SECURE,
    "sensor9._device.example.test": Outcome.SECURE,  # wildcard, NSEC3 proof
    "device73.example.test": Outcome.SECURE,
    "nosuch.example.test": Outcome.SECURE_ABSENT,  # NXDOMAIN, NSEC
    "ns1.example.test": Outcome.SECURE_ABSENT,  # NODATA
    "nosuch._device.example.test": Outcome.SECURE,  # the wildcard covers it
    "host._unsigned.example.test": Outcome.INSECURE,  # unsigned delegation, proved
}


async def _lookups(resolver: TLSAResolver) -> dict[str, LookupResult]:
    async with resolver:
        return {name: await resolver.lookup_tlsa(name) for name in EXPECTED}


def _resolvers(d: Deployment) -> dict[str, TLSAResolver]:
    anchors = TrustAnchors.from_text(d.anchor)
    return {
        "knot-direct": TLSAResolver(
            ("127.0.0.1", d.knot.port), anchors=anchors, recursion_desired=False
        ),
        "unbound": TLSAResolver(("127.0.0.1", d.unbound.port), anchors=anchors),
        "unbound-tcp": TLSAResolver(
            ("127.0.0.1", d.unbound.port), anchors=anchors, transport="tcp"
        ),
    }


def test_same_outcomes_everywhere(deployment: Deployment) -> None:
    seen: dict[str, dict[str, str]] = {}
    for label, resolver in _resolvers(deployment).items():
        results = asyncio.run(_lookups(resolver))
        seen[label] = {n: r.outcome.value for n, r in results.items()}
        for name, expected in EXPECTED.items():
            assert results[name].outcome is expected, (
                label,
                name,
                results[name],
                deployment.knot.logs()[-500:],
            )
        assert results["sensor7._device.example.test"].ttl > 0
    assert seen["knot-direct"] == seen["unbound"] == seen["unbound-tcp"]


def test_embedded_server_gives_the_same_outcomes(deployment: Deployment) -> None:
    """The same zones built with dance.testkit and served by the embedded server."""
    from dance.testkit import Hierarchy, ServerThread

    device, issued, ca = (
        deployment.device_chain.end_entity.certificate,
        deployment.ca_issued_chain.certs[0].certificate,
        deployment.ca_issued_chain.certs[1].certificate,
    )
    assert issued is not None
    zones = Hierarchy("example.test.")
    zones.anchor.add("ns1", "A", "127.0.0.1")
    freeform = deployment.freeform
    zones.anchor.add("device73", "TLSA", make_record(freeform).to_text())
    dev = zones.child("_device.example.test.")
    dev.add("sensor7", "TLSA", make_record(device).to_text())
    dev.add("*", "TLSA", make_record(ca, 2, 0, 1).to_text())
    unsigned = zones.child("_unsigned.example.test.", signed=False)
    unsigned.add("host", "TLSA", make_record(device).to_text())
    zones.sign(algorithm=13, denial="nsec")
    dev.sign(algorithm=13, denial="nsec3")
    zones.anchor.sign(algorithm=13, denial="nsec")
    anchors = TrustAnchors.from_text(zones.export_trust_anchor())
    with ServerThread(zones) as server:
        resolver = TLSAResolver(server.address, anchors=anchors, recursion_desired=False)
        results = asyncio.run(_lookups(resolver))
    assert {n: r.outcome for n, r in results.items()} == EXPECTED


def test_trusted_resolver_mode_on_loopback(deployment: Deployment) -> None:
    resolver = TLSAResolver(
        ("127.0.0.1", deployment.unbound.port),
        trust_ad=True,
        anchors=TrustAnchors.from_text(deployment.anchor),
    )
    results = asyncio.run(_lookups(resolver))
    assert results["sensor7._device.example.test"].outcome is Outcome.SECURE
    assert results["sensor9._device.example.test"].outcome is Outcome.SECURE
    assert results["nosuch.example.test"].outcome is Outcome.SECURE_ABSENT
    assert not results["host._unsigned.example.test"].authenticates


def test_wrong_trust_anchor_is_bogus(deployment: Deployment) -> None:
    wrong = gen.generate_key()  # any other key
    import dns.dnssec
    import dns.rdtypes.ANY.DNSKEY

    dnskey = dns.dnssec.make_dnskey(
        wrong.public_key(), dns.dnssec.Algorithm.ECDSAP256SHA256, flags=257
    )  # type: ignore[arg-type]
    anchors = TrustAnchors.from_text(f"example.test. IN DNSKEY {dnskey.to_text()}\n")
    resolver = TLSAResolver(
        ("127.0.0.1", deployment.knot.port), anchors=anchors, recursion_desired=False
    )
    results = asyncio.run(_lookups(resolver))
    for name in ("sensor7._device.example.test", "device73.example.test"):
        assert results[name].outcome is Outcome.BOGUS, results[name]
        assert not results[name].authenticates


def test_authentication_through_real_servers(deployment: Deployment) -> None:
    anchors = TrustAnchors.from_text(deployment.anchor)

    async def go(port: int) -> list[str]:
        async with TLSAResolver(("127.0.0.1", port), anchors=anchors) as resolver:
            auth = Authenticator(
                resolver, allow=["._device.example.test", "host._unsigned.example.test"]
            )
            cases = [
                ("sensor7._device.example.test", deployment.device_chain),
                ("sensor7._device.example.test", deployment.impostor_chain),
                ("sensor9._device.example.test", deployment.ca_issued_chain),
                ("sensor8._device.example.test", deployment.ca_issued_chain),
                ("host._unsigned.example.test", deployment.device_chain),
                ("device73.example.test", deployment.device_chain),
            ]
            out = []
            for name, presented in cases:
                result = await auth.authenticate(name, presented)
                out.append("accepted" if result.accepted else result.reason.value)  # type: ignore[union-attr]
            return out

    expected = ["accepted", "no-match", "accepted", "name-mismatch", "dns-insecure", "not-allowed"]
    assert asyncio.run(go(deployment.knot.port)) == expected
    assert asyncio.run(go(deployment.unbound.port)) == expected


def test_cli_lookup_and_check(
    deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from dance.cli import main

    anchor = tmp_path / "anchor.txt"
    anchor.write_text(deployment.anchor)
    server = ["--server", f"127.0.0.1:{deployment.unbound.port}", "--trust-anchor", str(anchor)]

    assert main(["lookup", "sensor7._device.example.test", *server]) == 0
    out = capsys.readouterr().out
    assert "secure" in out and "TLSA 3 1 1" in out
    assert main(["lookup", "nosuch.example.test", *server, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["outcome"] == "secure-absent"
    assert main(["lookup", "host._unsigned.example.test", *server]) == 1
    assert "insecure" in capsys.readouterr().out

    cert = tmp_path / "device.pem"
    cert.write_bytes(gen.certificate_pem(deployment.device_chain.end_entity.certificate))
    impostor = tmp_path / "impostor.pem"
    impostor.write_bytes(gen.certificate_pem(deployment.impostor_chain.end_entity.certificate))
    name = "sensor7._device.example.test"
    assert main(["check", name, "--cert", str(cert), *server]) == 0
    assert capsys.readouterr().out.startswith(f"authenticated: {name}")
    assert main(["check", name, "--cert", str(impostor), *server]) == 1
    assert capsys.readouterr().out == "rejected: no-match\n"
    assert (
        main(["check", name, "--cert", str(cert), "--allow", ".example.com", *server, "--json"])
        == 1
    )
    assert json.loads(capsys.readouterr().out)["reason"] == "not-allowed"
    assert main(["check", "host._unsigned.example.test", "--cert", str(cert), *server]) == 1
    assert capsys.readouterr().out == "rejected: dns-insecure\n"
    # Unusable input: bad anchor file, bad server.
    assert main(["lookup", name, "--server", "127.0.0.1:99999"]) == 2
    assert main(["lookup", name, "--trust-anchor", str(tmp_path / "missing")]) == 2
    capsys.readouterr()
