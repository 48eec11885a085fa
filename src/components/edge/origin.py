"""The edge's client side: keep-alive connections to the origin servers, with failover.

A miss, a revalidation or a pass becomes one exchange on an ``OriginConnection``: the
request head (and body, if any) goes out, the shared HTTP/1.1 parser reads the response,
and the caller pulls events one at a time with ``next_event`` (so a large body is never
held whole here: the socket is paused while the parser holds more than
``READ_HIGH_WATER_BYTES`` and resumed as the caller consumes). A connection whose
exchange ended cleanly returns to its origin's idle list (RFC 9112 §9.3 persistence),
most recently used first, bounded; anything else is closed.

``Origins.request`` picks origins round robin and fails over: a connect failure or
timeout moves on to the next origin; a reused keep-alive connection that the origin had
already closed (the classic race, RFC 9112 §9.3.1) is retried once on a fresh one,
which is safe because the edge only retries requests without a body. When every origin
fails, ``OriginError`` says why, and the caller decides between ``stale-if-error`` and a
502/504.

This mirrors ``components.lb``'s pool in a simpler, awaitable form: the load balancer
splices a client to a backend byte for byte, while the edge consumes responses itself
(to store them), which reads best as a coroutine.
"""

from __future__ import annotations

import asyncio
import itertools

from components.common.http1 import NEED_DATA, Parser, ProtocolError, Response

#: Idle keep-alive connections kept per origin.
MAX_IDLE_PER_ORIGIN = 64
#: Parser bytes held before the origin socket is paused.
READ_HIGH_WATER_BYTES = 256 * 1024


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class OriginError(Exception):
    """No origin answered; ``timeout`` tells 504 from 502."""

    def __init__(self, detail: str, timeout: bool = False) -> None:
        super().__init__(detail)
        self.timeout = timeout


class OriginConnection(asyncio.Protocol):
    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = Parser(response=True)
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.paused = False
        self.received_any = False
        self.idle_since = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        self.parser.feed(data)
        if self.parser.buffered > READ_HIGH_WATER_BYTES and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self):
        self.parser.feed_eof()
        self._wake()
        return False

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.parser.feed_eof()
        self.origin.discard(self)
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def send(self, method: bytes, data: bytes) -> None:
        self.received_any = False
        self.parser.expect_response(method)
        self.transport.write(data)

    async def next_event(self, timeout: float):
        """The next parser event; raises ProtocolError, or TimeoutError after ``timeout``."""
        parser = self.parser
        while True:
            event = parser.next_event()
            if event is not NEED_DATA:
                if self.paused and parser.buffered < READ_HIGH_WATER_BYTES // 2:
                    self.paused = False
                    self.transport.resume_reading()
                return event
            if self.paused:
                self.paused = False
                self.transport.resume_reading()
            if parser.closed or (self.closed and parser.at_eof and not parser.in_message):
                raise ConnectionResetError("origin closed the connection")
            # One timer handle instead of asyncio.wait_for, which costs several callbacks
            # and (before Python 3.12) a task per call on this per-request path.
            loop = asyncio.get_running_loop()
            waiter = self.waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self.waiter = None

    def finished(self) -> None:
        """The exchange is over: keep the connection if it may carry another."""
        if self.closed or not self.parser.idle or self.parser.closed:
            self.close()
        else:
            self.origin.put(self)


class Origin:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.idle: list[OriginConnection] = []

    def take(self) -> OriginConnection | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        return None

    def put(self, conn: OriginConnection) -> None:
        if len(self.idle) >= MAX_IDLE_PER_ORIGIN:
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self.idle.append(conn)

    def discard(self, conn: OriginConnection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    def sweep(self, older_than: float) -> None:
        for conn in [c for c in self.idle if c.idle_since < older_than]:
            self.idle.remove(conn)
            conn.close()

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class Origins:
    """The origin servers, tried round robin with failover."""

    def __init__(self, addresses: list[tuple[str, int]], connect_timeout: float,
                 first_byte_timeout: float, on_request=None) -> None:  # fmt: skip
        self.origins = [Origin(host, port) for host, port in addresses]
        self._next = itertools.cycle(range(len(self.origins)))
        self.connect_timeout = connect_timeout
        self.first_byte_timeout = first_byte_timeout
        self.on_request = on_request or (lambda origin, outcome: None)

    async def _connect(self, origin: Origin) -> OriginConnection:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: OriginConnection(origin), origin.host, origin.port),
            self.connect_timeout,
        )
        return conn

    async def request(self, method: bytes, head: bytes, body: bytes = b""):
        """Send one request; returns ``(connection, Response)`` once the head arrived."""
        start = next(self._next)
        count = len(self.origins)
        timed_out = False
        errors = []
        for i in range(count):
            origin = self.origins[(start + i) % count]
            fresh_tries = 1 if body else 2  # a reused connection may have gone stale
            conn = origin.take()
            while True:
                reused = conn is not None
                try:
                    if conn is None:
                        conn = await self._connect(origin)
                    conn.send(method, head + body)
                    response = await conn.next_event(self.first_byte_timeout)
                    while isinstance(response, Response) and response.status < 200:
                        response = await conn.next_event(self.first_byte_timeout)
                    self.on_request(origin.address, "ok")
                    return conn, response
                except TimeoutError:
                    timed_out = True
                    if conn is not None:
                        conn.close()
                    self.on_request(origin.address, "timeout")
                    errors.append(f"{origin.address}: timeout")
                    break
                except ProtocolError as error:
                    conn.close()
                    self.on_request(origin.address, "bad_response")
                    errors.append(f"{origin.address}: {error.detail}")
                    break
                except (OSError, ConnectionError) as error:
                    if conn is not None:
                        conn.close()
                    if reused and not conn.received_any and fresh_tries > 1:
                        fresh_tries -= 1
                        conn = None
                        continue
                    self.on_request(origin.address, "error")
                    errors.append(f"{origin.address}: {error}")
                    break
        raise OriginError("; ".join(errors) or "no origin", timeout=timed_out and len(errors) == 1)

    def sweep(self, older_than: float) -> None:
        for origin in self.origins:
            origin.sweep(older_than)

    def close(self) -> None:
        for origin in self.origins:
            origin.close()
