"""The EAP-TLS verify daemon: answers ``dance-eap-verify`` over a Unix socket with a warm cache.

FreeRADIUS runs its EAP-TLS ``verify { client = ... }`` command once per client certificate, as
a new process; starting Python and importing the validator every time costs a few hundred
milliseconds. The daemon keeps one `Authenticator` (its decision cache) over one `TLSAResolver`
(its validated DNS cache) for all requests; the hook only reads the certificate file and asks.

Limits: at most ``max_connections`` open requests (more are closed at once), one request line of
at most `MAX_REQUEST` bytes, and ``request_timeout`` seconds for the whole exchange (a client that
never sends or never reads is cut off). The socket file is created with ``socket_mode`` (default
0660: give its group to the account FreeRADIUS runs as, ``freerad`` on Debian); anyone who can
reach it learns only whether a certificate's key is published for an allowed name.

Revocation: a removed TLSA record stops authentications when the cached answer expires (its TTL,
bounded by the signatures' validity); ``flush()`` (SIGHUP for the command) applies it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dance.auth import AllowList, Authenticator
from dance.dns import TLSAResolver
from dance.eap.core import check_certificate
from dance.eap.protocol import MAX_REQUEST, ProtocolError, decode_request, encode_reply
from dance.service.observe import Observer

log = logging.getLogger("dance.eap")

__all__ = ["VerifyDaemon", "VerifyDaemonConfig"]


@dataclass(frozen=True)
class VerifyDaemonConfig:
    socket_path: str
    allow: AllowList
    require_identity: bool = True
    socket_mode: int = 0o660
    max_connections: int = 64
    request_timeout: float = 8.0


@dataclass
class VerifyDaemonStats:
    requests: int = 0
    accepted: int = 0
    refused: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # refusals by reason
    errors: dict[str, int] = field(default_factory=dict)  # requests not decided

    def refuse(self, reason: str) -> None:
        self.refused += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1


class VerifyDaemon:
    """Serve certificate decisions on a Unix socket; ``async with`` or ``start()``/``close()``."""

    def __init__(
        self,
        config: VerifyDaemonConfig,
        resolver_factory: Callable[[], TLSAResolver],
        observer: Observer | None = None,
    ) -> None:
        self.config = config
        self.observer = observer
        self._resolver_factory = resolver_factory
        self._resolver: TLSAResolver | None = None
        self.authenticator: Authenticator | None = None
        self._server: asyncio.AbstractServer | None = None
        self._open = 0
        self.stats = VerifyDaemonStats()

    @property
    def resolver(self) -> TLSAResolver | None:
        return self._resolver

    async def start(self) -> None:
        path = Path(self.config.socket_path)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise OSError(f"{path} exists and is not a socket")
            path.unlink()  # a stale socket of an earlier run
        self._resolver = self._resolver_factory()
        await self._resolver.__aenter__()
        self.authenticator = Authenticator(self._resolver, allow=self.config.allow)
        self._server = await asyncio.start_unix_server(
            self._handle, path=str(path), limit=MAX_REQUEST
        )
        os.chmod(path, self.config.socket_mode)
        log.info("eap verify daemon listening on %s", path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._resolver is not None:
            await self._resolver.__aexit__(None, None, None)
            self._resolver = None
        with contextlib.suppress(OSError):
            Path(self.config.socket_path).unlink()

    def flush(self) -> None:
        """Forget every cached DNS answer and decision (SIGHUP): a revocation applies at once."""
        if self._resolver is not None:
            self._resolver.flush()
        if self.authenticator is not None:
            self.authenticator.flush()
        log.info("eap verify daemon: DNS cache flushed")

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> VerifyDaemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= self.config.max_connections:
            self.stats.error("too-many-connections")
            writer.close()
            return
        self._open += 1
        try:
            async with asyncio.timeout(self.config.request_timeout):
                try:
                    line = await reader.readuntil(b"\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    self.stats.error("malformed-request")
                    return
                reply = await self.answer(line, _peer(writer))
                writer.write(reply)
                await writer.drain()
        except TimeoutError:
            self.stats.error("timeout")
        except (ConnectionError, OSError):
            self.stats.error("client-gone")
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def answer(self, line: bytes, peer: str = "-") -> bytes:
        """The reply to one request line (never raises)."""
        started = time.monotonic()
        self.stats.requests += 1
        try:
            identity, der = decode_request(line)
        except ProtocolError as exc:
            self.stats.error("malformed-request")
            log.info("malformed request from %s: %s", peer, exc)
            return encode_reply("ERR", "malformed-request")
        assert self.authenticator is not None
        try:
            decision = await check_certificate(
                self.authenticator, der, identity, require_identity=self.config.require_identity
            )
        except Exception as exc:  # fail closed, keep serving
            log.error("internal error, certificate refused: %s: %s", type(exc).__name__, exc)
            self.stats.error("internal")
            return encode_reply("ERR", "internal-error")
        shown = decision.client_name or "-"
        if self.observer is not None:
            self.observer.record(
                peer, shown, "accepted" if decision.accepted else "rejected",
                decision.reason, decision.dns_outcome, started,
            )  # fmt: skip
        if decision.accepted and decision.client_name:
            self.stats.accepted += 1
            log.info("accepted EAP-TLS certificate of %s (identity %s)", shown, identity or "-")
            return encode_reply("OK", decision.client_name)
        self.stats.refuse(decision.reason)
        log.info(
            "refused EAP-TLS certificate (name %s, identity %s): %s: %s",
            shown, identity or "-", decision.reason, decision.detail,
        )  # fmt: skip
        return encode_reply("NO", decision.reason)


def _peer(writer: asyncio.StreamWriter) -> str:
    """Who asked: the connecting process's uid and pid (SO_PEERCRED), for the access log."""
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
    except (OSError, AttributeError, struct.error):
        return "unix"
    return f"uid={uid},pid={pid}"
