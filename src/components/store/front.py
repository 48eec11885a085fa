"""The data API's own HTTP/1.1 front: ``/db/execute`` and ``/db/query`` without aiohttp's cost.

Why it exists. Profiled under 64 concurrent writers, most of the store's CPU per write
was aiohttp's own machinery (request and response objects, header multidicts, the router,
a stream reader and a task per request), more than the JSON, the SQLite statement and the
redo log framing together. So the two routes every client hammers are served here, on
``common/http1.py`` (the sans-IO codec the load balancer uses): the head is parsed by the
codec (a keep-alive client repeats the same head, which ``Parser(repeat_heads=True)``
recognises by its bytes), the body is sliced out of the receive buffer, and the answer is
one ``transport.write``. A write does not even get a task: the group committer's future
calls back when the batch is durable and applied (``server.py``'s ``serve_fast``).

Everything else is handed to aiohttp **on the same connection**: other routes, chunked
bodies, ``Expect: 100-continue``, and any request ``serve_fast`` declines because it would
have to wait for something other than the commit (a replica forwarding to the primary,
``?queue``, semi-sync, capacity emulation, ``min_lsn``, a read too big for the loop). The
unconsumed bytes, starting at that request, go to an aiohttp ``RequestHandler`` that takes
over the transport for the rest of the connection's life. The front is therefore an
optimisation of the common case with the same answers, never a second implementation
of the API: anything it does not handle, aiohttp handles exactly as before.

Order and bounds: one request is in service per connection at a time, so answers leave in
request order (RFC 9112 §9.3.2); pipelined requests wait in the buffer, and reading stops
while the buffer holds more than one maximal request. Heads are bounded by the codec
(431/414/400, then close), bodies by ``MAX_BODY_BYTES`` (a bigger one goes to aiohttp,
which answers 413).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from components.common.http1 import (
    MAX_HEAD_BYTES,
    NEED_DATA,
    REASONS,
    EndOfMessage,
    Parser,
    ProtocolError,
    Request,
    error_response,
)

from .protocol import MAX_BODY_BYTES

#: (method, path) -> route name passed to ``serve_fast``; anything else goes to aiohttp.
FAST_ROUTES = {
    (b"POST", b"/db/execute"): "execute",
    (b"GET", b"/db/query"): "query",
    (b"POST", b"/db/query"): "query",
}
#: Stop reading a connection whose unanswered input exceeds this.
MAX_BUFFERED_BYTES = MAX_BODY_BYTES + MAX_HEAD_BYTES

JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"

#: What ``serve_fast`` returns for an immediate answer: (status, content type, extra
#: header lines, body).
Answer = tuple[int, bytes, bytes, bytes]


class Deferred:
    """An answer that comes later: ``finish(future)`` turns the done future into one."""

    __slots__ = ("future", "finish")

    def __init__(self, future: asyncio.Future, finish: Callable[[asyncio.Future], Answer]):
        self.future = future
        self.finish = finish


_STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, reason.encode())
                 for code, reason in REASONS.items()}  # fmt: skip
_date_second = -1
_date_line = b""


def _date() -> bytes:
    """The ``Date`` field (RFC 9110 §6.6.1), formatted once per second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_line = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
    return _date_line


def render(answer: Answer, keep_alive: bool) -> bytes:
    status, content_type, extra, body = answer
    return b"%sContent-Type: %s\r\nContent-Length: %d\r\n%s%s%s\r\n%s" % (
        _STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status,
        content_type, len(body), _date(), extra,
        b"" if keep_alive else b"Connection: close\r\n", body,
    )  # fmt: skip


class ApiProtocol(asyncio.Protocol):
    """One client connection of the public port, until it is handed to aiohttp."""

    def __init__(self, serve: Callable[[str, Request, bytes], Any],
                 fallback: Callable[[], asyncio.Protocol], connections: set,
                 accepting: bool = True) -> None:  # fmt: skip
        #: ``serve(route, request, body)``: an ``Answer``, a ``Deferred``, or None to
        #: hand the request (and the connection) to aiohttp.
        self._serve = serve
        self._fallback = fallback
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._parser = Parser(repeat_heads=True)
        self._buf = b""
        # (request, head length, body length, route, head fed to the codec): body pending
        self._head: tuple[Request, int, int, str, bool] | None = None
        # The last head served here and what it parsed to: a keep-alive client (wrk, a
        # driver's pool) sends the same head again and again. The same bytes get the same
        # verdict, so a repeat skips the codec altogether (it stays between messages).
        self._last_head = b"\x00"
        self._last: tuple[Request, str] | None = None
        self._busy = False  # a request is in service (its answer is owed)
        self._keep_alive = True
        self._read_paused = False
        self._write_paused = False
        self._closing = False
        self._accepting = accepting  # False once the server drains: close at once

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self._transport = transport
        if not self._accepting:
            self._closing = True
            transport.close()
            return
        self._connections.add(self)

    def connection_lost(self, exc) -> None:
        self._closing = True
        self._transport = None
        self._connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self._buf = self._buf + data if self._buf else data
        if not self._busy:
            self._process()
        if len(self._buf) > MAX_BUFFERED_BYTES and not self._read_paused and self._transport:
            self._read_paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        # Half-closed by the client: answer what is in service, then close.
        self._keep_alive = False
        if self._busy:
            return True
        self._closing = True
        return False

    def pause_writing(self) -> None:
        self._write_paused = True  # the client does not read: take no new requests

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self._busy:
            self._process()

    # -- requests ---------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """An answer is owed (a write waiting for its commit)."""
        return self._busy

    def close_when_idle(self) -> None:
        """Drain: no new requests; close now, or once the answer in service is sent."""
        self._keep_alive = False
        if not self._busy and self._transport is not None:
            self._closing = True
            self._transport.close()

    def _process(self) -> None:
        while not (self._busy or self._closing or self._write_paused) and self._buf:
            if self._head is None and not self._read_head():
                return
            request, head_len, length, route, fed = self._head  # type: ignore[misc]
            buf = self._buf
            if len(buf) < head_len + length:
                return  # the body is still arriving
            body = buf[head_len : head_len + length]
            if fed:  # keep the codec's framing state in step
                if length:
                    self._parser.feed(body)
                event = self._parser.next_event()
                while event is not NEED_DATA and not isinstance(event, EndOfMessage):
                    event = self._parser.next_event()
            answer = self._serve(route, request, body)
            if answer is None:
                self._hand_off()  # the buffer still starts at this request
                return
            self._head = None
            self._buf = buf[head_len + length :]
            self._keep_alive = request.keep_alive and self._keep_alive
            if isinstance(answer, Deferred):
                self._busy = True
                answer.future.add_done_callback(lambda f, a=answer: self._answered(a))
                return
            self._send(answer)
        if self._read_paused and len(self._buf) <= MAX_BUFFERED_BYTES and self._transport:
            self._read_paused = False
            self._transport.resume_reading()

    def _read_head(self) -> bool:
        """Parse the next head if complete; False to wait (or after a hand-off/error)."""
        buf = self._buf
        last = self._last_head
        if buf.startswith(last) and self._last is not None:
            request, route = self._last
            self._head = (request, len(last), request.content_length, route, False)
            return True
        line_end = buf.find(b"\r\n", 0, MAX_HEAD_BYTES)
        if line_end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                self._fail(ProtocolError(414, "request line too long"))
            return False
        method, _, rest = buf[:line_end].partition(b" ")
        path = rest.rpartition(b" ")[0].partition(b"?")[0]
        route = FAST_ROUTES.get((method, path))
        if route is None:
            self._hand_off()
            return False
        end = buf.find(b"\r\n\r\n", line_end, MAX_HEAD_BYTES + 4)
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                self._fail(ProtocolError(431, "request head too large"))
            return False
        head = buf[: end + 4]
        self._parser.feed(head)
        try:
            request = self._parser.next_event()
        except ProtocolError as exc:
            self._fail(exc)
            return False
        if (request.framing not in ("length", "none") or request.expect_continue
                or request.content_length > MAX_BODY_BYTES):  # fmt: skip
            # Chunked bodies, 100-continue and oversized bodies (413 once aiohttp has
            # read past the limit, so the client sees the answer): aiohttp's business.
            self._hand_off()
            return False
        self._head = (request, end + 4, request.content_length, route, True)
        if request.keep_alive:
            self._last_head, self._last = head, (request, route)
        return True

    def _answered(self, deferred: Deferred) -> None:
        self._busy = False
        if self._transport is None:
            return  # the client left; the write itself stands (it is durable)
        self._send(deferred.finish(deferred.future))
        if not self._closing:
            self._process()

    def _send(self, answer: Answer) -> None:
        transport = self._transport
        if transport is None:
            return
        transport.write(render(answer, self._keep_alive))
        if not self._keep_alive:
            self._closing = True
            transport.close()

    def _fail(self, error: ProtocolError) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.write(error_response(error.status, error.detail))
            self._transport.close()

    def _hand_off(self) -> None:
        """Give the connection, from the current request on, to aiohttp for good."""
        transport = self._transport
        self._closing = True
        self._connections.discard(self)
        if transport is None:
            return
        handler = self._fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._buf:
            handler.data_received(self._buf)
            self._buf = b""
        if self._read_paused:
            transport.resume_reading()
