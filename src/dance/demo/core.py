"""`make demo`: an offline walk-through of DANCE authentication.

It generates identities the way an operator would (a self-signed device key published as
DANE-EE, a device CA published as DANE-TA, a domain user CA), publishes nothing (the records are
printed as zone-file lines), and shows accepted and rejected verifications with their reasons.
"""

from __future__ import annotations

import datetime
from typing import TextIO

from dance import certs
from dance.credentials import CertificateChain, RawPublicKey
from dance.identity import Identity, Result
from dance.tlsa import TLSARecord, make_record, verify


def _show(out: TextIO, label: str, result: Result, expect: bool) -> bool:
    if isinstance(result, Identity):
        verdict = f"ACCEPTED  identity={result.identity}  record={result.record}"
        verdict += f" depth={result.depth}"
    else:
        verdict = f"REJECTED  {result.reason.value}: {result.detail}"
    ok = result.accepted is expect
    out.write(f"  {'ok ' if ok else 'BAD'} {label:<52} {verdict}\n")
    return ok


def run(out: TextIO, now: datetime.datetime | None = None) -> int:
    """The whole demo: offline matching, then authentication over DNSSEC-signed DNS."""
    good = run_offline(out, now) == 0
    good &= run_dns(out, now) == 0
    from dance.demo.provision import run_provision

    good &= run_provision(out) == 0
    from dance.demo.message import run_messages

    good &= run_messages(out, now) == 0
    from dance.demo.tls import run_tls

    good &= run_tls(out, now) == 0
    from dance.demo.ssh import run_ssh

    good &= run_ssh(out) == 0
    from dance.demo.smtp import run_smtp

    good &= run_smtp(out, now) == 0
    from dance.demo.lorawan import run_lorawan

    good &= run_lorawan(out, now) == 0
    from dance.demo.mqtt import run_mqtt

    good &= run_mqtt(out, now) == 0
    from dance.demo.ldap import run_ldap

    good &= run_ldap(out, now) == 0
    from dance.demo.eap import run_eap

    good &= run_eap(out, now) == 0
    from dance.demo.radsec import run_radsec

    good &= run_radsec(out, now) == 0
    out.write("\nAll outcomes as expected.\n" if good else "\nUNEXPECTED OUTCOMES ABOVE.\n")
    return 0 if good else 1


def run_offline(out: TextIO, now: datetime.datetime | None = None) -> int:
    now = now or datetime.datetime.now(datetime.UTC)
    good = True
    out.write("dance demo, part A: matching a credential against TLSA records (offline)\n\n")

    # 1. A device with its own key: DANE-EE 3 1 1.
    device_name = "sensor7._device.example.com"
    device_key = certs.generate_key("ec-p256")
    device_cert = certs.self_signed(device_key, device_name, now=now)
    ee_record = make_record(device_cert)
    out.write("1. A device with its own key, published as DANE-EE (3 1 1):\n")
    out.write(f"   {ee_record.to_zone_line(device_name, 300)}\n")
    chain = CertificateChain.from_certificates([device_cert])
    good &= _show(
        out,
        "device presents its certificate",
        verify(device_name, chain, [ee_record], now=now),
        True,
    )
    spki = RawPublicKey.from_spki(chain.end_entity.spki)
    good &= _show(
        out,
        "device presents its raw public key",
        verify(device_name, spki, [ee_record], now=now),
        True,
    )
    impostor = certs.self_signed(certs.generate_key("ec-p256"), device_name, now=now)
    good &= _show(
        out,
        "an impostor with another key claims the name",
        verify(device_name, CertificateChain.from_certificates([impostor]), [ee_record], now=now),
        False,
    )
    weak_and_strong = [ee_record, TLSARecord(3, 1, 2, bytes(64))]
    good &= _show(
        out,
        "a SHA2-512 record that does not match is present",
        verify(device_name, chain, weak_and_strong, now=now),
        False,
    )
    out.write("\n")

    # 2. An organization CA for its devices: DANE-TA 2 0 1 under a wildcard.
    ca_key = certs.generate_key("ec-p256")
    ca = certs.new_ca(ca_key, "Example Device CA", now=now, path_length=0)
    ta_record = make_record(ca, 2, 0, 1)
    out.write("2. An organization device CA, published as DANE-TA (2 0 1) for all its devices:\n")
    out.write(f"   {ta_record.to_zone_line('*._device.example.com', 300)}\n")
    name8 = "sensor8._device.example.com"
    dev8 = certs.issue_certificate(
        ca, ca_key, certs.generate_key().public_key(), dns_names=[name8], now=now
    )
    chain8 = CertificateChain.from_certificates([dev8, ca])
    good &= _show(
        out, "CA-issued device sends its chain", verify(name8, chain8, [ta_record], now=now), True
    )
    good &= _show(
        out,
        "the same device claims another device's name",
        verify("sensor9._device.example.com", chain8, [ta_record], now=now),
        False,
    )
    good &= _show(
        out,
        "the device omits the CA certificate",
        verify(name8, CertificateChain.from_certificates([dev8]), [ta_record], now=now),
        False,
    )
    expired = certs.issue_certificate(
        ca,
        ca_key,
        certs.generate_key().public_key(),
        dns_names=[name8],
        now=now - datetime.timedelta(days=100),
        days=30,
    )
    good &= _show(
        out,
        "an expired device certificate",
        verify(name8, CertificateChain.from_certificates([expired, ca]), [ta_record], now=now),
        False,
    )
    out.write("\n")

    # 3. Domain users: a user CA at _user.example.com (architecture, Example 3).
    user_ca_key = certs.generate_key("ec-p256")
    user_ca = certs.new_ca(user_ca_key, "Example Users", now=now, permitted_dns=["example.com"])
    user_record = make_record(user_ca, 2, 0, 1)
    out.write("3. Domain users: example.com publishes its user CA (users are not listed in DNS):\n")
    out.write(f"   {user_record.to_zone_line('_user.example.com', 300)}\n")
    alice = certs.issue_certificate(
        user_ca,
        user_ca_key,
        certs.generate_key().public_key(),
        dns_names=["example.com"],
        uid="Alice",
        now=now,
    )
    good &= _show(
        out,
        "alice authenticates as _user.example.com",
        verify(
            "_user.example.com",
            CertificateChain.from_certificates([alice, user_ca]),
            [user_record],
            now=now,
        ),
        True,
    )
    rogue_key = certs.generate_key("ec-p256")
    rogue_ca = certs.new_ca(rogue_key, "Example Users", now=now)
    mallory = certs.issue_certificate(
        rogue_ca,
        rogue_key,
        certs.generate_key().public_key(),
        dns_names=["example.com"],
        uid="alice",
        now=now,
    )
    good &= _show(
        out,
        "another CA issues a certificate for alice",
        verify(
            "_user.example.com",
            CertificateChain.from_certificates([mallory, rogue_ca]),
            [user_record],
            now=now,
        ),
        False,
    )
    return 0 if good else 1


def run_dns(out: TextIO, now: datetime.datetime | None = None) -> int:
    """Part B: a signed zone on the embedded DNS server, identities published in it, and
    authentications through the Authenticator with dance's own DNSSEC validation."""
    import asyncio

    from dance.auth import Authenticator
    from dance.dns import TLSAResolver, TrustAnchors
    from dance.testkit import Fault, Hierarchy, ServerThread

    now = now or datetime.datetime.now(datetime.UTC)
    out.write("\ndance demo, part B: over DNSSEC-signed DNS (embedded server on loopback)\n\n")

    device_name = "sensor7._device.example.test"
    device_key = certs.generate_key("ec-p256")
    device_cert = certs.self_signed(device_key, device_name, now=now)
    ca_key = certs.generate_key("ec-p256")
    ca = certs.new_ca(ca_key, "Example Device CA", now=now, path_length=0)
    issued_name = "sensor8._device.example.test"
    issued = certs.issue_certificate(
        ca, ca_key, certs.generate_key().public_key(), dns_names=[issued_name], now=now
    )
    user_ca_key = certs.generate_key("ec-p256")
    user_ca = certs.new_ca(user_ca_key, "Example Users", now=now, permitted_dns=["example.test"])
    alice = certs.issue_certificate(
        user_ca,
        user_ca_key,
        certs.generate_key().public_key(),
        dns_names=["example.test"],
        uid="alice",
        now=now,
    )

    zones = Hierarchy("test.", ttl=60)
    example = zones.child("example.test.")
    devices = zones.child("_device.example.test.")
    devices.add("sensor7", "TLSA", make_record(device_cert).to_text())
    devices.add("*", "TLSA", make_record(ca, 2, 0, 1).to_text())
    example.add("_user", "TLSA", make_record(user_ca, 2, 0, 1).to_text())
    zones.sign(algorithm=13, denial="nsec3")
    out.write(
        "   zones test. > example.test. > _device.example.test. signed (ECDSA P-256, NSEC3)\n"
    )
    out.write("   trust anchor: the test. KSK, as in an Unbound trust-anchor-file\n")
    for line in (
        make_record(device_cert).to_zone_line(device_name, 60),
        make_record(ca, 2, 0, 1).to_zone_line("*._device.example.test", 60),
        make_record(user_ca, 2, 0, 1).to_zone_line("_user.example.test", 60),
    ):
        out.write(f"   {line}\n")
    out.write("\n")

    device_chain = CertificateChain.from_certificates([device_cert])
    issued_chain = CertificateChain.from_certificates([issued, ca])
    alice_chain = CertificateChain.from_certificates([alice, user_ca])
    impostor = CertificateChain.from_certificates(
        [certs.self_signed(certs.generate_key(), device_name, now=now)]
    )
    anchors = TrustAnchors.from_text(zones.export_trust_anchor())
    good = True

    with ServerThread(zones) as server:

        async def scenario() -> bool:
            ok = True
            async with TLSAResolver(
                server.address, anchors=anchors, recursion_desired=False
            ) as resolver:
                auth = Authenticator(
                    resolver, allow=["._device.example.test", "_user.example.test"]
                )

                async def show(
                    label: str, name: str, chain: CertificateChain, expect: bool
                ) -> bool:
                    return _show(out, label, await auth.authenticate(name, chain), expect)

                ok &= await show("device with its published key", device_name, device_chain, True)
                ok &= await show("impostor with another key", device_name, impostor, False)
                ok &= await show(
                    "CA-issued device (wildcard 2 0 1)", issued_name, issued_chain, True
                )
                ok &= await show(
                    "alice via _user.example.test", "_user.example.test", alice_chain, True
                )
                queries = resolver.stats()["queries"]
                ok &= await show(
                    "a name outside the allow-list", "sensor7.evil.test", device_chain, False
                )
                sent = resolver.stats()["queries"] - queries
                out.write(f"      (DNS queries caused by the refused name: {sent})\n")
                ok &= sent == 0

                # Revocation is removal: the record goes, the zone is re-signed.
                devices.remove("sensor7", "TLSA")
                zones.sign(algorithm=13, denial="nsec3")
                cached = await auth.authenticate(device_name, device_chain)
                out.write(
                    "      record removed; until the cached answer expires (TTL 60 s here) the "
                    f"old decision stands: {'accepted' if cached.accepted else 'rejected'}\n"
                )
                auth.flush()  # as if the TTL had passed
                ok &= _show(
                    out,
                    "after expiry: record removed (wildcard CA only)",
                    await auth.authenticate(device_name, device_chain),
                    False,
                )

                with zones.inject(Fault("bad-signature", issued_name)):
                    auth.flush()
                    ok &= _show(
                        out,
                        "forged answer (bad RRSIG) for sensor8",
                        await auth.authenticate(issued_name, issued_chain),
                        False,
                    )
            return ok

        good = asyncio.run(scenario())
    return 0 if good else 1
