"""A set of zones served together, with their trust anchor and active faults."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator

import dns.message
import dns.name
import dns.rdatatype
import dns.rrset

from dance.zone import responder
from dance.zone.faults import Fault, FaultSet, Injection, Transport
from dance.zone.zones import DEFAULT_VALIDITY, Denial, Zone

__all__ = ["Hierarchy", "ZoneSet"]

Name = dns.name.Name


class ZoneSet:
    """Zones answered by one responder/server, e.g. a private ``test.`` root and its children.

    The trust anchors are the zones with no parent in the set (usually one).
    """

    def __init__(self, *zones: Zone, max_udp: int = responder.DEFAULT_MAX_UDP) -> None:
        self._zones: dict[Name, Zone] = {}
        self._lock = threading.Lock()
        self.faults = FaultSet()
        self.max_udp = max_udp
        for zone in zones:
            self.add(zone)

    # -------------------------------------------------------------- contents

    def add(self, zone: Zone) -> ZoneSet:
        with self._lock:
            if zone.origin in self._zones:
                raise ValueError(f"zone {zone.origin} is already in the set")
            self._zones = {**self._zones, zone.origin: zone}
        return self

    def remove(self, origin: str | Name) -> None:
        name = _name(origin)
        with self._lock:
            self._zones = {k: v for k, v in self._zones.items() if k != name}

    @property
    def zones(self) -> list[Zone]:
        """Zones, parents before children."""
        return sorted(self._zones.values(), key=lambda z: (len(z.origin), z.origin))

    def __iter__(self) -> Iterator[Zone]:
        return iter(self.zones)

    def __len__(self) -> int:
        return len(self._zones)

    def __getitem__(self, origin: str | Name) -> Zone:
        return self._zones[_name(origin)]

    def get(self, origin: str | Name) -> Zone | None:
        return self._zones.get(_name(origin))

    def zone_for(self, qname: Name, qtype: int = dns.rdatatype.A) -> Zone | None:
        """The zone that answers ``qname``: the deepest enclosing one, except that DS at a
        zone apex is answered by the parent zone when the set holds it."""
        zones = self._zones
        candidates = [z for o, z in zones.items() if qname.is_subdomain(o)]
        if not candidates:
            return None
        candidates.sort(key=lambda z: len(z.origin), reverse=True)
        if qtype == dns.rdatatype.DS and candidates[0].origin == qname and len(candidates) > 1:
            return candidates[1]
        return candidates[0]

    def anchors(self) -> list[Zone]:
        """Zones with no enclosing zone in the set (their keys are the trust anchors)."""
        origins = list(self._zones)
        return [
            z
            for o, z in self._zones.items()
            if not any(o != p and o.is_subdomain(p) for p in origins)
        ]

    # -------------------------------------------------------------- signing

    def sign(
        self,
        algorithm: int = 13,
        denial: Denial = "nsec",
        *,
        nsec3_optout: bool = False,
        nsec3_iterations: int = 0,
        nsec3_salt: bytes | str = b"",
        now: int | float | None = None,
        inception: int | float | None = None,
        expiration: int | float | None = None,
        validity: int = DEFAULT_VALIDITY,
        csk: bool = False,
    ) -> ZoneSet:
        """Sign every zone (except those published unsigned on purpose) with the same
        parameters, children first so that parents publish current DS records. ``now`` is
        read from the clock once if not given. See :meth:`Zone.sign`."""
        t_now = int(time.time()) if now is None else now
        for zone in sorted(self._zones.values(), key=lambda z: -len(z.origin)):
            if zone.unsigned_by_choice:
                continue
            zone.sign(
                algorithm,
                denial,
                nsec3_optout=nsec3_optout,
                nsec3_iterations=nsec3_iterations,
                nsec3_salt=nsec3_salt,
                now=t_now,
                inception=inception,
                expiration=expiration,
                validity=validity,
                csk=csk,
            )
        return self

    def export_trust_anchor(self, *, ds: bool = True, dnskey: bool = True) -> str:
        """Trust anchors in zone-file format (Unbound ``trust-anchor-file``, ``dig +sigchase``,
        dnspython): DS (SHA-256) and/or DNSKEY lines for the KSK of each anchor zone."""
        lines: list[str] = []
        for zone in self.anchors():
            keys = zone.keys
            if keys is None or not zone.is_signed:
                continue
            ttl = zone.ttl
            if ds:
                for record in zone.ds_records((2,)):
                    lines.append(f"{zone.origin.to_text()} {ttl} IN DS {record.to_text()}")
            if dnskey:
                lines.append(f"{zone.origin.to_text()} {ttl} IN DNSKEY {keys.ksk.dnskey.to_text()}")
        return "\n".join(lines) + "\n"

    def trust_anchor_rrsets(self) -> list[dns.rrset.RRset]:
        """The anchors' DNSKEY RRsets (KSKs only), e.g. to seed a validator under test."""
        out: list[dns.rrset.RRset] = []
        for zone in self.anchors():
            if zone.keys is not None and zone.is_signed:
                out.append(dns.rrset.from_rdata(zone.origin, zone.ttl, zone.keys.ksk.dnskey))
        return out

    # --------------------------------------------------------------- faults

    def inject(self, *faults: Fault) -> Injection:
        """Activate faults now; the returned handle (also a context manager) removes them."""
        return self.faults.add(*faults)

    # ------------------------------------------------------------- answering

    def respond(
        self,
        query: dns.message.Message | bytes,
        *,
        transport: Transport | None = None,
        zone: str | Name | None = None,
    ) -> dns.message.Message:
        """Answer one query (sans I/O). Message faults that need a transport (silent, slow,
        truncated, malformed, force-tc) only take effect in :meth:`respond_wire`.

        ``zone`` answers as the server of that one zone would: referrals at its delegations,
        REFUSED outside it (to feed a validator that iterates down from the anchor)."""
        return responder.respond(
            self,
            query,
            transport=transport,
            max_udp=self.max_udp,
            only_zone=None if zone is None else _name(zone),
        )

    def query(
        self,
        name: str | Name,
        rdtype: str | int = "A",
        *,
        dnssec: bool = True,
        zone: str | Name | None = None,
    ) -> dns.message.Message:
        """Shortcut: build a query (EDNS, DO=``dnssec``) and :meth:`respond` to it."""
        rtype = dns.rdatatype.RdataType.make(rdtype)
        message = dns.message.make_query(_name(name), rtype, want_dnssec=dnssec)
        return self.respond(message, zone=zone)

    def respond_wire(self, wire: bytes, *, transport: Transport = "udp") -> responder.WireReply:
        """Answer one wire-format query as a server would (UDP size limit, all faults)."""
        return responder.respond_wire(self, wire, transport=transport, max_udp=self.max_udp)


def _name(value: str | Name) -> Name:
    return value if isinstance(value, Name) else dns.name.from_text(value)


class Hierarchy(ZoneSet):
    """A ZoneSet built top-down: ``Hierarchy("test.")`` then ``.child("example")`` etc.

    Each :meth:`child` call creates a zone and a signed delegation to it from its parent.
    """

    def __init__(
        self, anchor: str | Name = "test.", *, ttl: int = 300, **zone_kwargs: object
    ) -> None:
        super().__init__()
        self.anchor = Zone(anchor, ttl, **zone_kwargs)  # type: ignore[arg-type]
        self.add(self.anchor)

    def child(
        self,
        origin: str | Name,
        *,
        signed: bool = True,
        digest_type: int | Iterable[int] = 2,
        ttl: int | None = None,
    ) -> Zone:
        """Create zone ``origin`` (absolute) delegated from its closest enclosing zone."""
        name = _name(origin)
        parent = self.zone_for(name, dns.rdatatype.SOA)
        if parent is None:
            raise ValueError(f"{name} is not below {self.anchor.origin}")
        zone = Zone(name, parent.ttl if ttl is None else ttl)
        digests = (digest_type,) if isinstance(digest_type, int) else tuple(digest_type)
        parent.delegate(name, child=zone, signed=signed, digest_type=digests)
        if not signed:
            zone.publish_unsigned()
        self.add(zone)
        return zone
