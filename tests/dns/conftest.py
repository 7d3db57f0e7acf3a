"""Fixtures for the dance.dns tests: a small signed DNS world served from memory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from dance.dns import TLSAResolver, TrustAnchors
from tests.dns.kit import NOW, MemoryTransport, Server, TZone, n

H32 = "ab" * 32
H32B = "cd" * 32


@dataclass
class World:
    zones: dict[str, TZone]
    server: Server
    anchors: TrustAnchors

    def resolver(self, **kwargs: object) -> TLSAResolver:
        transport = kwargs.pop("transport", None) or MemoryTransport(self.server)
        clock = kwargs.pop("clock", lambda: NOW)
        return TLSAResolver(
            anchors=self.anchors,
            transport=transport,  # type: ignore[arg-type]
            clock=clock,  # type: ignore[arg-type]
            **kwargs,  # type: ignore[arg-type]
        )

    def resign(self) -> None:
        for z in self.zones.values():
            z.sign()


def build_world(
    device_denial: str = "nsec3",
    parent_denial: str = "nsec",
    tweak: Callable[[dict[str, TZone]], None] | None = None,
) -> World:
    parent = TZone(n("example.test."), denial=parent_denial, key_index=0)
    device = TZone(n("_device.example.test."), denial=device_denial, key_index=1)
    nsec_child = TZone(n("_nsec.example.test."), denial="nsec", key_index=2)
    unsigned = TZone(n("unsigned.example.test."), denial="none", key_index=3)
    optout = TZone(n("optout.example.test."), denial="nsec3", opt_out=True, key_index=4)
    optchild = TZone(n("child.optout.example.test."), denial="none", key_index=5)
    other = TZone(n("example.other."), denial="nsec", key_index=6)

    parent.add("host", "A", "192.0.2.1")
    parent.add("host", "TLSA", f"3 1 1 {H32}")
    parent.add("www", "CNAME", "sensor7._device.example.test.")
    parent.add("alias", "CNAME", "x.unsigned.example.test.")
    parent.add("loop1", "CNAME", "loop2.example.test.")
    parent.add("loop2", "CNAME", "loop1.example.test.")
    parent.add("dangling", "CNAME", "nothere._device.example.test.")
    parent.add("big", "TLSA", *[f"3 1 1 {i:064x}" for i in range(100)])
    parent.add("deep.a.b", "TLSA", f"3 1 1 {H32}")  # b.example.test is an empty non-terminal
    parent.add("zzz", "A", "192.0.2.9")

    device.add("sensor7", "TLSA", f"3 1 1 {H32}")
    device.add("*", "TLSA", f"2 0 1 {H32B}")
    device.add("a.b", "TLSA", f"3 1 1 {H32}")  # ENT b._device
    device.add("plain", "A", "192.0.2.7")

    nsec_child.add("sensor", "TLSA", f"3 1 1 {H32}")
    nsec_child.add("*", "TLSA", f"2 0 1 {H32B}")
    nsec_child.add("*.w", "A", "192.0.2.8")  # wildcard without TLSA: wildcard NODATA
    nsec_child.add("a.b", "TLSA", f"3 1 1 {H32}")

    unsigned.add("x", "TLSA", f"3 1 1 {H32}")
    optout.add("signed", "TLSA", f"3 1 1 {H32}")
    optchild.add("dev", "TLSA", f"3 1 1 {H32}")
    other.add("t", "TLSA", f"3 1 1 {H32}")
    parent.add("toother", "CNAME", "t.example.other.")

    zones = {
        "parent": parent,
        "device": device,
        "nsec": nsec_child,
        "unsigned": unsigned,
        "optout": optout,
        "optchild": optchild,
        "other": other,
    }
    if tweak is not None:
        tweak(zones)
    parent.delegate(device)
    parent.delegate(nsec_child)
    parent.delegate(unsigned)
    parent.delegate(optout)
    optout.delegate(optchild)
    for z in zones.values():
        z.sign()
    anchors = TrustAnchors.from_text(parent.ds_text() + "\n" + other.ds_text())
    return World(zones, Server(*zones.values()), anchors)


@pytest.fixture(scope="module")
def world() -> World:
    return build_world()
