"""The DANCE front for an MQTT broker (seed architecture Example 4, device to cloud).

TLS 1.3 with ``dane_clientid`` is terminated by :func:`dance.tls.serve`; the handler only runs for
an authenticated client. It reads the client's first packet, which must be a CONNECT (parsed
strictly by :mod:`dance.mqtt.codec`), replaces its username with the authenticated ClientName and
drops any password, and only then connects to the broker (plain TCP on loopback) and relays.

Client to broker, every later packet is framed by the codec: a Remaining Length over the limit,
a second CONNECT, a reserved packet type or a stream ending inside a packet closes both sides.
Broker to client, bytes are copied as they come (the broker is trusted). Each refusal is counted
by reason in ``MQTTProxy.stats.refused``; a refusal before the CONNECT is accepted never opens a
broker connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dance.auth import Authenticator
from dance.identity import Identity
from dance.mqtt.codec import (
    CONNECT,
    DEFAULT_MAX_REMAINING,
    MQTTError,
    PacketReader,
    encode_connect,
    parse_connect,
)
from dance.service.relay import RefusalStats, open_connection_within
from dance.tls.bridge import DEFAULT_CODEPOINT, TLSStats
from dance.tls.server import ClientGone, DanceServer, forget, serve, until_client_leaves

__all__ = ["MQTTProxy", "MQTTProxyConfig", "MQTTProxyStats", "start_mqtt_proxy"]

log = logging.getLogger(__name__)
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class MQTTProxyConfig:
    broker: tuple[str, int]
    max_remaining: int = DEFAULT_MAX_REMAINING
    connect_timeout: float = 10.0  # time for the client's CONNECT to arrive
    broker_timeout: float = 5.0
    close_timeout: float = 5.0

    def __post_init__(self) -> None:
        for label, seconds in (
            ("connect_timeout", self.connect_timeout),
            ("broker_timeout", self.broker_timeout),
            ("close_timeout", self.close_timeout),
        ):
            if not seconds > 0:
                raise ValueError(f"{label} must be positive, not {seconds!r}")
        if not 0 < self.max_remaining <= 268_435_455:
            raise ValueError(f"max_remaining out of range: {self.max_remaining!r}")


class MQTTProxyStats(RefusalStats):
    def __init__(self) -> None:
        self.connects = 0  # CONNECTs accepted and forwarded
        self.broker_connections = 0
        self.broker_failures = 0
        self.usernames_replaced = 0  # the client had sent a username (now the ClientName)
        self.passwords_dropped = 0
        self.packets_relayed = 0  # client to broker, after the CONNECT
        self.refused: dict[str, int] = {}


async def _close(writer: asyncio.StreamWriter, timeout: float) -> None:
    closed = False
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), timeout)
        closed = True
    except (OSError, TimeoutError):
        pass
    finally:
        if not closed:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


class MQTTProxy:
    """The connection handler for :func:`dance.tls.serve`."""

    def __init__(self, config: MQTTProxyConfig) -> None:
        self.config = config
        self.stats = MQTTProxyStats()

    async def _first_packet(
        self, reader: asyncio.StreamReader, framer: PacketReader
    ) -> tuple[bytes, list[bytes]]:
        """The rewritten CONNECT, and any complete packets that came with it (not yet checked)."""
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                framer.eof()
                raise MQTTError("no-connect", "the client closed before a CONNECT")
            packets = framer.feed(data)
            if packets:
                break
        first, rest = packets[0], packets[1:]
        if first.type != CONNECT:
            raise MQTTError("not-connect", f"first packet has type {first.type}")
        return first.raw, [p.raw for p in rest]

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, identity: Identity
    ) -> None:
        cfg = self.config
        framer = PacketReader(cfg.max_remaining)
        name = identity.identity
        try:
            raw, early = await until_client_leaves(
                writer, asyncio.wait_for(self._first_packet(reader, framer), cfg.connect_timeout)
            )
            # The packets that came in the same read are checked like any later one.
            follow = PacketReader(cfg.max_remaining)
            checked = []
            for packet_raw in early:
                for p in follow.feed(packet_raw):
                    if p.type == CONNECT:
                        raise MQTTError("second-connect")
                    checked.append(p.raw)
            connect = parse_connect(PacketReader(cfg.max_remaining).feed(raw)[0])
            rewritten = encode_connect(connect.as_identity(name))
        except MQTTError as exc:
            self.stats.refuse(exc.reason)
            log.info("refused %s before CONNECT: %s", name, exc)
            return
        except ClientGone:
            self.stats.refuse("client-gone")
            return
        except TimeoutError:
            self.stats.refuse("connect-timeout")
            log.info("refused %s: no CONNECT within %.0f s", name, cfg.connect_timeout)
            return
        except (OSError, asyncio.IncompleteReadError):
            self.stats.refuse("client-gone")
            return
        if connect.username is not None:
            self.stats.usernames_replaced += 1
        if connect.password is not None:
            self.stats.passwords_dropped += 1
        try:
            b_reader, b_writer = await until_client_leaves(
                writer,
                open_connection_within(*cfg.broker, cfg.broker_timeout),
            )
        except ClientGone:
            self.stats.refuse("client-gone")
            return
        except (OSError, TimeoutError) as exc:
            self.stats.broker_failures += 1
            log.warning("broker %s:%d unreachable: %r", *cfg.broker, exc)
            return
        self.stats.broker_connections += 1
        self.stats.connects += 1
        log.info("MQTT %s: CONNECT level %d relayed as username %s", name, connect.level, name)
        try:
            b_writer.write(rewritten + b"".join(checked))
            self.stats.packets_relayed += len(checked)
            up = asyncio.ensure_future(self._upstream(reader, b_writer, follow, name))
            down = asyncio.ensure_future(self._downstream(b_reader, writer))
            try:
                await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                up.cancel()
                down.cancel()
                await asyncio.wait({up, down})
                for task in (up, down):
                    if not task.cancelled() and task.exception() is not None:
                        log.debug("relay copy ended: %r", task.exception())
        finally:
            await _close(b_writer, cfg.close_timeout)
            for stream in (reader, b_reader):
                forget(stream.exception())

    async def _upstream(
        self,
        reader: asyncio.StreamReader,
        b_writer: asyncio.StreamWriter,
        framer: PacketReader,
        name: str,
    ) -> None:
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    framer.eof()
                    return
                packets = framer.feed(data)
                for p in packets:
                    if p.type == CONNECT:
                        raise MQTTError("second-connect")
                if packets:
                    b_writer.write(b"".join(p.raw for p in packets))
                    self.stats.packets_relayed += len(packets)
                    await b_writer.drain()
        except MQTTError as exc:
            self.stats.refuse(exc.reason)
            log.info("closing %s: %s", name, exc)
        except (OSError, asyncio.IncompleteReadError):
            pass

    @staticmethod
    async def _downstream(b_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await b_reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass


async def start_mqtt_proxy(
    host: str | None,
    port: int,
    *,
    config: MQTTProxyConfig,
    cert: str | Path,
    key: str | Path,
    authenticator: Authenticator,
    codepoint: int = DEFAULT_CODEPOINT,
    stats: TLSStats | None = None,
    **limits: Any,
) -> tuple[DanceServer, MQTTProxy]:
    """Start the front; returns the DANCE server (``.stats``, ``.port``) and the MQTT relay.
    ``limits``: the keyword arguments of :func:`dance.tls.serve`."""
    proxy = MQTTProxy(config)
    server = await serve(
        proxy.handle,
        host,
        port,
        cert=cert,
        key=key,
        authenticator=authenticator,
        codepoint=codepoint,
        stats=stats,
        **limits,
    )
    return server, proxy
