"""`make demo` part J: domain users bind to LDAP through `dance ldap-proxy` (architecture
Example 3).

    from dance.demo.ldap import run_ldap
    good &= run_ldap(out, now) == 0

A real OpenLDAP slapd (Debian ``slapd``) on an ldapi socket in a temp dir
(`dance.testkit.slapd`), the front `dance.ldap` in-process on loopback (LDAPS and StartTLS), the
testkit's signed zone on a DNS server thread publishing the user CAs of ``example.test`` and
``outside.test`` at ``_user.DOMAIN``. alice@example.test binds with SASL EXTERNAL and slapd's
Who Am I? answers her entry's DN; a certificate for alice from a CA that is not published, and a
user of ``outside.test`` (published, not in the front's allow-list) are refused in the TLS
handshake, before slapd sees anything. Without slapd the part says so and passes.
"""

from __future__ import annotations

import asyncio
import datetime
import shutil
import ssl
import tempfile
from pathlib import Path
from typing import Any, TextIO

from dance import certs
from dance.demo.files import write_pair, write_server
from dance.tlsa import make_record

__all__ = ["run_ldap"]

DOMAIN = "example.test"
OUTSIDE = "outside.test"
BASE = "dc=example,dc=test"
PROXY_DN = f"cn=dance-proxy,{BASE}"


class _Client:
    """Enough of an LDAP client for the demo: one request, one result (dance.ldap's codec)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from dance.ldap import PDUReader

        self.reader, self.writer = reader, writer
        self.framer = PDUReader(check=False)
        self.queue: list[bytes] = []

    async def request(self, pdu: bytes) -> Any:
        from dance.ldap import messages

        self.writer.write(pdu)
        await self.writer.drain()
        async with asyncio.timeout(15):
            while not self.queue:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed by the front")
                self.queue.extend(self.framer.feed(data))
        return messages.decode_result(self.queue.pop(0))

    def close(self) -> None:
        self.writer.transport.abort()


def _have_slapd() -> bool:
    return all(
        shutil.which(b) or shutil.which(b, path="/usr/sbin:/sbin") for b in ("slapd", "slapadd")
    )


def run_ldap(out: TextIO, now: datetime.datetime | None = None) -> int:
    """Run the LDAP scenario, one line per case; 0 when every case went as expected."""
    import importlib.util

    now = now or datetime.datetime.now(datetime.UTC)
    out.write("\ndance demo, part J: LDAP binds of domain users, `dance ldap-proxy` + slapd\n\n")
    missing = [m for m in ("ldap3", "pyasn1") if importlib.util.find_spec(m) is None]
    if missing:
        out.write(f"  (skipped: install dance-dane[ldap] ({', '.join(missing)}))\n")
        return 0
    if not _have_slapd():
        out.write("  (skipped: slapd is not installed; apt-get install slapd)\n")
        return 0

    from dance.auth import Authenticator
    from dance.dns import TLSAResolver, TrustAnchors
    from dance.ldap import LDAPProxyConfig, start_ldap_proxy
    from dance.testkit import Hierarchy, ServerThread
    from dance.testkit.slapd import Slapd, directory_ldif, person, slapd_conf
    from dance.tls import BridgeError, client_context

    with tempfile.TemporaryDirectory(prefix="dance-demo-ldap-") as tmp:
        d = Path(tmp)
        server = write_server(
            d, now, ca_name="Demo LDAP server CA", ca_file="server-ca.pem", server_auth=True
        )

        def user(label: str, uid: str, domain: str, ca_label: str) -> tuple[str, str]:
            ca_key = certs.generate_key("ec-p256")
            ca = certs.new_ca(ca_key, ca_label, now=now, permitted_dns=[domain])
            k = certs.generate_key("ec-p256")
            cert = certs.issue_certificate(
                ca, ca_key, k.public_key(), dns_names=[domain], uid=uid, now=now
            )
            cas[label] = ca
            pem = certs.certificate_pem(cert) + certs.certificate_pem(ca)
            return write_pair(d, label, pem, k)

        cas: dict[str, Any] = {}
        alice = user("alice", "alice", DOMAIN, "example.test users")
        impostor = user("impostor", "alice", DOMAIN, "example.test users")  # another CA
        frank = user("frank", "frank", OUTSIDE, "outside.test users")
        zones = Hierarchy("test.", ttl=60)
        records = {DOMAIN: make_record(cas["alice"], 2, 0, 1)}
        records[OUTSIDE] = make_record(cas["frank"], 2, 0, 1)
        for domain, record in records.items():
            zones.child(f"{domain}.").add("_user", "TLSA", record.to_text())
        zones.sign(algorithm=13, denial="nsec3")
        anchors = TrustAnchors.from_text(zones.export_trust_anchor())
        for domain, record in records.items():
            text = record.to_zone_line(f"_user.{domain}", 60)
            out.write(f"   {text if len(text) < 96 else text[:92] + '...'}\n")
        out.write(f"   slapd: u:UID@{DOMAIN} -> uid=UID,ou=people,{BASE} (authz-regexp)\n")
        out.write(
            f"   ldap-proxy: --allow _user.{DOMAIN} --ldapi <slapd's socket in a temp dir>\n\n"
        )

        sd = d / "slapd"
        conf = slapd_conf(sd, base=BASE, domain=DOMAIN, proxy_dn=PROXY_DN)
        slapd = Slapd(sd, conf, directory_ldif(BASE, PROXY_DN, [person("alice")]))
        try:
            slapd.start()
        except (RuntimeError, OSError) as exc:
            out.write(f"  BAD slapd did not start: {exc}\n")
            return 1

        def ctx(files: tuple[str, str], domain: str) -> ssl.SSLContext:
            return client_context(
                name=f"_user.{domain}", cert=files[0], key=files[1],
                cafile=str(d / "server-ca.pem"),
            )  # fmt: skip

        try:
            with ServerThread(zones) as dns_server:

                async def scenario() -> bool:
                    async with TLSAResolver(
                        dns_server.address, anchors=anchors, recursion_desired=False
                    ) as resolver:
                        proxy = await start_ldap_proxy(
                            "127.0.0.1",
                            ldaps_port=0,
                            starttls_port=0,
                            config=LDAPProxyConfig(str(slapd.socket)),
                            cert=server[0],
                            key=server[1],
                            authenticator=Authenticator(resolver, allow=[f"_user.{DOMAIN}"]),
                        )
                        try:
                            return await _cases(proxy, ctx, alice, impostor, frank, out)
                        finally:
                            await proxy.shutdown(0)

                good = asyncio.run(scenario())
        except BridgeError as exc:
            out.write(f"  BAD this Python cannot reach its OpenSSL: {exc}\n")
            return 1
        finally:
            slapd.stop()
    return 0 if good else 1


async def _cases(proxy: Any, ctx: Any, alice: Any, impostor: Any, frank: Any, out: TextIO) -> bool:
    from dance.ldap import messages as m

    ok = True

    def line(good: bool, label: str, verdict: str) -> None:
        nonlocal ok
        out.write(f"  {'ok ' if good else 'BAD'} {label:<44} {verdict}\n")
        ok &= good

    async def connect(files: Any, domain: str, starttls: bool) -> _Client:
        context = ctx(files, domain)
        if not starttls:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", proxy.core.port, ssl=context, server_hostname="localhost",
                ssl_handshake_timeout=15,
            )  # fmt: skip
            return _Client(reader, writer)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.starttls_port)
        client = _Client(reader, writer)
        result = await client.request(m.extended_request(1, m.START_TLS))
        if result.code != m.SUCCESS:
            client.close()
            raise ConnectionError(f"StartTLS refused: {result.code}")
        await writer.start_tls(context, server_hostname="localhost", ssl_handshake_timeout=15)
        return client

    expected = f"dn:uid=alice,ou=people,{BASE}"
    for label, starttls in (("LDAPS", False), ("StartTLS", True)):
        try:
            client = await connect(alice, DOMAIN, starttls)
            try:
                bind = await client.request(m.bind_request(2, ""))
                who = await client.request(m.extended_request(3, m.WHO_AM_I))
            finally:
                client.close()
            answer = (who.value or b"").decode()
            good = bind.code == m.SUCCESS and who.code == m.SUCCESS and answer == expected
            line(good, f"alice@{DOMAIN} binds, {label}", f"SASL EXTERNAL; Who Am I? {answer}")
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            line(False, f"alice@{DOMAIN} binds ({label})", f"failed: {exc!r}")

    for label, files, domain in (
        (f"alice@{DOMAIN} from a CA not in DNS", impostor, DOMAIN),
        (f"frank@{OUTSIDE} (outside the allow-list)", frank, OUTSIDE),
    ):
        contacted = proxy.stats.upstream_connections
        refused = False
        try:
            client = await connect(files, domain, False)
            try:  # refused after the handshake (the DNS answer came later): closed, no answer
                await client.request(m.bind_request(2, ""))
            finally:
                client.close()
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError):
            refused = True
        reached = proxy.stats.upstream_connections > contacted
        line(
            refused and not reached,
            label,
            f"REFUSED; slapd contacted: {'yes' if reached else 'no'}",
        )
    refusals = {
        k.removeprefix("rejected_"): v
        for k, v in proxy.core.stats.snapshot().items()
        if k.startswith("rejected_") and v
    }
    out.write(f"      refusals by reason: {refusals}\n")
    return ok
