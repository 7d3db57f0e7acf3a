"""Independent DNSSEC checks used by the testkit tests (written against the RFCs, not the kit)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
from pathlib import Path

import dns.dnssec
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset

from dance.testkit import Hierarchy, ZoneSet
from dance.testkit.examples import dance_example

RdataType = dns.rdatatype.RdataType
Name = dns.name.Name

# Fixed clock for every test zone: 2030-01-01T00:00:00Z.
NOW = 1_893_456_000


def q(
    zs: ZoneSet, name: str, rdtype: str, *, do: bool = True, **kwargs: object
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, want_dnssec=do, **kwargs)  # type: ignore[arg-type]
    return zs.respond(query)


def rrsets(section: list[dns.rrset.RRset], rdtype: int) -> list[dns.rrset.RRset]:
    return [r for r in section if r.rdtype == rdtype]


def sigs_for(section: list[dns.rrset.RRset], name: Name, covered: int) -> list[dns.rrset.RRset]:
    return [
        r for r in section if r.rdtype == RdataType.RRSIG and r.covers == covered and r.name == name
    ]


def validate_all(zs: ZoneSet, response: dns.message.Message, now: int = NOW) -> int:
    """Validate every RRSIG in the response against the signer zone's DNSKEY; return count."""
    count = 0
    for section in (response.answer, response.authority, response.additional):
        for sig in section:
            if sig.rdtype != RdataType.RRSIG:
                continue
            covered = [r for r in section if r.name == sig.name and r.rdtype == sig.covers]
            assert covered, f"RRSIG without its RRset: {sig}"
            signer = next(iter(sig)).signer
            zone = zs[signer]
            keys = zone.snapshot.rrsets[zone.origin][RdataType.DNSKEY]
            dns.dnssec.validate(covered[0], sig, {signer: keys}, now=now)
            count += 1
    return count


def has_dnssec(response: dns.message.Message) -> bool:
    kinds = {RdataType.RRSIG, RdataType.NSEC, RdataType.NSEC3}
    sections = (response.answer, response.authority, response.additional)
    return any(r.rdtype in kinds for s in sections for r in s)


def nsec_covers(nsec: dns.rrset.RRset, name: Name) -> bool:
    """RFC 4034: owner < name < next in canonical order (the last NSEC wraps to the apex)."""
    nxt = next(iter(nsec)).next
    owner = nsec.name
    if owner < nxt:
        return owner < name < nxt
    return name > owner or name < nxt


def nsec_types(nsec: dns.rrset.RRset) -> set[int]:
    rd = next(iter(nsec))
    return set(_bitmap_types(rd.windows))


def _bitmap_types(windows: tuple[tuple[int, bytes], ...]) -> list[int]:
    out: list[int] = []
    for window, bitmap in windows:
        for i, byte in enumerate(bitmap):
            for bit in range(8):
                if byte & (0x80 >> bit):
                    out.append(window * 256 + i * 8 + bit)
    return out


def nsec3_hash(name: Name, salt: bytes = b"", iterations: int = 0) -> bytes:
    wire = name.canonicalize().to_wire()
    assert wire is not None
    digest = hashlib.sha1(wire + salt).digest()
    for _ in range(iterations):
        digest = hashlib.sha1(digest + salt).digest()
    return digest


def nsec3_owner_hash(rrset: dns.rrset.RRset) -> bytes:
    return base64.b32hexdecode(rrset.name.labels[0].upper())


def nsec3_matches(rrset: dns.rrset.RRset, name: Name) -> bool:
    rd = next(iter(rrset))
    return nsec3_owner_hash(rrset) == nsec3_hash(name, rd.salt, rd.iterations)


def nsec3_covers(rrset: dns.rrset.RRset, name: Name) -> bool:
    rd = next(iter(rrset))
    h = nsec3_hash(name, rd.salt, rd.iterations)
    owner, nxt = nsec3_owner_hash(rrset), rd.next
    if owner < nxt:
        return owner < h < nxt
    return h > owner or h < nxt


def nsec3_optout(rrset: dns.rrset.RRset) -> bool:
    return bool(next(iter(rrset)).flags & 1)


def require_binary(*names: str) -> str:
    """tests/conftest.py's require_binary, loaded by path (the bare name ``conftest`` is
    ambiguous once several directories have one)."""
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("dance_tests_root_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found: str = module.require_binary(*names)
    return found


TLSA_EE = "3 1 1 " + "ab" * 32
TLSA_TA = "2 0 1 " + "cd" * 32


def build_hierarchy(
    denial: str = "nsec",
    *,
    algorithm: int = 13,
    optout: bool = False,
    iterations: int = 0,
    salt: bytes = b"",
) -> Hierarchy:
    """The library's example hierarchy (see dance.testkit.examples), signed at NOW."""
    return dance_example(
        denial,  # type: ignore[arg-type]
        algorithm=algorithm,
        now=NOW,
        tlsa=TLSA_EE,
        wildcard_tlsa=TLSA_TA,
        nsec3_optout=optout,
        nsec3_iterations=iterations,
        nsec3_salt=salt,
    )
