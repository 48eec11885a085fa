"""The wire format, byte for byte, and the parser's defences against hostile input."""

from __future__ import annotations

import contextlib
import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.dns.protocol import (
    FLAG_QR,
    FLAG_RD,
    FormatError,
    HeaderError,
    MessageWriter,
    is_subdomain,
    name_from_text,
    name_to_text,
    parse_client_subnet,
    parse_query,
    read_name,
)

WWW = b"\x03www\x07example\x03com\x00"


def header(qd=1, an=0, ns=0, ar=0, flags=FLAG_RD, msg_id=0x1234):
    return struct.pack("!HHHHHH", msg_id, flags, qd, an, ns, ar)


def question(name=WWW, qtype=1, qclass=1):
    return name + struct.pack("!HH", qtype, qclass)


def test_parses_a_dnspython_query_with_edns_and_client_subnet():
    ecs = dns.edns.ECSOption("10.1.2.0", 24)
    wire = dns.message.make_query("WwW.Example.COM", "AAAA", use_edns=0, payload=4096,
                                  want_dnssec=True, options=[ecs]).to_wire()  # fmt: skip
    query = parse_query(wire)
    assert query.qname == WWW  # lower-cased key
    assert query.question[:-4] == b"\x03WwW\x07Example\x03COM\x00"  # the client's case kept
    assert (query.qtype, query.qclass, query.opcode) == (28, 1, 0)
    assert query.rd
    assert query.edns and query.edns_version == 0 and query.edns_payload == 4096
    assert query.edns_do
    assert query.ecs.source_prefix == 24 and str(query.ecs.address) == "10.1.2.0"


def test_payload_below_512_counts_as_512():
    wire = dns.message.make_query("www.example.com", "A", use_edns=0, payload=100).to_wire()
    assert parse_query(wire).edns_payload == 512


def test_short_header_gets_no_answer():
    with pytest.raises(HeaderError):
        parse_query(b"\x12\x34\x01\x00\x00\x01")


def test_a_response_is_never_answered():
    with pytest.raises(HeaderError):
        parse_query(header(flags=FLAG_QR) + question())


@pytest.mark.parametrize("qd", [0, 2])
def test_question_count_other_than_one_is_formerr(qd):
    with pytest.raises(FormatError, match="one question"):
        parse_query(header(qd=qd) + question() * qd)


def test_notify_without_question_still_parses_for_notimp():
    query = parse_query(header(qd=0, flags=4 << 11))
    assert query.opcode == 4


def test_label_past_the_end_is_formerr():
    with pytest.raises(FormatError, match="past the end"):
        parse_query(header() + b"\x3fabc")


def test_question_cut_short_is_formerr():
    with pytest.raises(FormatError, match="cut short"):
        parse_query(header() + WWW + b"\x00")


def test_pointer_to_itself_is_refused():
    data = header() + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    with pytest.raises(FormatError, match="backwards"):
        parse_query(data)


def test_two_pointer_loop_is_refused():
    # name A at 12: label "a" then pointer to 17; name at 17: label "b" then pointer to 12.
    msg = header(ar=1) + question() + b"\x01a\xc0\x22" + b"\x01b\xc0\x1f"
    with pytest.raises(FormatError):
        parse_query(msg)
    # read_name directly on a crafted loop terminates with FormatError too.
    loop = b"\x00" * 12 + b"\x01a\xc0\x10" + b"\x01b\xc0\x0c"
    with pytest.raises(FormatError):
        read_name(loop, 12)


def test_backward_pointer_is_followed():
    data = b"\x00" * 12 + WWW + b"\x04mail\xc0\x10"
    name, end = read_name(data, 12 + len(WWW))
    assert name == b"\x04mail\x07example\x03com\x00"
    assert end == len(data)


def test_name_longer_than_255_bytes_is_refused():
    long_name = b"\x3f" + b"a" * 63
    data = header() + long_name * 5 + b"\x00" + b"\x00\x01\x00\x01"
    with pytest.raises(FormatError, match="255"):
        parse_query(data)


def test_huge_counts_are_refused_before_any_parsing():
    with pytest.raises(FormatError, match="promise more"):
        parse_query(header(an=0xFFFF, ns=0xFFFF, ar=0xFFFF) + question())


def test_trailing_garbage_is_formerr():
    with pytest.raises(FormatError, match="trailing"):
        parse_query(header() + question() + b"junk")


def opt(payload=1232, ttl=0, options=b"", owner=b"\x00"):
    return owner + struct.pack("!HHIH", 41, payload, ttl, len(options)) + options


def test_two_opt_records_are_formerr():
    with pytest.raises(FormatError, match="more than one OPT"):
        parse_query(header(ar=2) + question() + opt() + opt())


def test_opt_with_a_non_root_owner_is_formerr():
    with pytest.raises(FormatError, match="root"):
        parse_query(header(ar=1) + question() + opt(owner=WWW))


def test_edns_version_is_read_from_the_ttl_field():
    query = parse_query(header(ar=1) + question() + opt(ttl=1 << 16))
    assert query.edns_version == 1


def test_option_running_past_opt_is_formerr():
    with pytest.raises(FormatError):
        parse_query(header(ar=1) + question() + opt(options=b"\x00\x08\x00\x10\x00\x01"))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x00\x03\x18\x00\x0a\x01\x02", "family"),
        (b"\x00\x01\x21\x00" + b"\x0a" * 5, "too long"),
        (b"\x00\x01\x18\x10\x0a\x01\x02", "scope"),
        (b"\x00\x01\x18\x00\x0a\x01\x02\x00", "octets"),
        (b"\x00\x01\x17\x00\x0a\x01\x03", "bits set"),
        (b"\x00\x01", "shorter"),
    ],
)
def test_malformed_client_subnet_is_formerr(body, reason):
    with pytest.raises(FormatError, match=reason):
        parse_client_subnet(body)


def test_client_subnet_encodes_back_with_our_scope():
    ecs = parse_client_subnet(b"\x00\x01\x18\x00\x0a\x01\x02")
    assert ecs.encode(16) == b"\x00\x01\x18\x10\x0a\x01\x02"
    v6 = parse_client_subnet(b"\x00\x02\x30\x00" + bytes.fromhex("20010db80001"))
    assert str(v6.address) == "2001:db8:1::" and v6.encode(48)[3] == 48


def test_writer_compresses_against_earlier_names_byte_exact():
    writer = MessageWriter()
    writer.buf += b"\x00" * 12
    writer.name(WWW)
    writer.name(b"\x04mail\x07EXAMPLE\x03com\x00")
    writer.name(b"\x03WWW\x07example\x03com\x00")
    assert bytes(writer.buf[12:]) == WWW + b"\x04mail\xc0\x10" + b"\xc0\x0c"


def test_writer_remembers_the_echoed_question():
    writer = MessageWriter()
    writer.buf += b"\x00" * 12 + b"\x03WwW\x07example\x03com\x00"
    writer.remember(b"\x03WwW\x07example\x03com\x00", 12)
    writer.name(b"\x03www\x07example\x03com\x00")
    assert bytes(writer.buf[-2:]) == b"\xc0\x0c"


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("www.example.com.", WWW),
        (".", b"\x00"),
        ("a\\.b.example.com.", b"\x03a.b\x07example\x03com\x00"),
        ("\\065.com.", b"\x01A\x03com\x00"),
    ],
)
def test_names_from_presentation_form(text, wire):
    assert name_from_text(text) == wire
    assert name_from_text(name_to_text(wire)) == wire


def test_relative_names_take_the_origin():
    assert name_from_text("www", b"\x07example\x03com\x00") == WWW
    assert name_from_text("@", WWW) == WWW
    with pytest.raises(ValueError, match="ORIGIN"):
        name_from_text("www")


@pytest.mark.parametrize("bad", ["a..b.", "x" * 64 + ".", ("a" * 60 + ".") * 5, "a\\"])
def test_bad_names_are_refused(bad):
    with pytest.raises(ValueError):
        name_from_text(bad)


def test_subdomain_matches_on_label_boundaries():
    origin = b"\x07example\x03com\x00"
    assert is_subdomain(WWW, origin)
    assert is_subdomain(origin, origin)
    assert not is_subdomain(b"\x0aanexample\x03com\x00", origin)
    assert is_subdomain(WWW, b"\x00")


# -- hostile input, generated --------------------------------------------------------

VALID = dns.message.make_query("www.example.com", "A", use_edns=0,
                               options=[dns.edns.ECSOption("10.1.2.0", 24)]).to_wire()  # fmt: skip


@given(st.binary(max_size=600))
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_random_bytes_parse_or_raise_a_protocol_error(data):
    with contextlib.suppress(HeaderError, FormatError):
        parse_query(data)


@given(st.integers(min_value=0, max_value=len(VALID) - 1))
def test_every_truncation_of_a_valid_query_is_refused_cleanly(cut):
    with pytest.raises((HeaderError, FormatError)):
        parse_query(VALID[:cut])


@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6))
@settings(max_examples=500)
def test_mutated_valid_queries_never_crash_the_parser(flips):
    data = bytearray(VALID)
    for index, value in flips:
        data[index] = value
    with contextlib.suppress(HeaderError, FormatError):
        parse_query(bytes(data))


@given(st.binary(min_size=12, max_size=12), st.binary(max_size=2000))
@settings(max_examples=300)
def test_oversized_and_random_bodies_are_refused_cleanly(head, body):
    with contextlib.suppress(HeaderError, FormatError):
        parse_query(head + body)


@given(st.binary(max_size=600))
@settings(max_examples=300)
def test_response_parser_refuses_garbage_cleanly(data):
    from components.dns.protocol import parse_response

    with contextlib.suppress(HeaderError, FormatError):
        parse_response(data)
