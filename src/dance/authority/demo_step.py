"""Proposed `make demo` step: the embedded authority end to end.

``run_authority(out)`` creates a zone directory the way ``dance authority init`` does, starts the
authority on a free loopback port, publishes a device (DANE-EE), a device CA (DANE-TA wildcard)
and a user CA with TSIG-signed RFC 2136 updates (what ``dance publish`` sends), authenticates
them with dance's own DNSSEC validation from the printed trust anchor, shows that an update with
a wrong TSIG key is refused and changes nothing, then revokes the device (removal) and shows the
refusal. Returns 0 when every outcome is the expected one.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import dns.exception
import dns.name
import dns.query
import dns.rcode
import dns.tsig
import dns.update

from dance import certs
from dance.authority.server import Authority, Limits
from dance.authority.store import ZoneDir
from dance.authority.tsig import TsigKey, generate_tsig_key
from dance.credentials import CertificateChain
from dance.identity import Identity, Result
from dance.tlsa import make_record

__all__ = ["run_authority"]

ZONE = "example.test."


def _line(out: TextIO, label: str, result: Result, expect: bool) -> bool:
    if isinstance(result, Identity):
        verdict = f"ACCEPTED  identity={result.identity}"
    else:
        verdict = f"REJECTED  {result.reason.value}"
    ok = result.accepted is expect
    out.write(f"  {'ok ' if ok else 'BAD'} {label:<52} {verdict}\n")
    return ok


def _update(port: int, key: TsigKey, build: Sequence[tuple[str, str, str, str | None]]) -> str:
    message = dns.update.UpdateMessage(
        ZONE, keyring={key.name: key.to_dnspython()}, keyname=key.name
    )
    for action, name, rdtype, rdata in build:
        if action == "add":
            assert rdata is not None
            message.add(name, 60, rdtype, rdata)
        else:
            message.delete(name, rdtype)
    try:
        response = dns.query.tcp(message, "127.0.0.1", port=port, timeout=5)
    except dns.tsig.PeerBadSignature:
        return "NOTAUTH (TSIG error BADSIG)"
    except dns.tsig.PeerBadKey:
        return "NOTAUTH (TSIG error BADKEY)"
    except dns.exception.DNSException as exc:
        return f"failed ({exc.__class__.__name__})"
    return dns.rcode.to_text(response.rcode())


def run_authority(out: TextIO, now: datetime.datetime | None = None) -> int:
    """Run part C of the demo; the refused update's warning is not logged meanwhile (the
    demo prints the refusal itself)."""
    logger = logging.getLogger("dance.authority")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return _run(out, now)
    finally:
        logger.setLevel(level)


def _run(out: TextIO, now: datetime.datetime | None) -> int:
    from dance.auth import Authenticator
    from dance.dns import TLSAResolver, TrustAnchors

    now = now or datetime.datetime.now(datetime.UTC)
    out.write("\ndance demo, part C: the embedded authority (dance authority)\n\n")
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
    good = True
    with tempfile.TemporaryDirectory(prefix="dance-demo-") as tmp:
        zone_dir = Path(tmp) / "zones"
        from dance.authority.store import trust_anchor_text

        policy = ZoneDir(zone_dir).init_zone(dns.name.from_text(ZONE), ttl=60, denial="nsec3")
        anchor = trust_anchor_text(dns.name.from_text(ZONE), policy.keys, 60)
        key = generate_tsig_key("dance-update")
        out.write("   $ dance authority init --zone-dir DIR --zone example.test --denial nsec3\n")
        for text in anchor.splitlines():
            out.write(f"   {text[:96]}{'...' if len(text) > 96 else ''}\n")
        out.write("   $ dance authority tsig-key dance-update --out update.key\n")
        with Authority(zone_dir, tsig_keys=[key], limits=Limits()).start() as authority:
            port = authority.port
            out.write(
                f"   $ dance authority --zone-dir DIR --listen 127.0.0.1:{port} "
                "--tsig-key-file update.key\n"
            )
            records = [
                ("add", device_name + ".", "TLSA", make_record(device_cert).to_text()),
                ("add", "*._device.example.test.", "TLSA", make_record(ca, 2, 0, 1).to_text()),
                ("add", "_user.example.test.", "TLSA", make_record(user_ca, 2, 0, 1).to_text()),
            ]
            rcode = _update(port, key, records)
            out.write(f"   publish 3 TLSA records (RFC 2136 update, TSIG): {rcode}\n")
            good &= rcode == "NOERROR"
            wrong = generate_tsig_key("dance-update")  # same name, another secret
            serial = authority.serial(ZONE)
            rcode = _update(port, wrong, [("delete", device_name + ".", "TLSA", None)])
            unchanged = authority.serial(ZONE) == serial
            out.write(
                f"   the same delete signed with a wrong key: {rcode}; zone unchanged: "
                f"{unchanged}\n\n"
            )
            good &= unchanged and rcode != "NOERROR"

            anchors = TrustAnchors.from_text(anchor)
            device_chain = CertificateChain.from_certificates([device_cert])
            issued_chain = CertificateChain.from_certificates([issued, ca])
            alice_chain = CertificateChain.from_certificates([alice, user_ca])

            async def scenario() -> bool:
                ok = True
                async with TLSAResolver(
                    authority.address, anchors=anchors, recursion_desired=False
                ) as resolver:
                    auth = Authenticator(
                        resolver, allow=["._device.example.test", "_user.example.test"]
                    )
                    ok &= _line(
                        out,
                        "device with its published key",
                        await auth.authenticate(device_name, device_chain),
                        True,
                    )
                    ok &= _line(
                        out,
                        "CA-issued device (wildcard 2 0 1)",
                        await auth.authenticate(issued_name, issued_chain),
                        True,
                    )
                    ok &= _line(
                        out,
                        "alice via _user.example.test",
                        await auth.authenticate("_user.example.test", alice_chain),
                        True,
                    )
                    rcode = await asyncio.to_thread(
                        _update, port, key, [("delete", device_name + ".", "TLSA", None)]
                    )
                    out.write(f"      revoke {device_name} (delete its TLSA): {rcode}\n")
                    ok &= rcode == "NOERROR"
                    auth.flush()  # as if the 60 s TTL had passed
                    ok &= _line(
                        out,
                        "revoked device (only the CA wildcard is left)",
                        await auth.authenticate(device_name, device_chain),
                        False,
                    )
                return ok

            good &= asyncio.run(scenario())
            out.write(
                f"   zone serial now {authority.serial(ZONE)}; changes persisted in "
                "DIR/example.test.zone\n"
            )
    return 0 if good else 1
