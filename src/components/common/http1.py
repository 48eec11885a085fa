"""HTTP/1.1 message framing as a sans-IO codec, shared by the load balancer and the edge.

What it is: bytes in, events out; events in, bytes out. ``Parser`` reads one direction
of one connection (requests arriving at a server, or responses arriving at a client) and
turns it into ``Request``/``Response`` heads, ``Data`` pieces and an ``EndOfMessage``;
the ``serialize_*`` functions and ``chunk`` produce the bytes for the other direction.
Nothing here touches a socket or a clock, so every rule is tested byte-exactly and
fuzzed (the model is h11, reshaped for a proxy's speed: heads are cut with ``find`` and
``split`` and validated with ``bytes.translate``, bodies are never copied twice and never
buffered whole, only passed on in the pieces that arrived).

Why it is strict. A proxy that frames a message one way while the server behind it
frames it another way lets an attacker hide a second request inside the first one's
body ("request smuggling"). RFC 9112 closes those gaps and this parser applies every
one of them, answering with the status the RFC names and then refusing the connection:

- §6.1 and §6.3: Transfer-Encoding together with Content-Length, a coding other than
  ``chunked`` (501), ``chunked`` twice or not last, Transfer-Encoding in HTTP/1.0;
- §6.3 item 5 and RFC 9110 §8.6: a Content-Length that is not digits, or several that
  differ (identical repeats are folded into one, as the RFC allows);
- §7.1: chunk sizes that are not hexadecimal (no ``0x``, signs, spaces or ``_`` that
  Python's ``int`` would accept), chunk data not followed by CRLF;
- §5.1 and §5.2: whitespace between a field name and its colon, obs-fold lines;
- §2.2 and RFC 9110 §5.5: bare CR, bare LF, NUL and other control bytes in a head;
- §3.2: an HTTP/1.1 request without exactly one Host.

Bounds (DESIGN.md: everything that grows is bounded): a request line over
``MAX_START_LINE_BYTES`` is 414, a head over ``MAX_HEAD_BYTES`` or with more than
``MAX_FIELDS`` fields is 431 (RFC 6585 §5), a chunk-size line or trailer section is
bounded the same way, and a head is refused as soon as it passes its bound, before it
is complete. The parser holds only what was fed and not yet returned as events, consumed
by moving an offset rather than slicing, so a burst of pipelined messages parses in
linear time; a caller that stops pulling events (a proxy holding pipelined requests
back) stops reading its socket once ``buffered`` is large: backpressure lives in the IO
shell, not here.

Responses need to know what they answer (§6.3 items 1-2): a response to HEAD, and any
1xx, 204 or 304, has no body whatever its headers say. So a response parser is told
each request method in order (``expect_response``), which also makes pipelining work:
responses are matched to requests first in, first out. A response with neither
Content-Length nor Transfer-Encoding runs until the connection closes (``feed_eof``).

What it refuses on purpose: transfer codings other than ``chunked`` (a proxy that
re-frames bodies cannot pass ``gzip`` transfer coding through honestly), obs-fold (RFC
9112 §5.2 allows rejecting it), bare-LF line endings (§2.2 allows accepting them; we do
not, as a front end must never see lines its backends might not) and HTTP/0.9. What it
leaves alone: request targets, in any form, pass through unchanged, and chunk extensions
are checked for clean bytes but otherwise ignored.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = [
    "MAX_START_LINE_BYTES",
    "MAX_HEAD_BYTES",
    "MAX_FIELDS",
    "MAX_REPEAT_HEAD_BYTES",
    "MAX_CHUNK_LINE_BYTES",
    "ProtocolError",
    "Request",
    "Response",
    "Data",
    "EndOfMessage",
    "NEED_DATA",
    "Parser",
    "serialize_request_head",
    "serialize_response_head",
    "chunk",
    "LAST_CHUNK",
    "serialize_trailers",
    "error_response",
    "REASONS",
]

#: Longest request line (or status line) accepted: 8 KiB, as nginx's default large buffer.
MAX_START_LINE_BYTES = 8 * 1024
#: Largest head (start line + fields + blank line): 64 KiB.
MAX_HEAD_BYTES = 64 * 1024
#: Most header (or trailer) fields in one message.
MAX_FIELDS = 100
#: Largest head ``repeat_heads`` remembers: what a connection holds beyond its buffer.
MAX_REPEAT_HEAD_BYTES = 8 * 1024
#: Longest chunk-size line including chunk extensions.
MAX_CHUNK_LINE_BYTES = 4 * 1024
#: Largest Content-Length / chunk size we will count to (2**62 bytes, far beyond any body).
_MAX_DIGITS = 18
_MAX_HEX_DIGITS = 15

REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created",
    202: "Accepted", 204: "No Content", 206: "Partial Content", 301: "Moved Permanently",
    302: "Found", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    411: "Length Required", 412: "Precondition Failed", 413: "Content Too Large",
    414: "URI Too Long", 416: "Range Not Satisfiable", 417: "Expectation Failed", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}  # fmt: skip

# RFC 9110 §5.6.2: tchar. ``name.translate(None, _TCHAR)`` is empty iff name is a token.
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Bytes allowed anywhere in a head once the CRLFs are cut out: HTAB, visible ASCII, SP,
# obs-text (RFC 9110 §5.5). Everything else (NUL, bare CR/LF, other controls, DEL) is 400.
_HEAD_OK = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])
_DIGITS = b"0123456789"
_HEXDIGITS = b"0123456789abcdefABCDEF"
_OWS = b" \t"
#: Methods a walking-URL request line may bring without a token check (all are tokens).
_COMMON_METHODS = frozenset(
    (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE")
)
#: A request's ``version`` back to the text of its request line.
_VERSION_LINE = {b"1.1": b"HTTP/1.1", b"1.0": b"HTTP/1.0"}


class ProtocolError(Exception):
    """The peer broke HTTP/1.1 framing; ``status`` is what a server answers (then closes)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail


Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class _Head:
    """What requests and responses share: version, fields and the framing they imply."""

    #: ``b"1.1"`` or ``b"1.0"``.
    version: bytes
    #: Fields in arrival order as ``(name, value)``; names keep their case, values are
    #: stripped of surrounding whitespace. Look names up lowercased with ``get``.
    headers: Headers
    #: Whether the connection may carry another message after this one (RFC 9112 §9.3).
    keep_alive: bool = True
    #: ``"length"``, ``"chunked"``, ``"close"`` (until EOF) or ``"none"`` (no body).
    framing: str = "none"
    #: The body length when ``framing == "length"``.
    content_length: int = 0
    #: Lowercased tokens of the Connection field (names of extra hop-by-hop fields).
    connection: frozenset[bytes] = frozenset()
    # Lowercase name -> first value, built on the first ``get`` (see there).
    _index: tuple | None = field(default=None, kw_only=True, repr=False, compare=False)

    def get(self, name: bytes, default: bytes | None = None) -> bytes | None:
        """The first value of field ``name`` (lowercase), or ``default``.

        The first call builds a lowercase index, so a caller asking for several fields
        (a cache checks Cache-Control, Range, validators...) pays one pass over the
        headers, not one per lookup; a message nobody asks pays nothing. The index
        remembers which list (and how long) it was built from and is rebuilt if
        ``headers`` was replaced or grown since.
        """
        headers = self.headers
        cached = self._index
        if cached is None or cached[0] is not headers or cached[1] != len(headers):
            index: dict[bytes, bytes] = {}
            for key, value in reversed(headers):  # reversed: the first occurrence wins
                index[key.lower()] = value
            cached = self._index = (headers, len(headers), index)
        return cached[2].get(name, default)

    def get_all(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name]


@dataclass(slots=True)
class Request(_Head):
    method: bytes = b"GET"
    target: bytes = b"/"
    #: ``Expect: 100-continue`` on HTTP/1.1 (RFC 9110 §10.1.1): the client waits for 100.
    expect_continue: bool = False


@dataclass(slots=True)
class Response(_Head):
    status: int = 200
    reason: bytes = b"OK"


# Not frozen: a frozen dataclass's __init__ goes through object.__setattr__, and one Data
# is made per read on the hot path. Treat events as read-only all the same.
@dataclass(slots=True)
class Data:
    """A piece of a body, exactly as much as had arrived (never the whole body at once)."""

    data: bytes


@dataclass(slots=True)
class EndOfMessage:
    """The body is complete; chunked messages may carry trailer fields (RFC 9112 §7.1.2)."""

    trailers: Headers = field(default_factory=list)


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: ``next_event`` returns this when the buffer holds no complete event.
NEED_DATA = _NeedData()

# Parser states: a table of what the parser is waiting for next.
_HEAD = 0  # a start line and fields
_BODY_LENGTH = 1  # ``_remaining`` more body bytes
_CHUNK_SIZE = 2  # a chunk-size line
_CHUNK_DATA = 3  # ``_remaining`` more bytes of this chunk
_CHUNK_END = 4  # the CRLF after chunk data
_TRAILERS = 5  # trailer fields up to the blank line
_BODY_CLOSE = 6  # everything until EOF is body
_END = 7  # an EndOfMessage is owed
_CLOSED = 8  # the connection carries no more messages (close, EOF or error)


class Parser:
    """Reads one direction of an HTTP/1.1 connection: ``feed`` bytes, pull ``next_event``.

    ``Parser()`` reads requests (a server's side); ``Parser(response=True)`` reads
    responses (a client's side) and must be told each request's method in order with
    ``expect_response``. After an ``EndOfMessage`` the next message is parsed from what
    is already buffered (pipelining); after a message that does not keep the connection
    alive, or after a ``ProtocolError``, the parser is closed and ignores further bytes.

    ``repeat_heads=True`` is for proxies: a keep-alive peer usually repeats itself (the
    same request head from a polling client or a load generator, the same response head
    from a backend until its ``Date`` ticks), so a head byte-identical to the previous
    one (and, for a response, answering the same method) is not parsed again (heads up
    to ``MAX_REPEAT_HEAD_BYTES``; a connection holds at most twice that more, the head
    and its field block): the
    previous event object is returned with the framing state it implied. Same bytes,
    same verdict, so no rule is skipped; but the event is then shared between messages,
    so a caller that opts in must treat events as read-only. A request head whose field
    block is byte-identical to the previous one's but whose request line differs (a
    client walking URLs) has only its request line parsed: the fields' verdict depends
    on the version, not on the method or target, so with the same version it stands,
    and the new ``Request`` shares the previous one's ``headers`` list.
    """

    __slots__ = ("response", "_buf", "_pos", "_state", "_remaining", "_methods", "_keep_alive",
                 "_eof", "max_start_line", "max_head", "max_fields", "repeat_heads",
                 "_memo")  # fmt: skip

    def __init__(
        self,
        response: bool = False,
        *,
        max_start_line: int = MAX_START_LINE_BYTES,
        max_head: int = MAX_HEAD_BYTES,
        max_fields: int = MAX_FIELDS,
        repeat_heads: bool = False,
    ) -> None:
        self.response = response
        # Unconsumed input is ``_buf[_pos:]``. Moving ``_pos`` instead of slicing the
        # buffer keeps a burst of pipelined messages linear, not quadratic, to parse.
        self._buf = b""
        self._pos = 0
        self._state = _HEAD
        self._remaining = 0
        self._methods: deque[bytes] = deque()
        self._keep_alive = True
        self._eof = False
        self.max_start_line = max_start_line
        self.max_head = max_head
        self.max_fields = max_fields
        #: Opt-in: a head byte-identical to the previous one returns the previous event.
        self.repeat_heads = repeat_heads
        # (head bytes incl. the blank line, method answered, event, state, remaining,
        # keep_alive) of the last head parsed, when ``repeat_heads``.
        self._memo: tuple | None = None

    # -- input -------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._state != _CLOSED and data:
            buf, pos = self._buf, self._pos
            self._buf = data if pos >= len(buf) else buf[pos:] + data
            self._pos = 0

    def feed_eof(self) -> None:
        """The peer closed its side; ends a close-delimited body, else truncates."""
        self._eof = True

    def expect_response(self, method: bytes) -> None:
        """Tell a response parser the method of the next request sent (FIFO)."""
        self._methods.append(method)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as events (for read backpressure)."""
        return len(self._buf) - self._pos

    @property
    def at_eof(self) -> bool:
        """The peer has closed its side (``feed_eof`` was called)."""
        return self._eof

    @property
    def closed(self) -> bool:
        return self._state == _CLOSED

    @property
    def idle(self) -> bool:
        """Between messages with nothing buffered: the connection may be reused."""
        return self._state == _HEAD and self._pos >= len(self._buf) and not self._methods

    @property
    def in_message(self) -> bool:
        """A head has been returned and its EndOfMessage not yet."""
        return _HEAD < self._state < _CLOSED

    # -- events ------------------------------------------------------------------------

    def next_event(self):
        """The next event, or ``NEED_DATA``; raises ``ProtocolError`` on bad framing."""
        state = self._state
        if state == _HEAD:  # first: a proxy takes most bodies whole (``whole_body``)
            return self._head()
        if state == _BODY_LENGTH:
            return self._body_length()
        if state == _CHUNK_DATA:
            return self._chunk_data()
        if state == _CHUNK_SIZE:
            return self._chunk_size()
        if state == _CHUNK_END:
            return self._chunk_end()
        if state == _END:
            return self._end_message([])
        if state == _TRAILERS:
            return self._trailers()
        if state == _BODY_CLOSE:
            return self._body_close()
        return NEED_DATA

    def whole_body(self) -> bytes | None:
        """Right after a head: its entire body at once if all of it is here, else ``None``.

        A proxy forwards a short message in one write when it arrived in one read (a GET,
        a small answer: the common case). Called just after ``next_event`` returned a
        ``Request`` or a final ``Response``, this returns ``b""`` for a message without
        a body, or the whole Content-Length body when it is already buffered, and leaves
        the parser where the ``Data`` and ``EndOfMessage`` events of ``next_event``
        would have left it: after the message. Otherwise (a chunked or close-delimited
        body, or one still arriving) it returns ``None`` and consumes nothing, and the
        body is read with ``next_event`` as usual. Nothing is buffered that had not
        arrived: this only saves walking through events when the bytes are all here.
        """
        state = self._state
        if state == _END:
            body = b""
        elif state == _BODY_LENGTH and len(self._buf) - self._pos >= self._remaining:
            body = self._take(self._remaining)
            self._remaining = 0
        else:
            return None
        self._finish_message()
        return body

    def _fail(self, status: int, detail: str) -> ProtocolError:
        self._state = _CLOSED
        self._buf = b""
        self._pos = 0
        return ProtocolError(status, detail)

    def _end_message(self, trailers: Headers) -> EndOfMessage:
        self._finish_message()
        return EndOfMessage(trailers)

    def _finish_message(self) -> None:
        """A message is complete: on to the next one, or closed if it ends the connection."""
        if self.response:
            self._methods.popleft()
        if self._keep_alive:
            self._state = _HEAD
        else:
            self._state = _CLOSED
            self._buf = b""
            self._pos = 0

    def _truncated(self):
        if self._eof:
            raise self._fail(400 if not self.response else 502, "connection closed mid-message")
        return NEED_DATA

    # -- head --------------------------------------------------------------------------

    def _head(self):
        buf, pos = self._buf, self._pos
        memo = self._memo
        if (
            memo is not None
            and buf.startswith(memo[0], pos)
            and (not self.response or memo[1] == self._methods[0])
        ):
            # The same bytes as the last head (a client or backend repeating itself on a
            # keep-alive connection, the common case): the same verdict, the same event.
            # For a response the framing also depends on the method answered (HEAD).
            # Nothing needs searching first: a remembered head starts with its start line
            # (no empty lines to skip), was within the bounds, and its first blank line is
            # its last, so what follows it here is the next message's, as in a full parse.
            self._pos = pos + len(memo[0])
            self._state, self._remaining, self._keep_alive = memo[3], memo[4], memo[5]
            return memo[2]
        if memo is not None and not self.response:
            # A client walking URLs (a browser, a crawler, a load test) repeats its
            # fields but not its request line: the same field bytes, the same verdict.
            # The field block starts at the first CRLF and its first blank line is its
            # last, so here too the head ends where the block does.
            line_end = buf.find(b"\r\n", pos)
            fields = memo[6]
            if line_end > pos and buf.startswith(fields, line_end):
                end = line_end + len(fields)
                if end - pos <= MAX_REPEAT_HEAD_BYTES and end - pos <= self.max_head:
                    request = self._request_line_for(buf[pos:line_end], memo[2])
                    if request is not None:
                        self._pos = end
                        self._state, self._remaining, self._keep_alive = memo[3:6]
                        self._memo = (buf[pos:end], None, request, *memo[3:])
                        return request
        # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request.
        if not self.response and buf.startswith(b"\r\n", pos):
            rest = buf[pos:]
            pairs = (len(rest) - len(rest.lstrip(b"\r\n"))) // 2
            if rest[: 2 * pairs] == b"\r\n" * pairs:
                pos = self._pos = pos + 2 * pairs
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            available = len(buf) - pos
            if not available:
                self._buf, self._pos = b"", 0
                if self._eof:
                    self._state = _CLOSED
                return NEED_DATA
            line_end = buf.find(b"\r\n", pos)
            if (line_end < 0 and available > self.max_start_line) or (
                line_end - pos > self.max_start_line
            ):
                raise self._fail(414 if not self.response else 502, "start line too long")
            if available > self.max_head:
                raise self._fail(431 if not self.response else 502, "header section too large")
            return self._truncated()
        if end + 4 - pos > self.max_head:
            raise self._fail(431 if not self.response else 502, "header section too large")
        head = buf[pos:end]
        self._pos = end + 4
        lines = head.split(b"\r\n")
        start = lines[0]
        if len(start) > self.max_start_line:
            raise self._fail(414 if not self.response else 502, "start line too long")
        if len(lines) - 1 > self.max_fields:
            raise self._fail(431 if not self.response else 502, "too many header fields")
        # One C-speed pass over the whole head: after cutting the CRLFs out, anything
        # outside HTAB/SP/VCHAR/obs-text (a bare CR or LF, NUL, other controls) is fatal.
        # What is left is exactly the CRLF separators unless a bare CR or LF hides inside.
        if head.translate(None, _HEAD_OK) != b"\r\n" * (len(lines) - 1):
            raise self._fail(self._bad, "control byte (CR, LF, NUL, ...) in head")
        del lines[0]
        try:
            headers, special = _parse_fields(lines)
            if self.response:
                message = self._response_head(start, headers, special)
            else:
                message = self._request_head(start, headers, special)
        except ProtocolError as error:
            # A bad response is the backend's fault: the client hears 502, whatever rule.
            raise self._fail(502 if self.response else error.status, error.detail) from None
        if (
            self.repeat_heads
            and end + 4 - pos <= MAX_REPEAT_HEAD_BYTES
            and (not self.response or message.status >= 200)
        ):
            # (Interim 1xx heads are not remembered: they leave the state unchanged.)
            self._memo = (
                buf[pos : end + 4],
                self._methods[0] if self.response else None,
                message,
                self._state,
                self._remaining,
                self._keep_alive,
                buf[pos + len(start) : end + 4],  # the field block, from its first CRLF
            )
        return message

    def _request_line_for(self, start: bytes, previous: Request) -> Request | None:
        """A new request line over fields already judged for ``previous``, or ``None``.

        The fields' verdict (framing, persistence, Host) depends on the version but not
        on the method or target, so with the same version it stands. The line is only
        accepted here when it is plainly valid: printable ASCII within the bound, three
        parts, a common method (or the previous one), a target, the previous version.
        That is a subset of what ``_request_line`` accepts, checked with cheaper means
        (no translate tables); anything else returns ``None`` and the head is parsed and
        judged in full, so the verdict is always the full parse's.
        """
        if (
            len(start) > self.max_start_line
            or not start.isascii()
            or not start.decode("ascii").isprintable()  # no controls (HTAB, NUL, bare CR...)
        ):
            return None
        parts = start.split(b" ")
        if len(parts) != 3:
            return None
        method, target, version = parts
        if (
            not target
            or version != _VERSION_LINE[previous.version]
            or (method not in _COMMON_METHODS and method != previous.method)
        ):
            return None
        return Request(
            previous.version,
            previous.headers,  # shared, as a repeated head's event is: read-only
            previous.keep_alive,
            previous.framing,
            previous.content_length,
            previous.connection,
            method,
            target,
            previous.expect_continue,
        )

    def _request_head(self, start: bytes, headers: Headers, special: Headers) -> Request:
        method, target, version = _request_line(start)
        request = Request(version, headers, method=method, target=target)
        hosts = 0
        te = cl = None
        connection: list[bytes] = []
        for lname, value in special:
            if lname == b"host":
                hosts += 1
            elif lname == b"connection":
                connection.append(value)
            elif lname == b"content-length":
                cl = _content_length(cl, value, 400)
            elif lname == b"transfer-encoding":
                te = value if te is None else te + b"," + value
            elif lname == b"expect" and version == b"1.1":
                request.expect_continue = value.lower() == b"100-continue"
        _connection_semantics(request, connection)
        if hosts > 1 or (hosts == 0 and version == b"1.1"):
            raise ProtocolError(400, "HTTP/1.1 request needs exactly one Host field")
        if te is not None:
            if cl is not None:
                raise ProtocolError(400, "both Content-Length and Transfer-Encoding")
            if version == b"1.0":
                raise ProtocolError(400, "Transfer-Encoding in an HTTP/1.0 request")
            _check_chunked(te, request=True)
            request.framing = "chunked"
            self._state = _CHUNK_SIZE
        elif cl:
            request.framing = "length"
            request.content_length = self._remaining = cl
            self._state = _BODY_LENGTH
        else:
            # RFC 9112 §6.3 item 7: a request with neither has no body.
            request.framing = "none"
            self._state = _END
        self._keep_alive = request.keep_alive
        return request

    def _response_head(self, start: bytes, headers: Headers, special: Headers) -> Response:
        if not self._methods:
            raise ProtocolError(502, "response without a request")
        parts = start.split(b" ", 2)
        if len(parts) < 2:
            raise ProtocolError(502, "malformed status line")
        version = _version(parts[0], 502)
        code = parts[1]
        if len(code) != 3 or code.translate(None, _DIGITS) or code[0:1] == b"0":
            raise ProtocolError(502, "malformed status code")
        status = int(code)
        reason = parts[2] if len(parts) == 3 else b""
        response = Response(version, headers, status=status, reason=reason)
        te = cl = None
        connection: list[bytes] = []
        for lname, value in special:
            if lname == b"content-length":
                cl = _content_length(cl, value, 502)
            elif lname == b"connection":
                connection.append(value)
            elif lname == b"transfer-encoding":
                te = value if te is None else te + b"," + value
        _connection_semantics(response, connection)
        method = self._methods[0]
        if status < 200:
            # §6.3 item 1: interim responses have no body and do not end the exchange.
            if status == 101:
                raise ProtocolError(502, "protocol upgrades are not supported")
            response.framing = "none"
            response.keep_alive = True
            return response
        self._keep_alive = response.keep_alive
        if method == b"HEAD" or status in (204, 304):
            # §6.3 item 1: no body, whatever the fields announce (they describe the GET).
            response.framing = "none"
            if cl is not None:
                response.content_length = cl
            self._state = _END
        elif te is not None and version == b"1.1":
            # §6.3 item 3: Transfer-Encoding overrides Content-Length, which we drop.
            _check_chunked(te, request=False)
            response.framing = "chunked"
            self._state = _CHUNK_SIZE
        elif te is not None:
            raise ProtocolError(502, "Transfer-Encoding in an HTTP/1.0 response")
        elif cl is not None:
            response.framing = "length"
            response.content_length = self._remaining = cl
            self._state = _BODY_LENGTH if cl else _END
        else:
            # §6.3 item 8: the body runs until the server closes.
            response.framing = "close"
            response.keep_alive = self._keep_alive = False
            self._state = _BODY_CLOSE
        return response

    # -- bodies ------------------------------------------------------------------------

    def _take(self, remaining: int) -> bytes:
        """Up to ``remaining`` body bytes from the buffer, without a copy when possible."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos <= remaining:
            self._buf, self._pos = b"", 0
            return buf[pos:] if pos else buf
        self._pos = pos + remaining
        return buf[pos : pos + remaining]

    def _body_length(self):
        if self._pos >= len(self._buf):
            return self._truncated()
        piece = self._take(self._remaining)
        self._remaining -= len(piece)
        if not self._remaining:
            self._state = _END
        return Data(piece)

    def _body_close(self):
        if self._pos < len(self._buf):
            return Data(self._take(len(self._buf)))
        if self._eof:
            return self._end_message([])
        return NEED_DATA

    def _chunk_size(self):
        buf, pos = self._buf, self._pos
        end = buf.find(b"\r\n", pos)
        if end < 0:
            if len(buf) - pos > MAX_CHUNK_LINE_BYTES:
                raise self._fail(self._bad, "chunk-size line too long")
            return self._truncated()
        if end - pos > MAX_CHUNK_LINE_BYTES:
            raise self._fail(self._bad, "chunk-size line too long")
        line = buf[pos:end]
        self._pos = end + 2
        # §7.1: chunk-size [ chunk-ext ]; extensions are ignored, but must be clean bytes.
        size_text, _, ext = line.partition(b";")
        size_text = size_text.rstrip(_OWS)
        if (
            not size_text
            or len(size_text) > _MAX_HEX_DIGITS
            or size_text.translate(None, _HEXDIGITS)
            or ext.translate(None, _HEAD_OK)
        ):
            raise self._fail(self._bad, "invalid chunk size line")
        size = int(size_text, 16)
        if size:
            self._remaining = size
            self._state = _CHUNK_DATA
            return self._chunk_data()
        self._state = _TRAILERS
        return self._trailers()

    def _chunk_data(self):
        if self._pos >= len(self._buf):
            return self._truncated()
        piece = self._take(self._remaining)
        self._remaining -= len(piece)
        if not self._remaining:
            self._state = _CHUNK_END
        return Data(piece)

    def _chunk_end(self):
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 2:
            if len(buf) > pos and buf[pos] != 13:  # anything but the CR of CRLF
                raise self._fail(self._bad, "chunk data not followed by CRLF")
            return self._truncated()
        if not buf.startswith(b"\r\n", pos):
            raise self._fail(self._bad, "chunk data not followed by CRLF")
        self._pos = pos + 2
        self._state = _CHUNK_SIZE
        return self._chunk_size()

    def _trailers(self):
        buf, pos = self._buf, self._pos
        if buf.startswith(b"\r\n", pos):
            self._pos = pos + 2
            return self._end_message([])
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            if len(buf) - pos > self.max_head:
                raise self._fail(431 if not self.response else 502, "trailer section too large")
            return self._truncated()
        if end + 4 - pos > self.max_head:
            raise self._fail(431 if not self.response else 502, "trailer section too large")
        block = buf[pos:end]
        self._pos = end + 4
        lines = block.split(b"\r\n")
        if block.translate(None, _HEAD_OK) != b"\r\n" * (len(lines) - 1):
            raise self._fail(self._bad, "control byte in trailers")
        if len(lines) > self.max_fields:
            raise self._fail(431 if not self.response else 502, "too many trailer fields")
        try:
            trailers = _parse_fields(lines)[0]
        except ProtocolError as error:
            raise self._fail(self._bad, error.detail) from None
        return self._end_message(trailers)

    @property
    def _bad(self) -> int:
        return 502 if self.response else 400


# -- field helpers -------------------------------------------------------------------------


#: The fields whose meaning is framing or connection management, which the parser acts on.
_SPECIAL = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection", b"expect"})
_SPECIAL_LENGTHS = frozenset(len(name) for name in _SPECIAL)


def _parse_fields(lines: list[bytes]) -> tuple[Headers, Headers]:
    """All fields, and (lowercased name, value) for the few in ``_SPECIAL``, in one pass."""
    headers: Headers = []
    special: Headers = []
    append = headers.append
    for line in lines:
        name, colon, value = line.partition(b":")
        # §5.1: whitespace between name and colon MUST be rejected; it fails the token check.
        if not colon or not name or name.translate(None, _TCHAR):
            raise _field_error(line)
        value = value.strip(_OWS)
        append((name, value))
        # Lowercasing only names of the right length keeps the common case to one len().
        if len(name) in _SPECIAL_LENGTHS:
            lname = name.lower()
            if lname in _SPECIAL:
                special.append((lname, value))
    return headers, special


def _field_error(line: bytes) -> ProtocolError:
    if line[:1] in (b" ", b"\t"):
        # §5.2: a line starting with whitespace continues the previous one (obs-fold);
        # a proxy that unfolds it differently from the server is a smuggling vector.
        return ProtocolError(400, "obs-fold line folding is not accepted")
    if b":" not in line:
        return ProtocolError(400, "field line without a colon")
    return ProtocolError(400, "invalid field name")


def _request_line(start: bytes) -> tuple[bytes, bytes, bytes]:
    """``method SP request-target SP HTTP-version`` (RFC 9112 §3): method, target, version."""
    parts = start.split(b" ")
    if len(parts) != 3:
        raise ProtocolError(400, "malformed request line")
    method, target, version_text = parts
    if not method or method.translate(None, _TCHAR):
        raise ProtocolError(400, "malformed method")
    if not target:
        raise ProtocolError(400, "empty request target")
    return method, target, _version(version_text, 400)


def _version(text: bytes, bad: int) -> bytes:
    if text == b"HTTP/1.1":
        return b"1.1"
    if text == b"HTTP/1.0":
        return b"1.0"
    if (
        len(text) == 8
        and text[:5] == b"HTTP/"
        and text[5:6].isdigit()
        and text[6:7] == b"."
        and text[7:8].isdigit()
    ):
        raise ProtocolError(505, "HTTP version not supported")
    raise ProtocolError(bad, "malformed HTTP version")


#: The usual Connection values, resolved without splitting: value -> tokens.
_COMMON_CONNECTION = {
    value: frozenset({value.lower()})
    for value in (b"keep-alive", b"Keep-Alive", b"close", b"Close")
}


def _connection_semantics(message: _Head, values: list[bytes]) -> None:
    """Connection tokens and persistence (RFC 9112 §9.3) from the Connection field values."""
    if not values:
        message.keep_alive = message.version == b"1.1"
        return
    tokens = _COMMON_CONNECTION.get(values[0]) if len(values) == 1 else None
    if tokens is None:
        found: set[bytes] = set()
        for value in values:
            for token in value.split(b","):
                token = token.strip(_OWS).lower()
                if token:
                    found.add(token)
        tokens = frozenset(found)
    message.connection = tokens
    # 1.1 persists unless "close"; 1.0 only with "keep-alive".
    if message.version == b"1.1":
        message.keep_alive = b"close" not in tokens
    else:
        message.keep_alive = b"keep-alive" in tokens and b"close" not in tokens


def _content_length(previous: int | None, value: bytes, bad: int) -> int:
    # RFC 9110 §8.6: 1*DIGIT; a list of identical values may be folded into one.
    if previous is None and value.isdigit() and len(value) <= _MAX_DIGITS:
        return int(value)  # the usual case: one plain number (bytes.isdigit is ASCII-only)
    result = previous
    for item in value.split(b","):
        item = item.strip(_OWS)
        if not item or len(item) > _MAX_DIGITS or item.translate(None, _DIGITS):
            raise ProtocolError(bad, "malformed Content-Length")
        number = int(item)
        if result is not None and number != result:
            raise ProtocolError(bad, "conflicting Content-Length values")
        result = number
    return result  # type: ignore[return-value]


def _check_chunked(value: bytes, request: bool) -> None:
    codings = [c.strip(_OWS).lower() for c in value.split(b",")]
    codings = [c for c in codings if c]
    bad = 400 if request else 502
    if not codings:
        raise ProtocolError(bad, "empty Transfer-Encoding")
    for coding in codings:
        if coding != b"chunked":
            # §6.1: a coding we do not implement is 501 for a server (502 from a backend).
            raise ProtocolError(501 if request else 502, "unsupported transfer coding")
    if len(codings) > 1:
        raise ProtocolError(bad, "chunked applied more than once")


# -- serialisers ---------------------------------------------------------------------------


def _fields(headers: Headers) -> bytes:
    return b"".join([name + b": " + value + b"\r\n" for name, value in headers])


def serialize_request_head(
    method: bytes, target: bytes, headers: Headers, version: bytes = b"1.1"
) -> bytes:
    """Request line, fields and blank line; the caller chose the framing fields."""
    return b"%s %s HTTP/%s\r\n%s\r\n" % (method, target, version, _fields(headers))


def serialize_response_head(
    status: int, headers: Headers, reason: bytes | None = None, version: bytes = b"1.1"
) -> bytes:
    if reason is None:
        reason = REASONS.get(status, "").encode()
    return b"HTTP/%s %d %s\r\n%s\r\n" % (version, status, reason, _fields(headers))


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1); empty data gives nothing."""
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)


#: The last chunk with no trailers.
LAST_CHUNK = b"0\r\n\r\n"


def serialize_trailers(trailers: Headers) -> bytes:
    """The last chunk carrying trailer fields."""
    return b"0\r\n" + _fields(trailers) + b"\r\n"


def error_response(status: int, message: str, *, close: bool = True) -> bytes:
    """A complete short plain-text response, for errors a proxy or server makes itself."""
    body = message.encode() + b"\n"
    headers = [
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Content-Length", b"%d" % len(body)),
    ]
    if close:
        headers.append((b"Connection", b"close"))
    return serialize_response_head(status, headers) + body
