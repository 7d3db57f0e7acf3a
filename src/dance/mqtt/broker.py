"""A Mosquitto configuration for the broker behind ``dance mqtt-proxy`` (tests, demo, docs).

The broker listens on loopback only; the front is its only client that devices can reach. Every
device is confined by ACL patterns on its username, which the front sets to the authenticated
ClientName: ``pattern readwrite devices/%u/#``. ``use_username_as_clientid`` makes the client
identifier the username too, so a device can neither take over another device's session nor
connect without a username (Mosquitto 2.0 refuses that: "not authorised").
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["acl_text", "mosquitto_config"]


def acl_text(readers: Iterable[str] = (), prefix: str = "devices") -> str:
    """An ACL file: each device reads and writes ``PREFIX/<ClientName>/#`` only; each of
    ``readers`` (back-end applications connecting on loopback) reads ``PREFIX/#``."""
    lines = []
    for user in readers:
        if not user or any(c.isspace() for c in user):
            raise ValueError(f"bad reader user name {user!r}")
        lines += [f"user {user}", f"topic read {prefix}/#", ""]
    lines += [f"pattern readwrite {prefix}/%u/#", ""]
    return "\n".join(lines)


def mosquitto_config(port: int, acl_file: str | Path, log_file: str | Path) -> str:
    """A mosquitto.conf (2.0) for a broker on 127.0.0.1:``port`` behind the DANCE front."""
    lines = [
        "per_listener_settings false",
        f"listener {int(port)} 127.0.0.1",
        # Only reachable on loopback, where the front is the clients' only way in: the username
        # the front sets is the identity; there is no password to check.
        "allow_anonymous true",
        "use_username_as_clientid true",
        f"acl_file {acl_file}",
        f"log_dest file {log_file}",
        "log_type all",
        "connection_messages true",
        "persistence false",
    ]
    if os.geteuid() == 0:  # else Mosquitto drops to user "mosquitto", who cannot write the log
        lines.append("user root")
    return "\n".join(lines) + "\n"
