"""`make demo` part: mutual DANE between a LoRaWAN network server and join server (Example 5).

    from dance.demo.lorawan import run_lorawan
    good &= run_lorawan(out, now) == 0

Everything runs in-process on loopback: the testkit's signed zones on a DNS server thread, the
join server on ``dance.tls`` (``dane_clientid``) and the network server's client, which
authenticates the join server by the TLSA records at ``_443._tcp.js.example.test``. Both keys
are self-signed; there is no CA anywhere. One JoinReq gets a JoinAns; then the refusals.
"""

from __future__ import annotations

import asyncio
import datetime
import tempfile
from pathlib import Path
from typing import Any, TextIO

from dance import certs
from dance.demo.files import write_pair
from dance.tlsa import make_record

__all__ = ["run_lorawan"]

JS = "js.example.test"
NS1 = "ns1.netid-000013.example.test"
NS2 = "ns2.netid-000042.example.test"
JOIN_EUI = "70b3d57ed0000001"
DEV_EUI = "0004a30b001c0530"


def run_lorawan(out: TextIO, now: datetime.datetime | None = None) -> int:
    """Run the scenario, one line per case; 0 when every case went as expected."""
    from dance.auth import Authenticator
    from dance.dns import TLSAResolver, TrustAnchors
    from dance.lorawan import JoinError, JoinServer, join_request
    from dance.lorawan.frames import join_request as join_frame
    from dance.testkit import Fault, Hierarchy, ServerThread
    from dance.tls import BridgeError, serve

    now = now or datetime.datetime.now(datetime.UTC)
    out.write(
        "\ndance demo, part H: LoRaWAN network server <-> join server, mutual DANE, no CA\n\n"
    )
    app_key = bytes(range(16))
    with tempfile.TemporaryDirectory(prefix="dance-demo-lorawan-") as tmp:
        d = Path(tmp)
        keys = {
            label: certs.generate_key("ec-p256") for label in ("js", "jsx", "ns1", "nsx", "ns2")
        }
        js_cert = certs.self_signed(keys["js"], JS, now=now)
        ns1_cert = certs.self_signed(keys["ns1"], NS1, now=now)
        ns2_cert = certs.self_signed(keys["ns2"], NS2, now=now)
        js = write_pair(d, "js", js_cert, keys["js"])
        js_impostor = write_pair(d, "jsx", certs.self_signed(keys["jsx"], JS, now=now), keys["jsx"])
        ns1 = write_pair(d, "ns1", ns1_cert, keys["ns1"])
        ns1_impostor = write_pair(
            d, "nsx", certs.self_signed(keys["nsx"], NS1, now=now), keys["nsx"]
        )
        ns2 = write_pair(d, "ns2", ns2_cert, keys["ns2"])

        zones = Hierarchy("test.", ttl=60)
        example = zones.child("example.test.")
        for owner, cert in (("_443._tcp.js", js_cert), ("ns1.netid-000013", ns1_cert),
                            ("ns2.netid-000042", ns2_cert)):  # fmt: skip
            example.add(owner, "TLSA", make_record(cert).to_text())
            out.write(f"   {make_record(cert).to_zone_line(owner + '.example.test', 60)}\n")
        zones.sign(algorithm=13, denial="nsec3")
        anchors = TrustAnchors.from_text(zones.export_trust_anchor())
        out.write(f"   join server {JS} serves network server {NS1} (NetID 000013) only\n\n")

        def req(nonce: int, sender: str = "000013") -> dict[str, Any]:
            frame = join_frame(
                app_key,
                bytes.fromhex(JOIN_EUI),
                bytes.fromhex(DEV_EUI),
                nonce.to_bytes(2, "little"),
            )
            return {
                "ProtocolVersion": "1.0", "SenderID": sender, "ReceiverID": JOIN_EUI,
                "TransactionID": nonce, "MessageType": "JoinReq", "MACVersion": "1.0.3",
                "PHYPayload": frame.hex().upper(), "DevEUI": DEV_EUI, "DevAddr": "26011F2A",
                "DLSettings": "00", "RxDelay": 1,
            }  # fmt: skip

        with ServerThread(zones) as dns_server:

            def resolver() -> TLSAResolver:
                return TLSAResolver(dns_server.address, anchors=anchors, recursion_desired=False)

            async def scenario() -> bool:
                app = JoinServer(join_eui=JOIN_EUI, devices={DEV_EUI: app_key},
                                 network_servers={NS1: "000013"})  # fmt: skip
                ok = True
                async with resolver() as res:
                    auth = Authenticator(res, allow=app.allow_list())

                    async def attempt(label: str, js_files: tuple[str, str],
                                      ns_files: tuple[str, str], name: str, message: dict[str, Any],
                                      expect: str) -> bool:  # fmt: skip
                        server = await serve(app.handle, "127.0.0.1", 0, cert=js_files[0],
                                             key=js_files[1], authenticator=auth)  # fmt: skip
                        async with server:
                            before = app.counters.get("requests", 0)
                            async with resolver() as ns_res:
                                try:
                                    result = await join_request(
                                        message, host="127.0.0.1", port=server.port,
                                        service_port=443, server_name=JS, client_name=name,
                                        cert=ns_files[0], key=ns_files[1], resolver=ns_res,
                                    )  # fmt: skip
                                    code = result.answer["Result"]["ResultCode"]
                                    got = f"JoinAns {code}"
                                    verdict = f"{got:<28} (JS by {result.server.record} at "
                                    verdict += f"{result.server.client_name})"
                                except JoinError as exc:
                                    got = f"refused {exc.reason}"
                                    verdict = f"{got:<28} (JoinReq sent: "
                                    verdict += f"{'yes' if exc.sent else 'no'}"
                            await asyncio.sleep(0.05)
                            read = app.counters.get("requests", 0) - before
                            if not got.startswith("JoinAns"):
                                verdict += f"; read by the join server: {'yes' if read else 'no'})"
                        good = got == expect
                        out.write(f"  {'ok ' if good else 'BAD'} {label:<40} {verdict}\n")
                        return good

                    ok &= await attempt("NS1 -> JS, both keys in DNS", js, ns1, NS1, req(1),
                                        "JoinAns Success")  # fmt: skip
                    ok &= await attempt("NS1 speaks for another NetID", js, ns1, NS1,
                                        req(2, "000042"), "JoinAns UnknownSender")  # fmt: skip
                    ok &= await attempt("JS presents another key", js_impostor, ns1, NS1, req(3),
                                        "refused server-key-mismatch")  # fmt: skip
                    ok &= await attempt("NS1's name, another key", js, ns1_impostor, NS1, req(4),
                                        "refused refused-by-server")  # fmt: skip
                    ok &= await attempt("NS2: in DNS, not in the allow-list", js, ns2, NS2,
                                        req(5), "refused refused-by-server")  # fmt: skip
                    with zones.inject(Fault("bad-signature", f"_443._tcp.{JS}")):
                        ok &= await attempt("JS's TLSA RRSIG broken (bogus)", js, ns1, NS1,
                                            req(6), "refused server-dns-bogus")  # fmt: skip
                    answers = {
                        k[8:]: v for k, v in app.counters.items() if k.startswith("joinans_")
                    }
                    out.write(f"      join server answers: {answers}; network servers refused ")
                    out.write(f"by dane_clientid: {auth.counters['rejected']}\n")
                return ok

            try:
                good = asyncio.run(scenario())
            except BridgeError as exc:
                out.write(f"  BAD this Python cannot reach its OpenSSL: {exc}\n")
                return 1
    return 0 if good else 1
