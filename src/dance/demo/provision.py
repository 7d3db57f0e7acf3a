"""Proposed `make demo` step: provisioning end to end against the embedded authority.

``run_provision(out)`` does what these commands do (printed as it goes)::

    dance authority init --zone-dir DIR --zone example.test
    dance authority --zone-dir DIR --listen 127.0.0.1:PORT --tsig-key-file update.key
    dance identity new sensor7._device.example.test --out-dir ids
    dance publish sensor7._device.example.test --cert ids/sensor7... --server ... --wait
    dance ca new --kind device --domain example.test      + dance publish '*._device...'
    dance ca issue --ca-cert ... --ca-key ... --name sensor8._device.example.test
    dance ca new --kind user --domain example.test        + dance publish _user.example.test
    dance ca issue --ca-cert ... --ca-key ... --user alice
    dance publish ... with a wrong TSIG key               -> NOTAUTH, zone unchanged
    dance revoke sensor7._device.example.test --cert ... --wait

then authenticates the device, the CA-issued device and the user with dance's own DNSSEC
validation, revokes the device and shows that it is refused. Returns 0 when every outcome is
the expected one. The same library calls target Knot, BIND or PowerDNS (docs/provisioning.md).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import tempfile
from pathlib import Path
from typing import TextIO

from cryptography import x509

from dance.credentials import CertificateChain
from dance.identity import Identity, Result
from dance.provision.ca import issue, new_ca_files
from dance.provision.identity import load_private_key, new_identity
from dance.provision.publish import Change, UpdateError, Updater, wait_visible
from dance.tsig import TSIGKey

__all__ = ["run_provision"]

ZONE = "example.test"


def _verdict(out: TextIO, label: str, result: Result, expect: bool) -> bool:
    if isinstance(result, Identity):
        verdict = f"ACCEPTED  identity={result.identity}"
    else:
        verdict = f"REJECTED  {result.reason.value}"
    ok = result.accepted is expect
    out.write(f"  {'ok ' if ok else 'BAD'} {label:<48} {verdict}\n")
    return ok


def _chain(path: Path) -> CertificateChain:
    return CertificateChain.from_certificates(x509.load_pem_x509_certificates(path.read_bytes()))


def run_provision(out: TextIO, now: datetime.datetime | None = None) -> int:
    """The provisioning part of the demo; quiet logging meanwhile (the demo prints)."""
    loggers = [logging.getLogger(n) for n in ("dance.authority", "dance.provision")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        return _run(out, now)
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _run(out: TextIO, now: datetime.datetime | None) -> int:
    import dns.name

    from dance.auth import Authenticator
    from dance.authority import Authority, Limits
    from dance.authority.store import ZoneDir, trust_anchor_text
    from dance.dns import TLSAResolver, TrustAnchors
    from dance.tsig import generate_tsig_key

    when = now or datetime.datetime.now(datetime.UTC)
    out.write("\ndance demo, part C: provisioning on the embedded authority\n\n")
    good = True
    with tempfile.TemporaryDirectory(prefix="dance-provision-demo-") as tmp:
        base = Path(tmp)
        origin = dns.name.from_text(ZONE + ".")
        policy = ZoneDir(base / "zones").init_zone(origin, ttl=60, denial="nsec")
        anchors = TrustAnchors.from_text(trust_anchor_text(origin, policy.keys, 60))
        akey = generate_tsig_key("dance-update")
        key = akey
        with Authority(base / "zones", tsig_keys=[akey], limits=Limits()).start() as authority:
            server = f"127.0.0.1:{authority.port}"
            out.write(f"  $ dance authority --zone-dir DIR --listen {server} --tsig-key-file K\n")
            updater = Updater(authority.address, ZONE, key)
            ids = base / "ids"

            device = new_identity("sensor7._device.example.test", ids, now=when)
            out.write(f"  $ dance identity new {device.name} --out-dir ids\n")
            out.write(f"      {device.zone_line(60)[:100]}...\n")
            updater.publish([Change(device.name, (device.record,))], ttl=60)
            out.write(
                f"  $ dance publish {device.name} --cert ids/{device.name}.pem "
                f"--server {server} --zone {ZONE} --tsig-key-file K --ttl 60 --wait\n"
            )
            ok, _ = wait_visible(
                authority.address, anchors, {device.name: {device.record.to_wire()}}, deadline=10
            )
            out.write(f"      visible through a validated lookup: {ok}\n")
            good &= ok

            dev_ca = new_ca_files("device", ZONE, base / "ca", now=when)
            updater.publish([Change(dev_ca.owner, (dev_ca.record,))], ttl=60)
            out.write(
                f"  $ dance ca new --kind device --domain {ZONE}  "
                f"+ dance publish '{dev_ca.owner}' --cert ...  (2 0 1)\n"
            )
            issued = issue(
                dev_ca.certificate,
                load_private_key(dev_ca.key_path),
                ids,
                name="sensor8._device.example.test",
                now=when,
            )
            out.write(f"  $ dance ca issue --ca-cert ... --ca-key ... --name {issued.name}\n")

            user_ca = new_ca_files("user", ZONE, base / "ca", now=when)
            updater.publish([Change(user_ca.owner, (user_ca.record,))], ttl=60)
            out.write(
                f"  $ dance ca new --kind user --domain {ZONE}  "
                f"+ dance publish {user_ca.owner} --cert ...\n"
            )
            alice = issue(
                user_ca.certificate, load_private_key(user_ca.key_path), ids, uid="alice", now=when
            )
            out.write("  $ dance ca issue --ca-cert ... --ca-key ... --user alice\n")

            wrong = Updater(
                authority.address, ZONE, TSIGKey("dance-update", "hmac-sha256", b"\x00" * 32)
            )
            serial = authority.serial(ZONE)
            try:
                wrong.revoke([Change(device.name, (device.record,))])
                out.write("  BAD a revoke signed with a wrong TSIG key was accepted\n")
                good = False
            except UpdateError as exc:
                unchanged = authority.serial(ZONE) == serial
                out.write(
                    f"  revoke signed with a wrong TSIG key: {exc.rcode}; "
                    f"zone unchanged: {unchanged}\n\n"
                )
                good &= unchanged

            async def scenario() -> bool:
                ok = True
                async with TLSAResolver(
                    authority.address, anchors=anchors, recursion_desired=False
                ) as resolver:
                    auth = Authenticator(
                        resolver, allow=["._device.example.test", "_user.example.test"]
                    )
                    assert device.cert_path is not None
                    dchain = _chain(device.cert_path)
                    ok &= _verdict(
                        out,
                        "device (identity new + publish)",
                        await auth.authenticate(device.name, dchain),
                        True,
                    )
                    ok &= _verdict(
                        out,
                        "CA-issued device (*._device 2 0 1)",
                        await auth.authenticate(issued.name, _chain(issued.cert_path)),
                        True,
                    )
                    ok &= _verdict(
                        out,
                        "user alice (_user.example.test)",
                        await auth.authenticate(alice.name, _chain(alice.cert_path)),
                        True,
                    )
                    await asyncio.to_thread(updater.revoke, [Change(device.name, (device.record,))])
                    out.write(f"  $ dance revoke {device.name} --cert ... --wait\n")
                    auth.flush()  # as if the 60 s TTL had passed
                    ok &= _verdict(
                        out, "revoked device", await auth.authenticate(device.name, dchain), False
                    )
                return ok

            good &= asyncio.run(scenario())
    out.write("\n")
    return 0 if good else 1
