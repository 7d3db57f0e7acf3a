"""The EAP-TLS verify daemon: answers ``dance-eap-verify`` over a Unix socket with a warm cache.

FreeRADIUS runs its EAP-TLS ``verify { client = ... }`` command once per client certificate, as
a new process; starting Python and importing the validator every time costs a few hundred
milliseconds. The daemon keeps one `Authenticator` (its decision cache) over one `TLSAResolver`
(its validated DNS cache) for all requests; the hook only reads the certificate file and asks.

Limits (`dance.service.linedaemon`): at most ``max_connections`` open requests (when full, the
connection waiting longest for its line is closed to make room), one request line of at most
`MAX_REQUEST` bytes sent within ``line_timeout`` seconds, and ``request_timeout`` seconds for the
whole exchange. The socket file is created with ``socket_mode`` (default
0660: give its group to the account FreeRADIUS runs as, ``freerad`` on Debian); anyone who can
reach it learns only whether a certificate's key is published for an allowed name.

Revocation: a removed TLSA record stops authentications when the cached answer expires (its TTL,
bounded by the signatures' validity); ``flush()`` (SIGHUP for the command) applies it at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dance.auth import AllowList, Authenticator
from dance.dns import TLSAResolver
from dance.eap.core import check_certificate
from dance.eap.protocol import MAX_REQUEST, ProtocolError, decode_request, encode_reply
from dance.service.linedaemon import LineDaemon, LineDaemonStats
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
    line_timeout: float = 2.0


@dataclass
class VerifyDaemonStats(LineDaemonStats):
    reasons: dict[str, int] = field(default_factory=dict)  # refusals by reason

    def refuse(self, reason: str) -> None:
        self.refused += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


class VerifyDaemon(LineDaemon):
    """Serve certificate decisions on a Unix socket; ``async with`` or ``start()``/``close()``."""

    stats: VerifyDaemonStats
    log = log
    label = "eap verify daemon"

    def __init__(
        self,
        config: VerifyDaemonConfig,
        resolver_factory: Callable[[], TLSAResolver],
        observer: Observer | None = None,
    ) -> None:
        self.stats = VerifyDaemonStats()
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
        self.authenticator: Authenticator | None = None

    def _started(self, resolver: TLSAResolver) -> None:
        self.authenticator = Authenticator(resolver, allow=self.config.allow)

    def flush(self) -> None:
        """Forget every cached DNS answer and decision (SIGHUP): a revocation applies at once."""
        super().flush()
        if self.authenticator is not None:
            self.authenticator.flush()

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
        self._record(
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
