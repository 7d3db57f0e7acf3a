"""The SSH key daemon: answers ``dance-ssh-keys`` over a Unix socket with a warm DNS cache.

sshd runs its ``AuthorizedKeysCommand`` once per offered key; starting Python and importing the
validator every time costs a few hundred milliseconds. The daemon keeps one `TLSAResolver` (and so
its validated cache) for all requests; each request gets an `Authenticator` whose allow-list is the
account's names, read from the names files at that moment (changes apply at once).

Limits (`dance.service.linedaemon`): at most ``max_connections`` open requests (when full, the
connection waiting longest for its line is closed to make room, so idle or slowloris clients
cannot starve sshd), one request line of at most 16 KiB sent within ``line_timeout`` seconds, and
``request_timeout`` seconds for the whole exchange. The socket file is created with
``socket_mode`` (default 0666, in a directory the operator controls, such as ``/run/dance``):
anyone who can reach it learns only whether a public key is published for an account's public
DNS names.

Revocation: a removed TLSA record stops logins when the cached answer expires (its TTL, bounded by
the signatures' validity), as with any validating resolver; ``flush()`` (SIGHUP for the command)
applies it at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from dance.auth import Authenticator
from dance.dns import TLSAResolver
from dance.identity import Identity
from dance.service.linedaemon import LineDaemon, LineDaemonStats
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
    line_timeout: float = 2.0


class KeyDaemonStats(LineDaemonStats):
    """The key daemon's counters: those of every line daemon (refusals are not split by reason)."""


class KeyDaemon(LineDaemon):
    """Serve key decisions on a Unix socket; ``async with`` or ``start()``/``close()``."""

    stats: KeyDaemonStats
    log = log
    label = "ssh key daemon"

    def __init__(
        self,
        config: KeyDaemonConfig,
        resolver_factory: Callable[[], TLSAResolver],
        observer: Observer | None = None,
    ) -> None:
        self.stats = KeyDaemonStats()
        super().__init__(
            socket_path=config.socket_path,
            socket_mode=config.socket_mode,
            max_connections=config.max_connections,
            request_timeout=config.request_timeout,
            line_timeout=config.line_timeout,
            max_request=MAX_REQUEST,
            resolver_factory=resolver_factory,
            stats=self.stats,
            observer=observer,
        )
        self.config = config

    async def answer(self, line: bytes, peer: str = "-") -> bytes:
        """The reply to one request line (never raises)."""
        started = time.monotonic()
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
