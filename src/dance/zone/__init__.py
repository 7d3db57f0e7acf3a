"""DNSSEC zones: build, sign (NSEC or NSEC3, online or in full) and answer from them.

Product code: the embedded authority (`dance.authority`) serves and re-signs its zones with this
package, and the test kit (`dance.testkit`) builds its signed test hierarchies with it.

* ``dance.zone.zones``: `Zone` (records), `SignedZone`, signing keys and parameters.
* ``dance.zone.zoneset``: `ZoneSet` (zones served together) and `Hierarchy` (a tree of zones with
  their delegations and DS records, for tests and examples).
* ``dance.zone.responder``: the sans-I/O authoritative responder (queries in, answers out).
* ``dance.zone.faults``: the fault model a responder can apply (used by the test kit only; the
  authority never sets any).
"""

import dance._warnings  # noqa: F401  (before any dns.dnssec import: see that module)
from dance.zone.faults import Fault, FaultKind, FaultSet, Injection, Transport
from dance.zone.responder import DEFAULT_MAX_UDP, WireReply, respond, respond_wire
from dance.zone.zones import SignedZone, SigningKey, SigningParams, Zone, ZoneKeys
from dance.zone.zoneset import Hierarchy, ZoneSet

__all__ = [
    "DEFAULT_MAX_UDP",
    "Fault",
    "FaultKind",
    "FaultSet",
    "Hierarchy",
    "Injection",
    "SignedZone",
    "SigningKey",
    "SigningParams",
    "Transport",
    "WireReply",
    "Zone",
    "ZoneKeys",
    "ZoneSet",
    "respond",
    "respond_wire",
]
