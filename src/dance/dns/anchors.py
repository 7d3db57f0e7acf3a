"""DNSSEC trust anchors: the built-in root KSKs and anchors read from presentation-format files."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tokenizer
import dns.zonefile
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.DS import DS

__all__ = ["ROOT_ANCHOR_TEXT", "AnchorError", "TrustAnchors", "ZoneAnchor"]

log = logging.getLogger(__name__)

#: The IANA root zone KSKs (https://data.iana.org/root-anchors/root-anchors.xml):
#: KSK-2017 (key tag 20326) and KSK-2024 (key tag 38696), as SHA-256 DS records.
ROOT_ANCHOR_TEXT = """\
. IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D
. IN DS 38696 8 2 683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16
"""


class AnchorError(ValueError):
    """A trust-anchor file or text could not be used."""


@dataclass(frozen=True, slots=True)
class ZoneAnchor:
    """The configured anchors of one zone: DS records and/or DNSKEY records."""

    zone: dns.name.Name
    ds: tuple[DS, ...] = ()
    dnskeys: tuple[DNSKEY, ...] = ()


def _lower(name: dns.name.Name) -> tuple[bytes, ...]:
    return tuple(label.lower() for label in name.labels)


@dataclass(frozen=True)
class TrustAnchors:
    """A set of trust anchors keyed by zone name.

    Anchors are DS or DNSKEY records in zone-file presentation format (the format read by
    Unbound's ``trust-anchor-file``). Lookups use the closest enclosing anchor.
    """

    zones: dict[dns.name.Name, ZoneAnchor] = field(default_factory=dict)
    _by_labels: dict[tuple[bytes, ...], ZoneAnchor] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def builtin_root(cls) -> TrustAnchors:
        """The IANA root KSK-2017 and KSK-2024 anchors."""
        return cls.from_text(ROOT_ANCHOR_TEXT)

    @classmethod
    def from_file(cls, path: str | Path) -> TrustAnchors:
        """Read DS/DNSKEY lines from a file (``$ORIGIN``, ``$TTL``, comments allowed)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AnchorError(f"cannot read trust-anchor file {path}: {exc}") from exc
        return cls.from_text(text)

    @classmethod
    def from_text(cls, text: str) -> TrustAnchors:
        """Parse DS/DNSKEY records in presentation format; other types are an error."""
        try:
            manager = dns.zonefile.RRSetsReaderManager(dns.name.root, False, dns.rdataclass.IN)
            with manager.writer(True) as txn:  # type: ignore[no-untyped-call]
                reader = dns.zonefile.Reader(
                    dns.tokenizer.Tokenizer(text, "<trust-anchors>"),
                    dns.rdataclass.IN,
                    txn,
                    allow_directives={"$ORIGIN", "$TTL"},  # no $INCLUDE
                    default_ttl=0,
                )
                reader.read()
            rrsets = manager.rrsets
        except (dns.exception.DNSException, ValueError) as exc:
            raise AnchorError(f"cannot parse trust anchors: {exc}") from exc
        return cls.from_rrsets(rrsets)

    @classmethod
    def from_rrsets(cls, rrsets: Iterable[dns.rrset.RRset]) -> TrustAnchors:
        """Build anchors from DS and/or DNSKEY RRsets."""
        ds: dict[dns.name.Name, list[DS]] = {}
        keys: dict[dns.name.Name, list[DNSKEY]] = {}
        for rrset in rrsets:
            if rrset.rdclass != dns.rdataclass.IN:
                raise AnchorError(f"trust anchor {rrset.name} is not class IN")
            if rrset.rdtype == dns.rdatatype.DS:
                ds.setdefault(rrset.name, []).extend(rd for rd in rrset if isinstance(rd, DS))
            elif rrset.rdtype == dns.rdatatype.DNSKEY:
                keys.setdefault(rrset.name, []).extend(rd for rd in rrset if isinstance(rd, DNSKEY))
            else:
                raise AnchorError(
                    f"trust anchor {rrset.name} has type "
                    f"{dns.rdatatype.to_text(rrset.rdtype)}; only DS and DNSKEY are accepted"
                )
        zones = {
            zone: ZoneAnchor(zone, tuple(ds.get(zone, ())), tuple(keys.get(zone, ())))
            for zone in set(ds) | set(keys)
        }
        if not zones:
            raise AnchorError("no trust anchors found")
        return cls(zones)

    # -- combination and queries --------------------------------------------------------
    def merged(self, other: TrustAnchors) -> TrustAnchors:
        """The union of two anchor sets."""
        zones = dict(self.zones)
        for zone, anchor in other.zones.items():
            mine = zones.get(zone)
            if mine is None:
                zones[zone] = anchor
            else:
                zones[zone] = ZoneAnchor(zone, mine.ds + anchor.ds, mine.dnskeys + anchor.dnskeys)
        return TrustAnchors(zones)

    def closest(self, name: dns.name.Name) -> ZoneAnchor | None:
        """The anchor of the closest enclosing zone of ``name`` (or ``name`` itself)."""
        by_labels = self._by_labels
        if by_labels is None:  # lower-cased label tuples: no Name built or hashed per step
            by_labels = {_lower(zone): anchor for zone, anchor in self.zones.items()}
            object.__setattr__(self, "_by_labels", by_labels)
        if not name.is_absolute():
            return None
        labels = _lower(name)
        for i in range(len(labels)):
            anchor = by_labels.get(labels[i:])
            if anchor is not None:
                return anchor
        return None

    def __iter__(self) -> Iterator[ZoneAnchor]:
        return iter(self.zones.values())

    def __len__(self) -> int:
        return len(self.zones)
