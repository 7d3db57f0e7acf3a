"""`make demo` part L: RADIUS clients (access points, switches) reach FreeRADIUS over RadSec
through `dance radsec-proxy` (architecture Example 12).

    from dance.demo.radsec import run_radsec
    good &= run_radsec(out, now) == 0

A real FreeRADIUS 3.2 (Debian ``freeradius``, `dance.testkit.freeradius`) on a free loopback UDP
port, with the policy of docs/radsec.md (it rejects a request without ``DANCE-Client-Name`` or
with a name outside ``._nas.example.test``); the front `dance.radius` in-process on loopback; the
testkit's signed zone on a DNS server thread publishing the access point's key. The access point
(`dance.radius.RadsecClient` over `dance.tls.connect` with ``dane_clientid``) gets an
Access-Accept whose Reply-Message names it, and FreeRADIUS's detail log shows the
``DANCE-Client-Name`` the front added; a client with another key for the same name is refused in
the TLS handshake, and a request that carries its own ``DANCE-Client-Name`` is refused
(``spoofed-identity``): FreeRADIUS receives nothing from either. Without FreeRADIUS the part says
so and passes.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any, TextIO

from dance import certs
from dance.demo.files import write_pair, write_server
from dance.tlsa import make_record

__all__ = ["run_radsec"]

ZONE = "_nas.example.test"
AP = f"ap1.{ZONE}"
USER, PASSWORD = "bob", "hunter2"


def run_radsec(out: TextIO, now: datetime.datetime | None = None) -> int:
    """Run the RadSec scenario, one line per case; 0 when every case went as expected."""
    from dance.testkit.freeradius import have_freeradius

    now = now or datetime.datetime.now(datetime.UTC)
    out.write("\ndance demo, part L: RadSec (RADIUS/TLS), `dance radsec-proxy` + FreeRADIUS\n\n")
    if not have_freeradius():
        out.write("  (skipped: freeradius is not installed; apt-get install freeradius)\n")
        return 0
    with tempfile.TemporaryDirectory(prefix="dance-demo-radsec-") as tmp:
        return _run(Path(tmp), now, out)


def _run(d: Path, now: datetime.datetime, out: TextIO) -> int:
    from dance.testkit import Hierarchy, ServerThread
    from dance.testkit.freeradius import RadiusBackend

    ap_key = certs.generate_key("ec-p256")
    ap_cert = certs.self_signed(ap_key, AP, now=now)
    impostor_key = certs.generate_key("ec-p256")
    files = {
        "server": write_server(
            d, now, ca_name="Demo RadSec server CA", ca_file="server-ca.pem", server_auth=True
        ),
        "ap": write_pair(d, "ap", ap_cert, ap_key),
        "impostor": write_pair(
            d, "impostor", certs.self_signed(impostor_key, AP, now=now), impostor_key
        ),
    }

    zones = Hierarchy("test.", ttl=60)
    zones.child("example.test.")
    zones.child(f"{ZONE}.").add("ap1", "TLSA", make_record(ap_cert).to_text())
    zones.sign(algorithm=13, denial="nsec3")
    out.write(f"   {make_record(ap_cert).to_zone_line(AP, 60)[:92]}...\n")
    out.write(f"   radsec-proxy: --allow .{ZONE} --backend <FreeRADIUS on loopback UDP>\n")
    out.write(f"   FreeRADIUS: reject unless DANCE-Client-Name ends in .{ZONE}\n\n")

    secret = os.urandom(18).hex()
    backend = RadiusBackend(
        d / "raddb", secret=secret, users={USER: PASSWORD}, allowed_suffix=f".{ZONE}"
    )
    try:
        backend.start()
    except (RuntimeError, OSError, ValueError) as exc:
        backend.stop()
        out.write(f"  BAD FreeRADIUS did not start: {(str(exc).splitlines() or [''])[0]}\n")
        return 1
    try:
        with ServerThread(zones) as dns_server:
            scenario = _Scenario(d, files, backend, zones, dns_server.address, secret, out)
            return 0 if asyncio.run(scenario.run()) else 1
    finally:
        backend.stop()


class _Scenario:
    def __init__(
        self,
        d: Path,
        files: dict[str, tuple[str, str]],
        backend: Any,
        zones: Any,
        dns: tuple[str, int],
        secret: str,
        out: TextIO,
    ) -> None:
        self.d, self.files, self.backend, self.zones = d, files, backend, zones
        self.dns, self.secret, self.out = dns, secret, out
        self.good = True

    def line(self, ok: bool, label: str, verdict: str) -> None:
        self.out.write(f"  {'ok ' if ok else 'BAD'} {label:<44} {verdict}\n")
        self.good &= ok

    async def run(self) -> bool:
        from dance.auth import Authenticator
        from dance.dns import TLSAResolver, TrustAnchors
        from dance.radius import RadsecProxyConfig, start_radsec_proxy
        from dance.tls import BridgeError

        anchors = TrustAnchors.from_text(self.zones.export_trust_anchor())
        config = RadsecProxyConfig(
            ("127.0.0.1", self.backend.port), backend_secret=self.secret.encode(),
            backend_timeout=10.0,
        )  # fmt: skip
        async with TLSAResolver(self.dns, anchors=anchors, recursion_desired=False) as resolver:
            try:
                server, proxy = await start_radsec_proxy(
                    "127.0.0.1", 0, config=config, cert=self.files["server"][0],
                    key=self.files["server"][1],
                    authenticator=Authenticator(resolver, allow=[f".{ZONE}"]),
                )  # fmt: skip
            except (BridgeError, OSError, ssl.SSLError) as exc:
                self.line(False, "the RadSec front starts", f"{exc}")
                return False
            try:
                await self._cases(server, proxy)
            finally:
                await server.shutdown(0)
        return self.good

    async def _client(self, port: int, label: str) -> Any:
        from dance.radius import RadsecClient
        from dance.tls import connect

        cert, key = self.files[label]
        reader, writer = await connect(
            "127.0.0.1", port, name=AP, cert=cert, key=key,
            cafile=str(self.d / "server-ca.pem"), server_hostname="localhost", timeout=15.0,
        )  # fmt: skip
        return RadsecClient(reader, writer)

    async def _refused(self, port: int, label: str, request: bytes) -> str | None:
        """How the front refused ``request`` (a TLS alert, or the connection closed without an
        answer); None when it answered."""
        from dance.radius import RadiusError

        try:
            client = await self._client(port, label)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            return f"handshake failed ({getattr(exc, 'reason', None) or type(exc).__name__})"
        try:
            await client.send_raw(request)
            if await client.read_packet(15.0) is None:
                return "closed, no answer"
            return None
        except ssl.SSLError as exc:  # TLS 1.3: the client's side of the handshake was done
            alert = (exc.reason or "").lower()
            for prefix in ("sslv3_alert_", "tlsv1_alert_"):
                alert = alert.removeprefix(prefix)
            return f"TLS alert {alert}"
        except (OSError, RadiusError) as exc:
            return f"closed ({type(exc).__name__})"
        finally:
            await client.close()

    async def _cases(self, server: Any, proxy: Any) -> None:
        from dance.radius import Attribute, RadiusError, access_request
        from dance.radius.packet import ACCESS_ACCEPT

        backend = self.backend  # FreeRADIUS writes its detail file before it answers
        # 1. The access point whose key is published: Access-Accept, FreeRADIUS saw its name.
        before = len(backend.packets())
        label = "ap1, its key published (3 1 1)"
        try:
            client = await self._client(server.port, "ap")
            try:
                reply = await client.exchange(access_request(1, USER, PASSWORD), timeout=15.0)
            finally:
                await client.close()
            seen = backend.packets()[before:]
            names = [p.get("DANCE-Client-Name") for p in seen]
            messages = [v.decode("utf-8", "replace") for v in reply.get(18)]
            ok = reply.code == ACCESS_ACCEPT and names == [[f'"{AP}"']]
            ok &= messages == [f"client {AP}"]
            verdict = "Access-Accept" if reply.code == ACCESS_ACCEPT else f"code {reply.code}"
            shown = names[0][0] if len(names) == 1 and names[0] else "nothing"
            self.line(ok, label, f"{verdict}; FreeRADIUS saw DANCE-Client-Name = {shown}")
        except (OSError, ssl.SSLError, TimeoutError, RadiusError) as exc:
            self.line(False, label, f"failed: {exc!r}")

        # 2. Another key for the same name: refused in the TLS handshake.
        before = len(backend.packets())
        rejected = server.stats.get("rejected_no-match")
        how = await self._refused(server.port, "impostor", access_request(2, USER, PASSWORD))
        reached = len(backend.packets()) > before
        counted = server.stats.get("rejected_no-match") == rejected + 1
        self.line(
            how is not None and counted and not reached,
            "ap1's name, another key",
            f"REFUSED no-match: {how}; FreeRADIUS got: {'a packet' if reached else 'nothing'}",
        )

        # 3. The published access point writes DANCE-Client-Name itself: spoofed-identity.
        before = len(backend.packets())
        spoofed_before = proxy.stats.refused.get("spoofed-identity", 0)
        boss = b"boss." + ZONE.encode()
        vsa = Attribute(26, (32473).to_bytes(4, "big") + bytes((1, 2 + len(boss))) + boss)
        request = access_request(3, USER, PASSWORD, extra=[vsa])
        how = await self._refused(server.port, "ap", request)
        reached = len(backend.packets()) > before
        counted = proxy.stats.refused.get("spoofed-identity", 0) == spoofed_before + 1
        self.line(
            how is not None and counted and not reached,
            f"ap1 sends DANCE-Client-Name={boss.decode()[:13]}...",
            f"REFUSED spoofed-identity: {how}; FreeRADIUS got: "
            f"{'a packet' if reached else 'nothing'}",
        )
        refusals = {
            k.removeprefix("rejected_"): v
            for k, v in server.stats.snapshot().items()
            if k.startswith("rejected_") and v
        }
        self.out.write(
            f"      front: TLS refusals {refusals}, RADIUS refusals {proxy.stats.refused}, "
            f"{proxy.stats.requests} request(s) forwarded\n"
        )
        self.good &= backend.alive()
