"""The head rewrites give, byte for byte, what the previous plain loops gave.

``backend_request_head`` and ``client_response_head`` were rewritten for speed (list
comprehensions instead of one loop with appends). The originals are kept below as the
reference, and hypothesis feeds both any mix of ordinary, hop-by-hop, framing, Host and
X-Forwarded-For fields, Connection tokens naming any of them, every framing, version,
status and keep-alive choice: the output must be identical.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from components.common.http1 import Request, Response
from components.lb.protocol import (
    _REPLACED,
    CHUNKED,
    CLOSE,
    HOP_BY_HOP,
    LENGTH,
    NONE,
    _forwarded_node,
    _with_connection_tokens,
    backend_request_head,
    client_response_head,
)

_REQUEST_DROP = HOP_BY_HOP | _REPLACED
_REQUEST_LENGTHS = frozenset(len(n) for n in _REQUEST_DROP | {b"x-forwarded-for", b"host"})
_RESPONSE_DROP = HOP_BY_HOP | {b"content-length"}
_RESPONSE_LENGTHS = frozenset(len(n) for n in _RESPONSE_DROP)


def reference_request_head(
    request: Request,
    client_ip: str,
    via_name: bytes,
    backend_host: bytes,
    proto: bytes = b"http",
) -> bytes:
    """The head to send a backend for ``request`` from ``client_ip``."""
    drop, lengths = _with_connection_tokens(_REQUEST_DROP, _REQUEST_LENGTHS, request.connection)
    out = [request.method + b" " + request.target + b" HTTP/1.1\r\n"]
    append = out.append
    xff = None
    has_host = False
    for name, value in request.headers:
        if len(name) in lengths:
            lname = name.lower()
            if lname in drop:
                continue
            if lname == b"x-forwarded-for":
                xff = value if xff is None else xff + b", " + value
                continue
            if lname == b"host":
                has_host = True
        append(name + b": " + value + b"\r\n")
    if not has_host:
        # An HTTP/1.0 request may lack Host; the next hop speaks 1.1, which requires one.
        append(b"Host: " + backend_host + b"\r\n")
    ip = client_ip.encode()
    append(
        b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nForwarded: for=%s;proto=%s\r\n"
        b"Via: %s %s\r\n"
        % (ip if xff is None else xff + b", " + ip, proto, _forwarded_node(client_ip), proto,
           request.version, via_name)
    )  # fmt: skip
    if request.framing == CHUNKED:
        append(b"Transfer-Encoding: chunked\r\n")
    elif request.framing == LENGTH:
        append(b"Content-Length: %d\r\n" % request.content_length)
    append(b"\r\n")
    return b"".join(out)


def reference_response_head(
    response: Response,
    *,
    client_version: bytes,
    keep_alive: bool,
    via_name: bytes,
    set_cookie: bytes | None = None,
) -> tuple[bytes, str, bool]:
    """The head to send the client, how its body travels, and whether to keep alive."""
    drop, lengths = _with_connection_tokens(_RESPONSE_DROP, _RESPONSE_LENGTHS, response.connection)
    out = [b"HTTP/1.1 %d %s\r\n" % (response.status, response.reason)]
    append = out.append
    had_length = False
    for name, value in response.headers:
        if len(name) in lengths:
            lname = name.lower()
            if lname in drop:
                had_length = had_length or lname == b"content-length"
                continue
        append(name + b": " + value + b"\r\n")
    append(b"Via: " + response.version + b" " + via_name + b"\r\n")
    if set_cookie is not None:
        append(b"Set-Cookie: " + set_cookie + b"\r\n")
    framing = response.framing
    if framing == LENGTH:
        mode = LENGTH
        append(b"Content-Length: %d\r\n" % response.content_length)
    elif framing == NONE:
        mode = NONE
        if had_length and response.status != 204:
            # HEAD and 304 keep the length of the representation they describe.
            append(b"Content-Length: %d\r\n" % response.content_length)
    elif client_version == b"1.1":
        # A chunked or close-delimited body goes to a 1.1 client chunked, so the client
        # keeps its connection even when the backend did not know the length.
        mode = CHUNKED
        append(b"Transfer-Encoding: chunked\r\n")
    else:
        mode = CLOSE
        keep_alive = False
    if not keep_alive:
        append(b"Connection: close\r\n")
    elif client_version == b"1.0":
        append(b"Connection: keep-alive\r\n")
    append(b"\r\n")
    return b"".join(out), mode, keep_alive


NAMES = [b"Host", b"host", b"X-Forwarded-For", b"x-forwarded-for", b"Connection",
         b"Keep-Alive", b"TE", b"Trailer", b"Upgrade", b"Proxy-Connection",
         b"Transfer-Encoding", b"Content-Length", b"X-Forwarded-Proto", b"Accept",
         b"X-Custom", b"Cookie", b"Server", b"Date"]  # fmt: skip
TOKENS = [b"keep-alive", b"close", b"x-custom", b"host", b"x-forwarded-for", b"accept", b"te"]
fields = st.lists(st.tuples(st.sampled_from(NAMES), st.binary(max_size=12)), max_size=10)
connection = st.frozensets(st.sampled_from(TOKENS), max_size=3)


@given(fields, connection, st.sampled_from([NONE, LENGTH, CHUNKED]), st.sampled_from([b"1.1", b"1.0"]),
       st.integers(0, 10**6), st.sampled_from(["192.0.2.7", "2001:db8::1"]))  # fmt: skip
def test_request_head_is_byte_identical_to_the_loop(headers, tokens, framing, version, cl, ip):
    request = Request(version, headers, framing=framing, content_length=cl, connection=tokens,
                      method=b"POST", target=b"/x?y")  # fmt: skip
    expected = reference_request_head(request, ip, b"lb", b"10.0.0.1:80")
    assert backend_request_head(request, ip, b"lb", b"10.0.0.1:80") == expected


@given(fields, connection, st.sampled_from([NONE, LENGTH, CHUNKED, CLOSE]),
       st.sampled_from([b"1.1", b"1.0"]), st.sampled_from([b"1.1", b"1.0"]),
       st.sampled_from([200, 204, 304, 404, 503]), st.booleans(),
       st.sampled_from([None, b"SCALELAB_LB=a1; Path=/; HttpOnly"]), st.integers(0, 10**6))  # fmt: skip
def test_response_head_is_byte_identical_to_the_loop(
    headers, tokens, framing, version, client_version, status, keep, cookie, cl
):
    response = Response(version, headers, framing=framing, content_length=cl, connection=tokens,
                        status=status, reason=b"Whatever")  # fmt: skip
    kwargs = dict(client_version=client_version, keep_alive=keep, via_name=b"lb",
                  set_cookie=cookie)  # fmt: skip
    assert client_response_head(response, **kwargs) == reference_response_head(response, **kwargs)
