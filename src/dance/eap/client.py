"""The client side of the verify daemon's protocol: one request, one reply (standard library only).

``dance-eap-verify`` (``dance.cli.eap_hook``) uses it for every certificate FreeRADIUS checks.
"""

from __future__ import annotations

from dance.eap.protocol import MAX_REPLY, decode_reply, encode_request
from dance.service.lineproto import ask_line

TIMEOUT = 8.0  # seconds for the whole exchange; FreeRADIUS kills the hook after 10


def ask(
    path: str, identity: str | None, cert_b64: str, timeout: float = TIMEOUT
) -> tuple[str, str]:
    """One request to the daemon at ``path``: ``("OK", name)``, ``("NO", why)``, ``("ERR", why)``.

    Raises OSError when no daemon answers, ProtocolError for a malformed exchange.
    """
    request = encode_request(identity, cert_b64)
    return decode_reply(ask_line(path, request, MAX_REPLY, timeout))
