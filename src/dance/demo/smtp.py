"""Proposed `make demo` step: SMTP relay authentication with DANCE (architecture Example 10).

    from dance.demo.smtp import run_smtp
    good &= run_smtp(out, now) == 0

Everything runs in-process on loopback: the testkit's signed zone on a DNS server thread,
``dance.smtp`` as the proxy, and a small SMTP sink standing in for Postfix (it records XCLIENT
and, like ``permit_sasl_authenticated, reject_unauth_destination``, lets only sessions with a
LOGIN relay). The sending MTA ``_smtp-client.mta1.example.test`` relays; the same name with the
wrong key, a name outside the allow-list and MAIL before STARTTLS are refused, and the sink never
sees a refused client. tests/smtp/test_postfix.py runs the same against a real Postfix.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
import tempfile
from pathlib import Path
from typing import TextIO

from dance import certs
from dance.demo.files import write_pair, write_server
from dance.tlsa import make_record

__all__ = ["run_smtp"]

MTA = "_smtp-client.mta1.example.test"
OUTSIDER = "_smtp-client.mta1.evil.test"


class _Sink:
    """A stand-in for Postfix: XCLIENT offered, relay only with LOGIN."""

    def __init__(self) -> None:
        self.logins: list[str | None] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        login: str | None = None

        def say(text: str) -> None:
            writer.write(text.encode() + b"\r\n")

        say("220 sink ESMTP")
        try:
            while line := await reader.readline():
                text = line.decode(errors="replace").rstrip("\r\n")
                verb = text.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    say("250-sink\r\n250 XCLIENT NAME ADDR PROTO HELO LOGIN")
                elif verb == "XCLIENT":
                    attrs = dict(a.split("=", 1) for a in text.split(" ")[1:] if "=" in a)
                    login = attrs.get("LOGIN")
                    self.logins.append(login)
                    say("220 sink ESMTP")
                elif verb == "RCPT":
                    say("250 2.1.5 Ok" if login else "554 5.7.1 Relay access denied")
                elif verb == "DATA":
                    say("354 go")
                    while await reader.readline() not in (b".\r\n", b""):
                        pass
                    say(f"250 2.0.0 Ok: queued (sasl_username={login})")
                elif verb == "QUIT":
                    say("221 bye")
                    break
                else:
                    say("250 2.0.0 Ok")
                await writer.drain()
        finally:
            writer.close()


async def _reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    while True:
        line = await asyncio.wait_for(reader.readline(), 10)
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return int(line[:3]), line.decode(errors="replace").strip()


async def _session(port: int, context: ssl.SSLContext | None) -> tuple[bool, str]:
    """(relayed, last reply) for one message to a remote domain."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def cmd(text: str) -> tuple[int, str]:
        writer.write(text.encode() + b"\r\n")
        await writer.drain()
        return await _reply(reader)

    try:
        await _reply(reader)
        await cmd("EHLO mta1.example.test")
        if context is not None:
            await cmd("STARTTLS")
            await writer.start_tls(context, server_hostname="localhost")
            await cmd("EHLO mta1.example.test")
        code, text = await cmd("MAIL FROM:<alice@mta1.example.test>")
        if code != 250:
            return False, text
        code, text = await cmd("RCPT TO:<bob@relay.test>")
        if code != 250:
            return False, text
        await cmd("DATA")
        code, text = await cmd("Subject: demo\r\n\r\nhello\r\n.")
        return code == 250, text
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        return False, f"TLS refused ({type(exc).__name__})"
    finally:
        writer.close()


def run_smtp(out: TextIO, now: datetime.datetime | None = None) -> int:
    """Run the SMTP relay scenario, one line per case; 0 when every case went as expected."""
    from dance.auth import Authenticator
    from dance.dns import TLSAResolver, TrustAnchors
    from dance.smtp.proxy import SmtpProxyConfig, start_smtp_proxy
    from dance.testkit import Hierarchy, ServerThread
    from dance.tls import BridgeError, client_context

    now = now or datetime.datetime.now(datetime.UTC)
    out.write("\ndance demo, part G: SMTP relay authentication, `dance smtp-proxy`\n\n")
    with tempfile.TemporaryDirectory(prefix="dance-demo-smtp-") as tmp:
        d = Path(tmp)
        server = write_server(d, now, ca_name="Demo server CA", ca_file="ca.pem")
        mta_key = certs.generate_key("ec-p256")
        mta_cert = certs.self_signed(mta_key, MTA, now=now)
        mta = write_pair(d, "mta", mta_cert, mta_key)
        other_key = certs.generate_key("ec-p256")
        impostor = write_pair(d, "impostor", certs.self_signed(other_key, MTA, now=now), other_key)
        outsider = write_pair(d, "outsider", certs.self_signed(mta_key, OUTSIDER, now=now), mta_key)

        zones = Hierarchy("test.", ttl=60)
        example = zones.child("example.test.")
        example.add("_smtp-client.mta1", "TLSA", make_record(mta_cert).to_text())
        zones.sign(algorithm=13, denial="nsec3")
        anchors = TrustAnchors.from_text(zones.export_trust_anchor())
        out.write(f"   {make_record(mta_cert).to_zone_line(MTA, 60)}\n")
        out.write(f"   smtp-proxy: --allow {MTA} --backend <Postfix stand-in>\n\n")

        def ctx(files: tuple[str, str], name: str) -> ssl.SSLContext:
            return client_context(name=name, cert=files[0], key=files[1], cafile=str(d / "ca.pem"))

        with ServerThread(zones) as dns_server:

            async def scenario() -> bool:
                sink = _Sink()
                back = await asyncio.start_server(sink.handle, "127.0.0.1", 0)
                back_port = int(back.sockets[0].getsockname()[1])
                async with TLSAResolver(
                    dns_server.address, anchors=anchors, recursion_desired=False
                ) as resolver:
                    proxy = await start_smtp_proxy(
                        "127.0.0.1",
                        0,
                        config=SmtpProxyConfig(("127.0.0.1", back_port)),
                        cert=server[0],
                        key=server[1],
                        authenticator=Authenticator(resolver, allow=[MTA]),
                    )
                    ok = True
                    cases: list[tuple[str, ssl.SSLContext | None, bool]] = [
                        ("MTA, published key: relays", ctx(mta, MTA), True),
                        ("same name, wrong key", ctx(impostor, MTA), False),
                        ("name outside the allow-list", ctx(outsider, OUTSIDER), False),
                        ("MAIL before STARTTLS", None, False),
                    ]
                    async with proxy:
                        for label, context, expect in cases:
                            before = sink.connections
                            relayed, text = await _session(proxy.port, context)
                            reached = sink.connections > before
                            good = relayed is expect and reached is expect
                            verdict = (
                                f"RELAYED   {text}"
                                if relayed
                                else f"REFUSED   {text}; backend contacted: "
                                f"{'yes' if reached else 'no'}"
                            )
                            out.write(f"  {'ok ' if good else 'BAD'} {label:<32} {verdict}\n")
                            ok &= good
                    ok &= sink.logins == [MTA]
                    out.write(f"      XCLIENT LOGIN seen by the backend: {sink.logins}\n")
                back.close()
                return ok

            try:
                good = asyncio.run(scenario())
            except BridgeError as exc:
                out.write(f"  BAD this Python cannot reach its OpenSSL: {exc}\n")
                return 1
    return 0 if good else 1
