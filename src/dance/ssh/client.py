"""The client side of the key daemon's protocol: one request, one reply (standard library only).

``dance-ssh-keys`` (``dance.cli.ssh_hook``) uses it on every key sshd asks about.
"""

from __future__ import annotations

from dance.service.lineproto import ask_line
from dance.ssh.protocol import MAX_REPLY, decode_reply, encode_request

TIMEOUT = 10.0  # seconds for the whole exchange; the daemon bounds its DNS work below this


def ask(path: str, user: str, keytype: str, blob: str, timeout: float = TIMEOUT) -> tuple[str, str]:
    """One request to the daemon at ``path``: ``("OK", line)``, ``("NO", "")`` or ``("ERR", why)``.

    Raises OSError when no daemon answers, ProtocolError for a malformed exchange.
    """
    request = encode_request(user, keytype, blob)
    return decode_reply(ask_line(path, request, MAX_REPLY, timeout))
