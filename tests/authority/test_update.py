"""RFC 2136 semantics of apply_update (sans I/O): prerequisites, prescan, update rules."""

from __future__ import annotations

from collections.abc import Callable

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.update
import pytest

from dance.authority.store import Records, parse_records
from dance.authority.update import UpdateResult, apply_update

ORIGIN = dns.name.from_text("example.test.")
H1, H2 = "ab" * 32, "cd" * 32
TEXT = f"""$ORIGIN example.test.
@ 300 IN SOA ns1 hostmaster 10 3600 900 604800 60
@ 300 IN NS ns1
ns1 300 IN A 127.0.0.1
sensor7._device 300 IN TLSA 3 1 1 {H1}
www 300 IN A 192.0.2.1
www 300 IN A 192.0.2.2
alias 300 IN CNAME www
"""


def records() -> Records:
    return parse_records(TEXT, ORIGIN, "t")


def run(
    build: Callable[[dns.update.UpdateMessage], None], zone: str = "example.test."
) -> tuple[Records, UpdateResult]:
    msg = dns.update.UpdateMessage(zone)
    build(msg)
    parsed = dns.message.from_wire(msg.to_wire())
    assert isinstance(parsed, dns.update.UpdateMessage)
    before = records()
    result = apply_update(before, ORIGIN, parsed)
    assert before == records(), "apply_update must not modify its input"
    return before, result


def rrset(recs: Records, name: str, rdtype: str) -> set[str]:
    node = recs.get(dns.name.from_text(name, ORIGIN), {})
    rds = node.get(dns.rdatatype.from_text(rdtype))
    return {rd.to_text() for rd in rds} if rds else set()


def serial(recs: Records) -> int:
    return int(next(iter(recs[ORIGIN][dns.rdatatype.SOA])).serial)  # type: ignore[attr-defined]


def test_add_bumps_serial() -> None:
    _, result = run(lambda m: m.add("new._device", 300, "TLSA", f"3 1 1 {H2}"))
    assert result.rcode == dns.rcode.NOERROR and result.changed and result.records
    assert rrset(result.records, "new._device", "TLSA") == {f"3 1 1 {H2}"}
    assert serial(result.records) == 11


def test_update_raising_serial_is_kept() -> None:
    _, result = run(lambda m: m.replace("@", 300, "SOA", "ns1 hostmaster 500 3600 900 604800 60"))
    assert result.records is not None and serial(result.records) == 500


def test_soa_with_lower_serial_ignored() -> None:
    _, result = run(lambda m: m.add("@", 300, "SOA", "ns1 hostmaster 5 3600 900 604800 60"))
    assert result.rcode == dns.rcode.NOERROR and not result.changed


def test_duplicate_add_is_no_change() -> None:
    _, result = run(lambda m: m.add("sensor7._device", 300, "TLSA", f"3 1 1 {H1}"))
    assert result.rcode == dns.rcode.NOERROR and not result.changed


def test_delete_rr_rrset_name() -> None:
    _, result = run(lambda m: m.delete("www", "A", "192.0.2.1"))
    assert result.records is not None
    assert rrset(result.records, "www", "A") == {"192.0.2.2"}
    _, result = run(lambda m: m.delete("www", "A"))
    assert result.records is not None and rrset(result.records, "www", "A") == set()
    _, result = run(lambda m: m.delete("sensor7._device"))
    assert result.records is not None
    assert dns.name.from_text("sensor7._device", ORIGIN) not in result.records


def test_apex_soa_and_ns_protected() -> None:
    _, result = run(lambda m: m.delete("@"))  # delete all at apex: SOA and NS stay
    assert not result.changed
    _, result = run(lambda m: m.delete("@", "NS", "ns1"))  # last NS
    assert not result.changed
    _, result = run(lambda m: m.delete("@", "SOA"))
    assert not result.changed


def test_cname_conflicts_ignored() -> None:
    _, result = run(lambda m: m.add("alias", 300, "A", "192.0.2.9"))
    assert not result.changed
    _, result = run(lambda m: m.add("www", 300, "CNAME", "elsewhere"))
    assert not result.changed


@pytest.mark.parametrize(
    ("prereq", "expected"),
    [
        (lambda m: m.present("nothere"), dns.rcode.NXDOMAIN),
        (lambda m: m.present("www", "TXT"), dns.rcode.NXRRSET),
        (lambda m: m.absent("www"), dns.rcode.YXDOMAIN),
        (lambda m: m.absent("www", "A"), dns.rcode.YXRRSET),
        (lambda m: m.present("www", "A", "192.0.2.1"), dns.rcode.NXRRSET),  # value-dependent
        (lambda m: m.present("elsewhere.test."), dns.rcode.NOTZONE),
    ],
)
def test_failed_prerequisite_changes_nothing(
    prereq: Callable[[dns.update.UpdateMessage], None], expected: int
) -> None:
    def build(m: dns.update.UpdateMessage) -> None:
        prereq(m)
        m.add("new._device", 300, "TLSA", f"3 1 1 {H2}")

    _, result = run(build)
    assert result.rcode == expected
    assert result.records is None and not result.changed


@pytest.mark.parametrize(
    "prereq",
    [
        lambda m: m.present("www"),
        lambda m: m.present("www", "A"),
        lambda m: m.absent("nothere"),
        lambda m: m.absent("www", "TXT"),
        lambda m: (m.present("www", "A", "192.0.2.1"), m.present("www", "A", "192.0.2.2")),
    ],
)
def test_satisfied_prerequisite(prereq: Callable[[dns.update.UpdateMessage], None]) -> None:
    def build(m: dns.update.UpdateMessage) -> None:
        prereq(m)
        m.add("new._device", 300, "TLSA", f"3 1 1 {H2}")

    _, result = run(build)
    assert result.rcode == dns.rcode.NOERROR and result.changed


def test_atomic_when_a_later_record_is_refused() -> None:
    def build(m: dns.update.UpdateMessage) -> None:
        m.add("ok._device", 300, "TLSA", f"3 1 1 {H2}")
        m.add("@", 300, "DNSKEY", "256 3 13 " + "A" * 88)

    _, result = run(build)
    assert result.rcode == dns.rcode.REFUSED and result.records is None


def test_update_outside_zone_and_wrong_zone() -> None:
    _, result = run(lambda m: m.add("x.other.test.", 300, "A", "192.0.2.1"))
    assert result.rcode == dns.rcode.NOTZONE
    _, result = run(lambda m: m.add("x", 300, "A", "192.0.2.1"), zone="other.test.")
    assert result.rcode == dns.rcode.NOTAUTH


def test_ds_needs_delegation() -> None:
    ds = "12345 13 2 " + "ab" * 32
    _, result = run(lambda m: m.add("child", 300, "DS", ds))
    assert result.rcode == dns.rcode.REFUSED

    def delegate(m: dns.update.UpdateMessage) -> None:
        m.add("child", 300, "NS", "ns1.child")
        m.add("ns1.child", 300, "A", "127.0.0.2")
        m.add("child", 300, "DS", ds)

    _, result = run(delegate)
    assert result.rcode == dns.rcode.NOERROR and result.records is not None
    assert rrset(result.records, "child", "DS") == {ds}
