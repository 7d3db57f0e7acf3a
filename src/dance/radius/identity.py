"""The RADIUS attribute that carries the authenticated ClientName to the RADIUS server.

By default a Vendor-Specific attribute of the documentation enterprise number 32473 (RFC 5612),
vendor type 1, a string: ``DANCE-Client-Name`` in the dictionary shipped in docs/radsec.md. An
operator may choose another vendor and type (``VENDOR:TYPE``) or a standard attribute type
(``TYPE``) that their server's policy reads. Clients never get to send it: a request that carries
the attribute (for a vendor: any attribute of that vendor) is refused as ``spoofed-identity``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dance.radius.packet import (
    EAP_MESSAGE,
    MESSAGE_AUTHENTICATOR,
    USER_PASSWORD,
    VENDOR_SPECIFIC,
    Attribute,
    Packet,
    RadiusError,
)

__all__ = ["DEFAULT_IDENTITY_ATTRIBUTE", "IdentityAttribute"]

DOCUMENTATION_PEN = 32473
# attributes whose meaning the proxy itself relies on: never the identity's carrier
_RESERVED = {1, USER_PASSWORD, 3, VENDOR_SPECIFIC, 33, EAP_MESSAGE, MESSAGE_AUTHENTICATOR}


@dataclass(frozen=True)
class IdentityAttribute:
    """``vendor`` None: the standard attribute ``type``; otherwise that vendor's ``type``."""

    vendor: int | None
    type: int

    def __post_init__(self) -> None:
        if not 1 <= self.type <= 255:
            raise ValueError(f"attribute type out of range: {self.type}")
        if self.vendor is None and self.type in _RESERVED:
            raise ValueError(f"attribute type {self.type} cannot carry the identity")
        if self.vendor is not None and not 1 <= self.vendor < 2**24:
            raise ValueError(f"vendor out of range: {self.vendor}")

    @classmethod
    def parse(cls, text: str) -> IdentityAttribute:
        """``TYPE`` or ``VENDOR:TYPE`` (decimal)."""
        parts = text.split(":")
        if len(parts) > 2 or not all(p.isdigit() and p.isascii() for p in parts):
            raise ValueError(f"not TYPE or VENDOR:TYPE: {text!r}")
        if len(parts) == 1:
            return cls(None, int(parts[0]))
        return cls(int(parts[0]), int(parts[1]))

    def __str__(self) -> str:
        return str(self.type) if self.vendor is None else f"{self.vendor}:{self.type}"

    def encode(self, name: str) -> Attribute:
        value = name.encode("utf-8")
        limit = 253 if self.vendor is None else 247
        if not 1 <= len(value) <= limit:
            raise RadiusError("identity-too-long", f"{len(value)} octets")
        if self.vendor is None:
            return Attribute(self.type, value)
        sub = bytes((self.type, len(value) + 2)) + value
        return Attribute(VENDOR_SPECIFIC, self.vendor.to_bytes(4, "big") + sub)

    def present(self, packet: Packet) -> bool:
        """Whether a client's request carries the attribute (or anything of its vendor)."""
        if self.vendor is None:
            return bool(packet.get(self.type))
        return any(int.from_bytes(v[:4], "big") == self.vendor for v in packet.get(VENDOR_SPECIFIC))

    def values(self, packet: Packet) -> list[str]:
        """The names carried (for tests and logs)."""
        if self.vendor is None:
            raw = packet.get(self.type)
        else:
            raw = [v for t, v in packet.vendor_attributes(self.vendor) if t == self.type]
        return [v.decode("utf-8", "replace") for v in raw]


DEFAULT_IDENTITY_ATTRIBUTE = IdentityAttribute(DOCUMENTATION_PEN, 1)
