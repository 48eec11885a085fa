"""What the proxy rewrites in heads (RFC 9110 §7.6), byte-exact and without sockets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from components.common.http1 import NEED_DATA, Parser, Request, Response
from components.lb.protocol import (
    backend_request_head,
    client_response_head,
    cookie_value,
    interim_response_head,
)


def request(data: bytes) -> Request:
    parser = Parser()
    parser.feed(data)
    return parser.next_event()


def response(data: bytes, method: bytes = b"GET") -> Response:
    parser = Parser(response=True)
    parser.expect_response(method)
    parser.feed(data)
    event = parser.next_event()
    assert event is not NEED_DATA
    return event


def test_request_head_drops_hop_by_hop_and_adds_forwarding_fields():
    req = request(
        b"GET /p HTTP/1.1\r\nHost: site\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\n"
        b"X-Secret: s\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: x\r\n"
        b"X-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n"
    )
    head = backend_request_head(req, "192.0.2.9", b"lb-1", b"10.0.0.1:80")
    assert head == (
        b"GET /p HTTP/1.1\r\nHost: site\r\nAccept: */*\r\nX-Forwarded-For: 192.0.2.9\r\n"
        b"X-Forwarded-Proto: http\r\nForwarded: for=192.0.2.9;proto=http\r\nVia: 1.1 lb-1\r\n\r\n"
    )


def test_existing_x_forwarded_for_is_appended_to():
    req = request(
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n\r\n"
    )
    head = backend_request_head(req, "::1", b"lb", b"b:1")
    assert b"X-Forwarded-For: 1.1.1.1, 2.2.2.2, ::1\r\n" in head
    assert b'Forwarded: for="[::1]";proto=http\r\n' in head


def test_request_body_framing_is_normalised():
    folded = request(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\n")
    head = backend_request_head(folded, "1.2.3.4", b"lb", b"b:1")
    assert head.count(b"Content-Length") == 1 and b"Content-Length: 3\r\n" in head
    chunked = request(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    head = backend_request_head(chunked, "1.2.3.4", b"lb", b"b:1")
    assert head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    assert b"Content-Length" not in head


def test_http10_request_without_host_gets_the_backend_as_host():
    head = backend_request_head(request(b"GET / HTTP/1.0\r\n\r\n"), "1.2.3.4", b"lb", b"b:1")
    assert head.startswith(b"GET / HTTP/1.1\r\nHost: b:1\r\n")
    assert b"Via: 1.0 lb\r\n" in head


def test_response_with_length_passes_through_with_via():
    resp = response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nX: y\r\n\r\n"
    )
    head, mode, keep = client_response_head(
        resp, client_version=b"1.1", keep_alive=True, via_name=b"lb"
    )
    assert head == b"HTTP/1.1 200 OK\r\nX: y\r\nVia: 1.1 lb\r\nContent-Length: 2\r\n\r\n"
    assert (mode, keep) == ("length", True)


def test_close_delimited_response_is_chunked_for_a_11_client():
    resp = response(b"HTTP/1.0 200 OK\r\n\r\n")
    head, mode, keep = client_response_head(
        resp, client_version=b"1.1", keep_alive=True, via_name=b"lb"
    )
    assert head == b"HTTP/1.1 200 OK\r\nVia: 1.0 lb\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert (mode, keep) == ("chunked", True)


def test_chunked_response_to_a_10_client_is_close_delimited():
    resp = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    head, mode, keep = client_response_head(
        resp, client_version=b"1.0", keep_alive=True, via_name=b"lb"
    )
    assert head == b"HTTP/1.1 200 OK\r\nVia: 1.1 lb\r\nConnection: close\r\n\r\n"
    assert (mode, keep) == ("close", False)


def test_keep_alive_10_client_is_told_so():
    resp = response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    head, _, keep = client_response_head(
        resp, client_version=b"1.0", keep_alive=True, via_name=b"lb"
    )
    assert keep and head.endswith(b"Connection: keep-alive\r\n\r\n")


def test_head_response_keeps_its_length_and_204_drops_it():
    resp = response(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", b"HEAD")
    head, mode, _ = client_response_head(
        resp, client_version=b"1.1", keep_alive=True, via_name=b"lb"
    )
    assert mode == "none" and b"Content-Length: 42\r\n" in head
    resp = response(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    head, mode, _ = client_response_head(
        resp, client_version=b"1.1", keep_alive=True, via_name=b"lb"
    )
    assert mode == "none" and b"Content-Length" not in head


def test_set_cookie_and_connection_close_are_added():
    resp = response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    head, _, keep = client_response_head(
        resp, client_version=b"1.1", keep_alive=False, via_name=b"lb", set_cookie=b"S=1; Path=/"
    )
    assert not keep
    assert head.endswith(
        b"Set-Cookie: S=1; Path=/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )


def test_interim_response_is_passed_on():
    resp = response(b"HTTP/1.1 100 Continue\r\nConnection: x\r\n\r\n")
    assert interim_response_head(resp) == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_trailers_lose_framing_and_connection_fields():
    from components.lb.protocol import forwardable_trailers

    trailers = [(b"Digest", b"sha-256=x"), (b"Content-Length", b"5"), (b"Transfer-Encoding", b"x"),
                (b"Connection", b"close"), (b"Server-Timing", b"db;dur=3")]  # fmt: skip
    assert forwardable_trailers(trailers) == [
        (b"Digest", b"sha-256=x"),
        (b"Server-Timing", b"db;dur=3"),
    ]
    assert forwardable_trailers([]) == []


def test_cookie_value_finds_the_named_cookie():
    req = request(b"GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1; SCALELAB_LB=abc; b=2\r\n\r\n")
    assert cookie_value(req, b"SCALELAB_LB") == "abc"
    assert cookie_value(req, b"missing") is None


# -- properties: whatever the client sent, the backend gets one unambiguous message ----------

field_names = st.sampled_from(
    [b"Host", b"Connection", b"Keep-Alive", b"TE", b"Upgrade", b"Trailer", b"X-Forwarded-For",
     b"X-Forwarded-Proto", b"Via", b"Accept", b"X-Custom", b"Proxy-Connection", b"Cookie"]
)  # fmt: skip
field_values = st.sampled_from([b"a", b"close", b"keep-alive, X-Custom", b"1.2.3.4", b"x y"])


@given(
    st.lists(st.tuples(field_names, field_values), max_size=12),
    st.sampled_from(["none", "length", "chunked"]),
    st.sampled_from([b"1.1", b"1.0"]),
)
def test_backend_head_always_parses_back_without_hop_by_hop_fields(fields, framing, version):
    fields = [(n, v) for n, v in fields if n != b"Host"]
    if version == b"1.1":
        fields.insert(0, (b"Host", b"site"))
    if framing == "length":
        fields.append((b"Content-Length", b"3"))
    elif framing == "chunked" and version == b"1.1":
        fields.append((b"Transfer-Encoding", b"chunked"))
    wire = b"POST /p HTTP/%s\r\n" % version + b"".join(n + b": " + v + b"\r\n" for n, v in fields)
    original = request(wire + b"\r\n")
    head = backend_request_head(original, "192.0.2.1", b"lb", b"b:1")
    forwarded = request(head)
    assert type(forwarded) is Request and forwarded.version == b"1.1"
    names = [n.lower() for n, _ in forwarded.headers]
    dropped = {b"connection", b"keep-alive", b"te", b"upgrade", b"trailer", b"proxy-connection"}
    assert not dropped & set(names)
    assert b"x-custom" not in names or b"x-custom" not in original.connection
    assert names.count(b"host") == 1
    # Via is a list (RFC 9110 §7.6.3): earlier hops stay, ours comes last.
    assert names.count(b"via") == len(original.get_all(b"via")) + 1
    assert forwarded.get_all(b"via")[-1] == version + b" lb"
    assert names.count(b"x-forwarded-for") == 1 and names.count(b"x-forwarded-proto") == 1
    assert forwarded.get(b"x-forwarded-for").endswith(b"192.0.2.1")
    assert (forwarded.framing, forwarded.content_length) == (
        original.framing,
        original.content_length,
    )
    assert names.count(b"content-length") + names.count(b"transfer-encoding") <= 1


def test_backend_spec_parses_weight_and_brackets_ipv6():
    from components.lb.server import backend_spec

    assert backend_spec("127.0.0.1:8000") == ("127.0.0.1:8000", 1)
    assert backend_spec("[::1]:8000,weight=3") == ("[::1]:8000", 3)
    for bad in ("nohost", "h:1,weight=0", "h:1,wait=2", "h:99999"):
        try:
            backend_spec(bad)
        except Exception as error:  # argparse.ArgumentTypeError
            assert "expected" in str(error) or "port" in str(error)
        else:
            raise AssertionError(f"{bad!r} accepted")
