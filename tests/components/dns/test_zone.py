"""Master files in (RFC 1035 §5), authoritative lookups out (RFC 1034 §4.3.2, RFC 2308)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.dns.protocol import Rcode, RRType, name_from_text
from components.dns.zone import Catalog, ZoneError, load_zone, parse_ttl, parse_zone


def n(text):
    return name_from_text(text if text.endswith(".") else text + ".").lower()


@pytest.fixture
def catalog(zone_file):
    return Catalog([load_zone(zone_file)])


def test_zone_loads_every_type(zone_file):
    zone = load_zone(zone_file)
    assert zone.origin == n("example.com")
    assert zone.serial == 2024010101
    apex = zone.nodes[n("example.com")].rrsets
    assert set(apex) == {RRType.SOA, RRType.NS, RRType.MX, RRType.CAA}
    assert len(apex[RRType.NS].rdatas) == 2
    assert zone.nodes[n("mail.example.com")].rrsets[RRType.A].ttl == 300
    assert zone.nodes[n("txt.example.com")].rrsets[RRType.TXT].rdatas == [
        (b'\x0bhello world\x0asecond "q"',)
    ]
    srv = zone.nodes[n("_sip._tcp.example.com")].rrsets[RRType.SRV].rdatas[0]
    assert srv == (b"\x00\x0a\x00\x3c\x13\xc4", b"\x03sip\x07example\x03com\x00")
    caa = apex[RRType.CAA].rdatas[0]
    assert caa == (b"\x00\x05issueletsencrypt.org",)


def test_soa_times_accept_units_and_negative_ttl_is_min_of_ttl_and_minimum(zone_file):
    zone = load_zone(zone_file)
    assert zone.negative_ttl == 300


@pytest.mark.parametrize(("text", "seconds"), [("3600", 3600), ("1h30m", 5400), ("2W", 1209600)])
def test_ttl_units(text, seconds):
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["1x", "h", "1h30", "4294967296"])
def test_bad_ttls_are_refused(text):
    with pytest.raises(ValueError):
        parse_ttl(text)


def test_positive_answer_is_authoritative(catalog):
    answer = catalog.lookup(n("www.example.com"), RRType.A)
    assert answer.rcode == Rcode.NOERROR and answer.authoritative
    assert [r.rtype for r in answer.answer] == [RRType.A]
    assert answer.authority == []


def test_cname_chain_inside_the_zone_is_followed(catalog):
    answer = catalog.lookup(n("chain.example.com"), RRType.AAAA)
    assert [r.rtype for r in answer.answer] == [RRType.CNAME, RRType.CNAME, RRType.AAAA]


def test_cname_out_of_our_zones_stops_there(catalog):
    answer = catalog.lookup(n("away.example.com"), RRType.A)
    assert [r.rtype for r in answer.answer] == [RRType.CNAME]
    assert answer.rcode == Rcode.NOERROR


def test_cname_loop_is_cut(catalog):
    answer = catalog.lookup(n("loop1.example.com"), RRType.A)
    assert [r.rtype for r in answer.answer] == [RRType.CNAME, RRType.CNAME]


def test_asking_for_the_cname_itself_does_not_follow(catalog):
    answer = catalog.lookup(n("alias.example.com"), RRType.CNAME)
    assert [r.rtype for r in answer.answer] == [RRType.CNAME]


def test_nxdomain_carries_the_soa_with_the_negative_ttl(catalog):
    answer = catalog.lookup(n("nope.example.com"), RRType.A)
    assert answer.rcode == Rcode.NXDOMAIN and answer.authoritative
    assert answer.answer == []
    assert [(r.rtype, r.ttl) for r in answer.authority] == [(RRType.SOA, 300)]


def test_nodata_is_noerror_with_the_soa(catalog):
    answer = catalog.lookup(n("mail.example.com"), RRType.AAAA)
    assert answer.rcode == Rcode.NOERROR and answer.answer == []
    assert [r.rtype for r in answer.authority] == [RRType.SOA]


def test_empty_non_terminal_exists(catalog):
    answer = catalog.lookup(n("b.c.example.com"), RRType.A)
    assert answer.rcode == Rcode.NOERROR and answer.answer == []


def test_names_outside_our_zones_are_refused(catalog):
    answer = catalog.lookup(n("example.org"), RRType.A)
    assert answer.rcode == Rcode.REFUSED and not answer.authoritative


def test_any_gets_one_rrset(catalog):
    answer = catalog.lookup(n("www.example.com"), RRType.ANY)
    assert len(answer.answer) == 1 and answer.answer[0].rtype == RRType.A


def test_delegation_gives_a_referral_with_glue(catalog):
    answer = catalog.lookup(n("host.sub.example.com"), RRType.A)
    assert not answer.authoritative and answer.rcode == Rcode.NOERROR
    assert [r.rtype for r in answer.authority] == [RRType.NS]
    assert [r.rtype for r in answer.additional] == [RRType.A]


def test_the_closest_enclosing_zone_answers(zone_file):
    child = parse_zone(
        "$ORIGIN deep.example.com.\n@ 60 IN SOA ns hm 1 2 3 4 5\n@ 60 NS ns\nns 60 A 192.0.2.4\n",
        "child",
    )
    catalog = Catalog([load_zone(zone_file), child])
    answer = catalog.lookup(n("ns.deep.example.com"), RRType.A)
    assert answer.zone is child and answer.answer


def test_dynamic_types_make_a_name_exist(catalog):
    catalog.add_dynamic(n("www.geo.example.com"), RRType.A)
    assert catalog.lookup(n("www.geo.example.com"), RRType.AAAA).rcode == Rcode.NOERROR
    assert catalog.lookup(n("geo.example.com"), RRType.A).rcode == Rcode.NOERROR
    with pytest.raises(ZoneError, match="CNAME"):
        catalog.add_dynamic(n("alias.example.com"), RRType.A)
    with pytest.raises(ZoneError, match="not inside"):
        catalog.add_dynamic(n("x.example.org"), RRType.A)


def test_duplicate_records_are_merged():
    zone = parse_zone(
        "$ORIGIN x.\n$TTL 60\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\nns A 192.0.2.1\n"
    )
    assert len(zone.nodes[n("ns.x")].rrsets[RRType.A].rdatas) == 1


GOOD_HEAD = "$ORIGIN example.com.\n$TTL 60\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\n"


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        ("www A 300.1.1.1\n", 5, "300.1.1.1"),
        ("www BOGUS 1\n", 5, "unsupported record type"),
        ("$INCLUDE other.zone\n", 5, "INCLUDE"),
        ("www CNAME x\nwww A 192.0.2.1\n", 6, "already has a CNAME"),
        ("www A 192.0.2.1\nwww CNAME x\n", 6, "CNAME cannot sit"),
        ("www.example.org. A 192.0.2.1\n", 5, "outside the zone"),
        ("www A (192.0.2.1\n", 5, "never closed"),
        ('www TXT "abc\n', 5, "unterminated"),
        ("www CH A 192.0.2.1\n", 5, "class CH"),
        ("www MX ten mail\n", 5, "MX preference"),
        ("www TXT " + '"' + "x" * 256 + '"\n', 5, "255"),
        ("@ SOA ns hm 1 2 3 4 5\n", 5, "only one SOA"),
        ("$FOO bar\n", 5, "unknown directive"),
        ("www A 192.0.2.1 192.0.2.2\n", 5, "1 field"),
        ("www CAA 0 bad-tag x\n", 5, "CAA tag"),
    ],
)
def test_bad_zones_name_the_file_and_line(body, line, reason):
    with pytest.raises(ZoneError) as error:
        parse_zone(GOOD_HEAD + body, "zones/example.com.zone")
    assert f"zones/example.com.zone:{line}:" in str(error.value)
    assert reason in str(error.value)


def test_a_zone_must_start_with_its_soa():
    with pytest.raises(ZoneError, match=":2: the first record must be the zone's SOA"):
        parse_zone("$TTL 60\nwww.x. A 192.0.2.1\n", "z")


def test_a_zone_needs_ns_at_the_apex():
    with pytest.raises(ZoneError, match="no NS"):
        parse_zone("$ORIGIN x.\n@ 60 SOA ns hm 1 2 3 4 5\n", "z")


def test_no_ttl_anywhere_is_an_error():
    with pytest.raises(ZoneError, match="no TTL"):
        parse_zone(
            "$ORIGIN x.\n@ SOA ns hm 1 2 3 4 5\n@ 60 NS ns\nwww A 192.0.2.1\n".replace("@ 60", "@"),
            "z",
        )


def test_missing_file_is_a_zone_error(tmp_path):
    with pytest.raises(ZoneError, match="cannot read"):
        load_zone(tmp_path / "nope.zone")


def test_two_files_for_one_zone_are_refused(zone_file):
    with pytest.raises(ZoneError, match="already loaded"):
        Catalog([load_zone(zone_file), load_zone(zone_file)])


_ZONE_ALPHABET = 'abc.@$();\\"\n\t 0123456789ORIGINTLSOAMXNSCAE-:'


@given(st.text(alphabet=_ZONE_ALPHABET, max_size=300))
@settings(max_examples=400)
def test_any_text_loads_or_fails_with_a_zone_error(text):
    with contextlib.suppress(ZoneError):
        parse_zone(GOOD_HEAD + text, "fuzz.zone")


@given(st.lists(st.sampled_from(["www", "A", "AAAA", "MX", "TXT", "CNAME", "192.0.2.1", "10",
                                 "::1", '"x"', "(", ")", "IN", "60", "mail", ";c", "\n"]),
                max_size=30))  # fmt: skip
@settings(max_examples=400)
def test_shuffled_record_tokens_load_or_fail_with_a_zone_error(tokens):
    with contextlib.suppress(ZoneError):
        parse_zone(GOOD_HEAD + " ".join(tokens) + "\n", "fuzz.zone")


def test_wildcard_answers_for_missing_names_with_the_owner_asked_for(catalog):
    for qname in ("a.wild.example.com", "x.y.wild.example.com"):
        answer = catalog.lookup(n(qname), RRType.A)
        assert answer.rcode == Rcode.NOERROR and answer.authoritative
        assert [(r.name, r.rtype) for r in answer.answer] == [(n(qname), RRType.A)]
        assert answer.answer[0].rdatas == [(bytes([192, 0, 2, 50]),)]


def test_wildcard_without_the_type_is_nodata(catalog):
    answer = catalog.lookup(n("a.wild.example.com"), RRType.AAAA)
    assert answer.rcode == Rcode.NOERROR and answer.answer == []
    assert answer.authority[0].rtype == RRType.SOA


def test_an_existing_name_blocks_the_wildcard(catalog):
    assert catalog.lookup(n("explicit.wild.example.com"), RRType.TXT).answer == []  # NODATA
    below = catalog.lookup(n("deeper.explicit.wild.example.com"), RRType.A)
    assert below.rcode == Rcode.NXDOMAIN  # closest encloser has no wildcard child


def test_the_wildcard_parent_itself_is_an_empty_non_terminal(catalog):
    answer = catalog.lookup(n("wild.example.com"), RRType.A)
    assert answer.rcode == Rcode.NOERROR and answer.answer == []


def test_wildcard_cname_is_synthesised_and_followed(catalog):
    answer = catalog.lookup(n("foo.cn.example.com"), RRType.A)
    assert [(r.name, r.rtype) for r in answer.answer] == [
        (n("foo.cn.example.com"), RRType.CNAME),
        (n("www.example.com"), RRType.A),
    ]


def test_mx_ns_and_srv_targets_we_hold_come_with_their_addresses(catalog):
    mx = catalog.lookup(n("example.com"), RRType.MX)
    assert [(r.name, r.rtype) for r in mx.additional] == [(n("mail.example.com"), RRType.A)]
    ns = catalog.lookup(n("example.com"), RRType.NS)
    assert [r.name for r in ns.additional] == [n("ns1.example.com")]  # ns2 is not ours
    srv = catalog.lookup(n("_sip._tcp.example.com"), RRType.SRV)
    assert [r.name for r in srv.additional] == [n("sip.example.com")]


def test_generic_rdata_of_rfc_3597(zone_file):
    node = load_zone(zone_file).nodes[n("generic.example.com")]
    assert node.rrsets[65280].rdatas == [(b"\x0a\x00\x00\x01",)]
    assert node.rrsets[RRType.A].rdatas == [(b"\xc0\x00\x02\x02",)]
    zone = parse_zone(
        GOOD_HEAD + "a TYPE1 192.0.2.9\n"  # a known type by number, usual RDATA
        "a TYPE16 ( \\# 12 05 68656C6C6F\n 05776f726c64 )\n"  # hex split over lines
        "a TYPE65281 \\# 0\n"  # empty RDATA
        "a TXT \\# 6 0568656c6c6f\n"  # the same TXT again: merged as a duplicate
    )
    rrsets = zone.nodes[n("a.example.com")].rrsets
    assert rrsets[RRType.A].rdatas == [(b"\xc0\x00\x02\x09",)]
    assert rrsets[RRType.TXT].rdatas == [(b"\x05hello\x05world",), (b"\x05hello",)]
    assert rrsets[65281].rdatas == [(b"",)]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("www TYPE65280 \\# 5 0a000001\n", "says 5 bytes"),
        ("www TYPE65280 \\# 2 0a0\n", "two digits a byte"),
        ("www TYPE65280 \\# 2 zz11\n", "hexadecimal"),
        ("www TYPE65280 \\#\n", "needs the RDATA length"),
        ("www TYPE65280 10.0.0.1\n", "generic form"),
        ("www TYPE70000 \\# 0\n", "16 bits"),
        ("www TYPE255 \\# 0\n", "meta or query type"),
        ("www TYPE41 \\# 0\n", "OPT"),
        ("www TYPE46 \\# 0\n", "DNSSEC"),
        ("www TYPE0 \\# 0\n", "reserved"),
        ("www A \\# 3 c00002\n", "4 bytes"),
        ("www MX \\# 3 000a00\n", "usual form"),
        ("www TYPE5 \\# 1 00\n", "usual form"),
        ("www TXT \\# 3 056162\n", "character-strings"),
        ("www CAA \\# 2 0000\n", "CAA RDATA"),
    ],
)
def test_bad_generic_rdata_names_the_line(body, reason):
    with pytest.raises(ZoneError) as error:
        parse_zone(GOOD_HEAD + body, "zones/example.com.zone")
    assert "zones/example.com.zone:5:" in str(error.value)
    assert reason in str(error.value)
