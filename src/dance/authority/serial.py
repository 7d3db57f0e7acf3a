"""SOA serial policy (RFC 1982 serial arithmetic).

Every change of the signed data the authority serves (a dynamic update, a periodic signature
refresh, the re-signing at start) raises the SOA serial, so secondaries see a new version and
transfer it. Two policies:

``unixtime`` (default)
    the new serial is the current Unix time if that is greater than the old serial in serial
    arithmetic, else the old serial plus one: ``new = max(old + 1, now)`` in RFC 1982 terms.
    A zone whose serial already runs ahead of the clock (e.g. ``YYYYMMDDnn`` serials) simply
    keeps incrementing.
``increment``
    the old serial plus one (modulo 2**32).
"""

from __future__ import annotations

from typing import Literal

import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
from dns.rdtypes.ANY.SOA import SOA

__all__ = ["SERIAL_POLICIES", "SerialPolicy", "next_serial", "serial_gt", "with_serial"]

SerialPolicy = Literal["unixtime", "increment"]
SERIAL_POLICIES: tuple[SerialPolicy, ...] = ("unixtime", "increment")
_MOD = 2**32
_HALF = 2**31


def serial_gt(a: int, b: int) -> bool:
    """RFC 1982 section 3.2: is serial ``a`` greater than serial ``b``? (Undefined pairs, exactly
    2**31 apart, are neither greater nor smaller.)"""
    return a != b and ((a - b) % _MOD) < _HALF


def next_serial(old: int, policy: SerialPolicy = "unixtime", now: float = 0.0) -> int:
    """The serial that follows ``old`` under ``policy`` at Unix time ``now``; always greater
    than ``old`` in serial arithmetic."""
    increment = (old + 1) % _MOD
    if policy == "unixtime":
        candidate = int(now) % _MOD
        if serial_gt(candidate, increment):
            return candidate
    elif policy != "increment":
        raise ValueError(f"unknown serial policy {policy!r}")
    return increment


def with_serial(
    records: dict[dns.name.Name, dict[dns.rdatatype.RdataType, dns.rdataset.Rdataset]],
    origin: dns.name.Name,
    serial: int,
) -> dict[dns.name.Name, dict[dns.rdatatype.RdataType, dns.rdataset.Rdataset]]:
    """A shallow copy of ``records`` whose apex SOA carries ``serial`` (the input is unchanged;
    only the apex node is copied)."""
    soa_rds = records[origin][dns.rdatatype.SOA]
    old = next(iter(soa_rds))
    assert isinstance(old, SOA)
    rds = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.SOA)
    rds.add(old.replace(serial=serial % _MOD), soa_rds.ttl)
    out = dict(records)
    node = dict(records[origin])
    node[dns.rdatatype.SOA] = rds
    out[origin] = node
    return out
