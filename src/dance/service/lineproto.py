"""What the one-line protocols of the line daemons (`dance.service.linedaemon`) share: the framing
of a request line and the hook's one blocking exchange. Standard library only (the C ``_socket``
module, not ``socket.py``): the hooks (``dance-ssh-keys``, ``dance-eap-verify``) import it on their
fast path, once per key or certificate.

A request is one line: ``MAGIC <TAB> field <TAB> ... <LF>``, ASCII, with the number of fields the
protocol fixes. Each protocol (`dance.ssh.protocol`, `dance.eap.protocol`) checks its own fields
and encodes its own replies.
"""

from __future__ import annotations

import _socket  # the C module: socket.py would import selectors and enum, a few ms per hook run

__all__ = ["ProtocolError", "ask_line", "printable", "split_request"]


class ProtocolError(ValueError):
    """A request, reply or file that does not follow a line daemon's protocol."""


def printable(text: str) -> bool:
    """Whether ``text`` is a usable field: printable ASCII without spaces or tabs, not empty."""
    return bool(text) and all(33 <= ord(c) <= 126 for c in text)


def split_request(line: bytes, magic: str, fields: int, max_request: int) -> list[str]:
    """The ``fields`` tab-separated fields after ``magic`` in one request line (with its LF).

    Fields are not checked here (each protocol has its own rules); anything else is refused."""
    if len(line) > max_request or not line.endswith(b"\n"):
        raise ProtocolError("request too long or not terminated")
    try:
        text = line[:-1].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("request is not ASCII") from None
    parts = text.split("\t")
    if len(parts) != fields + 1 or parts[0] != magic:
        raise ProtocolError(f"not a {magic} request")
    return parts[1:]


def ask_line(path: str, request: bytes, max_reply: int, timeout: float) -> bytes:
    """Send ``request`` to the daemon at the Unix socket ``path`` and read its reply until it
    closes (at most a little over ``max_reply`` bytes: the caller's decoder refuses more).

    Raises OSError when no daemon answers within ``timeout`` seconds."""
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        conn.connect(path)
        conn.sendall(request)
        conn.shutdown(_socket.SHUT_WR)
        data = b""
        while len(data) <= max_reply:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        conn.close()
    return data
