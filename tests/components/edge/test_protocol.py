"""The edge's answer bytes, byte for byte: hits, HEAD, 304, 206, 416, requests upstream."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from components.common.http1 import NEED_DATA, Data, EndOfMessage, Parser, Response
from components.edge import protocol
from components.edge.httpcache import Entry

T0 = 1_700_000_000.0


def stored(body=b"0123456789", status=200, extra=()):
    headers = [(b"Cache-Control", b"max-age=60"), (b"ETag", b'"v1"'),
               (b"Content-Type", b"text/plain"), *extra]  # fmt: skip
    return Entry.from_response(b"h", b"/x", status, b"OK", headers, body, T0, T0, [], 86400.0)


FIELDS = b'Cache-Control: max-age=60\r\nETag: "v1"\r\nContent-Type: text/plain\r\n'


def test_hit_is_status_stored_fields_own_fields_length_body():
    assert protocol.render(stored(), 12.9, b"HIT", b"edge-1") == (
        b"HTTP/1.1 200 OK\r\n" + FIELDS
        + b"Age: 12\r\nVia: 1.1 edge-1\r\nX-Cache: HIT\r\nContent-Length: 10\r\n\r\n0123456789"
    )  # fmt: skip


def test_head_has_the_get_fields_and_no_body_and_close_is_announced():
    assert protocol.render(stored(), 0, b"HIT", b"e", head_only=True, close=True) == (
        b"HTTP/1.1 200 OK\r\n" + FIELDS + b"Age: 0\r\nVia: 1.1 e\r\nX-Cache: HIT\r\n"
        b"Connection: close\r\nContent-Length: 10\r\n\r\n"
    )  # fmt: skip


def test_304_carries_only_the_fields_rfc9110_15_4_5_lists():
    assert protocol.render(stored(), 3, b"HIT", b"e", not_modified=True) == (
        b'HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=60\r\nETag: "v1"\r\n'
        b"Age: 3\r\nVia: 1.1 e\r\nX-Cache: HIT\r\n\r\n"
    )


def test_206_and_416():
    assert protocol.render(stored(), 0, b"HIT", b"e", byte_range=(2, 4)) == (
        b"HTTP/1.1 206 Partial Content\r\n" + FIELDS + b"Age: 0\r\nVia: 1.1 e\r\nX-Cache: HIT\r\n"
        b"Content-Range: bytes 2-4/10\r\nContent-Length: 3\r\n\r\n234"
    )  # fmt: skip
    assert protocol.render(stored(), 0, b"HIT", b"e", byte_range="416") == (
        b'HTTP/1.1 416 Range Not Satisfiable\r\nCache-Control: max-age=60\r\nETag: "v1"\r\n'
        b"Age: 0\r\nVia: 1.1 e\r\nX-Cache: HIT\r\n"
        b"Content-Range: bytes */10\r\nContent-Length: 0\r\n\r\n"
    )


def test_stored_204_has_neither_length_nor_body():
    out = protocol.render(stored(b"", status=204), 0, b"HIT", b"e")
    assert out.endswith(b"X-Cache: HIT\r\n\r\n") and b"Content-Length" not in out


def test_upstream_head_drops_hop_by_hop_conditionals_and_range_and_adds_via():
    headers = [(b"Host", b"h"), (b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"),
               (b"If-None-Match", b'"client"'), (b"Range", b"bytes=0-1"), (b"Via", b"1.0 a"),
               (b"Accept", b"*/*"), (b"TE", b"trailers")]  # fmt: skip
    assert protocol.upstream_head(b"GET", b"/x", headers, b"e", [(b"If-None-Match", b'"v1"')]) == (
        b"GET /x HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nVia: 1.0 a, 1.1 e\r\n"
        b'If-None-Match: "v1"\r\n\r\n'
    )


def test_pass_head_replaces_framing_and_marks_the_answer():
    head = protocol.pass_head(201, b"Created", [(b"Content-Length", b"5"), (b"X-A", b"1"),
                              (b"Transfer-Encoding", b"chunked")], b"e", b"MISS",
                              b"Transfer-Encoding: chunked\r\n")  # fmt: skip
    assert head == (b"HTTP/1.1 201 Created\r\nX-A: 1\r\nVia: 1.1 e\r\nX-Cache: MISS\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip


def parse_back(raw: bytes, method: bytes = b"GET"):
    parser = Parser(response=True)
    parser.expect_response(method)
    parser.feed(raw)
    events = []
    while (event := parser.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, EndOfMessage):
            break
    return events


@given(st.binary(max_size=2000), st.integers(0, 3000), st.integers(0, 3000), st.booleans())
def test_rendered_answers_frame_correctly_for_the_shared_parser(body, a, b, head_only):
    entry = stored(body)
    first, last = min(a, b), max(a, b)
    byte_range = None
    if body and first < len(body):
        byte_range = (first, min(last, len(body) - 1))
    raw = protocol.render(entry, 5, b"HIT", b"e", head_only=head_only, byte_range=byte_range)
    events = parse_back(raw, b"HEAD" if head_only else b"GET")
    assert isinstance(events[0], Response) and isinstance(events[-1], EndOfMessage)
    got = b"".join(e.data for e in events if isinstance(e, Data))
    if head_only:
        assert got == b""
    elif byte_range:
        assert events[0].status == 206 and got == body[byte_range[0] : byte_range[1] + 1]
    else:
        assert got == body


def test_http10_keep_alive_is_announced():
    out = protocol.render(stored(), 0, b"HIT", b"e", keep_alive=True)
    assert b"X-Cache: HIT\r\nConnection: keep-alive\r\nContent-Length: 10\r\n\r\n" in out
    assert b"Connection: keep-alive" not in protocol.render(stored(), 0, b"HIT", b"e", close=True,
                                                            keep_alive=True)  # fmt: skip
