"""A small RadSec client over :func:`dance.tls.connect` (tests, the demo, ``dance`` users who
want to try a RadSec server): it presents a DANCE identity with ``dane_clientid``, sends
RADIUS requests signed with the RadSec secret and checks each response's authenticators."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable

from dance.radius.packet import (
    ACCESS_REQUEST,
    MESSAGE_AUTHENTICATOR,
    RADSEC_SECRET,
    USER_PASSWORD,
    Attribute,
    Packet,
    RadiusError,
    StreamFramer,
    check_response,
    hide_password,
    parse_packet,
    sign_request,
)

__all__ = ["RadsecClient", "access_request"]


def access_request(
    identifier: int,
    user: str,
    password: str | None = None,
    *,
    extra: Iterable[Attribute] = (),
    secret: bytes = RADSEC_SECRET,
    authenticator: bytes | None = None,
) -> bytes:
    """An Access-Request with User-Name, User-Password (hidden), ``extra`` and a
    Message-Authenticator (RFC 5080 2.2.2: always sent)."""
    ra = authenticator if authenticator is not None else os.urandom(16)
    attrs = [Attribute(1, user.encode())]
    if password is not None:
        plain = password.encode()
        padded = plain + bytes(-len(plain) % 16 or (16 if not plain else 0))
        attrs.append(Attribute(USER_PASSWORD, hide_password(padded, secret, ra)))
    attrs += list(extra)
    attrs.append(Attribute(MESSAGE_AUTHENTICATOR, bytes(16)))
    return sign_request(ACCESS_REQUEST, identifier, attrs, secret, ra)


class RadsecClient:
    """Requests over one RadSec connection (``reader``/``writer`` from ``dance.tls.connect``)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        secret: bytes = RADSEC_SECRET,
    ) -> None:
        self.reader, self.writer, self.secret = reader, writer, secret
        self._framer = StreamFramer()
        self._ready: list[bytes] = []

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_packet(self, timeout: float = 10.0) -> Packet | None:
        """The next packet from the server; None when it closes the connection."""
        while not self._ready:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                return None
            self._ready += self._framer.feed(data)
        return parse_packet(self._ready.pop(0))

    async def exchange(self, request: bytes, timeout: float = 10.0) -> Packet:
        """Send a request and return its checked response (RadiusError if the server closes
        the connection or answers badly)."""
        await self.send_raw(request)
        response = await self.read_packet(timeout)
        if response is None:
            raise RadiusError("closed", "the server closed the connection")
        check_response(response, parse_packet(request), self.secret)
        return response

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5.0)
        except (OSError, TimeoutError):
            self.writer.transport.abort()
