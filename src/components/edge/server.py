"""``python -m components.edge``: the caching reverse proxy as a component.

The shell around the cache policy (``httpcache.py``), the answer bytes (``protocol.py``)
and the origin pool (``origin.py``). A ``ClientConnection`` parses requests with the
shared HTTP/1.1 codec. A fresh hit is answered inside ``data_received`` without a task
or an await (the path that must be fast: one lookup, one ``transport.write`` per read
burst); everything else runs as one task per request, and further pipelined requests
wait in the parser until it is done, which keeps answers in order (RFC 9112 §9.3.2).

The slow paths, in the words of RFC 9111 and RFC 5861:

- *miss*: a fill (``fill.py``). Concurrent misses for one URL are collapsed: the first
  request fetches from the origin, the others wait on its future (Varnish's "waiting
  list"). Once the response head is in and it may be stored, a task reads the body into
  the fill while every one of them is answered from it *as it arrives* (streamed; HEAD,
  ``Range`` and conditional requests wait for the whole body), and at its end it is
  stored. A body that outgrows ``--max-object-mb`` turns the fill into a shared
  pass-through (paced by its slowest reader, not stored). A response that may not be
  stored at all is streamed to the first client only; the waiters fetch for themselves.
- *pass*: once a URL's response could not be stored, the URL is forwarded as it is (the
  client's own conditionals and ``Range`` included, no waiting in line) for
  ``PASS_TTL_S``; Varnish calls this hit-for-pass. A purge forgets these verdicts.
- *stale*: revalidated with ``If-None-Match`` / ``If-Modified-Since``; a 304 freshens
  the stored response (§4.3.4, ``X-Cache: REVALIDATED``); with
  ``stale-while-revalidate`` the stale copy is served at once and the revalidation runs
  in the background; when the origin is down or answers 5xx, ``stale-if-error`` serves
  the stale copy instead of the error.
- *unsafe methods* pass through and, if the origin says they succeeded, invalidate the
  target URI and the same-host ``Location`` / ``Content-Location`` URIs (§4.4).
- ``POST /admin/purge`` removes by URL, by prefix or by surrogate key.

One timer sweeps idle client connections and idle origin connections (``TICK_S``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import OrderedDict
from urllib.parse import urlsplit

from components.common import Service
from components.common.admin import json_response, read_json
from components.common.cli import format_address, host_port, non_negative_float
from components.common.http1 import (
    LAST_CHUNK,
    NEED_DATA,
    Data,
    EndOfMessage,
    Parser,
    ProtocolError,
    Request,
    chunk,
    error_response,
)

from . import httpcache, protocol
from .fill import BROKEN, DONE, OPEN, Fill
from .httpcache import (
    FRESH,
    STALE_OK,
    STALE_REVALIDATE,
    Entry,
    Store,
    conditional_304,
    decide,
    request_directives,
    select_range,
    stale_if_error,
)
from .origin import OriginError, Origins

TICK_S = 1.0
#: Parsed-but-unanswered client bytes (pipelined requests) before we stop reading.
MAX_BUFFERED_BYTES = 256 * 1024
#: Largest request body forwarded (bodies are read whole before the origin request).
MAX_REQUEST_BODY = 8 * 1024 * 1024
WRITE_HIGH_WATER_BYTES = 256 * 1024
#: How long a URL whose response could not be stored goes straight to the origin.
PASS_TTL_S = 60.0
#: Most URLs remembered as uncacheable (oldest forgotten first).
MAX_PASS_MARKS = 10_000
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})
_HIT, _STALE = b"HIT", b"STALE"
#: Request fields that change what a stored response answers (directives, conditionals,
#: ranges), and their lowercase initials for a cheap first test.
_ANSWER_FIELDS = frozenset({b"cache-control", b"pragma", b"if-none-match", b"if-modified-since",
                            b"range", b"if-range"})  # fmt: skip
_SPECIAL_INITIALS = frozenset(name[0] for name in _ANSWER_FIELDS)
#: Request fields that need a whole response to be answered (not streamed from a fill).
_JUDGED_ON_THE_WHOLE = (b"range", b"if-none-match", b"if-modified-since")
RESULTS = ("hit", "miss", "stale", "revalidated", "collapsed", "pass", "error", "uncached")


def cache_key(request: Request) -> tuple[bytes, bytes]:
    """``(host, origin-form target)``: the primary cache key's parts (RFC 9111 §4.1).

    An absolute-form target (``GET http://host/path``) names its own authority, which
    replaces Host (RFC 9112 §3.2.2), so both forms of one URI share one entry.
    """
    target = request.target
    if target[:1] != b"/" and b"://" in target:
        authority, _, path = target.partition(b"://")[2].partition(b"/")
        return authority.lower(), b"/" + path
    host = request.get(b"host")
    return (host.lower() if host is not None else b""), target


class ClientConnection(asyncio.Protocol):
    """One client connection: hits inline, everything else as a task, answers in order."""

    __slots__ = ("edge", "transport", "parser", "busy", "closing", "last_active",
                 "drain_waiter", "write_paused", "read_paused", "reading_body")  # fmt: skip

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.transport: asyncio.Transport | None = None
        self.parser = Parser()
        self.busy = False
        self.closing = False
        self.last_active = 0.0
        self.drain_waiter: asyncio.Future | None = None
        self.write_paused = False
        self.read_paused = False
        #: A task waits for request body bytes: the idle sweep may close it.
        self.reading_body = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        edge = self.edge
        if len(edge.clients) >= edge.args.max_connections:
            transport.write(error_response(503, "too many connections"))
            transport.close()
            self.closing = True
            return
        edge.clients.add(self)
        transport.set_write_buffer_limits(WRITE_HIGH_WATER_BYTES)
        self.last_active = edge.loop.time()

    def connection_lost(self, exc) -> None:
        self.closing = True
        self.edge.clients.discard(self)
        self._wake()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()
        if not self.busy and not self.closing:
            self.advance()  # requests held back while the client was not reading

    def _wake(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drained(self) -> None:
        """Wait until the client has taken our buffered output (streaming flow control)."""
        while self.write_paused and not self.closing:
            self.drain_waiter = self.edge.loop.create_future()
            await self.drain_waiter
            self.drain_waiter = None

    def write(self, data: bytes) -> None:
        if not self.closing:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        self.last_active = self.edge.loop.time()
        if not self.busy:
            self.advance()
            return
        if self.drain_waiter is not None:
            self._wake()  # a task reading a request body waits for these bytes
        if self.parser.buffered > MAX_BUFFERED_BYTES and not self.read_paused:
            # Pipelined requests pile up behind a slow one: stop reading until it is done.
            self.read_paused = True
            self.transport.pause_reading()

    def eof_received(self):
        self.parser.feed_eof()
        if not self.busy:
            self.advance()
        else:
            self._wake()
        return True

    def advance(self) -> None:
        """Answer every complete request we can without waiting; start a task for the rest."""
        parser = self.parser
        edge = self.edge
        out: list[bytes] = []
        while not self.closing:
            if self.write_paused:
                # The client is not reading its answers: take no new request from it, so
                # hits cannot pile up in our write buffer; resume_writing resumes.
                break
            try:
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                if type(event) is not Request:
                    continue  # the EndOfMessage of a request answered inline
                if event.framing == "none" and event.method in (b"GET", b"HEAD"):
                    answer = edge.hit(event, self.closing_after(event))
                    if answer is not None:
                        out.append(answer)
                        if not event.keep_alive or edge.draining:
                            self.flush(out)
                            self.close()
                            return
                        continue
            except ProtocolError as error:
                self.flush(out)
                self.write(error_response(error.status, error.detail))
                self.close()
                return
            self.flush(out)
            self.busy = True
            task = edge.loop.create_task(self.handle(event))
            edge.tasks.add(task)  # held: the loop keeps only weak references to tasks
            task.add_done_callback(edge.tasks.discard)
            return
        self.flush(out)
        if parser.closed and not self.busy:
            self.close()
        elif (parser.buffered > MAX_BUFFERED_BYTES or self.write_paused) and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
        elif self.read_paused and parser.buffered <= MAX_BUFFERED_BYTES and not self.write_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def flush(self, out: list[bytes]) -> None:
        if out:
            self.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def closing_after(self, request: Request) -> bool:
        return not request.keep_alive or self.edge.draining

    async def read_body(self) -> bytes | None:
        """The whole request body (bounded); None after answering 413 or on a bad body."""
        pieces: list[bytes] = []
        size = 0
        while True:
            try:
                event = self.parser.next_event()
            except ProtocolError as error:
                self.write(error_response(error.status, error.detail))
                self.close()
                return None
            if event is NEED_DATA:
                if self.closing or self.parser.at_eof:
                    self.close()
                    return None
                if self.read_paused:
                    self.read_paused = False
                    self.transport.resume_reading()
                self.drain_waiter = self.edge.loop.create_future()
                await self.drain_waiter
                self.drain_waiter = None
                continue
            if type(event) is Data:
                size += len(event.data)
                if size > MAX_REQUEST_BODY:
                    self.write(error_response(413, "request body too large"))
                    self.close()
                    return None
                pieces.append(event.data)
            elif type(event) is EndOfMessage:
                return b"".join(pieces)

    async def handle(self, request: Request) -> None:
        edge = self.edge
        try:
            if request.method in (b"GET", b"HEAD") and request.framing == "none":
                await edge.lookup_slow(self, request)
            elif request.method == b"CONNECT":
                # A reverse proxy opens no tunnels (RFC 9110 §9.3.6 is for forward proxies).
                self.write(error_response(501, "CONNECT is not supported"))
                self.close()
            else:
                if request.expect_continue:
                    self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.reading_body = True
                body = await self.read_body()
                self.reading_body = False
                if body is None:
                    return
                await edge.forward(self, request, body)
        except Exception as error:  # a bug must cost one connection, never the process
            edge.log.error(
                "request_failed", error=repr(error), target=request.target.decode("latin-1")
            )
            self.close()
            return
        finally:
            self.busy = False
        if self.closing_after(request):
            self.close()
        elif not self.closing:
            self.advance()


class Edge(Service):
    """``python -m components.edge``: an RFC 9111 shared cache in front of origins."""

    component = "edge"
    default_port = 8081
    description = "HTTP/1.1 caching reverse proxy (RFC 9111) with collapsing, stale serving, purge"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("edge cache")
        group.add_argument("--origin", type=host_port, action="append", default=[],
                           metavar="HOST:PORT", help="an origin server (repeatable)")  # fmt: skip
        group.add_argument("--memory-mb", type=non_negative_float, default=256.0,
                           help="bytes of responses kept (LRU beyond)")  # fmt: skip
        group.add_argument("--max-object-mb", type=non_negative_float, default=16.0,
                           help="larger responses are streamed through, not stored")  # fmt: skip
        group.add_argument("--heuristic-max", type=non_negative_float, default=86400.0,
                           help="cap in seconds on heuristic freshness (RFC 9111 §4.2.2)")  # fmt: skip
        group.add_argument("--max-connections", type=int, default=10_000)
        group.add_argument("--connect-timeout", type=non_negative_float, default=3.0)
        group.add_argument("--first-byte-timeout", type=non_negative_float, default=30.0)
        group.add_argument("--idle-timeout", type=non_negative_float, default=60.0)

    @classmethod
    def check_arguments(cls, parser, args) -> None:
        if not args.origin:
            parser.error("at least one --origin HOST:PORT is required")
        if args.max_connections < 1:
            parser.error("--max-connections must be >= 1")

    async def start(self) -> dict[str, str]:
        self.setup(asyncio.get_running_loop())
        args = self.args
        self.server = await self.loop.create_server(
            lambda: ClientConnection(self), args.host, args.port, reuse_address=True, backlog=1024
        )
        self.sweeper = self.loop.create_task(self.sweep())
        return {"main": format_address(self.server.sockets[0].getsockname())}

    def setup(self, loop: asyncio.AbstractEventLoop) -> None:
        """Everything but the listener: store, origins, metrics, admin (benchmarks use it)."""
        args = self.args
        self.loop = loop
        self.via = args.name.encode()
        self.draining = False
        self.clients: set[ClientConnection] = set()
        self.tasks: set[asyncio.Task] = set()
        self.store = Store(int(args.memory_mb * 1024 * 1024), int(args.max_object_mb * 1024 * 1024))
        self.max_object = self.store.max_object_bytes
        self.fills: dict[tuple[bytes, bytes], asyncio.Future] = {}
        #: URLs whose last response could not be stored -> until when to pass them.
        self.pass_marks: OrderedDict[tuple[bytes, bytes], float] = OrderedDict()
        m = self.metrics
        requests = m.counter("scalelab_edge_requests_total", "Requests by cache result",
                             ["result"])  # fmt: skip
        self.result = {name: requests.labels(name) for name in RESULTS}
        self.hit_counter = self.result["hit"]
        origin_requests = m.counter("scalelab_edge_origin_requests_total",
                                    "Requests sent to origins", ["origin", "outcome"])  # fmt: skip
        # One labelled child per (origin, outcome), looked up once: ``labels()`` on every
        # origin request was a measurable share of the miss path's CPU.
        children: dict[tuple[str, str], object] = {}

        def on_request(origin: str, outcome: str) -> None:
            child = children.get((origin, outcome))
            if child is None:
                child = children[(origin, outcome)] = origin_requests.labels(origin, outcome)
            child.inc()

        self.origins = Origins(args.origin, args.connect_timeout, args.first_byte_timeout,
                               on_request=on_request)  # fmt: skip
        self.collapsed = m.counter("scalelab_edge_collapsed_total",
                                   "Requests that waited for another request's fill")  # fmt: skip
        self.purged = m.counter("scalelab_edge_purged_objects_total",
                                "Objects removed by purge or invalidation", ["reason"])  # fmt: skip
        m.gauge("scalelab_edge_stored_bytes", "Bytes charged to stored responses").set_function(
            lambda: self.store.bytes
        )
        m.gauge("scalelab_edge_objects", "Stored responses").set_function(lambda: len(self.store))
        m.counter("scalelab_edge_evictions_total", "Responses evicted by the LRU").set_function(
            lambda: self.store.evictions
        )
        m.gauge("scalelab_edge_client_connections", "Open client connections").set_function(
            lambda: len(self.clients)
        )
        self.runtime.admin.register("purge", self.admin_purge)

    # -- the fast path ---------------------------------------------------------------------

    def hit(self, request: Request, close: bool) -> bytes | None:
        """The whole answer when a stored response may be reused as it is, else None."""
        headers = request.headers
        # One pass over the fields: the Host, and whether any field that changes the
        # answer is present (most requests carry none, and skip all of that logic).
        host = b""
        special = False
        for name, value in headers:
            first = name[0] | 0x20  # lowercase ASCII letter
            if first == 0x68:  # h
                if len(name) == 4 and name.lower() == b"host":
                    host = value.lower()
            elif first in _SPECIAL_INITIALS and name.lower() in _ANSWER_FIELDS:
                special = True
        target = request.target
        if target[:1] != b"/":
            return None  # absolute-form: the slow path normalises the key
        entry = self.store.lookup(host, target, headers)
        if entry is None:
            return None
        qcc = request_directives(headers) if special else {}
        now = time.time()
        verdict = decide(entry, qcc, now)
        if verdict != FRESH and verdict != STALE_OK:
            return None
        if verdict == FRESH:
            self.hit_counter.inc()
            result = _HIT
        else:
            self.result["stale"].inc()
            result = _STALE
        if not special:
            return protocol.render(
                entry, entry.current_age(now), result, self.via,
                head_only=request.method == b"HEAD", close=close,
                keep_alive=request.version == b"1.0",
            )  # fmt: skip
        return self.answer(entry, request, now, result, close)

    def answer(self, entry: Entry, request: Request, now: float, x_cache: bytes,
               close: bool) -> bytes:  # fmt: skip
        """Render ``entry`` for ``request``: conditional (304), Range (206/416), HEAD."""
        headers = request.headers
        not_modified = False
        byte_range = None
        if entry.status == 200:
            not_modified = conditional_304(entry, headers)
            if not not_modified:
                range_value = request.get(b"range")
                if range_value is not None:
                    byte_range = select_range(range_value, request.get(b"if-range"), entry)
        age = entry.current_age(now)
        if x_cache is not _HIT and x_cache is not _STALE and age < 1:
            # §5.1: Age says "not generated or validated by the origin for this request";
            # a response just fetched or validated carries none (unless it had aged).
            age = None
        return protocol.render(
            entry, age, x_cache, self.via,
            head_only=request.method == b"HEAD", not_modified=not_modified,
            byte_range=byte_range, close=close, keep_alive=request.version == b"1.0",
        )  # fmt: skip

    # -- the slow paths --------------------------------------------------------------------

    async def lookup_slow(self, client: ClientConnection, request: Request) -> None:
        host, target = cache_key(request)
        headers = request.headers
        qcc = request_directives(headers)
        close = client.closing_after(request)
        entry = self.store.lookup(host, target, headers)
        now = time.time()
        if entry is not None:
            verdict = decide(entry, qcc, now)
            if verdict in (FRESH, STALE_OK):
                kind = "hit" if verdict == FRESH else "stale"
                self.result[kind].inc()
                client.write(
                    self.answer(entry, request, now, _HIT if kind == "hit" else _STALE, close)
                )
                return
            if verdict == STALE_REVALIDATE:
                self.result["stale"].inc()
                client.write(self.answer(entry, request, now, _STALE, close))
                self.background_revalidate(host, target, headers, entry)
                return
        if b"only-if-cached" in qcc:
            # RFC 9111 §5.2.1.7: no stored response may be used, so 504.
            self.result["uncached"].inc()
            client.write(error_response(504, "not in cache (only-if-cached)", close=close))
            return
        key = (host, target)
        until = self.pass_marks.get(key)
        if until is not None:
            if until > now:
                # Known uncacheable (Varnish's hit-for-pass): forward the request as it
                # is, with the client's conditionals and Range, and no waiting in line.
                await self.forward(client, request, b"")
                return
            del self.pass_marks[key]
        fill = self.fills.get(key)
        if fill is not None:
            self.collapsed.inc()
            filled = await asyncio.shield(fill)
            close = client.closing_after(request)
            if type(filled) is tuple:
                # A streamed fill: read it from its first byte if the request selects the
                # same variant (§4.1), else fetch on our own.
                head, body = filled
                if head.secondary == httpcache.secondary_key(head.vary, headers):
                    self.result["collapsed"].inc()
                    if await self.answer_from_fill(client, request, head, body, _HIT, close):
                        return
                await self.fetch(client, request, host, target, qcc, None, None)
                return
            entry = self.store.lookup(host, target, headers)
            now = time.time()
            # The response the fill just received answers every request that waited for
            # it, even one that is stale on arrival (max-age=0): it was obtained after
            # they arrived. Another variant is judged as usual.
            if entry is not None and (
                entry is filled or decide(entry, qcc, now) in (FRESH, STALE_OK)
            ):
                self.result["collapsed"].inc()
                client.write(self.answer(entry, request, now, _HIT, close))
                return
            # Not storable, another variant, or already stale: fetch on our own.
            await self.fetch(client, request, host, target, qcc, entry, None)
            return
        fill = self.fills[key] = self.loop.create_future()
        try:
            await self.fetch(client, request, host, target, qcc, entry, fill)
        finally:
            # A streamed fill outlives its first client (who may have gone): its
            # ``receive`` task withdraws it when it ends, so later requests still join.
            streamed = fill.done() and type(fill.result()) is tuple
            if not streamed and self.fills.get(key) is fill:
                del self.fills[key]
            if not fill.done():
                fill.set_result(None)

    async def fetch(self, client, request: Request, host: bytes, target: bytes, qcc: dict,
                    stale: Entry | None, fill: asyncio.Future | None) -> None:  # fmt: skip
        """A miss or a revalidation for ``client``, storing what may be stored."""
        close = client.closing_after(request)
        validators = httpcache.validators(stale) if stale is not None else []
        head = protocol.upstream_head(b"GET", target, request.headers, self.via, validators)
        request_time = time.time()
        try:
            conn, response = await self.origins.request(b"GET", head)
        except OriginError as error:
            now = time.time()
            close = client.closing_after(request)
            if stale is not None and stale_if_error(stale, qcc, now):
                self.result["stale"].inc()
                client.write(self.answer(stale, request, now, _STALE, close))
                return
            self.result["error"].inc()
            self.log.warning("origin_failed", target=target.decode("latin-1"), error=str(error))
            status = 504 if error.timeout else 502
            client.write(error_response(status, "origin unavailable", close=close))
            return
        response_time = time.time()
        status = response.status
        close = client.closing_after(request)  # a drain may have begun while we waited
        if stale is not None and status == 304:
            await self.finish_exchange(conn)
            old_size = stale.size
            stale.freshen(response.headers, request_time, response_time, self.args.heuristic_max)
            self.store.resize(stale, old_size)
            if fill is not None and not fill.done():
                fill.set_result(stale)
            self.result["revalidated"].inc()
            client.write(self.answer(stale, request, response_time, b"REVALIDATED", close))
            return
        if stale is not None and status >= 500 and stale_if_error(stale, qcc, response_time):
            conn.close()
            self.result["stale"].inc()
            client.write(self.answer(stale, request, response_time, _STALE, close))
            return
        ok, _ = httpcache.storable(b"GET", request.headers, status, response.headers, qcc)
        if not ok:
            if stale is not None:
                self.store.remove_entry(stale)
            if fill is not None and not fill.done():
                fill.set_result(None)
            self.mark_pass(host, target, status, fill)
            await self.stream(client, request, response, conn, [], close, "pass")
            return
        # Storable: a fill, streamed to this client (and any collapsed behind it) while it
        # is received and stored. The fields are stored now; the body joins them at the end.
        head = Entry.from_response(
            host, target, status, response.reason, response.headers, b"",
            request_time, response_time, request.headers, self.args.heuristic_max,
        )  # fmt: skip
        storing = response.framing != "length" or response.content_length <= self.max_object
        body = Fill(self.loop, storing)
        body.length = response.content_length if response.framing == "length" else None
        if not storing:
            self.stop_offering(host, target, fill, stale, status)
        if fill is not None and not fill.done():
            fill.set_result((head, body))
        task = self.loop.create_task(self.receive(conn, host, target, fill, head, body, stale))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        self.result["miss"].inc()
        await self.answer_from_fill(client, request, head, body, b"MISS", close)

    async def receive(self, conn, host: bytes, target: bytes, fill, head: Entry, body: Fill,
                      stale: Entry | None) -> None:  # fmt: skip
        """Read a fill's body from the origin into ``body``; store it if it stays small."""
        try:
            while True:
                event = await self.next_body_event(conn)
                if event is None:
                    self.result["error"].inc()
                    body.fail()
                    return
                if type(event) is EndOfMessage:
                    break
                body.append(event.data)
                if body.storing and body.size > self.max_object:
                    body.stop_storing()
                    self.stop_offering(host, target, fill, stale, head.status)
                if not body.storing and not await body.space():
                    conn.close()  # every reader left a pass-through: stop reading it
                    body.fail()
                    return
            conn.finished()
            if body.storing:
                head.body = body.body()
                head.size += len(head.body)
                if not self.store.put(head) and stale is not None:
                    self.store.remove_entry(stale)
            body.finish()
        finally:
            if fill is not None and self.fills.get((host, target)) is fill:
                del self.fills[(host, target)]
            if body.state == OPEN:  # cancelled (stop)
                conn.close()
                body.fail()

    def stop_offering(self, host: bytes, target: bytes, fill, stale: Entry | None,
                      status: int) -> None:  # fmt: skip
        """A fill that will not be stored: later requests pass instead of joining it."""
        if fill is not None and self.fills.get((host, target)) is fill:
            del self.fills[(host, target)]
        if stale is not None:
            self.store.remove_entry(stale)
        self.mark_pass(host, target, status, fill)

    async def answer_from_fill(self, client, request: Request, head: Entry, body: Fill,
                               x_cache: bytes, close: bool) -> bool:  # fmt: skip
        """Answer ``request`` from a fill; False when it could not join (fetch instead).

        A plain GET is streamed as the body arrives. HEAD, ``Range`` and conditional
        requests need the whole response to be judged, so they wait for it and are
        answered from it; if it turns into a pass-through they get it streamed as a 200
        (a server may ignore ``Range``, RFC 9110 §14.2).
        """
        reader = body.join()
        if reader is None:
            return False
        try:
            if request.method != b"GET" or any(
                request.get(name) is not None for name in _JUDGED_ON_THE_WHOLE
            ):
                await asyncio.shield(body.settled)
                close = client.closing_after(request)
                if body.state == BROKEN:
                    client.write(error_response(502, "origin response broken", close=close))
                    return True
                if body.storing:
                    client.write(self.answer(head, request, time.time(), x_cache, close))
                    return True
            await self.relay(client, request, head, body, reader, x_cache, close)
            return True
        finally:
            body.leave(reader)

    async def relay(self, client, request: Request, head: Entry, body: Fill, reader,
                    x_cache: bytes, close: bool) -> None:  # fmt: skip
        """Write a fill's response to ``client``: its head at once, its body as it comes."""
        status = head.status
        if status in (204, 304) or status < 200:
            framing, chunked, has_body = b"", False, False
        elif body.length is not None:
            framing, chunked, has_body = b"Content-Length: %d\r\n" % body.length, False, True
        elif request.version == b"1.1":
            framing, chunked, has_body = b"Transfer-Encoding: chunked\r\n", True, True
        else:  # an HTTP/1.0 client: the end of the connection ends the body
            framing, chunked, has_body, close = b"", False, True, True
        age = head.current_age(time.time())
        if x_cache is not _HIT and age < 1:
            age = None  # §5.1, as in ``answer``
        out = [protocol.stream_head(head, age, x_cache, self.via, framing, close,
                                    keep_alive=request.version == b"1.0")]  # fmt: skip
        if request.method == b"HEAD" or not has_body:
            client.write(out[0])
            if close:
                client.close()
            return
        started = False
        while True:
            pieces = body.take(reader)
            if chunked:
                out.extend([chunk(piece) for piece in pieces])
            else:
                out.extend(pieces)
            state = body.state
            if state == DONE:
                if chunked:
                    out.append(LAST_CHUNK)
                client.write(b"".join(out))
                if close:
                    client.close()
                return
            if state == BROKEN:
                if started:
                    client.write(b"".join(out))
                else:  # nothing sent yet: the client can still be told properly
                    client.write(error_response(502, "origin response broken", close=True))
                client.close()  # the answer is cut short: the client must see it
                return
            # The head waits for the first body bytes: for a small body they are already
            # in the origin parser, so head and body leave in one write.
            if pieces:
                client.write(b"".join(out))
                out = []
                started = True
                await client.drained()
                if client.closing:
                    return
            await body.more(reader)

    def mark_pass(self, host: bytes, target: bytes, status: int, fill) -> None:
        """Remember for ``PASS_TTL_S`` that this URL's response was not storable.

        Only a fill's own verdict counts (not a waiter's private fetch), and not a 5xx,
        so that an origin's bad minute does not keep a URL out of the cache after it.
        """
        if fill is None or status >= 500:
            return
        marks = self.pass_marks
        marks[(host, target)] = time.time() + PASS_TTL_S
        marks.move_to_end((host, target))
        while len(marks) > MAX_PASS_MARKS:
            marks.popitem(last=False)

    async def next_body_event(self, conn):
        try:
            return await conn.next_event(self.args.first_byte_timeout)
        except (ProtocolError, OSError, TimeoutError):
            conn.close()
            return None

    async def finish_exchange(self, conn) -> None:
        """Read a bodiless response's end and return the connection to the pool."""
        event = await self.next_body_event(conn)
        if event is not None:
            conn.finished()

    async def stream(self, client, request: Request, response, conn, pieces: list[bytes],
                     close: bool, result: str) -> None:  # fmt: skip
        """Pass a response through to the client without storing it."""
        self.result[result].inc()
        head_only = request.method == b"HEAD"
        if response.framing == "length":
            framing = b"Content-Length: %d\r\n" % response.content_length
            chunked = False
        elif response.framing == "none":
            framing = (
                b""
                if response.status in (204, 304) or response.status < 200
                else (
                    b"Content-Length: %d\r\n" % response.content_length
                    if head_only
                    else b"Content-Length: 0\r\n"
                )
            )
            chunked = False
        elif request.version == b"1.1":
            framing, chunked = b"Transfer-Encoding: chunked\r\n", True
        else:
            framing, chunked, close = b"", False, True
        out = [protocol.pass_head(response.status, response.reason, response.headers, self.via,
                                  b"MISS", framing, close, request.version == b"1.0")]  # fmt: skip
        if head_only:
            # The origin was asked for a GET (so it could be stored): drop its body.
            client.write(out[0])
            conn.close()
            return
        out.extend([chunk(piece) for piece in pieces] if chunked else pieces)
        if response.framing == "none":
            client.write(b"".join(out))
            await self.finish_exchange(conn)
            return
        # Whatever body the parser already holds goes out with the head in one write;
        # we wait (and write what we have) only when it runs dry.
        parser = conn.parser
        while True:
            try:
                event = parser.next_event()
            except ProtocolError:
                event = None
            if event is NEED_DATA:
                if out:
                    client.write(b"".join(out))
                    out = []
                await client.drained()
                event = await self.next_body_event(conn)
            if event is None or client.closing:
                if out:
                    client.write(b"".join(out))
                conn.close()
                client.close()  # the answer is cut short: the client must see it
                return
            if type(event) is EndOfMessage:
                if chunked:
                    out.append(LAST_CHUNK)
                client.write(b"".join(out))
                conn.finished()
                if close:
                    client.close()
                return
            out.append(chunk(event.data) if chunked else event.data)

    def background_revalidate(self, host: bytes, target: bytes, headers, entry: Entry) -> None:
        """RFC 5861 §3: refresh a stale response while it is being served."""
        key = (host, target)
        if key in self.fills:
            return
        fill = self.fills[key] = self.loop.create_future()
        task = self.loop.create_task(self._revalidate(key, headers, entry, fill))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _revalidate(self, key, headers, entry: Entry, fill: asyncio.Future) -> None:
        host, target = key
        try:
            head = protocol.upstream_head(
                b"GET", target, headers, self.via, httpcache.validators(entry)
            )
            request_time = time.time()
            try:
                conn, response = await self.origins.request(b"GET", head)
            except OriginError:
                return
            response_time = time.time()
            if response.status == 304:
                await self.finish_exchange(conn)
                old_size = entry.size
                entry.freshen(response.headers, request_time, response_time,
                              self.args.heuristic_max)  # fmt: skip
                self.store.resize(entry, old_size)
                fill.set_result(entry)
                return
            ok, _ = httpcache.storable(b"GET", headers, response.status, response.headers)
            if (
                response.status >= 500
                or not ok
                or response.framing == "none"
                and response.status != 204
            ):
                conn.close()
                if response.status < 500:
                    self.store.remove_entry(entry)
                return
            pieces, size = [], 0
            while True:
                event = await self.next_body_event(conn)
                if event is None:
                    return
                if type(event) is EndOfMessage:
                    break
                pieces.append(event.data)
                size += len(event.data)
                if size > self.max_object:
                    conn.close()
                    self.store.remove_entry(entry)
                    return
            conn.finished()
            fresh = Entry.from_response(
                host, target, response.status, response.reason, response.headers,
                b"".join(pieces), request_time, response_time, headers, self.args.heuristic_max,
            )  # fmt: skip
            if self.store.put(fresh):
                fill.set_result(fresh)
        finally:
            if self.fills.get(key) is fill:
                del self.fills[key]
            if not fill.done():
                fill.set_result(None)

    async def forward(self, client: ClientConnection, request: Request, body: bytes) -> None:
        """Methods the cache does not answer: pass through; unsafe ones invalidate (§4.4)."""
        close = client.closing_after(request)
        method = request.method
        head = protocol.upstream_head(
            method, request.target, request.headers, self.via,
            body_length=len(body) if body or request.framing != "none" else None,
            keep_conditionals=True,
        )  # fmt: skip
        try:
            conn, response = await self.origins.request(method, head, body)
        except OriginError as error:
            self.result["error"].inc()
            client.write(error_response(504 if error.timeout else 502, "origin unavailable",
                                        close=close))  # fmt: skip
            return
        if method not in SAFE_METHODS and response.status < 400:
            self.invalidate(request, response)
        close = client.closing_after(request)
        await self.stream(client, request, response, conn, [], close, "pass")

    def invalidate(self, request: Request, response) -> None:
        host, target = cache_key(request)
        removed = self.store.remove_url(host, target)
        for name in (b"location", b"content-location"):
            value = response.get(name)
            if value is None:
                continue
            # §4.4: only URIs with the same origin as the target may be invalidated.
            parts = urlsplit(value.decode("latin-1"))
            if parts.netloc and parts.netloc.lower().encode() != host:
                continue
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            if not value.startswith(b"/") and not parts.netloc:
                continue  # a relative reference other than absolute-path: not resolved
            removed += self.store.remove_url(host, path.encode("latin-1"))
        if removed:
            self.purged.labels("invalidation").inc(removed)

    # -- admin ---------------------------------------------------------------------------

    async def admin_purge(self, request):
        """``POST /admin/purge`` with ``{"url": "/a"}``, ``{"prefix": "/static/"}`` or
        ``{"key": "tag"}``; ``"host"`` narrows a url or prefix to one Host."""
        body = await read_json(request)
        if not isinstance(body, dict):
            return json_response({"error": 'expected {"url"|"prefix"|"key": "..."}'}, 400)
        host = body.get("host")
        host_b = host.lower().encode() if isinstance(host, str) else None
        store = self.store
        if isinstance(body.get("url"), str):
            url = body["url"]
            parts = urlsplit(url)
            if parts.netloc:
                host_b = parts.netloc.lower().encode()
                url = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            removed, how = store.remove_url(host_b, url.encode()), "url"
        elif isinstance(body.get("prefix"), str):
            removed, how = store.remove_prefix(host_b, body["prefix"].encode()), "prefix"
        elif isinstance(body.get("key"), str):
            removed, how = store.remove_tag(body["key"].encode()), "key"
        else:
            return json_response({"error": 'expected {"url"|"prefix"|"key": "..."}'}, 400)
        self.purged.labels(how).inc(removed)
        self.pass_marks.clear()  # the origin may have changed its mind: ask it again
        self.log.info("purged", by=how, removed=removed)
        return {"purged": removed, "by": how}

    # -- lifecycle -------------------------------------------------------------------------

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = self.loop.time()
            limit = now - self.args.idle_timeout
            for client in [c for c in self.clients
                           if (not c.busy or c.reading_body) and c.last_active < limit]:  # fmt: skip
                client.close()
            self.origins.sweep(limit)

    async def drain(self) -> None:
        self.draining = True
        self.server.close()
        for client in list(self.clients):
            if not client.busy and client.parser.idle:
                client.close()
        while any(c.busy for c in self.clients):
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if hasattr(self, "sweeper"):
            self.sweeper.cancel()
            self.server.close()
            for task in list(self.tasks):
                task.cancel()
            for client in list(self.clients):
                client.close()
            self.origins.close()
