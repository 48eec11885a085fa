"""The codec's fast paths give exactly what its general paths give.

``Parser`` cuts canonical ``Name: value`` field lines with one regex pass and keeps their
raw bytes (``raw_fields``); anything else goes through the general per-line loop. These
property tests feed field lines of every shape (canonical, padded, no space, obs-text,
bad names, obs-fold) to both and require the same headers, the same special fields and
the same error; and ``get``'s lowercase index must agree with a plain scan.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.common.http1 import (
    _CANONICAL_FIELD,
    REASONS,
    Parser,
    ProtocolError,
    Request,
    _parse_fields,
    _special_fields,
)

TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SPECIAL_NAMES = [b"Host", b"content-length", b"Transfer-Encoding", b"CONNECTION", b"Expect",
                 b"Keep-Alive", b"X-Forwarded-For"]  # fmt: skip
names = st.one_of(
    st.sampled_from(SPECIAL_NAMES),
    st.text(TCHAR, min_size=1, max_size=12).map(str.encode),
    st.binary(max_size=6).map(lambda b: bytes(c for c in b if c == 9 or 0x20 <= c != 0x7F)),
)
# Bytes that survive the head's control check: HTAB, SP, visible ASCII, obs-text (the
# check runs before either path, and has its own tests).
value_bytes = st.binary(max_size=20).map(
    lambda b: bytes(c for c in b if c == 9 or 0x20 <= c != 0x7F)
)
separators = st.sampled_from([b": ", b":", b":  ", b": \t", b" : ", b"\t:", b""])
lines = st.builds(lambda n, s, v: n + s + v, names, separators, value_bytes)
lines = st.one_of(lines, st.builds(lambda v: b" " + v, value_bytes))  # obs-fold


def general(field_lines: list[bytes]):
    try:
        return _parse_fields(field_lines)
    except ProtocolError as error:
        return (error.status, error.detail)


@given(st.lists(lines, min_size=1, max_size=8))
def test_canonical_regex_agrees_with_the_general_loop(field_lines):
    block = b"\r\n".join(field_lines)
    found = _CANONICAL_FIELD.findall(block)
    if len(found) == len(field_lines):
        # The fast path applies: same fields, same specials, and the raw block is exactly
        # the canonical rebuild (which is what lets a proxy copy it through).
        assert general(field_lines) == (found, _special_fields(found))
        assert block + b"\r\n" == b"".join(n + b": " + v + b"\r\n" for n, v in found)


def parse_head(head: bytes, response: bool = False):
    parser = Parser(response=response)
    if response:
        parser.expect_response(b"GET")
    parser.feed(head)
    try:
        return parser.next_event()
    except ProtocolError as error:
        return (error.status, error.detail)


@given(st.lists(lines, max_size=8), st.booleans())
def test_whole_heads_parse_as_the_general_path_says(field_lines, response):
    start = b"HTTP/1.1 200 OK" if response else b"GET / HTTP/1.1"
    fields = [b"Host: h"] if not response else []
    head = b"\r\n".join([start, *fields, *field_lines]) + b"\r\n\r\n"
    event = parse_head(head, response)
    all_lines = fields + field_lines
    expected = general(all_lines) if all_lines else ([], [])
    if isinstance(expected, tuple) and isinstance(expected[0], int):
        assert isinstance(event, tuple)  # the general loop's error, answered as such
        assert event == ((502 if response else expected[0]), expected[1])
        return
    if isinstance(event, tuple):  # a framing rule (say two Hosts) refused it: fine
        return
    assert event.headers == expected[0]
    canonical = len(_CANONICAL_FIELD.findall(b"\r\n".join(all_lines))) == len(all_lines)
    if canonical and all_lines:
        assert event.raw_fields == b"".join(n + b": " + v + b"\r\n" for n, v in event.headers)
    else:
        assert event.raw_fields is None


def test_raw_fields_kept_only_for_canonical_heads():
    event = parse_head(b"GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n")
    assert event.raw_fields == b"Host: h\r\nAccept: */*\r\n"
    event = parse_head(b"GET / HTTP/1.1\r\nHost:h\r\nAccept: */*\r\n\r\n")
    assert event.raw_fields is None and event.headers == [(b"Host", b"h"), (b"Accept", b"*/*")]
    event = parse_head(b"GET / HTTP/1.0\r\n\r\n")
    assert event.raw_fields is None and event.headers == []


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ],
)
def test_fast_path_still_refuses_smuggling_shapes(head, status):
    assert parse_head(head)[0] == status


@given(
    st.lists(st.tuples(names.filter(bool), value_bytes), max_size=8),
    st.sampled_from([b"host", b"content-length", b"x-forwarded-for", b"keep-alive", b"absent"]),
)
def test_get_index_agrees_with_a_scan(headers, name):
    request = Request(b"1.1", headers)
    scan = next((v for k, v in headers if k.lower() == name), None)
    assert request.get(name) == scan
    assert request.get(name) == scan  # the cached index answers the same
    headers.append((name.upper(), b"late"))  # grown after indexing: rebuilt
    assert request.get(name) == (scan if scan is not None else b"late")
    request.headers = [(b"X", b"1")]  # replaced: rebuilt
    assert request.get(name) is None and request.get(b"x") == b"1"


def test_reasons_cover_conditional_and_range_answers():
    assert REASONS[412] == "Precondition Failed"
    assert REASONS[416] == "Range Not Satisfiable"
