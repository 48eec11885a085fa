"""The codec's lookup index gives exactly what a scan of the fields gives.

``get`` builds a lowercase index on its first call (the edge asks a request for several
fields); these property tests require it to agree with a plain first-match scan, also
after the headers list was grown or replaced, and check the added reason phrases.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from components.common.http1 import REASONS, Parser, Request

TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
NAMES = [b"Host", b"content-length", b"Transfer-Encoding", b"CONNECTION", b"Expect",
         b"Keep-Alive", b"X-Forwarded-For"]  # fmt: skip
names = st.one_of(st.sampled_from(NAMES), st.text(TCHAR, min_size=1, max_size=12).map(str.encode))
wanted = st.sampled_from([b"host", b"content-length", b"x-forwarded-for", b"keep-alive", b"absent"])


def scan(headers, name):
    return next((v for k, v in headers if k.lower() == name), None)


@given(st.lists(st.tuples(names, st.binary(max_size=20)), max_size=8), wanted)
def test_get_index_agrees_with_a_scan(headers, name):
    request = Request(b"1.1", headers)
    expected = scan(headers, name)
    assert request.get(name) == expected
    assert request.get(name) == expected  # answered from the cached index
    absent = scan(headers, b"absent")
    assert request.get(b"absent", b"dflt") == (b"dflt" if absent is None else absent)
    headers.append((name.upper(), b"late"))  # grown after indexing: rebuilt
    assert request.get(name) == (expected if expected is not None else b"late")
    request.headers = [(b"X", b"1")]  # replaced: rebuilt
    assert request.get(name) is None and request.get(b"x") == b"1"


def test_get_on_a_parsed_request_returns_the_first_value():
    parser = Parser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nAccept: */*\r\n\r\n")
    request = parser.next_event()
    assert request.get(b"x-a") == b"1" and request.get_all(b"x-a") == [b"1", b"2"]
    assert request.get(b"host") == b"h" and request.get(b"nope") is None
    assert request == Request(b"1.1", request.headers, method=b"GET", target=b"/")


def test_reasons_cover_conditional_and_range_answers():
    assert REASONS[412] == "Precondition Failed"
    assert REASONS[416] == "Range Not Satisfiable"
