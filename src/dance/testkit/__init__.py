"""DNSSEC signed-zone test kit: build signed zones, answer queries, serve them, inject faults.

Zones are built, signed and answered by the product package `dance.zone` (re-exported here); the
kit adds servers on loopback, fault injection and ready-made examples.

Quick start::

    from dance.testkit import Fault, Hierarchy, ServerThread

    h = Hierarchy("test.")
    example = h.child("example.test.")
    device = h.child("_device.example.test.")
    device.add("sensor7", "TLSA", "3 1 1 " + "ab" * 32)
    h.sign(algorithm=13, denial="nsec3")
    anchor_text = h.export_trust_anchor()
    with ServerThread(h) as srv:
        host, port = srv.address
        ...
    h.inject(Fault("bad-signature", "sensor7._device.example.test"))

``dance_example()`` builds a ready-made hierarchy with every DNS case of the DANCE spec; see
docs/testkit.md for the whole guide.
"""

import dance._warnings  # noqa: F401  (before any dns.dnssec import: see that module)
from dance.testkit.examples import dance_example
from dance.testkit.server import ServerThread, TestServer
from dance.zone import (
    DEFAULT_MAX_UDP,
    Fault,
    FaultKind,
    FaultSet,
    Hierarchy,
    Injection,
    SignedZone,
    SigningKey,
    SigningParams,
    WireReply,
    Zone,
    ZoneKeys,
    ZoneSet,
    respond,
    respond_wire,
)

__all__ = [
    "DEFAULT_MAX_UDP",
    "Fault",
    "FaultKind",
    "FaultSet",
    "Hierarchy",
    "Injection",
    "ServerThread",
    "SignedZone",
    "SigningKey",
    "SigningParams",
    "TestServer",
    "WireReply",
    "Zone",
    "ZoneKeys",
    "ZoneSet",
    "dance_example",
    "respond",
    "respond_wire",
]
