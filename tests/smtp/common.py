"""Shared material for the SMTP proxy tests: a tiny async SMTP client that does STARTTLS with a
DANCE client context, and an in-test SMTP sink (a stand-in for Postfix that records XCLIENT)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any

RELAY_RCPT = "someone@relay.test"


class SmtpClient:
    """A minimal SMTP client: one command, one reply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> tuple[SmtpClient, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        code, text = await client.read_reply()
        assert code == 220, text
        return client, text

    async def read_reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 10)
            if not line:
                raise ConnectionError("closed")
            lines.append(line.decode().rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)

    async def cmd(self, text: str) -> tuple[int, str]:
        self.writer.write(text.encode() + b"\r\n")
        await self.writer.drain()
        return await self.read_reply()

    async def starttls(self, context: ssl.SSLContext) -> None:
        code, text = await self.cmd("STARTTLS")
        assert code == 220, text
        await self.writer.start_tls(context, server_hostname="localhost")

    async def send_mail(self, sender: str, rcpt: str, body: str = "Subject: hi\r\n\r\nhello\r\n"):
        """(MAIL code, RCPT code, DATA end code) for one message."""
        code, _ = await self.cmd(f"MAIL FROM:<{sender}>")
        if code != 250:
            return code, 0, 0
        rcode, _ = await self.cmd(f"RCPT TO:<{rcpt}>")
        if rcode != 250:
            return code, rcode, 0
        dcode, _ = await self.cmd("DATA")
        assert dcode == 354
        self.writer.write(body.encode() + b".\r\n")
        await self.writer.drain()
        ecode, _ = await self.read_reply()
        return code, rcode, ecode

    def close(self) -> None:
        self.writer.close()


@dataclass
class Sink:
    """A stand-in for Postfix: offers XCLIENT, records every command line, accepts relay only
    for a session whose XCLIENT carried LOGIN (like permit_sasl_authenticated)."""

    connections: int = 0
    closed: int = 0  # connections the sink saw end
    lines: list[str] = field(default_factory=list)
    xclients: list[dict[str, str]] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    hang_on: str | None = None  # a verb the sink never answers (a stuck backend)
    server: Any = None

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        login: str | None = None

        def say(text: str) -> None:
            writer.write(text.encode() + b"\r\n")

        say("220 sink ESMTP")
        try:
            while line := await reader.readline():
                text = line.decode().rstrip("\r\n")
                self.lines.append(text)
                verb = text.split(" ", 1)[0].upper()
                if verb == self.hang_on:
                    await reader.read()  # silent until the proxy goes
                    break
                if verb == "EHLO":
                    say("250-sink\r\n250-XCLIENT NAME ADDR PROTO HELO LOGIN\r\n250 SIZE 1000")
                elif verb == "XCLIENT":
                    attrs = dict(a.split("=", 1) for a in text.split(" ")[1:])
                    self.xclients.append(attrs)
                    login = attrs.get("LOGIN")
                    say("220 sink ESMTP")
                elif verb == "RCPT":
                    if login is None and "@relay.test" in text:
                        say("554 5.7.1 Relay access denied")
                    else:
                        say("250 2.1.5 Ok")
                elif verb == "DATA":
                    say("354 go")
                    body = b""
                    while (chunk := await reader.readline()) not in (b".\r\n", b""):
                        body += chunk
                    if not chunk:
                        break  # connection lost inside DATA: nothing is queued
                    self.messages.append(body)
                    say("250 2.0.0 Ok: queued")
                elif verb == "QUIT":
                    say("221 bye")
                    break
                else:
                    say("250 2.0.0 Ok")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.closed += 1
            writer.close()


async def start_sink() -> Sink:
    sink = Sink()
    sink.server = await asyncio.start_server(sink.handle, "127.0.0.1", 0)
    return sink
