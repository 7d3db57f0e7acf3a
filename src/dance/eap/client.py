"""The client side of the verify daemon's protocol: one request, one reply (standard library only).

``dance-eap-verify`` (``dance.cli.eap_hook``) uses it for every certificate FreeRADIUS checks.
"""

from __future__ import annotations

import _socket  # the C module: socket.py would import selectors and enum, a few ms per check

from dance.eap.protocol import MAX_REPLY, decode_reply, encode_request

TIMEOUT = 8.0  # seconds for the whole exchange; FreeRADIUS kills the hook after 10


def ask(
    path: str, identity: str | None, cert_b64: str, timeout: float = TIMEOUT
) -> tuple[str, str]:
    """One request to the daemon at ``path``: ``("OK", name)``, ``("NO", why)``, ``("ERR", why)``.

    Raises OSError when no daemon answers, ProtocolError for a malformed exchange.
    """
    request = encode_request(identity, cert_b64)
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        conn.connect(path)
        conn.sendall(request)
        conn.shutdown(_socket.SHUT_WR)
        data = b""
        while len(data) <= MAX_REPLY:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        conn.close()
    return decode_reply(data)
