"""`make demo` part: a device through the DANCE proxy to a small backend (for dance.demo).

    from dance.demo.tls import run_tls
    good &= run_tls(out, now) == 0

Everything runs in-process on loopback: the testkit's signed zones on a DNS server thread, a
backend that reads the PROXY v2 header, ``dance.tls`` as the proxy, and clients. The device is
accepted; the same device with the wrong key, after its record is revoked, and under a name
outside the allow-list is refused, and the backend never sees a refused client.
"""

from __future__ import annotations

import asyncio
import datetime
import struct
import tempfile
from pathlib import Path
from typing import TextIO

from dance import certs
from dance.demo.files import write_pair, write_server
from dance.tlsa import make_record

__all__ = ["run_tls"]

DEVICE = "sensor7._device.example.test"


def _identity_tlv(header: bytes, tlv_type: int) -> str | None:
    if len(header) < 16:
        return None
    (length,) = struct.unpack("!H", header[14:16])
    body = header[16 : 16 + length]
    rest = body[12:] if header[13] == 0x11 else body[36:]
    while len(rest) >= 3:
        t, n = rest[0], struct.unpack("!H", rest[1:3])[0]
        if t == tlv_type:
            return rest[3 : 3 + n].decode("ascii", "replace")
        rest = rest[3 + n :]
    return None


def run_tls(out: TextIO, now: datetime.datetime | None = None) -> int:
    """Run the proxy scenario, writing one line per case; 0 when every case went as expected."""
    from dance.auth import Authenticator
    from dance.dns import TLSAResolver, TrustAnchors
    from dance.testkit import Hierarchy, ServerThread
    from dance.tls import BridgeError, client_context, probe, serve
    from dance.tls.proxy import Proxy, ProxyConfig

    now = now or datetime.datetime.now(datetime.UTC)
    out.write(
        "\ndance demo, part E: DANCE over TLS through `dance proxy` (dane_clientid 0xFFDC)\n\n"
    )
    with tempfile.TemporaryDirectory(prefix="dance-demo-tls-") as tmp:
        d = Path(tmp)
        server = write_server(d, now, ca_name="Demo server CA", ca_file="ca.pem")
        dev_key = certs.generate_key("ec-p256")
        dev_cert = certs.self_signed(dev_key, DEVICE, now=now)
        device = write_pair(d, "device", dev_cert, dev_key)
        other_key = certs.generate_key("ec-p256")
        impostor = write_pair(
            d, "impostor", certs.self_signed(other_key, DEVICE, now=now), other_key
        )
        outsider_name = "sensor7.evil.test"
        outsider_cert = certs.self_signed(dev_key, outsider_name, now=now)
        outsider = write_pair(d, "outsider", outsider_cert, dev_key)

        zones = Hierarchy("test.", ttl=60)
        zones.child("example.test.")
        devices = zones.child("_device.example.test.")
        devices.add("sensor7", "TLSA", make_record(dev_cert).to_text())
        zones.sign(algorithm=13, denial="nsec3")
        anchors = TrustAnchors.from_text(zones.export_trust_anchor())
        out.write(f"   {make_record(dev_cert).to_zone_line(DEVICE, 60)}\n")
        out.write("   proxy: --allow ._device.example.test --mode tcp (PROXY v2, TLV 0xE0)\n\n")

        with ServerThread(zones) as dns_server:

            async def scenario() -> bool:
                seen: list[str | None] = []

                async def backend(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                    header = await r.read(4096)
                    ident = _identity_tlv(header, 0xE0)
                    seen.append(ident)
                    w.write(f"backend: hello {ident}\n".encode())
                    await w.drain()
                    w.close()

                back = await asyncio.start_server(backend, "127.0.0.1", 0)
                back_port = back.sockets[0].getsockname()[1]
                async with TLSAResolver(
                    dns_server.address, anchors=anchors, recursion_desired=False
                ) as resolver:
                    auth = Authenticator(resolver, allow=["._device.example.test"])
                    proxy = Proxy(ProxyConfig(("127.0.0.1", back_port), mode="tcp"))
                    front = await serve(
                        proxy.handle,
                        "127.0.0.1",
                        0,
                        cert=server[0],
                        key=server[1],
                        authenticator=auth,
                    )
                    ok = True

                    async def attempt(label: str, files: tuple[str, str], name: str,
                                      expect: bool) -> bool:  # fmt: skip
                        ctx = client_context(
                            name=name, cert=files[0], key=files[1], cafile=str(d / "ca.pem")
                        )
                        before = len(seen)
                        r = await probe(
                            "127.0.0.1", front.port, context=ctx, server_hostname="localhost"
                        )
                        reached = len(seen) > before
                        verdict = (
                            f"ACCEPTED  {r.reply.decode().strip()}"
                            if r.accepted
                            else f"REFUSED   backend contacted: {'yes' if reached else 'no'}"
                        )
                        good = r.accepted is expect and reached is expect
                        out.write(f"  {'ok ' if good else 'BAD'} {label:<44} {verdict}\n")
                        return good

                    async with front:
                        ok &= await attempt("device, published key", device, DEVICE, True)
                        ok &= await attempt("same name, wrong key", impostor, DEVICE, False)
                        ok &= await attempt(
                            "name outside the allow-list", outsider, outsider_name, False
                        )
                        devices.remove("sensor7", "TLSA")  # revocation = removal
                        zones.sign(algorithm=13, denial="nsec3")
                        auth.flush()  # as if the 60 s TTL had passed
                        ok &= await attempt("device after its record was removed", device,
                                            DEVICE, False)  # fmt: skip
                        stats = front.stats.snapshot()
                    refused = {k[9:]: v for k, v in stats.items() if k.startswith("rejected_")}
                    out.write(f"      proxy counters: accepted {stats.get('accepted', 0)}, ")
                    out.write(f"refused by reason {refused}\n")
                back.close()
                return ok

            try:
                good = asyncio.run(scenario())
            except BridgeError as exc:
                out.write(f"  BAD this Python cannot reach its OpenSSL: {exc}\n")
                return 1
    return 0 if good else 1
