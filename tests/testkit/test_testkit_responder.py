"""The sans-I/O responder answers like a correct authoritative DNSSEC server."""

from __future__ import annotations

import dns.dnssec
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
from _testkit_support import (
    NOW,
    build_hierarchy,
    has_dnssec,
    nsec3_covers,
    nsec3_matches,
    nsec3_optout,
    nsec_covers,
    nsec_types,
    q,
    rrsets,
    sigs_for,
    validate_all,
)

from dance.testkit import ZoneSet

T = dns.rdatatype.RdataType
N = dns.name.from_text

QUERIES = [
    ("sensor7._device.example.test.", "TLSA"),
    ("sensor7._device.example.test.", "A"),
    ("nope._device.example.test.", "TLSA"),
    ("x.wild._device.example.test.", "TLSA"),
    ("x.y.wild._device.example.test.", "TLSA"),
    ("x.wild._device.example.test.", "A"),
    ("wild._device.example.test.", "TLSA"),
    ("q.wildcname._device.example.test.", "TLSA"),
    ("_device.example.test.", "DNSKEY"),
    ("_device.example.test.", "DS"),
    ("_device.example.test.", "SOA"),
    ("example.test.", "DNSKEY"),
    ("www.example.test.", "A"),
    ("www.example.test.", "ANY"),
    ("www.example.test.", "TXT"),
    ("b.c.example.test.", "A"),
    ("zz.b.c.example.test.", "A"),
    ("alias.example.test.", "AAAA"),
    ("dangling.example.test.", "A"),
    ("outside.example.test.", "TLSA"),
    ("insecure.example.test.", "DS"),
    ("elsewhere.example.test.", "DS"),
    ("host.elsewhere.example.test.", "A"),
    ("nothing.example.test.", "A"),
    ("example.test.", "DS"),
    ("test.", "NS"),
    ("nothing.test.", "A"),
    ("moved._device.example.test.", "TLSA"),
    ("sensor7._device.insecure.example.test.", "TLSA"),
]


@pytest.mark.parametrize(("name", "rdtype"), QUERIES)
def test_every_rrsig_validates(zs: ZoneSet, name: str, rdtype: str) -> None:
    response = q(zs, name, rdtype)
    assert response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
    validate_all(zs, response)
    # every RRset from a signed zone in answer/authority is signed (except referral NS)
    for section in (response.answer, response.authority):
        for rrset in section:
            referral_ns = rrset.rdtype == T.NS and not response.flags & dns.flags.AA
            if rrset.rdtype == T.RRSIG or referral_ns:
                continue
            zone = zs.zone_for(rrset.name, rrset.rdtype)
            assert zone is not None
            if zone.is_signed:
                assert sigs_for(section, rrset.name, rrset.rdtype), rrset.to_text()


@pytest.mark.parametrize("algorithm", [8, 14, 15, 16])
def test_other_algorithms_validate(algorithm: int) -> None:
    zs = build_hierarchy("nsec3", algorithm=algorithm)
    for name, rdtype in QUERIES[:8]:
        response = q(zs, name, rdtype)
        assert validate_all(zs, response) > 0
    ksk = zs["test."].keys
    assert ksk is not None and ksk.algorithm == algorithm


def test_positive_answer_flags_and_edns(nsec_zs: ZoneSet) -> None:
    query = dns.message.make_query("sensor7._device.example.test.", "TLSA", want_dnssec=True)
    query.flags |= dns.flags.CD
    response = nsec_zs.respond(query)
    assert response.id == query.id
    assert response.flags & dns.flags.QR and response.flags & dns.flags.AA
    assert response.flags & dns.flags.RD and response.flags & dns.flags.CD
    assert not response.flags & (dns.flags.RA | dns.flags.AD | dns.flags.TC)
    assert response.edns == 0 and response.ednsflags & dns.flags.DO
    assert response.question[0].name == query.question[0].name
    assert [r.rdtype for r in response.answer] == [T.TLSA, T.RRSIG]
    rrsig = next(iter(response.answer[1]))
    assert rrsig.labels == 4 and rrsig.signer == N("_device.example.test.")
    assert rrsig.inception <= NOW < rrsig.expiration


def test_no_dnssec_records_without_do(zs: ZoneSet) -> None:
    for name, rdtype in QUERIES:
        if rdtype in ("DNSKEY", "DS"):
            continue
        response = q(zs, name, rdtype, do=False)
        assert not has_dnssec(response), (name, rdtype)
        plain = q(zs, name, rdtype, do=False, use_edns=False)
        assert plain.edns == -1 and not has_dnssec(plain)


def test_dnssec_types_answered_when_asked_without_do(nsec_zs: ZoneSet) -> None:
    response = q(nsec_zs, "_device.example.test.", "DNSKEY", do=False)
    assert [r.rdtype for r in response.answer] == [T.DNSKEY]
    response = q(nsec_zs, "_device.example.test.", "NSEC", do=False)
    assert [r.rdtype for r in response.answer] == [T.NSEC]


def test_dnskey_rrset_signed_by_ksk(zs: ZoneSet) -> None:
    response = q(zs, "_device.example.test.", "DNSKEY")
    keys = response.answer[0]
    assert {rd.flags for rd in keys} == {256, 257}
    rrsig = next(iter(sigs_for(response.answer, keys.name, T.DNSKEY)[0]))
    ksk = next(rd for rd in keys if rd.flags == 257)
    assert rrsig.key_tag == dns.dnssec.key_id(ksk)


def test_ds_answered_by_parent_and_matches_child_ksk(zs: ZoneSet) -> None:
    response = q(zs, "_device.example.test.", "DS")
    assert response.flags & dns.flags.AA
    ds = rrsets(response.answer, T.DS)[0]
    rrsig = next(iter(sigs_for(response.answer, ds.name, T.DS)[0]))
    assert rrsig.signer == N("example.test.")
    keys = q(zs, "_device.example.test.", "DNSKEY").answer[0]
    ksk = next(rd for rd in keys if rd.flags == 257)
    assert next(iter(ds)) == dns.dnssec.make_ds(ds.name, ksk, "SHA256")


def test_nxdomain_nsec(nsec_zs: ZoneSet) -> None:
    qname = N("nope._device.example.test.")
    response = q(nsec_zs, qname.to_text(), "TLSA")
    assert response.rcode() == dns.rcode.NXDOMAIN and response.flags & dns.flags.AA
    assert rrsets(response.authority, T.SOA)
    nsecs = rrsets(response.authority, T.NSEC)
    assert any(nsec_covers(n, qname) for n in nsecs)
    assert any(nsec_covers(n, N("*._device.example.test.")) for n in nsecs)
    soa = rrsets(response.authority, T.SOA)[0]
    assert soa.ttl == 60  # min(SOA TTL, SOA MINIMUM), RFC 2308


def test_nxdomain_below_existing_leaf_nsec(nsec_zs: ZoneSet) -> None:
    qname = N("deeper.sensor7._device.example.test.")
    response = q(nsec_zs, qname.to_text(), "TLSA")
    assert response.rcode() == dns.rcode.NXDOMAIN
    nsecs = rrsets(response.authority, T.NSEC)
    assert any(nsec_covers(n, qname) for n in nsecs)
    assert any(nsec_covers(n, N("*.sensor7._device.example.test.")) for n in nsecs)


def test_nodata_nsec(nsec_zs: ZoneSet) -> None:
    response = q(nsec_zs, "sensor7._device.example.test.", "A")
    assert response.rcode() == dns.rcode.NOERROR and not response.answer
    nsec = rrsets(response.authority, T.NSEC)[0]
    assert nsec.name == N("sensor7._device.example.test.")
    types = nsec_types(nsec)
    assert T.TLSA in types and T.A not in types and T.CNAME not in types


def test_empty_non_terminal_nodata_nsec(nsec_zs: ZoneSet) -> None:
    qname = N("b.c.example.test.")
    response = q(nsec_zs, qname.to_text(), "A")
    assert response.rcode() == dns.rcode.NOERROR and not response.answer
    nsec = rrsets(response.authority, T.NSEC)[0]
    assert nsec_covers(nsec, qname)
    assert next(iter(nsec)).next.is_subdomain(qname)  # proves qname is an empty non-terminal


def test_wildcard_answer_nsec(nsec_zs: ZoneSet) -> None:
    qname = N("x.wild._device.example.test.")
    response = q(nsec_zs, qname.to_text(), "TLSA")
    assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA
    tlsa = rrsets(response.answer, T.TLSA)[0]
    assert tlsa.name == qname
    rrsig = next(iter(sigs_for(response.answer, qname, T.TLSA)[0]))
    assert rrsig.labels == 4 < len(qname) - 1  # signed as *.wild._device.example.test
    nsec = rrsets(response.authority, T.NSEC)
    assert len(nsec) == 1 and nsec_covers(nsec[0], qname)
    validate_all(nsec_zs, response)


def test_wildcard_nodata_nsec(nsec_zs: ZoneSet) -> None:
    qname = N("x.wild._device.example.test.")
    response = q(nsec_zs, qname.to_text(), "A")
    assert response.rcode() == dns.rcode.NOERROR and not response.answer
    nsecs = rrsets(response.authority, T.NSEC)
    assert any(nsec_covers(n, qname) for n in nsecs)
    wildcard = [n for n in nsecs if n.name == N("*.wild._device.example.test.")]
    assert wildcard and T.A not in nsec_types(wildcard[0])


def test_wildcard_cname(nsec_zs: ZoneSet) -> None:
    qname = N("q.wildcname._device.example.test.")
    response = q(nsec_zs, qname.to_text(), "TLSA")
    assert [r.rdtype for r in response.answer] == [T.CNAME, T.RRSIG, T.TLSA, T.RRSIG]
    assert response.answer[0].name == qname
    assert any(nsec_covers(n, qname) for n in rrsets(response.authority, T.NSEC))
    validate_all(nsec_zs, response)


def test_nsec3_nxdomain_closest_encloser_proof(nsec3_zs: ZoneSet) -> None:
    qname = N("x.nope._device.example.test.")
    response = q(nsec3_zs, qname.to_text(), "TLSA")
    assert response.rcode() == dns.rcode.NXDOMAIN
    n3 = rrsets(response.authority, T.NSEC3)
    ce = N("_device.example.test.")
    assert any(nsec3_matches(r, ce) for r in n3)
    assert any(nsec3_covers(r, N("nope._device.example.test.")) for r in n3)
    assert any(nsec3_covers(r, N("*._device.example.test.")) for r in n3)
    assert len(n3) <= 3
    validate_all(nsec3_zs, response)


def test_nsec3_nodata(nsec3_zs: ZoneSet) -> None:
    qname = N("sensor7._device.example.test.")
    response = q(nsec3_zs, qname.to_text(), "A")
    n3 = rrsets(response.authority, T.NSEC3)
    assert len(n3) == 1 and nsec3_matches(n3[0], qname)
    types = nsec_types(n3[0])
    assert T.TLSA in types and T.A not in types and T.CNAME not in types


def test_nsec3_empty_non_terminal(nsec3_zs: ZoneSet) -> None:
    qname = N("b.c.example.test.")
    response = q(nsec3_zs, qname.to_text(), "A")
    n3 = rrsets(response.authority, T.NSEC3)
    assert len(n3) == 1 and nsec3_matches(n3[0], qname) and nsec_types(n3[0]) == set()


def test_nsec3_wildcard_answer(nsec3_zs: ZoneSet) -> None:
    qname = N("x.y.wild._device.example.test.")
    response = q(nsec3_zs, qname.to_text(), "TLSA")
    assert rrsets(response.answer, T.TLSA)[0].name == qname
    rrsig = next(iter(sigs_for(response.answer, qname, T.TLSA)[0]))
    assert rrsig.labels == 4
    n3 = rrsets(response.authority, T.NSEC3)
    # closest encloser wild._device (from the RRSIG labels), next closer y.wild._device
    assert len(n3) == 1 and nsec3_covers(n3[0], N("y.wild._device.example.test."))


def test_nsec3_wildcard_nodata(nsec3_zs: ZoneSet) -> None:
    qname = N("x.wild._device.example.test.")
    response = q(nsec3_zs, qname.to_text(), "A")
    n3 = rrsets(response.authority, T.NSEC3)
    assert any(nsec3_matches(r, N("wild._device.example.test.")) for r in n3)
    assert any(nsec3_covers(r, qname) for r in n3)
    wild = [r for r in n3 if nsec3_matches(r, N("*.wild._device.example.test."))]
    assert wild and T.A not in nsec_types(wild[0])


def test_nsec3_params_published(zs: ZoneSet) -> None:
    zone = zs["example.test."]
    chain = zone.snapshot.nsec3
    if chain is None:
        pytest.skip("NSEC zone")
    response = q(zs, "example.test.", "NSEC3PARAM")
    param = next(iter(response.answer[0]))
    assert (param.algorithm, param.flags, param.iterations, param.salt) == (
        1,
        0,
        chain.iterations,
        chain.salt,
    )
    owner = chain.owner_name(chain.hash(N("www.example.test.")))
    expected = dns.dnssec.nsec3_hash("www.example.test.", chain.salt, chain.iterations, 1)
    assert owner.labels[0].decode().upper() == expected


def test_referral_signed(zs: ZoneSet) -> None:
    # the responder holds _device too, so ask for a name only the parent zone answers
    zs2 = ZoneSet(zs["example.test."])
    response = q(zs2, "sensor7._device.example.test.", "TLSA")
    assert response.rcode() == dns.rcode.NOERROR and not response.flags & dns.flags.AA
    assert not response.answer
    ns = rrsets(response.authority, T.NS)[0]
    assert ns.name == N("_device.example.test.")
    assert not sigs_for(response.authority, ns.name, T.NS)  # NS at a cut is never signed
    assert rrsets(response.authority, T.DS) and sigs_for(response.authority, ns.name, T.DS)
    glue = rrsets(response.additional, T.A)
    assert glue and glue[0].name == N("ns1._device.example.test.")
    assert not rrsets(response.additional, T.RRSIG)
    validate_all(zs, response)
    plain = q(zs2, "sensor7._device.example.test.", "TLSA", do=False)
    assert not has_dnssec(plain) and not rrsets(plain.authority, T.DS)


def test_respond_as_one_zone_server(nsec_zs: ZoneSet) -> None:
    name = "sensor7._device.example.test."
    root = nsec_zs.query(name, "TLSA", zone="test.")
    assert not root.flags & dns.flags.AA
    assert rrsets(root.authority, T.NS)[0].name == N("example.test.")
    middle = nsec_zs.query(name, "TLSA", zone="example.test.")
    assert rrsets(middle.authority, T.NS)[0].name == N("_device.example.test.")
    leaf = nsec_zs.query(name, "TLSA", zone="_device.example.test.")
    assert leaf.flags & dns.flags.AA and rrsets(leaf.answer, T.TLSA)
    apex_ds = nsec_zs.query("_device.example.test.", "DS", zone="_device.example.test.")
    assert apex_ds.flags & dns.flags.AA and not apex_ds.answer  # child side: NODATA
    outside = nsec_zs.query("www.example.test.", "A", zone="_device.example.test.")
    assert outside.rcode() == dns.rcode.REFUSED
    for response in (root, middle, leaf, apex_ds):
        validate_all(nsec_zs, response)


def test_referral_unsigned_nsec(nsec_zs: ZoneSet) -> None:
    response = q(nsec_zs, "host.elsewhere.example.test.", "A")
    assert not response.flags & dns.flags.AA and not rrsets(response.authority, T.DS)
    nsec = rrsets(response.authority, T.NSEC)[0]
    assert nsec.name == N("elsewhere.example.test.")
    types = nsec_types(nsec)
    assert T.NS in types and T.DS not in types and T.SOA not in types
    assert not rrsets(response.additional, T.A)  # out-of-zone name server: no glue
    validate_all(nsec_zs, response)


def test_referral_unsigned_nsec3(nsec3_zs: ZoneSet) -> None:
    response = q(nsec3_zs, "host.elsewhere.example.test.", "A")
    n3 = rrsets(response.authority, T.NSEC3)
    assert len(n3) == 1 and nsec3_matches(n3[0], N("elsewhere.example.test."))
    assert nsec_types(n3[0]) == {T.NS}
    assert not nsec3_optout(n3[0])


def test_referral_unsigned_nsec3_optout(optout_zs: ZoneSet) -> None:
    response = q(optout_zs, "host.elsewhere.example.test.", "A")
    n3 = rrsets(response.authority, T.NSEC3)
    cut = N("elsewhere.example.test.")
    assert not any(nsec3_matches(r, cut) for r in n3)  # opted out of the chain
    assert any(nsec3_matches(r, N("example.test.")) for r in n3)
    covering = [r for r in n3 if nsec3_covers(r, cut)]
    assert covering and nsec3_optout(covering[0])
    validate_all(optout_zs, response)


def test_ds_nodata_optout(optout_zs: ZoneSet) -> None:
    response = q(optout_zs, "elsewhere.example.test.", "DS")
    assert response.flags & dns.flags.AA and not response.answer
    n3 = rrsets(response.authority, T.NSEC3)
    covering = [r for r in n3 if nsec3_covers(r, N("elsewhere.example.test."))]
    assert covering and nsec3_optout(covering[0])


def test_ds_nodata_for_unsigned_child(nsec_zs: ZoneSet) -> None:
    response = q(nsec_zs, "insecure.example.test.", "DS")
    assert response.flags & dns.flags.AA and not response.answer
    nsec = rrsets(response.authority, T.NSEC)[0]
    assert nsec.name == N("insecure.example.test.") and T.DS not in nsec_types(nsec)


def test_unsigned_zone_has_no_dnssec(nsec_zs: ZoneSet) -> None:
    response = q(nsec_zs, "www.insecure.example.test.", "A")
    assert response.flags & dns.flags.AA and response.answer and not has_dnssec(response)


def test_cname_followed_inside_zone(nsec_zs: ZoneSet) -> None:
    response = q(nsec_zs, "alias.example.test.", "AAAA")
    assert [r.rdtype for r in response.answer] == [T.CNAME, T.RRSIG, T.AAAA, T.RRSIG]
    out = q(nsec_zs, "outside.example.test.", "TLSA")
    assert [r.rdtype for r in out.answer] == [T.CNAME, T.RRSIG]  # other zone: resolver follows
    dangling = q(nsec_zs, "dangling.example.test.", "A")
    assert dangling.rcode() == dns.rcode.NXDOMAIN  # RFC 6604: rcode of the last name
    assert rrsets(dangling.answer, T.CNAME)
    assert any(
        nsec_covers(n, N("nothing-here.example.test.")) for n in rrsets(dangling.authority, T.NSEC)
    )
    cname = q(nsec_zs, "alias.example.test.", "CNAME")
    assert [r.rdtype for r in cname.answer] == [T.CNAME, T.RRSIG]


def test_cross_zone_cname_not_followed(nsec_zs: ZoneSet) -> None:
    response = q(nsec_zs, "moved._device.example.test.", "TLSA")
    assert [r.rdtype for r in response.answer] == [T.CNAME, T.RRSIG]
    target = q(nsec_zs, "t._dane.example.test.", "TLSA")
    assert [r.rdtype for r in target.answer] == [T.TLSA, T.RRSIG]


def test_any_query(nsec_zs: ZoneSet) -> None:
    response = q(nsec_zs, "www.example.test.", "ANY")
    types = {r.rdtype for r in response.answer}
    assert {T.A, T.AAAA, T.RRSIG} <= types


def test_refused_outside_zones(nsec_zs: ZoneSet) -> None:
    response = q(nsec_zs, "example.com.", "A")
    assert response.rcode() == dns.rcode.REFUSED and not response.flags & dns.flags.AA


def test_formerr_notimp_badvers(nsec_zs: ZoneSet) -> None:
    garbage = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff"
    response = nsec_zs.respond(garbage)
    assert response.rcode() == dns.rcode.FORMERR and response.id == 0x1234
    query = dns.message.make_query("example.test.", "A")
    query.set_opcode(dns.opcode.NOTIFY)
    assert nsec_zs.respond(query).rcode() == dns.rcode.NOTIMP
    query = dns.message.make_query("example.test.", "A", use_edns=1)
    response = nsec_zs.respond(query)
    assert response.rcode() == dns.rcode.BADVERS and response.edns == 0
    query = dns.message.make_query("example.test.", "AXFR")
    assert nsec_zs.respond(query).rcode() == dns.rcode.REFUSED
    two = dns.message.make_query("example.test.", "A")
    two.question.append(two.question[0])
    assert nsec_zs.respond(two).rcode() == dns.rcode.FORMERR
    assert nsec_zs.respond_wire(b"\x00\x01").data is None  # no header: no answer


def test_udp_size_and_truncation(nsec3_zs: ZoneSet) -> None:
    query = dns.message.make_query("nope.x.y.example.test.", "A", want_dnssec=True, payload=512)
    wire = nsec3_zs.respond_wire(query.to_wire(), transport="udp").data
    assert wire is not None and len(wire) <= 512
    response = dns.message.from_wire(wire)
    assert response.flags & dns.flags.TC and not response.answer and not response.authority
    assert response.edns == 0  # OPT kept
    big = dns.message.make_query("nope.x.y.example.test.", "A", want_dnssec=True, payload=4096)
    wire = nsec3_zs.respond_wire(big.to_wire(), transport="udp").data
    assert wire is not None
    full = dns.message.from_wire(wire)
    assert not full.flags & dns.flags.TC and dns.message.from_wire(wire).payload == 1232
    assert len(wire) > 512
    tcp = nsec3_zs.respond_wire(query.to_wire(), transport="tcp").data
    assert tcp is not None and not dns.message.from_wire(tcp).flags & dns.flags.TC


def test_case_preserved_in_question(nsec_zs: ZoneSet) -> None:
    response = q(nsec_zs, "SeNsOr7._DeViCe.ExAmPlE.TeSt.", "TLSA")
    assert response.question[0].name.to_text() == "SeNsOr7._DeViCe.ExAmPlE.TeSt."
    assert rrsets(response.answer, T.TLSA)
    validate_all(nsec_zs, response)
