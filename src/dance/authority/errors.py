"""Typed errors of the embedded authority, with stable reason codes."""

from __future__ import annotations

__all__ = ["AuthorityError"]


class AuthorityError(Exception):
    """The authority cannot do what was asked.

    ``reason`` is a stable machine-readable code, for example ``zone-file`` (a master file
    cannot be read or parsed; the message names the line), ``key-file`` (a signing or TSIG
    key file is unusable), ``zone-exists``, ``no-zones``, ``non-loopback`` or ``bind``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.args[0]} [{self.reason}]"
