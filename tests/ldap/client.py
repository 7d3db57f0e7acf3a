"""A small LDAP client for the tests: dance.tls's client (dane_clientid) for LDAPS and StartTLS,
dance.ldap.messages (pyasn1) for the PDUs, ldap3 to encode search requests."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from ldap3.operation.search import search_operation  # type: ignore[import-untyped]

from dance.ldap import messages as m
from dance.ldap.ber import PDUReader
from dance.tls import client_context
from tests.ldap.conftest import Files, Users


def context(users: Users, files: Files, name: str) -> ssl.SSLContext:
    return client_context(
        name=name, cert=files.cert, key=files.key, cafile=users.ca, check_hostname=False
    )


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = PDUReader(16 * 1024 * 1024, check=False)
        self.queue: list[bytes] = []
        self.next_id = 1

    async def read(self, timeout: float = 15.0) -> bytes | None:
        async with asyncio.timeout(timeout):
            while not self.queue:
                data = await self.reader.read(65536)
                if not data:
                    return None
                self.queue.extend(self.framer.feed(data))
        return self.queue.pop(0)

    async def send(self, pdu: bytes) -> None:
        self.writer.write(pdu)
        await self.writer.drain()

    def mid(self) -> int:
        self.next_id += 1
        return self.next_id

    async def result(self, pdu: bytes) -> m.Result:
        await self.send(pdu)
        raw = await self.read()
        assert raw is not None, "the proxy closed the connection"
        return m.decode_result(raw)

    async def bind(self, authzid: str = "") -> m.Result:
        return await self.result(m.bind_request(self.mid(), authzid))

    async def whoami(self) -> str:
        result = await self.result(m.extended_request(self.mid(), m.WHO_AM_I))
        assert result.code == 0, result
        return (result.value or b"").decode()

    async def search(self, base: str, flt: str = "(objectClass=*)", attrs: Any = None) -> list[str]:
        """The DNs returned (the result code must be success or noSuchObject)."""
        request = search_operation(
            base, flt, 0, 0, attrs or ["mail"], 0, 0, False, True, True, None, None, False
        )
        mid = self.mid()
        await self.send(m._message(mid, "searchRequest", request))
        found: list[str] = []
        while True:
            raw = await self.read()
            assert raw is not None
            message = m._decode(raw)
            op = message["protocolOp"].getName()
            if op == "searchResEntry":
                found.append(str(message["protocolOp"][op]["object"]))
            elif op == "searchResDone":
                assert int(message["protocolOp"][op]["resultCode"]) in (0, 32)
                return found

    async def close(self) -> None:
        self.writer.transport.abort()


async def ldaps(port: int, ctx: ssl.SSLContext) -> Client:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost", ssl_handshake_timeout=15
    )
    return Client(reader, writer)


async def plain(port: int) -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return Client(reader, writer)


async def starttls(port: int, ctx: ssl.SSLContext) -> Client:
    client = await plain(port)
    result = await client.result(m.extended_request(1, m.START_TLS))
    assert result.code == 0 and result.op == "extendedResp", result
    await client.writer.start_tls(ctx, server_hostname="localhost", ssl_handshake_timeout=15)
    return client
