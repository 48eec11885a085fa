"""The bytes the edge writes: answers made from stored responses, and requests upstream.

Framing itself (parsing requests and responses, chunked coding, smuggling rules) is the
shared codec in ``components.common.http1``; this module holds what is particular to a
cache on top of it, sans-IO so every answer is tested byte for byte:

- ``render``: a stored response as a complete HTTP/1.1 answer, with the fields a cache
  adds on every reuse: ``Age`` (RFC 9111 §5.1, whole seconds of the current age),
  ``Via`` (RFC 9110 §7.6.3) and ``X-Cache`` (HIT, MISS, STALE or REVALIDATED, the de
  facto observability field of CDNs). HEAD gets the GET's fields and no body (RFC 9110
  §9.3.2); a byte range becomes a 206 with ``Content-Range`` (§14.4), an unsatisfiable one
  a 416 with ``Content-Range: bytes */length`` (§15.5.17); a client's matching
  conditional request a 304 carrying only the fields §15.4.5 lists.
- ``upstream_head``: the request sent to the origin for a miss or a revalidation: the
  client's end-to-end fields minus hop-by-hop ones and minus the client's own
  conditionals and ``Range`` (the cache fetches the whole representation, stores it, and
  evaluates those itself), plus ``Via`` and the cache's validators.
- ``pass_head``: a response streamed through without being stored.
"""

from __future__ import annotations

from components.common.http1 import REASONS, serialize_request_head

from .httpcache import HEADERS_IN_304, HOP_BY_HOP, Entry, Headers

#: Request fields the cache answers itself and therefore never forwards on a fill.
CACHE_EVALUATED = frozenset({b"if-none-match", b"if-modified-since", b"if-range", b"range",
                             b"if-match", b"if-unmodified-since"})  # fmt: skip
#: Response fields that are the cache's own business, never passed through.
NOT_PASSED = HOP_BY_HOP | {b"content-length", b"x-cache", b"surrogate-key"}


def status_line(status: int, reason: bytes | None = None) -> bytes:
    if not reason:
        reason = REASONS.get(status, "").encode()
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


def render(
    entry: Entry,
    age: float | None,
    x_cache: bytes,
    via: bytes,
    *,
    head_only: bool = False,
    not_modified: bool = False,
    byte_range: tuple[int, int] | str | None = None,
    close: bool = False,
    keep_alive: bool = False,
) -> bytes:
    """A complete answer from ``entry``; ``age`` in seconds (truncated, §5.1) or None."""
    own = b"Via: 1.1 %s\r\nX-Cache: %s\r\n" % (via, x_cache)
    if age is not None:
        own = b"Age: %d\r\n" % age + own
    if close:
        own += b"Connection: close\r\n"
    elif keep_alive:  # an HTTP/1.0 client asked to keep the connection (RFC 9112 §9.3)
        own += b"Connection: keep-alive\r\n"
    if not_modified:
        fields = b"".join(
            [k + b": " + v + b"\r\n" for k, v in entry.headers if k.lower() in HEADERS_IN_304]
        )
        return status_line(304) + fields + own + b"\r\n"
    body = entry.body
    if byte_range is None:
        status, reason = entry.status, entry.reason
        extra = b"" if status == 204 or status == 304 else b"Content-Length: %d\r\n" % len(body)
    elif byte_range == "416":
        status, reason, body = 416, None, b""
        extra = b"Content-Range: bytes */%d\r\nContent-Length: 0\r\n" % len(entry.body)
        head = status_line(status, reason) + _without(entry, b"content-type") + own + extra
        return head + b"\r\n"
    else:
        first, last = byte_range
        status, reason = 206, None
        extra = b"Content-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n" % (
            first, last, len(body), last - first + 1,
        )  # fmt: skip
        body = body[first : last + 1]
    head = status_line(status, reason) + entry.head_fields + own + extra + b"\r\n"
    if head_only or status == 204 or status == 304:
        return head
    return head + body


def stream_head(
    entry: Entry, age: float | None, x_cache: bytes, via: bytes, framing: bytes,
    close: bool = False, keep_alive: bool = False,
) -> bytes:  # fmt: skip
    """The head of an answer whose body follows as it arrives (a streamed fill).

    ``entry`` holds the response's stored fields (its body is not there yet);
    ``framing`` is a ready ``Content-Length`` or ``Transfer-Encoding`` line, or b"".
    """
    own = b"Via: 1.1 %s\r\nX-Cache: %s\r\n" % (via, x_cache)
    if age is not None:
        own = b"Age: %d\r\n" % age + own
    if close:
        own += b"Connection: close\r\n"
    elif keep_alive:
        own += b"Connection: keep-alive\r\n"
    return status_line(entry.status, entry.reason) + entry.head_fields + own + framing + b"\r\n"


def _without(entry: Entry, name: bytes) -> bytes:
    return b"".join([k + b": " + v + b"\r\n" for k, v in entry.headers if k.lower() != name])


def upstream_head(
    method: bytes, target: bytes, headers: Headers, via: bytes, validators: Headers = (),
    *, body_length: int | None = None, keep_conditionals: bool = False,
) -> bytes:  # fmt: skip
    """The request head sent to the origin; the caller writes the body behind it."""
    listed: set[bytes] = set()
    for key, value in headers:
        if key.lower() == b"connection":
            listed.update(t.strip().lower() for t in value.split(b","))
    fields: Headers = []
    via_seen = None
    for key, value in headers:
        lk = key.lower()
        if lk in HOP_BY_HOP or lk in listed or lk == b"content-length":
            continue
        if not keep_conditionals and lk in CACHE_EVALUATED:
            continue
        if lk == b"via":
            via_seen = value
            continue
        fields.append((key, value))
    fields.append((b"Via", (via_seen + b", " if via_seen else b"") + b"1.1 " + via))
    fields.extend(validators)
    if body_length is not None:
        fields.append((b"Content-Length", b"%d" % body_length))
    return serialize_request_head(method, target, fields)


def pass_head(
    status: int, reason: bytes, headers: Headers, via: bytes, x_cache: bytes,
    framing: bytes, close: bool = False, keep_alive: bool = False,
) -> bytes:  # fmt: skip
    """The head of a response streamed through; ``framing`` is a ready field line or b""."""
    listed: set[bytes] = set()
    for key, value in headers:
        if key.lower() == b"connection":
            listed.update(t.strip().lower() for t in value.split(b","))
    fields = b"".join(
        [
            k + b": " + v + b"\r\n"
            for k, v in headers
            if (lk := k.lower()) not in NOT_PASSED and lk not in listed
        ]
    )
    own = b"Via: 1.1 %s\r\nX-Cache: %s\r\n" % (via, x_cache)
    if close:
        own += b"Connection: close\r\n"
    elif keep_alive:
        own += b"Connection: keep-alive\r\n"
    return status_line(status, reason) + fields + own + framing + b"\r\n"
