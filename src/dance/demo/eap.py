"""`make demo` part K: devices on an 802.1X network, EAP-TLS with FreeRADIUS checked through
DANCE (architecture Example 12).

    from dance.demo.eap import run_eap
    good &= run_eap(out, now) == 0

A real FreeRADIUS 3.2 (Debian ``freeradius``, `dance.testkit.eapol`) doing EAP-TLS on a free
loopback UDP port; its ``verify`` hook is ``dance-eap-verify`` (run as ``python -I -S
eap_hook.py``), which asks the verify daemon (`dance.eap.server.VerifyDaemon`, in-process) over
a Unix socket; the daemon looks the device's name up in the testkit's signed zone. ``eapol_test``
(Debian ``eapoltest``) is the device: a device whose key is published is accepted (Access-Accept
naming it), a device whose name publishes another key is refused (Access-Reject, reason
``no-match``). Without FreeRADIUS or eapol_test the part says so and passes.
"""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from dance import certs
from dance.tlsa import make_record

__all__ = ["run_eap"]

ZONE = "_device.example.test"
PUBLISHED = f"sensor1.{ZONE}"
WRONG = f"sensor2.{ZONE}"


def _device(d: Path, label: str, ca: Any, ca_key: Any, name: str, now: datetime.datetime) -> Any:
    key = certs.generate_key("ec-p256")
    cert = certs.issue_certificate(ca, ca_key, key.public_key(), dns_names=[name], now=now)
    (d / f"{label}.pem").write_bytes(certs.certificate_pem(cert))
    certs.write_private_key(d / f"{label}.key", key)
    return cert


def run_eap(out: TextIO, now: datetime.datetime | None = None) -> int:
    """Run the EAP-TLS scenario, one line per case; 0 when every case went as expected."""
    from dance.testkit.eapol import have_binaries

    now = now or datetime.datetime.now(datetime.UTC)
    out.write("\ndance demo, part K: EAP-TLS (802.1X) with FreeRADIUS, `dance-eap-verify`\n\n")
    if not have_binaries():
        out.write(
            "  (skipped: freeradius or eapol_test is not installed; "
            "apt-get install freeradius eapoltest)\n"
        )
        return 0
    with tempfile.TemporaryDirectory(prefix="dance-demo-eap-") as tmp:
        return _run(Path(tmp), now, out)


def _run(d: Path, now: datetime.datetime, out: TextIO) -> int:
    import dance.cli.eap_hook
    from dance.auth import AllowList
    from dance.dns import TLSAResolver, TrustAnchors
    from dance.eap.server import VerifyDaemon, VerifyDaemonConfig
    from dance.testkit import Hierarchy, ServerThread
    from dance.testkit.eapol import FreeRadius, eapol_test

    ca_key = certs.generate_key("ec-p256")
    ca = certs.new_ca(ca_key, "Example EAP device CA", now=now)
    server_key = certs.generate_key("ec-p256")
    server = certs.issue_certificate(
        ca, ca_key, server_key.public_key(), dns_names=["radius.example.test"], now=now,
        client_auth=False, server_auth=True,
    )  # fmt: skip
    (d / "ca.pem").write_bytes(certs.certificate_pem(ca))
    published = _device(d, "published", ca, ca_key, PUBLISHED, now)
    _device(d, "wrong", ca, ca_key, WRONG, now)
    other = certs.self_signed(certs.generate_key("ec-p256"), WRONG, now=now)

    zones = Hierarchy("test.", ttl=60)
    zones.child("example.test.")
    devices = zones.child(f"{ZONE}.")
    devices.add("sensor1", "TLSA", make_record(published).to_text())
    devices.add("sensor2", "TLSA", make_record(other).to_text())  # another key than its own
    zones.sign(algorithm=13, denial="nsec3")
    anchors = TrustAnchors.from_text(zones.export_trust_anchor())
    for cert, name in ((published, PUBLISHED), (other, WRONG)):
        out.write(f"   {make_record(cert).to_zone_line(name, 60)[:92]}...\n")
    out.write("   FreeRADIUS eap tls verify: dance-eap-verify --identity %{User-Name} <cert>\n")
    out.write(f"   eap-verify-daemon: --allow .{ZONE}\n\n")

    sock = d / "eap.sock"
    hook = [sys.executable, "-I", "-S", dance.cli.eap_hook.__file__]
    radius = FreeRadius(
        d / "raddb",
        certs.certificate_pem(server),
        certs.private_key_pem(server_key),
        certs.certificate_pem(ca),
        verify_command=[*hook, "--socket", str(sock), "--identity", "%{User-Name}",
                        "%{TLS-Client-Cert-Filename}"],
    )  # fmt: skip
    good = True

    def line(ok: bool, label: str, verdict: str) -> None:
        nonlocal good
        out.write(f"  {'ok ' if ok else 'BAD'} {label:<44} {verdict}\n")
        good &= ok

    with ServerThread(zones) as dns_server:

        def resolver() -> TLSAResolver:
            return TLSAResolver(dns_server.address, anchors=anchors, recursion_desired=False)

        async def scenario() -> None:
            config = VerifyDaemonConfig(str(sock), AllowList.parse([f".{ZONE}"]))
            async with VerifyDaemon(config, resolver) as daemon:
                try:
                    await asyncio.to_thread(radius.start)
                except (RuntimeError, OSError, ValueError) as exc:
                    radius.stop()
                    line(False, "FreeRADIUS starts", (str(exc).splitlines() or [""])[0])
                    return
                try:
                    for label, name, device, expect in (
                        ("sensor1, its key published (3 1 1)", PUBLISHED, "published", True),
                        ("sensor2, its name publishes another key", WRONG, "wrong", False),
                    ):
                        before = dict(daemon.stats.reasons)
                        try:
                            result = await asyncio.to_thread(
                                eapol_test, radius, identity=name,
                                client_cert=d / f"{device}.pem", client_key=d / f"{device}.key",
                                ca_cert=d / "ca.pem", workdir=d,
                            )  # fmt: skip
                        except (OSError, subprocess.SubprocessError) as exc:
                            line(False, label, f"eapol_test failed: {exc}")
                            continue
                        reasons = [
                            k for k, v in daemon.stats.reasons.items() if v > before.get(k, 0)
                        ]
                        if result.accepted:
                            verdict = f"Access-Accept  User-Name={result.reply_user_name}"
                        else:
                            verdict = f"Access-Reject  {', '.join(reasons) or 'no reason'}"
                        ok = result.accepted is expect and radius.alive()
                        if expect:
                            ok &= result.reply_user_name == name
                        else:
                            ok &= reasons == ["no-match"]
                        line(ok, label, verdict)
                    out.write(
                        f"      daemon: {daemon.stats.accepted} accepted, "
                        f"refusals by reason {daemon.stats.reasons}\n"
                    )
                finally:
                    radius.stop()

        asyncio.run(scenario())
    return 0 if good else 1
