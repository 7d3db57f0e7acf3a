"""The SSH key daemon: answers ``dance-ssh-keys`` over a Unix socket with a warm DNS cache.

sshd runs its ``AuthorizedKeysCommand`` once per offered key; starting Python and importing the
validator every time costs a few hundred milliseconds. The daemon keeps one `TLSAResolver` (and so
its validated cache) for all requests; each request gets an `Authenticator` whose allow-list is the
account's names, read from the names files at that moment (changes apply at once).

Limits: at most ``max_connections`` open requests (more are closed at once), one request line of
at most 16 KiB, and ``request_timeout`` seconds for the whole exchange (a client that never sends
or never reads is cut off). The socket file is created with ``socket_mode`` (default 0666, in a
directory the operator controls, such as ``/run/dance``): anyone who can reach it learns only
whether a public key is published for an account's public DNS names.

Revocation: a removed TLSA record stops logins when the cached answer expires (its TTL, bounded by
the signatures' validity), as with any validating resolver; ``flush()`` (SIGHUP for the command)
applies it at once.
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

from dance.auth import Authenticator
from dance.dns import TLSAResolver
from dance.identity import Identity
from dance.service.observe import Observer
from dance.ssh.core import (
    NamesFileError,
    SSHKeyError,
    authorize,
    authorized_keys_line,
    names_for_user,
    ssh_key_to_spki,
)
from dance.ssh.protocol import MAX_REQUEST, ProtocolError, decode_request, encode_reply

log = logging.getLogger("dance.ssh")

__all__ = ["KeyDaemon", "KeyDaemonConfig"]


@dataclass(frozen=True)
class KeyDaemonConfig:
    socket_path: str
    names_file: str | None = "/etc/dance/ssh-authorized-names"
    user_files: bool = False
    socket_mode: int = 0o666
    max_connections: int = 64
    request_timeout: float = 8.0


@dataclass
class KeyDaemonStats:
    requests: int = 0
    accepted: int = 0
    refused: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1


class KeyDaemon:
    """Serve key decisions on a Unix socket; ``async with`` or ``start()``/``close()``."""

    def __init__(
        self,
        config: KeyDaemonConfig,
        resolver_factory: Callable[[], TLSAResolver],
        observer: Observer | None = None,
    ) -> None:
        self.config = config
        self.observer = observer
        self._resolver_factory = resolver_factory
        self._resolver: TLSAResolver | None = None
        self._server: asyncio.AbstractServer | None = None
        self._open = 0
        self.stats = KeyDaemonStats()

    @property
    def resolver(self) -> TLSAResolver | None:
        """The shared resolver (its validated cache), while the daemon runs."""
        return self._resolver

    async def start(self) -> None:
        path = Path(self.config.socket_path)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise OSError(f"{path} exists and is not a socket")
            path.unlink()  # a stale socket of an earlier run
        self._resolver = self._resolver_factory()
        await self._resolver.__aenter__()
        self._server = await asyncio.start_unix_server(
            self._handle, path=str(path), limit=MAX_REQUEST
        )
        os.chmod(path, self.config.socket_mode)
        log.info("ssh key daemon listening on %s", path)

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
        """Forget every cached DNS answer (SIGHUP): a revocation then applies at once."""
        if self._resolver is not None:
            self._resolver.flush()
            log.info("ssh key daemon: DNS cache flushed")

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> KeyDaemon:
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
        reply = await self._answer(line, peer, started)
        return reply

    def _record(
        self, peer: str, name: str, outcome: str, reason: str, dns: str, started: float
    ) -> None:
        if self.observer is not None:
            self.observer.record(peer, name, outcome, reason, dns, started)

    async def _answer(self, line: bytes, peer: str, started: float) -> bytes:
        self.stats.requests += 1
        try:
            user, keytype, blob = decode_request(line)
        except ProtocolError as exc:
            self.stats.error("malformed-request")
            return encode_reply(None, f"malformed-request: {exc}")
        try:
            key = ssh_key_to_spki(keytype, blob)
        except SSHKeyError as exc:
            log.info("key offered for %r refused: %s: %s", user, exc.reason, exc)
            self.stats.refused += 1
            self._record(peer, f"user={user}", "rejected", exc.reason, "-", started)
            return encode_reply(None)
        try:
            names = names_for_user(
                user, names_file=self.config.names_file, user_files=self.config.user_files
            )
        except NamesFileError as exc:
            log.error("names file unusable (%s): %s; refusing every key", exc.reason, exc)
            self.stats.error("names-file")
            return encode_reply(None, f"names-file-{exc.reason}")
        if not names:
            log.info("no DANCE names authorized for account %r", user)
            self.stats.refused += 1
            self._record(peer, f"user={user}", "rejected", "not-allowed", "-", started)
            return encode_reply(None)
        assert self._resolver is not None
        try:
            result = await authorize(
                Authenticator(self._resolver, allow=names), user, None, key, names
            )
        except Exception as exc:  # fail closed, keep serving
            log.error("internal error, key refused: %s: %s", type(exc).__name__, exc)
            self.stats.error("internal")
            return encode_reply(None, "internal-error")
        if isinstance(result, Identity):
            log.info(
                "accepted %s %s for %r as %s",
                key.keytype,
                key.fingerprint,
                user,
                result.client_name,
            )
            self.stats.accepted += 1
            self._record(peer, result.client_name, "accepted", "-", "secure", started)
            return encode_reply(authorized_keys_line(key, result.client_name))
        log.info("refused %s %s for %r: %s", key.keytype, key.fingerprint, user, result)
        self.stats.refused += 1
        self._record(
            peer, result.client_name or f"user={user}", "rejected", result.reason.value,
            result.dns_outcome or "-", started,
        )  # fmt: skip
        return encode_reply(None)


def _peer(writer: asyncio.StreamWriter) -> str:
    """Who asked: the connecting process's uid and pid (SO_PEERCRED), for the access log."""
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
    except (OSError, AttributeError, struct.error):
        return "unix"
    return f"uid={uid},pid={pid}"
