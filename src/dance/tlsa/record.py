"""The TLSA record value type (RFC 6698 section 2, RFC 7218 acronyms).

Parsing is strict about syntax (a record that cannot be read raises `MalformedRecord`) and
separate from usability: a syntactically readable record whose data length does not fit its
matching type is representable, and `TLSARecord.well_formed` says so, because RFC 7671 wants such
records *discarded* from a validated RRset rather than failing the whole set.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = [
    "MalformedRecord",
    "MatchingType",
    "Selector",
    "TLSARecord",
    "Usage",
    "parse_field",
]

TLSA_RDTYPE = 52
MAX_DATA_LENGTH = 65535 - 3


class Usage(enum.IntEnum):
    PKIX_TA = 0
    PKIX_EE = 1
    DANE_TA = 2
    DANE_EE = 3
    PRIV_CERT = 255


class Selector(enum.IntEnum):
    CERT = 0
    SPKI = 1
    PRIV_SEL = 255


class MatchingType(enum.IntEnum):
    FULL = 0
    SHA2_256 = 1
    SHA2_512 = 2
    PRIV_MATCH = 255


DIGEST_LENGTHS = {MatchingType.SHA2_256: 32, MatchingType.SHA2_512: 64}

_MNEMONICS: dict[str, dict[str, int]] = {
    "usage": {
        "PKIX-TA": 0,
        "PKIX-EE": 1,
        "DANE-TA": 2,
        "DANE-EE": 3,
        "PRIVCERT": 255,
    },
    "selector": {"CERT": 0, "SPKI": 1, "PRIVSEL": 255},
    "mtype": {
        "FULL": 0,
        "SHA2-256": 1,
        "SHA-256": 1,
        "SHA256": 1,
        "SHA2-512": 2,
        "SHA-512": 2,
        "SHA512": 2,
        "PRIVMATCH": 255,
    },
}
_ACRONYMS = {
    "usage": {0: "PKIX-TA", 1: "PKIX-EE", 2: "DANE-TA", 3: "DANE-EE", 255: "PrivCert"},
    "selector": {0: "Cert", 1: "SPKI", 255: "PrivSel"},
    "mtype": {0: "Full", 1: "SHA2-256", 2: "SHA2-512", 255: "PrivMatch"},
}

_HEX_RE = re.compile(r"[0-9A-Fa-f]*\Z")


class MalformedRecord(ValueError):
    """A TLSA record could not be read. ``reason`` is a short stable code."""

    def __init__(self, message: str, reason: str = "malformed-record") -> None:
        super().__init__(message)
        self.reason = reason


def parse_field(kind: str, value: str | int) -> int:
    """Parse a usage/selector/mtype given as a number or an RFC 7218 acronym."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = str(value).strip()
        if text.isdigit() and len(text) <= 3:
            number = int(text)
        else:
            mnemonic = _MNEMONICS[kind].get(text.upper())
            if mnemonic is None:
                raise MalformedRecord(f"bad TLSA {kind} {text!r}", "bad-field")
            number = mnemonic
    if not 0 <= number <= 255:
        raise MalformedRecord(f"TLSA {kind} {number} is out of range 0..255", "bad-field")
    return number


@dataclass(frozen=True, slots=True)
class TLSARecord:
    """One TLSA record: certificate usage, selector, matching type and association data."""

    usage: int
    selector: int
    mtype: int
    data: bytes

    def __post_init__(self) -> None:
        for kind, value in (("usage", self.usage), ("selector", self.selector)):
            if not isinstance(value, int) or not 0 <= value <= 255:
                raise MalformedRecord(f"TLSA {kind} {value!r} is out of range 0..255", "bad-field")
        if not isinstance(self.mtype, int) or not 0 <= self.mtype <= 255:
            raise MalformedRecord(f"TLSA mtype {self.mtype!r} is out of range 0..255", "bad-field")
        if not isinstance(self.data, bytes):
            raise MalformedRecord("TLSA data must be bytes", "bad-field")
        if len(self.data) > MAX_DATA_LENGTH:
            raise MalformedRecord("TLSA data is longer than an RDATA can be", "too-long")

    # --- wire form -------------------------------------------------------------------------

    @classmethod
    def from_wire(cls, rdata: bytes) -> TLSARecord:
        """Parse TLSA RDATA (three octets, then the association data)."""
        rdata = bytes(rdata)
        if len(rdata) < 3:
            raise MalformedRecord(f"TLSA RDATA is {len(rdata)} octets, needs at least 3", "short")
        return cls(rdata[0], rdata[1], rdata[2], rdata[3:])

    def to_wire(self) -> bytes:
        return bytes((self.usage, self.selector, self.mtype)) + self.data

    # --- presentation form -----------------------------------------------------------------

    @classmethod
    def from_text(cls, text: str) -> TLSARecord:
        """Parse presentation form: ``U S M HEX`` (hex may contain white space, the record may
        be wrapped in parentheses), or RFC 3597 generic form ``\\# LEN HEX``. Fields may be
        numbers or RFC 7218 acronyms (``DANE-EE SPKI SHA2-256``)."""
        if not isinstance(text, str):
            raise MalformedRecord("TLSA text must be a string")
        cleaned = text.replace("(", " ").replace(")", " ").strip()
        tokens = cleaned.split()
        if not tokens:
            raise MalformedRecord("empty TLSA record", "empty")
        if tokens[0] == "\\#":
            if len(tokens) < 2 or not tokens[1].isdigit():
                raise MalformedRecord("bad RFC 3597 generic TLSA form")
            length = int(tokens[1])
            hexdata = "".join(tokens[2:])
            data = _unhex(hexdata)
            if len(data) != length:
                raise MalformedRecord(
                    f"generic TLSA form says {length} octets but carries {len(data)}"
                )
            return cls.from_wire(data)
        if len(tokens) < 4:
            raise MalformedRecord(
                "a TLSA record needs four fields: usage selector mtype hex-data", "short"
            )
        usage = parse_field("usage", tokens[0])
        selector = parse_field("selector", tokens[1])
        mtype = parse_field("mtype", tokens[2])
        data = _unhex("".join(tokens[3:]))
        if not data:
            raise MalformedRecord("TLSA association data is empty", "empty")
        return cls(usage, selector, mtype, data)

    def to_text(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"

    def __str__(self) -> str:
        return self.to_text()

    def to_zone_line(self, owner: str, ttl: int | None = None) -> str:
        """A zone-file line, e.g. ``sensor7._device.example.com. 300 IN TLSA 3 1 1 ...``."""
        owner = owner if owner.endswith(".") else owner + "."
        ttl_part = f" {ttl}" if ttl is not None else ""
        return f"{owner}{ttl_part} IN TLSA {self.to_text()}"

    # --- description -----------------------------------------------------------------------

    @property
    def well_formed(self) -> bool:
        """False if the data length cannot fit the matching type (RFC 7671 section 4.1)."""
        if not self.data:
            return False
        expected = DIGEST_LENGTHS.get(MatchingType(self.mtype)) if self.mtype in (1, 2) else None
        return expected is None or len(self.data) == expected

    def describe(self) -> str:
        """Acronym form, e.g. ``DANE-EE SPKI SHA2-256``."""
        return " ".join(
            _ACRONYMS[kind].get(value, str(value))
            for kind, value in (
                ("usage", self.usage),
                ("selector", self.selector),
                ("mtype", self.mtype),
            )
        )


def _unhex(text: str) -> bytes:
    if len(text) % 2 or not _HEX_RE.match(text):
        raise MalformedRecord("TLSA association data is not valid hex", "bad-hex")
    return bytes.fromhex(text)
