"""The authority's limits, and which addresses count as loopback (shared by its listeners)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["Limits", "is_loopback"]


@dataclass(frozen=True)
class Limits:
    """Hardening knobs (defaults suit a laptop; tests lower them)."""

    rate: float = 200.0  # messages per second per client address (0 = no limit)
    burst: float = 400.0
    rate_action: str = "drop"  # or "refused"
    max_clients: int = 10000  # rate-limit table size
    max_message_size: int = 65535  # larger messages are dropped (UDP) / close (TCP)
    max_tcp_connections: int = 64  # TCP and DNS-over-TLS connections in all
    max_tcp_per_client: int = 16  # ... from one address
    tcp_idle_timeout: float = 10.0  # each read of a message, each write of a reply
    tcp_lifetime: float = 120.0  # the whole connection, whatever it does
    tcp_evict_after: float = 1.0  # at the cap, a connection without progress this long yields
    tcp_write_buffer: int = 65536  # replies buffered per connection before waiting for the peer
    max_pending_updates: int = 256
    update_timeout: float = 30.0  # a TCP client waits this long for its update to be applied
    max_transfers: int = 10  # concurrent zone transfers
    max_replay_entries: int = 100_000  # remembered TSIG-signed updates (see ReplayCache)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
