"""The HTTP/1.1 codec, byte-exact and without sockets (RFC 9112 section numbers inline)."""

from __future__ import annotations

import pytest

from components.common.http1 import (
    LAST_CHUNK,
    MAX_FIELDS,
    MAX_HEAD_BYTES,
    MAX_REPEAT_HEAD_BYTES,
    MAX_START_LINE_BYTES,
    NEED_DATA,
    Data,
    EndOfMessage,
    Parser,
    ProtocolError,
    Request,
    Response,
    chunk,
    error_response,
    serialize_request_head,
    serialize_response_head,
    serialize_trailers,
)


def events(parser: Parser, data: bytes = b"", eof: bool = False) -> list:
    if data:
        parser.feed(data)
    if eof:
        parser.feed_eof()
    out = []
    while True:
        event = parser.next_event()
        if event is NEED_DATA:
            return out
        out.append(event)


def body_of(evs) -> bytes:
    return b"".join(e.data for e in evs if type(e) is Data)


def rejected(data: bytes, response_to: bytes | None = None, eof: bool = False) -> ProtocolError:
    parser = Parser(response=response_to is not None)
    if response_to is not None:
        parser.expect_response(response_to)
    with pytest.raises(ProtocolError) as info:
        events(parser, data, eof)
    assert parser.closed
    return info.value


# -- requests ---------------------------------------------------------------------------


def test_simple_get_parses_head_and_ends_without_body():
    evs = events(Parser(), b"GET /a?b=1 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n")
    request, end = evs
    assert type(request) is Request
    assert (request.method, request.target, request.version) == (b"GET", b"/a?b=1", b"1.1")
    assert request.headers == [(b"Host", b"example"), (b"Accept", b"*/*")]
    assert request.framing == "none" and request.keep_alive
    assert end == EndOfMessage([])


def test_field_values_lose_surrounding_whitespace_and_names_keep_case():
    (request, _) = events(Parser(), b"GET / HTTP/1.1\r\nHoSt:   h \t\r\nX-Empty:\r\n\r\n")
    assert request.headers == [(b"HoSt", b"h"), (b"X-Empty", b"")]
    assert request.get(b"host") == b"h"


def test_content_length_body_is_streamed_in_the_pieces_that_arrive():
    parser = Parser()
    evs = events(parser, b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
    assert evs[0].framing == "length" and evs[0].content_length == 10
    assert evs[1:] == [Data(b"abc")]
    assert events(parser, b"defg") == [Data(b"defg")]
    assert events(parser, b"hij") == [Data(b"hij"), EndOfMessage([])]
    assert parser.idle


def test_chunked_body_with_extensions_and_trailers():
    data = (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n6 ; x\r\n world\r\n0\r\nChecksum: abc\r\nX-T: 1\r\n\r\n"
    )
    evs = events(Parser(), data)
    assert evs[0].framing == "chunked"
    assert body_of(evs) == b"hello world"
    assert evs[-1] == EndOfMessage([(b"Checksum", b"abc"), (b"X-T", b"1")])


def test_transfer_coding_names_are_case_insensitive():
    evs = events(
        Parser(), b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n"
    )
    assert evs[0].framing == "chunked" and evs[-1] == EndOfMessage([])


def test_pipelined_requests_come_out_in_order():
    data = b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(5))
    targets = [e.target for e in events(Parser(), data) if type(e) is Request]
    assert targets == [b"/0", b"/1", b"/2", b"/3", b"/4"]


def test_empty_lines_before_a_request_are_ignored():
    evs = events(Parser(), b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert type(evs[0]) is Request


def test_connection_close_ends_the_connection_after_the_message():
    parser = Parser()
    evs = events(
        parser, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n"
    )
    assert not evs[0].keep_alive
    assert len(evs) == 2 and parser.closed


def test_http10_keeps_alive_only_when_asked():
    (plain, _) = events(Parser(), b"GET / HTTP/1.0\r\n\r\n")
    assert plain.version == b"1.0" and not plain.keep_alive
    (asked, _) = events(Parser(), b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
    assert asked.keep_alive
    assert asked.connection == frozenset({b"keep-alive"})


def test_expect_100_continue_is_flagged():
    head = b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    (request,) = events(Parser(), head)
    assert request.expect_continue


def test_identical_repeated_content_lengths_fold_into_one():
    head = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc"
    evs = events(Parser(), head)
    assert evs[0].content_length == 3 and body_of(evs) == b"abc"


# -- requests refused (RFC 9112 §6 and §11: smuggling vectors) -----------------------------

BAD_REQUESTS = {
    "cl_and_te": (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    "differing_cl": (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        400,
    ),
    "cl_list_differs": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\n", 400),
    "cl_sign": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\n", 400),
    "cl_hex": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x3\r\n\r\n", 400),
    "cl_empty": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400),
    "cl_huge": (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9999999999999999999999\r\n\r\n",
        400,
    ),
    "te_unknown": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    "te_obfuscated": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
    "te_not_last": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501),
    "te_twice": (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    "te_in_http10": (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    "space_before_colon": (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 3\r\n\r\n", 400),
    "obs_fold": (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  b\r\n\r\n", 400),
    "bare_cr": (b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400),
    "bare_lf": (b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400),
    "nul": (b"GET / HTTP/1.1\r\nHost: h\x00\r\n\r\n", 400),
    "ctl_in_value": (b"GET / HTTP/1.1\r\nHost: h\x01\r\n\r\n", 400),
    "no_colon": (b"GET / HTTP/1.1\r\nHost h\r\n\r\n", 400),
    "empty_name": (b"GET / HTTP/1.1\r\n: h\r\n\r\n", 400),
    "no_host": (b"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400),
    "two_hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "bad_method": (b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "two_spaces": (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "no_version": (b"GET /\r\nHost: h\r\n\r\n", 400),
    "lowercase_version": (b"GET / http/1.1\r\nHost: h\r\n\r\n", 400),
    "http2": (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_request_framing_is_refused_with_the_rfc_status(name):
    data, status = BAD_REQUESTS[name]
    assert rejected(data).status == status


BAD_CHUNKS = {
    "hex_prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "negative": b"-5\r\nhello\r\n0\r\n\r\n",
    "underscore": b"1_0\r\n",
    "leading_space": b" 5\r\nhello\r\n0\r\n\r\n",
    "empty_size": b"\r\nhello\r\n0\r\n\r\n",
    "too_big": b"fffffffffffffffff\r\n",
    "no_crlf_after_data": b"5\r\nhelloX\r\n0\r\n\r\n",
    "lf_after_data": b"5\r\nhello\n0\r\n\r\n",
    "bare_lf_size_line": b"5\nhello\r\n0\r\n\r\n",
    "ctl_in_ext": b"5;a\x01\r\nhello\r\n0\r\n\r\n",
    "space_in_trailer_name": b"0\r\nX : y\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(BAD_CHUNKS))
def test_invalid_chunk_framing_is_400(name):
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert rejected(head + BAD_CHUNKS[name]).status == 400


def test_nothing_is_parsed_after_an_error():
    parser = Parser()
    with pytest.raises(ProtocolError):
        events(parser, BAD_REQUESTS["cl_and_te"][0] + b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert parser.next_event() is NEED_DATA and parser.closed


# -- bounds ---------------------------------------------------------------------------------


def test_request_line_over_8k_is_414_even_before_it_ends():
    assert rejected(b"GET /" + b"a" * MAX_START_LINE_BYTES).status == 414
    long_line = b"GET /" + b"a" * MAX_START_LINE_BYTES + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    assert rejected(long_line).status == 414


def test_request_line_of_exactly_8k_is_accepted():
    target = b"/" + b"a" * (MAX_START_LINE_BYTES - len(b"GET  HTTP/1.1") - 1)
    line = b"GET " + target + b" HTTP/1.1"
    assert len(line) == MAX_START_LINE_BYTES
    (request, _) = events(Parser(), line + b"\r\nHost: h\r\n\r\n")
    assert request.target == target


def test_head_over_64k_is_431():
    fields = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))
    assert rejected(b"GET / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n").status == 431
    # ...and also while it is still arriving, so the buffer never grows past the bound.
    assert rejected(b"GET / HTTP/1.1\r\nHost: h\r\n" + fields).status == 431


def test_more_than_100_fields_is_431():
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_FIELDS))
    assert rejected(b"GET / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n").status == 431
    ok = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_FIELDS - 1))
    assert type(events(Parser(), b"GET / HTTP/1.1\r\nHost: h\r\n" + ok + b"\r\n")[0]) is Request


def test_long_chunk_size_line_is_refused():
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert rejected(head + b"5;" + b"e" * 5000).status == 400


def test_truncated_request_at_eof_is_400_and_clean_eof_is_not_an_error():
    assert (
        rejected(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab", eof=True).status
        == 400
    )
    assert rejected(b"GET / HTTP/1.1\r\nHo", eof=True).status == 400
    parser = Parser()
    assert events(parser, b"", eof=True) == [] and parser.closed


def test_buffered_counts_unparsed_bytes():
    parser = Parser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\n")
    parser.next_event()
    parser.next_event()
    assert parser.buffered == len(b"GET /2 HTTP/1.1\r\n")


# -- responses ------------------------------------------------------------------------------


def response_events(data: bytes, *methods: bytes, eof: bool = False) -> list:
    parser = Parser(response=True)
    for method in methods or (b"GET",):
        parser.expect_response(method)
    return events(parser, data, eof)


def test_response_with_content_length():
    evs = response_events(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert type(evs[0]) is Response and evs[0].status == 200 and evs[0].reason == b"OK"
    assert body_of(evs) == b"hello" and evs[-1] == EndOfMessage([])


def test_response_without_reason_phrase():
    evs = response_events(b"HTTP/1.1 204 \r\n\r\n")
    assert evs[0].status == 204 and evs[0].reason == b""


def test_head_response_has_no_body_despite_content_length():
    evs = response_events(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
        b"HEAD",
        b"GET",
    )
    assert [type(e) for e in evs] == [Response, EndOfMessage, Response, Data, EndOfMessage]
    assert evs[0].framing == "none" and evs[0].content_length == 100


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body(status):
    evs = response_events(b"HTTP/1.1 %d X\r\nContent-Length: 7\r\n\r\n" % status)
    assert [type(e) for e in evs] == [Response, EndOfMessage]


def test_interim_100_continue_precedes_the_final_response():
    evs = response_events(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    )
    assert [e.status for e in evs if type(e) is Response] == [100, 201]
    assert type(evs[-1]) is EndOfMessage


def test_response_without_length_runs_until_close():
    parser = Parser(response=True)
    parser.expect_response(b"GET")
    evs = events(parser, b"HTTP/1.1 200 OK\r\n\r\nsome")
    assert evs[0].framing == "close" and not evs[0].keep_alive
    assert events(parser, b" more") == [Data(b" more")]
    assert events(parser, eof=True) == [EndOfMessage([])]
    assert parser.closed


def test_transfer_encoding_overrides_content_length_in_a_response():
    evs = response_events(
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    assert evs[0].framing == "chunked" and body_of(evs) == b"abc"


def test_truncated_response_is_502():
    err = rejected(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", response_to=b"GET", eof=True)
    assert err.status == 502


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX : y\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTX/1.1 200 OK\r\n\r\n",
    ],
)
def test_bad_responses_are_502(data):
    assert rejected(data, response_to=b"GET").status == 502


def test_unsolicited_response_is_an_error():
    parser = Parser(response=True)
    with pytest.raises(ProtocolError):
        events(parser, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


# -- serialisers ----------------------------------------------------------------------------


def test_serialize_request_head_is_byte_exact():
    head = serialize_request_head(b"GET", b"/x", [(b"Host", b"h"), (b"A", b"b")])
    assert head == b"GET /x HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n"


def test_serialize_response_head_fills_the_reason():
    head = serialize_response_head(404, [(b"Content-Length", b"0")])
    assert head == b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def test_chunks_and_trailers_are_byte_exact():
    assert chunk(b"hello world, hi") == b"f\r\nhello world, hi\r\n"
    assert chunk(b"") == b""
    assert LAST_CHUNK == b"0\r\n\r\n"
    assert serialize_trailers([(b"X", b"1")]) == b"0\r\nX: 1\r\n\r\n"


def test_error_response_is_complete_and_closes():
    data = error_response(503, "no healthy backend")
    assert data == (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 19\r\nConnection: close\r\n\r\nno healthy backend\n"
    )


def test_serialised_messages_parse_back():
    body = b"abc" * 1000
    wire = (
        serialize_request_head(b"PUT", b"/k", [(b"Host", b"h"), (b"Transfer-Encoding", b"chunked")])
        + chunk(body[:100])
        + chunk(body[100:])
        + serialize_trailers([(b"Digest", b"x")])
    )
    evs = events(Parser(), wire)
    assert body_of(evs) == body and evs[-1].trailers == [(b"Digest", b"x")]


def test_head_max_size_constant_is_64k():
    assert MAX_HEAD_BYTES == 65536


# -- whole_body (the property tests are in test_http1_fuzz.py) ------------------------------


def test_whole_body_of_a_bodiless_request_is_empty_and_ends_the_message():
    parser = Parser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    assert type(parser.next_event()) is Request
    assert parser.whole_body() == b""
    assert parser.next_event().target == b"/next"  # the pipelined one, no EndOfMessage first


def test_whole_body_returns_a_content_length_body_that_is_all_here():
    parser = Parser(response=True)
    parser.expect_response(b"GET")
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1")
    assert type(parser.next_event()) is Response
    assert parser.whole_body() == b"hello"
    assert parser.buffered == len(b"HTTP/1.1") and not parser.in_message


def test_whole_body_of_a_body_still_arriving_is_none_and_consumes_nothing():
    parser = Parser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhel")
    assert type(parser.next_event()) is Request
    assert parser.whole_body() is None and parser.buffered == 3
    parser.feed(b"lo")
    assert events(parser) == [Data(b"hello"), EndOfMessage()]


def test_whole_body_of_a_chunked_or_close_delimited_body_is_none():
    parser = Parser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    parser.next_event()
    assert parser.whole_body() is None  # chunks are checked one by one by next_event
    parser = Parser(response=True)
    parser.expect_response(b"GET")
    parser.feed(b"HTTP/1.1 200 OK\r\n\r\nuntil close")
    parser.next_event()
    assert parser.whole_body() is None


def test_whole_body_of_a_last_message_closes_the_parser():
    parser = Parser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n")
    parser.next_event()
    assert parser.whole_body() == b"" and parser.closed and parser.buffered == 0


# -- repeat_heads (the property tests are in test_http1_fuzz.py) ---------------------------


def test_a_repeated_request_head_is_the_same_event_with_its_body_length_restored():
    message = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    evs = events(Parser(repeat_heads=True), message * 3)
    heads = [e for e in evs if type(e) is Request]
    assert len(heads) == 3 and heads[0] is heads[1] is heads[2]
    assert [e.data for e in evs if type(e) is Data] == [b"hello"] * 3
    assert sum(type(e) is EndOfMessage for e in evs) == 3


def test_a_different_head_is_parsed_afresh_and_only_the_last_is_remembered():
    first, second = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
    heads = [e for e in events(Parser(repeat_heads=True), first + second + first)
             if type(e) is Request]  # fmt: skip
    assert [h.target for h in heads] == [b"/a", b"/b", b"/a"] and heads[0] is not heads[2]


def test_the_same_response_head_answering_head_has_no_body():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"
    parser = Parser(response=True, repeat_heads=True)
    for method in (b"GET", b"HEAD", b"GET"):
        parser.expect_response(method)
    evs = events(parser, head + b"body" + head + head + b"body")
    assert [type(e) for e in evs] == [Response, Data, EndOfMessage, Response, EndOfMessage,
                                      Response, Data, EndOfMessage]  # fmt: skip
    assert evs[3] is not evs[0] and evs[3].framing == "none"  # parsed, not recalled
    assert evs[5].framing == "length"


def test_a_repeated_head_then_connection_close_still_closes_the_parser():
    message = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    closing = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    parser = Parser(repeat_heads=True)
    evs = events(parser, message + message + closing + message)
    assert sum(type(e) is Request for e in evs) == 3 and parser.closed


def test_a_head_over_the_repeat_bound_is_parsed_every_time():
    big = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: " + b"p" * MAX_REPEAT_HEAD_BYTES + b"\r\n\r\n"
    small = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    evs = events(Parser(repeat_heads=True), big * 2 + small * 2)
    first, second, third, fourth = (e for e in evs if type(e) is Request)
    assert first == second and first is not second  # not remembered: bounded memory
    assert third is fourth


def test_a_new_request_line_over_the_same_fields_reuses_their_verdict():
    fields = b"Host: h\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
    parser = Parser(repeat_heads=True)
    evs = events(parser, b"GET /a HTTP/1.1\r\n" + fields + b"PUT /b?x=1 HTTP/1.1\r\n" + fields)
    first, second = (e for e in evs if type(e) is Request)
    assert (second.method, second.target) == (b"PUT", b"/b?x=1")
    assert second.headers is first.headers  # shared, not parsed again
    assert (second.framing, second.content_length, second.keep_alive) == ("length", 2, True)
    assert body_of(evs) == b"okok" and sum(type(e) is EndOfMessage for e in evs) == 2


def test_a_new_version_over_the_same_fields_is_judged_afresh():
    # Without Host, 1.0 is fine and 1.1 is not (RFC 9112 §3.2): the verdict follows the version.
    parser = Parser(repeat_heads=True)
    fields = b"\r\nConnection: keep-alive\r\n\r\n"
    parser.feed(b"GET /a HTTP/1.0" + fields + b"GET /b HTTP/1.1" + fields)
    assert parser.next_event().version == b"1.0"
    parser.next_event()  # its EndOfMessage
    with pytest.raises(ProtocolError) as info:
        parser.next_event()
    assert info.value.status == 400


@pytest.mark.parametrize(
    "line, status",
    [
        (b"G@T /b HTTP/1.1", 400),  # not a token
        (b"GET  /b HTTP/1.1", 400),  # empty target between two spaces
        (b"GET /b\x00 HTTP/1.1", 400),  # a NUL in the line
        (b"GET /b HTTP/2.0", 505),
        (b"GET /" + b"b" * MAX_START_LINE_BYTES + b" HTTP/1.1", 414),
    ],
)
def test_a_bad_request_line_over_the_same_fields_is_still_refused(line, status):
    fields = b"\r\nHost: h\r\n\r\n"
    parser = Parser(repeat_heads=True)
    parser.feed(b"GET /a HTTP/1.1" + fields + line + fields)
    assert parser.next_event().target == b"/a"
    parser.next_event()
    with pytest.raises(ProtocolError) as info:
        parser.next_event()
    assert info.value.status == status and parser.closed


def test_without_repeat_heads_every_head_is_a_new_event():
    message = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    first, second = (e for e in events(Parser(), message * 2) if type(e) is Request)
    assert first == second and first is not second
