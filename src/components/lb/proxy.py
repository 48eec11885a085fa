"""One proxied exchange: a client connection in, a pooled backend connection out.

Two ``asyncio.Protocol`` classes meet here. A ``ClientConnection`` reads requests with
the shared HTTP/1.1 parser; for each request the ``Balancer`` picks a backend, a
``BackendConnection`` is taken from that backend's keep-alive pool (or dialled), the
rewritten head goes out and the body streams behind it piece by piece. The
``BackendConnection`` parses the response and streams it back the same way. One request
per client connection is in flight at a time; pipelined requests simply wait in the
client's parser buffer and are answered in order, which is all RFC 9112 §9.3.2 asks.

Peers on keep-alive connections mostly repeat themselves: a client sends the same request
head again and again, a backend the same response head until its ``Date`` ticks. Both
parsers run with ``repeat_heads`` (an identical head yields the previous event), and each
side keeps the head it last rewrote from that event, so a repeated exchange costs two
byte comparisons instead of two parses and two rewrites; anything that changes the
rewritten bytes (the backend, the client's version, keep-alive, a cookie) is part of
the key. A client that walks URLs with the same fields (a browser, a crawler) still has
each head parsed, but its rewritten fields are reused: only the request line is new.

Writes wait for the end of the event loop's round (``Outbox``): a round's answers and
forwarded requests leave back to back, so a sleeping peer is woken once per round rather
than once per write, which is most of what a small write costs the kernel.

Flow control is end to end and bounded: when a side's write buffer passes its high-water
mark (``pause_writing``) the *other* side stops reading, so a fast backend streaming to a
slow client holds at most a few buffers in this process, not the whole body; and a client
pipelining faster than we answer stops being read once ``MAX_BUFFERED_BYTES`` wait.

Failures are handled where they can be told apart. A request whose connect fails has
sent nothing, so it is retried once on another backend whatever its method (its body is
still unread in the parser); a connect bounded by ``--connect-timeout`` that times out
with no retry left is 504, a refused one 502. A backend that resets before any response
byte gets an idempotent, bodiless request retried once; everything else gets 502. Each
client connection keeps a deadline that the server's single sweep timer checks (not one
timer per connection): first response byte (``--first-byte-timeout``, 504) and idle
(``--idle-timeout``, the connection is closed). Every backend error also feeds the
balancer's passive health; ``HealthChecker`` adds the active ``GET /health`` probes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from components.common.http1 import (
    LAST_CHUNK,
    NEED_DATA,
    Data,
    Parser,
    ProtocolError,
    Request,
    Response,
    chunk,
    error_response,
    serialize_trailers,
)

from . import protocol
from .balancer import Backend

if TYPE_CHECKING:
    from .server import LoadBalancer

#: Parsed-but-unanswered client bytes (pipelined requests) before we stop reading.
MAX_BUFFERED_BYTES = 256 * 1024
#: Write-buffer high-water mark on both sides; above it the other side pauses reading.
WRITE_HIGH_WATER_BYTES = 256 * 1024
#: How long an errored connection may keep sending before we close it anyway.
LINGER_S = 2.0
COOKIE_NAME = b"SCALELAB_LB"
#: Backend-bound heads a client connection remembers for its last request, one per backend.
MAX_MEMO_BACKENDS = 8
#: Bytes the outbox holds before it sends at once: beyond this, batching saves nothing
#: (copying dominates), and the transports' own flow control must see the data.
OUTBOX_MAX_BYTES = 64 * 1024

# Client connection phases (what its deadline means).
READING = 0  # waiting for (the rest of) a request head: idle timeout
CONNECTING = 1  # dialling a backend: asyncio.wait_for bounds it
WAITING = 2  # no response byte yet: idle timeout while the body uploads, then first-byte
STREAMING = 3  # response bytes flowing: idle timeout


class Outbox:
    """The writes of one round of the event loop, sent together at the end of the round.

    uvloop calls ``data_received`` for every socket that epoll reported ready, one after
    the other; ``call_soon`` callbacks run once that round is over. Each ``write`` to a
    loopback peer that sleeps in ``epoll_wait`` (a backend, wrk, a browser) wakes it, and
    the wake-up, not the copy, is most of a small write's kernel time. Held until the end
    of the round, a round's writes go out back to back, while the peers woken by the
    first are still awake for the rest (HAProxy's tasklets send after its poller's round
    the same way). Order is kept per socket (one FIFO), nothing is held past the round
    nor beyond ``OUTBOX_MAX_BYTES`` (so a burst of answers still meets the transports'
    high-water marks and pauses whoever produces it), and a connection that closes
    flushes first; one aborted drops what it would have discarded.

    The price is one more turn of the loop per round (the ``call_soon``), shared by the
    round's writes under load but paid whole by a lone connection: at one connection
    (``profile_live.py --connections 1``) CPU per request measured ~10 µs more with the
    outbox than with direct writes (of ~70, four alternating runs, noisy) and no latency
    difference that stood out of the noise; at 64 connections it saves more than that.
    """

    __slots__ = ("loop", "pending", "size")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[tuple[asyncio.Transport, bytes]] = []
        self.size = 0

    def write(self, transport: asyncio.Transport, data: bytes) -> None:
        pending = self.pending
        if not pending:
            self.loop.call_soon(self.flush)
        pending.append((transport, data))
        self.size += len(data)
        if self.size > OUTBOX_MAX_BYTES:
            self.flush()

    def flush(self) -> None:
        pending = self.pending
        if pending:
            self.pending = []
            self.size = 0
            for transport, data in pending:
                if not transport.is_closing():
                    transport.write(data)


class BackendConnection(asyncio.Protocol):
    """One connection to a backend; serves one client exchange at a time."""

    # Slots: these objects live on the hot path, and slot access is cheaper than a dict.
    __slots__ = ("proxy", "backend", "transport", "parser", "client", "closed", "deadline",
                 "mode", "response", "memo")  # fmt: skip

    def __init__(self, proxy: LoadBalancer, backend: Backend) -> None:
        self.proxy = proxy
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.parser = Parser(response=True, repeat_heads=True)
        self.client: ClientConnection | None = None
        self.closed = False
        self.deadline = 0.0
        self.mode = protocol.NONE
        self.response: Response | None = None
        # The last client-bound head made from a response: (response event, client
        # version, keep-alive asked, Set-Cookie) -> (head, mode, keep-alive). With the
        # parser's ``repeat_heads``, a backend repeating its answer reuses it.
        self.memo: tuple | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH_WATER_BYTES)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # Flow control: our write buffer towards the backend is full, so stop reading the
    # client (its request body) until it drains.
    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_reading_for("backend")

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_reading_for("backend")

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            # Bytes on an idle connection: the backend is confused; never reuse it.
            self.proxy.pool.discard(self)
            self.abort()
            return
        parser = self.parser
        parser.feed(data)
        out: list[bytes] = []
        try:
            while True:
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                kind = type(event)
                if kind is Data:
                    out.append(chunk(event.data) if self.mode == protocol.CHUNKED else event.data)
                    continue
                if kind is Response:
                    if event.status < 200:
                        if client.request.version == b"1.1":
                            out.append(protocol.interim_response_head(event))
                        continue
                    out.append(client.response_head(event, self))
                    # A short answer arrives whole in one read: its body (if any) goes
                    # out with the head, without walking Data and EndOfMessage events.
                    body = parser.whole_body()
                    if body is None:
                        continue  # the body streams in as Data events
                    if body:
                        out.append(body)
                elif self.mode == protocol.CHUNKED:  # EndOfMessage, re-chunked for the client
                    trailers = protocol.forwardable_trailers(event.trailers)
                    out.append(serialize_trailers(trailers) if trailers else LAST_CHUNK)
                # The answer is complete (its EndOfMessage, or all of it at once).
                client.exchange_finished(self, out)
                return
        except ProtocolError as error:
            if out:
                client.write(out)
            self.proxy.log.warning(
                "backend_protocol_error", backend=self.backend.address, detail=error.detail
            )
            self.abort()
            client.backend_failed(self, "bad_response", retryable=False)
            return
        if out:
            client.write(out)
        if self.client is not None and parser.closed and not self.closed:
            self.close()

    def eof_received(self):
        self.parser.feed_eof()
        if self.client is not None:
            # A close-delimited body ends here; anything else is truncated.
            self.data_received(b"")
        return False

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.proxy.pool.discard(self)
        client = self.client
        if client is not None:
            self.client = None
            client.backend_failed(self, "reset", retryable=True)


class ClientConnection(asyncio.Protocol):
    """One client's connection: parse requests, pick, forward, stream the answer back."""

    __slots__ = ("proxy", "transport", "parser", "peer", "phase", "deadline", "pulling",
                 "paused_by", "request", "backend", "conn", "head", "request_complete",
                 "response_started", "keep_alive", "retried", "status", "started_at",
                 "closing", "advancing", "head_pending", "lingering", "write_paused",
                 "memo_request", "memo_heads", "memo_fields")  # fmt: skip

    def __init__(self, proxy: LoadBalancer) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.parser = Parser(repeat_heads=True)
        self.peer = ""
        self.phase = READING
        self.deadline = 0.0
        self.pulling = True
        self.paused_by: set[str] = set()
        self.request: Request | None = None
        self.backend: Backend | None = None
        self.conn: BackendConnection | None = None
        self.head: bytes = b""
        self.request_complete = False
        self.response_started = False
        self.keep_alive = True
        self.retried = False
        self.status = 0
        self.started_at = 0.0
        self.closing = False
        self.advancing = False
        self.head_pending = False
        self.lingering = False
        self.write_paused = False
        # Backend-bound heads made from the last request event, per backend: with the
        # parser's ``repeat_heads`` a client repeating its request reuses them.
        self.memo_request: Request | None = None
        self.memo_heads: dict[Backend, bytes] = {}
        # The same for the fields after the request line, kept while the client repeats
        # its fields (and version) but not its target: a crawler, a browser, a load test
        # walking URLs. The parser still checks every head; only the rewrite is skipped.
        self.memo_fields: dict[Backend, bytes] = {}

    # -- connection lifecycle ----------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        proxy = self.proxy
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        if len(proxy.clients) >= proxy.args.max_connections:
            proxy.rejected.labels(reason="max_connections").inc()
            transport.write(error_response(503, "too many connections"))
            self.linger_close()
            return
        proxy.clients.add(self)
        transport.set_write_buffer_limits(WRITE_HIGH_WATER_BYTES)
        self.deadline = proxy.now() + proxy.args.idle_timeout

    def connection_lost(self, exc) -> None:
        self.closing = True
        self.proxy.clients.discard(self)
        conn = self.conn
        if conn is not None:
            # The client left mid-exchange: the backend connection is mid-message too,
            # so it cannot be reused.
            self.conn = None
            conn.client = None
            conn.abort()
        if self.backend is not None:
            self.proxy.balancer.finished(self.backend)
            self.backend = None

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.proxy.outbox.flush()  # what this round wrote to it goes first
            self.transport.close()

    def write(self, pieces: list[bytes]) -> None:
        if self.closing:
            return
        self.response_started = True
        if self.phase == WAITING:
            self.phase = STREAMING
        self.deadline = self.proxy.now() + self.proxy.args.idle_timeout
        self.proxy.outbox.write(self.transport, pieces[0] if len(pieces) == 1 else b"".join(pieces))

    # Flow control, both directions. Our write buffer towards the client is full: stop
    # reading the backend. The backend's is full (or too much is pipelined): stop reading
    # the client. ``paused_by`` remembers why, so one reason's end does not undo another.
    def pause_writing(self) -> None:
        self.write_paused = True
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.resume_reading()
        elif self.pulling and not self.advancing:
            # A pipelined request was held back while the client was not reading.
            self.advance()

    def pause_reading_for(self, reason: str) -> None:
        if not self.paused_by and not self.closing:
            self.transport.pause_reading()
        self.paused_by.add(reason)

    def resume_reading_for(self, reason: str) -> None:
        if reason in self.paused_by:
            self.paused_by.discard(reason)
            if not self.paused_by and not self.closing:
                self.transport.resume_reading()

    # -- requests ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        self.parser.feed(data)
        if self.phase == STREAMING or (self.phase == WAITING and not self.request_complete):
            self.deadline = self.proxy.now() + self.proxy.args.idle_timeout
        self.advance()

    def eof_received(self):
        if self.lingering:
            self.transport.close()
            return False
        self.parser.feed_eof()
        self.advance()
        # Keep our side open: a half-closed client may still be waiting for its answer.
        return True

    def advance(self) -> None:
        """Pull request events while we may: a new head only once the last answer is done."""
        parser = self.parser
        out: list[bytes] = []
        self.advancing = True
        try:
            self.pull(parser, out)
        finally:
            self.advancing = False
        if self.closing:
            return
        if out or self.head_pending:
            self.flush_body(out)
        if self.request is None and parser.closed:
            self.close()
        elif parser.buffered > MAX_BUFFERED_BYTES:
            self.pause_reading_for("pipeline")
        elif "pipeline" in self.paused_by:
            self.resume_reading_for("pipeline")

    def pull(self, parser: Parser, out: list[bytes]) -> None:
        while self.pulling and not self.closing:
            if self.write_paused and self.request is None:
                # The client is not reading its answers: take no new request from it (so
                # pipelining cannot pile responses up here); resume_writing resumes.
                break
            try:
                event = parser.next_event()
            except ProtocolError as error:
                if not self.head_pending:
                    self.flush_body(out)
                out.clear()
                self.reject(error.status, error.detail)
                return
            if event is NEED_DATA:
                break
            kind = type(event)
            if kind is Data:
                out.append(chunk(event.data) if self.request.framing == "chunked" else event.data)
            elif kind is Request:
                self.start_exchange(event)
            else:  # EndOfMessage
                if self.request.framing == "chunked":
                    trailers = protocol.forwardable_trailers(event.trailers)
                    out.append(serialize_trailers(trailers) if trailers else LAST_CHUNK)
                self.request_complete = True
                self.pulling = False
                if self.phase == WAITING:
                    self.deadline = self.proxy.now() + self.proxy.args.first_byte_timeout

    def flush_body(self, out: list[bytes]) -> None:
        conn = self.conn
        if conn is None or conn.closed:
            return
        if self.head_pending:
            self.head_pending = False
            out.insert(0, self.head)
        if out:
            conn.transport.write(b"".join(out))

    def reject(self, status: int, detail: str) -> None:
        """Bad framing: answer with the codec's status and close, forwarding nothing."""
        proxy = self.proxy
        proxy.rejected.labels(reason=str(status)).inc()
        proxy.log.info("request_rejected", client=self.peer, status=status, detail=detail)
        if self.request is not None and self.response_started:
            # Mid-exchange (a bad chunk in a body already flowing): cut both sides.
            self.transport.abort()
            return
        if self.conn is not None:
            conn, self.conn = self.conn, None
            conn.client = None
            conn.abort()
        self.write([error_response(status, detail)])
        self.linger_close()

    def linger_close(self) -> None:
        """Close after an error without losing the error to a TCP reset.

        Closing a socket that still has unread input makes the kernel send RST, which can
        destroy the response we just wrote before the client reads it. So, as nginx's
        ``lingering_close``, we half-close, discard what still arrives, and close on the
        client's EOF or after ``LINGER_S``.
        """
        self.closing = True
        self.pulling = False
        self.proxy.clients.discard(self)
        transport = self.transport
        self.proxy.outbox.flush()  # the error answer goes before the FIN
        if transport.can_write_eof():
            transport.write_eof()
        self.lingering = True
        if self.paused_by:
            self.paused_by.clear()
            transport.resume_reading()
        self.proxy.loop.call_later(LINGER_S, transport.close)

    def start_exchange(self, request: Request) -> None:
        proxy = self.proxy
        self.pulling = False
        self.request = request
        self.request_complete = False
        self.response_started = False
        self.retried = False
        self.started_at = now = proxy.now()
        self.keep_alive = request.keep_alive and not proxy.draining
        if request.method == b"CONNECT":
            self.local_reply(501, "CONNECT tunnels are not supported")
            return
        # An Upgrade offer (h2c, websocket) is declined by simply not passing it on: the
        # fields are hop-by-hop, and RFC 9110 §7.8 lets a server ignore the offer.
        self.route(now)

    def route(self, now: float, exclude: Backend | None = None, same_again: bool = False) -> bool:
        """Pick a backend and send the request; ``exclude``: a retry's failed backend.

        A retry with nowhere to go returns False (the caller answers for the failure);
        a first attempt with no backend is answered 503 here.
        """
        proxy = self.proxy
        cookie = None
        if proxy.balancer.algorithm == "cookie":
            cookie = protocol.cookie_value(self.request, COOKIE_NAME)
        backend = proxy.balancer.pick(now, self.peer, cookie, exclude)
        if backend is None and same_again and exclude.eligible(now):
            # A retry with nowhere else to go after a reset: the same backend, on a fresh
            # connection (the usual failure is a pooled connection it had just closed).
            # After a failed connect, dialling the same address again would only fail or
            # wait again.
            backend = exclude
        if backend is None:
            if exclude is not None:
                return False
            proxy.rejected.labels(reason="no_backend").inc()
            self.local_reply(503, "no healthy backend")
            return True
        self.backend = backend
        proxy.balancer.started(backend)
        request = self.request
        if request is not self.memo_request:
            previous = self.memo_request
            if (
                previous is None
                # (the parser hands a client repeating its fields the same list)
                or (request.headers is not previous.headers and request.headers != previous.headers)
                or request.version != previous.version
            ):
                # New fields: the rewritten ones remembered so far no longer apply.
                self.memo_fields = {}
            self.memo_request = request
            self.memo_heads = {}
        heads = self.memo_heads
        head = heads.get(backend)
        if head is None:
            fields = self.memo_fields
            rewritten = fields.get(backend)
            if rewritten is None:
                if len(fields) >= MAX_MEMO_BACKENDS:
                    fields.clear()  # bounded: a large pool rewrites rather than hoards
                rewritten = fields[backend] = protocol.backend_request_fields(
                    request, self.peer, proxy.via_name, backend.address.encode()
                )
            if len(heads) >= MAX_MEMO_BACKENDS:
                heads.clear()
            head = heads[backend] = protocol.request_line(request) + rewritten
        self.head = head
        conn = proxy.pool.take(backend) if exclude is None else None
        if conn is not None:
            self.attach(conn, now)
        else:
            self.phase = CONNECTING
            asyncio.ensure_future(self.dial(backend))
        return True

    async def dial(self, backend: Backend) -> None:
        proxy = self.proxy
        host, _, port = backend.address.rpartition(":")
        try:
            _, conn = await asyncio.wait_for(
                proxy.loop.create_connection(
                    lambda: BackendConnection(proxy, backend), host.strip("[]"), int(port)
                ),
                proxy.args.connect_timeout,
            )
        except OSError as error:  # TimeoutError included: ours or the kernel's ETIMEDOUT
            if self.closing or self.backend is not backend:
                return
            timed_out = isinstance(error, TimeoutError)
            proxy.log.warning("backend_connect_failed", backend=backend.address,
                              error=str(error) or "timed out")  # fmt: skip
            # Nothing was sent, so any request may go elsewhere; its body is still unread.
            kind = "connect_timeout" if timed_out else "connect"
            self.backend_failed(None, kind, retryable=True, any_method=True)
            return
        if self.closing or self.backend is not backend:
            conn.close()
            return
        self.attach(conn, proxy.now())

    def attach(self, conn: BackendConnection, now: float) -> None:
        proxy = self.proxy
        self.conn = conn
        conn.client = self
        conn.response = None
        if self.write_paused:
            conn.transport.pause_reading()
        conn.parser.expect_response(self.request.method)
        self.phase = WAITING
        # A retry has read its (bodiless) request already; otherwise the request's body
        # may be all here: none, or a Content-Length body that came with the head.
        body = b"" if self.request_complete else self.parser.whole_body()
        if body is not None:
            self.request_complete = True
            proxy.outbox.write(conn.transport, self.head + body if body else self.head)
            # The whole request is sent: the first-byte clock starts.
            self.deadline = now + proxy.args.first_byte_timeout
            return
        # An upload in progress is only subject to the idle timeout until it is sent.
        self.deadline = now + proxy.args.idle_timeout
        # The head leaves together with the body bytes already here, after the parser has
        # checked them: a request whose first chunk is malformed never reaches a backend.
        self.head_pending = True
        self.pulling = True
        self.advance()

    def response_head(self, response: Response, conn: BackendConnection) -> bytes:
        proxy = self.proxy
        request = self.request
        # The backend's "Connection: close" or close-delimited body concerns the backend
        # connection only (hop-by-hop); the client's connection lives on, unless we are
        # draining (SIGTERM), in which case this answer is its last and says so.
        keep_alive = self.keep_alive and not proxy.draining
        if not self.request_complete:
            # The backend answered before reading the whole body (413, 401...): the rest of
            # the body will not be read, so this connection ends with this response.
            keep_alive = False
        set_cookie = None
        backend_id = self.backend.cookie_id
        if (
            proxy.balancer.algorithm == "cookie"
            and protocol.cookie_value(request, COOKIE_NAME) != backend_id
        ):
            set_cookie = b"%s=%s; Path=/; HttpOnly" % (COOKIE_NAME, backend_id.encode())
        memo = conn.memo
        if (
            memo is not None
            and memo[0] is response
            and memo[1] == request.version
            and memo[2] == keep_alive
            and memo[3] == set_cookie
        ):
            head, mode, keep_alive = memo[4]
        else:
            result = protocol.client_response_head(
                response,
                client_version=request.version,
                keep_alive=keep_alive,
                via_name=proxy.via_name,
                set_cookie=set_cookie,
            )
            conn.memo = (response, request.version, keep_alive, set_cookie, result)
            head, mode, keep_alive = result
        self.keep_alive = keep_alive
        conn.mode = mode
        conn.response = response
        self.status = response.status
        if response.status >= 500:
            proxy.balancer.failed(self.backend, proxy.now())
        else:
            proxy.balancer.succeeded(self.backend)
        return head

    def exchange_finished(self, conn: BackendConnection, last: list[bytes]) -> None:
        """The answer is complete; ``last``: its final pieces (or none), still to write."""
        proxy = self.proxy
        if last and not self.closing:
            # ``write`` without its deadline bookkeeping, which ``next_request`` redoes.
            self.response_started = True
            proxy.outbox.write(self.transport, last[0] if len(last) == 1 else b"".join(last))
        backend = self.backend
        now = proxy.now()
        proxy.record(backend, self.status, now - self.started_at)
        conn.client = None
        self.conn = None
        self.backend = None
        proxy.balancer.finished(backend)
        if self.request_complete and conn.parser.idle and not conn.closed:
            proxy.pool.put(conn, now)
        else:
            conn.close()
        if self.keep_alive:
            self.next_request(now)
        elif self.request_complete:
            self.close()
        else:
            # The backend answered early; the client may still be sending the body.
            self.linger_close()

    def next_request(self, now: float) -> None:
        self.request = None
        self.head = b""
        self.phase = READING
        self.deadline = now + self.proxy.args.idle_timeout
        paused_by = self.paused_by
        if paused_by:  # (the transport reads unless some reason paused it)
            paused_by.discard("backend")
            if not paused_by and not self.closing:
                self.transport.resume_reading()
        self.pulling = True
        if self.proxy.draining and self.parser.idle:
            self.close()
            return
        parser = self.parser
        if not self.advancing and (parser.buffered or parser.at_eof or self.paused_by):
            # Called from a backend callback: pull the next pipelined request now. Inside
            # ``advance`` (a local reply) its loop simply continues, with no recursion.
            # With nothing buffered (no pipelining) the next data_received will do it.
            self.advance()

    def backend_failed(
        self, conn: BackendConnection | None, kind: str, retryable: bool, any_method: bool = False
    ) -> None:
        """The backend connection failed mid-exchange: retry, answer 502, or cut."""
        proxy = self.proxy
        backend = self.backend
        if backend is None or self.closing:
            return
        proxy.errors.labels(backend=backend.address, kind=kind).inc()
        if proxy.balancer.failed(backend, proxy.now()):
            proxy.log.warning("backend_ejected", backend=backend.address, reason=kind)
        self.conn = None
        if conn is not None:
            conn.client = None
        proxy.balancer.finished(backend)
        self.backend = None
        if self.response_started:
            # Part of the answer is out; the only honest signal left is to cut the connection.
            self.transport.abort()
            return
        request = self.request
        safe = any_method or (request.method in protocol.IDEMPOTENT and request.framing == "none")
        if retryable and safe and not self.retried:
            self.retried = True
            if self.route(proxy.now(), exclude=backend, same_again=kind == "reset"):
                proxy.retries.inc()
                return
        # A backend that never answered the connect timed out (504, as nginx answers);
        # one that refused, reset or spoke nonsense is a bad gateway (502).
        status, message = (
            (504, "backend connect timed out")
            if kind == "connect_timeout"
            else (502, f"backend {kind} error")
        )
        proxy.record(backend, status, proxy.now() - self.started_at)
        self.local_reply(status, message)

    def local_reply(self, status: int, message: str) -> None:
        """An answer the proxy makes itself (501, 502, 503, 504)."""
        keep = self.keep_alive and (self.request_complete or self.request.framing == "none")
        if status == 504 or not keep:
            keep = False
        self.keep_alive = keep
        self.write([error_response(status, message, close=not keep)])
        if not keep:
            self.linger_close()
            return
        if self.request_complete or self.request.framing == "none":
            # Nothing left of this request to read: carry on with the next one.
            if not self.request_complete:
                # The parser still owes this bodiless request's EndOfMessage; consume it.
                self.request_complete = True
                self.parser.next_event()
            self.next_request(self.proxy.now())

    def timed_out(self, now: float) -> None:
        proxy = self.proxy
        if self.phase == WAITING and self.conn is not None and self.request_complete:
            backend = self.backend
            proxy.errors.labels(backend=backend.address, kind="timeout").inc()
            proxy.balancer.failed(backend, now)
            proxy.record(backend, 504, now - self.started_at)
            conn, self.conn = self.conn, None
            conn.client = None
            conn.abort()
            proxy.balancer.finished(backend)
            self.backend = None
            self.keep_alive = False
            self.write([error_response(504, "backend timed out")])
            self.close()
        elif self.phase != CONNECTING:
            self.close()
