"""What a reverse proxy changes in a message on its way through (sans-IO).

HTTP/1.1 is hop-by-hop in its framing and end-to-end in its meaning. The codec
(``components.common.http1``) reads the framing; this module writes the head for the
next hop, following RFC 9110 §7.6:

- hop-by-hop fields are removed (§7.6.1): ``Connection`` and every field it names,
  plus ``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``, ``Transfer-Encoding``
  and ``Upgrade`` (we do not tunnel upgrades);
- the body is re-framed for the next hop: a single normalised ``Content-Length`` (never a
  list, never alongside ``Transfer-Encoding``: that ambiguity is how requests get
  smuggled), or ``Transfer-Encoding: chunked`` when the length is not known;
- ``Via`` records the hop (§7.6.3) with the protocol version received;
- the client's address is appended to ``X-Forwarded-For`` and ``Forwarded``
  (RFC 7239) and ``X-Forwarded-Proto`` is set, so the backend learns who asked; the
  balancer overwrites ``X-Forwarded-Proto`` rather than trust a client's claim.

Requests always go to backends as HTTP/1.1 on persistent connections, whatever the
client spoke; responses go back as HTTP/1.1, which RFC 9110 §2.5 allows even to a 1.0
client, provided we then use no chunking towards it (§7.1 of RFC 9112 is 1.1-only) and
close where its body has no length.
"""

from __future__ import annotations

from components.common.http1 import Request, Response

#: RFC 9110 §7.6.1 plus the non-standard ``Proxy-Connection`` and ``Keep-Alive``.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
     b"transfer-encoding", b"upgrade"}
)  # fmt: skip
#: Fields we always replace with our own value.
_REPLACED = frozenset({b"content-length", b"x-forwarded-proto"})

#: How a body travels on the next hop.
LENGTH = "length"
CHUNKED = "chunked"
CLOSE = "close"
NONE = "none"

#: Methods RFC 9110 §9.2.2 calls idempotent: safe to send twice, so safe to retry.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


def _forwarded_node(client_ip: str) -> bytes:
    # RFC 7239 §6: IPv6 addresses are bracketed and the value then quoted.
    if ":" in client_ip:
        return b'"[%s]"' % client_ip.encode()
    return client_ip.encode()


# Names the rewrite must look at, and their lengths: a field whose name has none of these
# lengths is copied without lowercasing it (most fields of a typical message).
_REQUEST_DROP = HOP_BY_HOP | _REPLACED | {b"x-forwarded-for"}  # X-F-F is merged, not copied
_REQUEST_LENGTHS = frozenset(len(n) for n in _REQUEST_DROP)
_NOTED_LENGTHS = frozenset({len(b"host"), len(b"x-forwarded-for")})
_RESPONSE_DROP = HOP_BY_HOP | {b"content-length"}
_RESPONSE_LENGTHS = frozenset(len(n) for n in _RESPONSE_DROP)


def _with_connection_tokens(drop, lengths, connection):
    """Extend the drop set with the extra fields a Connection header names (§7.6.1)."""
    if connection <= HOP_BY_HOP:  # the usual "keep-alive" or "close": nothing extra
        return drop, lengths
    return drop | connection, lengths | {len(token) for token in connection}


def backend_request_head(request: Request, *args, **kwargs) -> bytes:
    """The head to send a backend for ``request``: its line, then its rewritten fields.

    The other arguments are ``backend_request_fields``'s (client IP, via name, backend
    host, proto).
    """
    return request_line(request) + backend_request_fields(request, *args, **kwargs)


def request_line(request: Request) -> bytes:
    """The request line for the next hop, which always speaks HTTP/1.1."""
    return request.method + b" " + request.target + b" HTTP/1.1\r\n"


def backend_request_fields(
    request: Request,
    client_ip: str,
    via_name: bytes,
    backend_host: bytes,
    proto: bytes = b"http",
) -> bytes:
    """The head after its request line, through the blank line.

    It depends on the request's fields and version only, never on its method or target:
    a client asking for one URL after another with the same fields (a browser, a crawler,
    a load generator) gets its rewritten fields reused by the proxy.
    """
    drop, lengths = _with_connection_tokens(_REQUEST_DROP, _REQUEST_LENGTHS, request.connection)
    headers = request.headers
    # Comprehensions rather than one loop with appends: the same filter, less interpreter
    # work per field (this runs once per proxied request). ``noted`` holds, lowercased,
    # the few fields whose name has the length of Host or X-Forwarded-For.
    kept = [
        name + b": " + value + b"\r\n"
        for name, value in headers
        if len(name) not in lengths or name.lower() not in drop
    ]
    noted = [(name.lower(), value) for name, value in headers if len(name) in _NOTED_LENGTHS]
    xff = None
    has_host = False
    for lname, value in noted:
        if lname == b"host":
            has_host = True
        elif lname == b"x-forwarded-for":
            xff = value if xff is None else xff + b", " + value
    if not request.connection <= HOP_BY_HOP:
        # Connection may name even these (hop-by-hop for that message): then they are
        # dropped like any field it names, neither kept as Host nor merged as X-F-F.
        if b"host" in request.connection:
            has_host = False
        if b"x-forwarded-for" in request.connection:
            xff = None
    out = kept
    append = out.append
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


def client_response_head(
    response: Response,
    *,
    client_version: bytes,
    keep_alive: bool,
    via_name: bytes,
    set_cookie: bytes | None = None,
) -> tuple[bytes, str, bool]:
    """The head to send the client, how its body travels, and whether to keep alive."""
    drop, lengths = _with_connection_tokens(_RESPONSE_DROP, _RESPONSE_LENGTHS, response.connection)
    headers = response.headers
    out = [b"HTTP/1.1 %d %s\r\n" % (response.status, response.reason)]
    out += [
        name + b": " + value + b"\r\n"
        for name, value in headers
        if len(name) not in lengths or name.lower() not in drop
    ]
    append = out.append
    append(b"Via: " + response.version + b" " + via_name + b"\r\n")
    if set_cookie is not None:
        append(b"Set-Cookie: " + set_cookie + b"\r\n")
    framing = response.framing
    if framing == LENGTH:
        mode = LENGTH
        append(b"Content-Length: %d\r\n" % response.content_length)
    elif framing == NONE:
        mode = NONE
        had_length = any(len(n) == 14 and n.lower() == b"content-length" for n, _ in headers)
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


#: Fields that never belong in a trailer section (RFC 9110 §6.5.1): framing, routing and
#: connection control. A proxy drops them rather than let the next hop act on them late.
_NOT_IN_TRAILERS = HOP_BY_HOP | {b"content-length", b"host", b"content-type", b"expect"}


def forwardable_trailers(trailers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The trailer fields worth passing on (checksums, signatures, timing)."""
    if not trailers:
        return trailers
    return [(n, v) for n, v in trailers if n.lower() not in _NOT_IN_TRAILERS]


def interim_response_head(response: Response) -> bytes:
    """A 1xx (100 Continue, 103 Early Hints) passed on to a 1.1 client, hop fields dropped."""
    fields = b"".join(
        [n + b": " + v + b"\r\n" for n, v in response.headers if n.lower() not in HOP_BY_HOP]
    )
    return b"HTTP/1.1 %d %s\r\n%s\r\n" % (response.status, response.reason, fields)


def cookie_value(request: Request, name: bytes) -> str | None:
    """The value of cookie ``name`` in the request's Cookie fields (RFC 6265 §5.4)."""
    for key, value in request.headers:
        if len(key) == 6 and key.lower() == b"cookie":
            for pair in value.split(b";"):
                k, eq, v = pair.strip().partition(b"=")
                if eq and k == name:
                    return v.decode("latin-1")
    return None
