"""Small pieces shared by the adapters' relays (`dance.ldap`, `dance.mqtt`, `dance.radius` and
`dance.smtp` proxies): refusal counters, and the session slots of a listener that admits its own
connections (LDAP StartTLS, SMTP) instead of leaving that to `dance.tls.DanceServer`."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["RefusalStats", "SessionSlots", "host_port", "open_connection_within", "peer_host"]


async def open_connection_within(
    host: str, port: int, timeout: float, **kwargs: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` bounded by ``timeout`` (``TimeoutError``), in the caller's
    task. Not ``asyncio.wait_for``: in Python 3.11 it runs the connect in a task of its own, and
    when it is cancelled just as that connect completes (a client leaving while its backend
    connection is made: every ``openssl s_time -new`` connection) the connection is dropped
    unclosed, left to the garbage collector. Here a cancellation reaches asyncio's own connect,
    which closes its socket."""
    async with asyncio.timeout(timeout):
        return await asyncio.open_connection(host, port, **kwargs)


class RefusalStats:
    """A mixin for a relay's counters: ``refused`` counts refusals by reason, and
    :meth:`snapshot` copies every counter (each dict of counts too) for the metrics."""

    refused: dict[str, int]

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, dict) else v for k, v in vars(self).items()}


def peer_host(peername: object) -> str:
    """The address part of a socket's ``peername`` (``unknown`` without one)."""
    return str(peername[0]) if isinstance(peername, tuple) and peername else "unknown"


def host_port(peername: object) -> str:
    """``HOST:PORT`` of a socket's ``peername`` (``unknown`` without one), for the access log."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return "unknown"


class SessionSlots:
    """The sessions of a listener: at most ``max_connections`` at once and ``max_per_address``
    from one address. Each admitted session's task is held (a strong reference: it is never
    collected while it runs) until it releases its slot, so that :meth:`drain` can wait for
    the sessions in progress and cut the rest."""

    def __init__(self, max_connections: int, max_per_address: int) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.active = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self._per_address: dict[str, int] = {}

    def admit(self, peer: str) -> str | None:
        """Take a slot for the running task's session from ``peer``; or, taking nothing, the
        reason it is refused: ``max-connections`` or ``per-address``."""
        if self.active >= self.max_connections:
            return "max-connections"
        if self._per_address.get(peer, 0) >= self.max_per_address:
            return "per-address"
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.active += 1
        self._per_address[peer] = self._per_address.get(peer, 0) + 1
        return None

    def release(self, peer: str) -> None:
        """Give back the slot the running task took with :meth:`admit`."""
        self.active -= 1
        left = self._per_address.get(peer, 1) - 1
        if left > 0:
            self._per_address[peer] = left
        else:
            self._per_address.pop(peer, None)
        task = asyncio.current_task()
        if task is not None:
            self.tasks.discard(task)

    async def drain(self, timeout: float) -> int:
        """Let the sessions in progress finish for ``timeout`` seconds, then cancel those left
        and wait for them; returns how many were cut."""
        tasks = list(self.tasks)
        if tasks and timeout > 0:
            await asyncio.wait(tasks, timeout=timeout)
        left = [t for t in tasks if not t.done()]
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
        return len(left)
