"""Proposed `make demo` step: the edge-computing scenario (architecture 4.1.6) over DNSSEC.

A sensor signs a measurement with its DANCE key (name only: the key is in a ``3 1 0`` record),
a gateway forwards it, and the cloud verifies it and attributes it to the sensor's DNS name. The
gateway's tampering is refused: an altered payload, and the altered payload re-signed with the
gateway's key while still claiming the sensor's name. Everything runs in-process against
``dance.testkit`` zones served on a loopback port.

    from dance.demo.message import run_messages
    good &= run_messages(out, now) == 0
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import TextIO

from cryptography.hazmat.primitives.asymmetric import ec

from dance import certs
from dance.auth import Authenticator
from dance.message.cose import sign_cose
from dance.message.errors import MessageError, MessageReason
from dance.message.jose import decrypt_jwe, encrypt_jwe, sign_jws
from dance.message.keys import spki_of
from dance.message.verify import MessageVerifier
from dance.tlsa import make_record

SENSOR = "sensor7._device.example.test"
GATEWAY = "gw1._device.example.test"


def run_messages(out: TextIO, now: datetime.datetime | None = None) -> int:
    """Print the scenario; 0 when every outcome is the expected one."""
    try:
        from dance import testkit
        from dance.dns import TLSAResolver, TrustAnchors
    except ImportError as exc:  # pragma: no cover - the kit ships with dance
        out.write(f"messages demo skipped: {exc}\n")
        return 0
    import importlib.util

    missing = [m for m in ("joserfc", "cbor2") if importlib.util.find_spec(m) is None]
    if missing:
        out.write(f"\nmessages demo skipped: install dance-dane[messages] ({', '.join(missing)})\n")
        return 0
    now = now or datetime.datetime.now(datetime.UTC)
    posix = int(now.timestamp())
    sensor_key = ec.generate_private_key(ec.SECP256R1())
    gateway_key = ec.generate_private_key(ec.SECP256R1())
    gateway_cert = certs.self_signed(gateway_key, GATEWAY, now=now)

    h = testkit.Hierarchy("test.")
    h.child("example.test.")
    device = h.child("_device.example.test.")
    sensor_record = "3 1 0 " + spki_of(sensor_key).hex()
    device.add("sensor7", "TLSA", sensor_record)
    device.add("gw1", "TLSA", make_record(gateway_cert).to_text())
    h.sign(13, "nsec", now=posix)
    anchors = TrustAnchors.from_text(h.export_trust_anchor())

    out.write("\ndance demo, part D: signed measurements from the edge (JOSE / COSE)\n\n")
    out.write(f"   {SENSOR}. 300 IN TLSA 3 1 0 {spki_of(sensor_key).hex()[:32]}...\n")
    out.write(f"   {make_record(gateway_cert).to_zone_line(GATEWAY, 300)}\n\n")

    measurement = json.dumps({"sensor": SENSOR, "t": 21.5, "unit": "C"}).encode()
    altered = json.dumps({"sensor": SENSOR, "t": 35.0, "unit": "C"}).encode()
    jws = sign_jws(measurement, sensor_key, SENSOR)
    cose = sign_cose(measurement, sensor_key, SENSOR)
    head, _, sig = jws.split(".")
    from dance.message.jose import b64e

    tampered = ".".join([head, b64e(altered), sig])
    resigned = sign_jws(altered, gateway_key, SENSOR)
    resigned_cert = sign_jws(altered, gateway_key, SENSOR, certificates=[gateway_cert])
    own = sign_jws(altered, gateway_key, GATEWAY, certificates=[gateway_cert])

    cases: list[tuple[str, str | bytes, str | None, MessageReason | None]] = [
        (f"sensor's JWS ({len(jws)} bytes), forwarded", jws, SENSOR, None),
        (f"sensor's COSE_Sign1 ({len(cose)} bytes), forwarded", cose, SENSOR, None),
        ("gateway altered the payload", tampered, None, MessageReason.BAD_SIGNATURE),
        (
            "gateway re-signed as the sensor (name only)",
            resigned,
            None,
            MessageReason.BAD_SIGNATURE,
        ),
        (
            "gateway re-signed as the sensor with its cert",
            resigned_cert,
            None,
            MessageReason.KEY_NOT_PUBLISHED,
        ),
        ("gateway signed under its own name", own, GATEWAY, None),
    ]

    async def verify_all() -> list[tuple[str, object]]:
        resolver = TLSAResolver(
            server.address, anchors=anchors, clock=lambda: posix, recursion_desired=False
        )
        auth = Authenticator(resolver, allow=["._device.example.test"], clock=lambda: now)
        verifier = MessageVerifier(auth)
        results: list[tuple[str, object]] = []
        async with resolver:
            for label, token, _, _ in cases:
                try:
                    results.append((label, await verifier.verify(token)))
                except MessageError as exc:
                    results.append((label, exc))
        return results

    with testkit.ServerThread(h) as server:
        results = asyncio.run(verify_all())
    good = True
    for (label, result), (_, _, signer, reason) in zip(results, cases, strict=True):
        if isinstance(result, MessageError):
            ok = reason is result.reason
            verdict = f"REFUSED   {result.reason.value}"
        else:
            ident = result.identity  # type: ignore[attr-defined]
            ok = reason is None and ident.identity == signer
            verdict = f"VERIFIED  signer={ident.identity}"
        good &= ok
        out.write(f"  {'ok ' if ok else 'BAD'} {label:<48} {verdict}\n")

    secret = encrypt_jwe(b"calibration: offset=-0.3", sensor_key.public_key(), SENSOR)
    ok = decrypt_jwe(secret, sensor_key) == b"calibration: offset=-0.3"
    good &= ok
    out.write(f"  {'ok ' if ok else 'BAD'} {'cloud encrypts to the sensor (JWE ECDH-ES)':<48} ")
    out.write(f"{'DECRYPTED by the sensor' if ok else 'FAILED'}\n")
    return 0 if good else 1
