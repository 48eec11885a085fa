"""An emulated network link: a TCP relay that delivers every byte ``--delay-ms`` late.

On one machine every hop is loopback, about 50 microseconds, so a topology cannot show
what distance costs: the chapter's multi-datacenter stage, a replica across an ocean, a
user far from the origin. A link stands between two tiers (``--listen`` where the first
connects, ``--target HOST:PORT`` the second) and makes that hop behave like a long one:
each chunk read from either side is written to the other ``--delay-ms`` later. That is a
one-way delay, like ``tc qdisc add ... netem delay``: a request and its answer cross it
twice, so the round trip grows by twice the delay, and a TCP handshake to the target is
not delayed (it is the relay's own, on loopback) but every byte after it is.

The delay can change at runtime, which is how a scenario's ``delay`` action degrades a
link under load: ``POST /admin/delay {"delay_ms": 80}`` on the admin port. Order is never
broken by a change: a chunk is due no earlier than the one before it on the same
direction, so shortening the delay lets the queue drain at the new pace instead of
overtaking it.

What is not modelled: bandwidth, loss and jitter (a TCP connection on loopback never
loses a byte), and the delay of connection setup. Bounds: at most ``--max-connections``
relayed connections (beyond, a new one is closed at once), and at most
``MAX_PENDING_BYTES`` in flight per direction, past which the relay stops reading that
side until the queue drains (the link's bandwidth-delay product; TCP's own flow control
then holds the sender, as a real long link does).
"""

from __future__ import annotations

import argparse
import asyncio
import math
from collections import deque

from aiohttp import web

from components.common import Service, main
from components.common.admin import read_json
from components.common.cli import format_address, host_port

#: Bytes scheduled but not yet written, per direction, before reading that side pauses.
MAX_PENDING_BYTES = 1 << 20
#: Longest delay accepted: a minute is already far longer than any real link.
MAX_DELAY_MS = 60_000.0


def delay_ms(text: str) -> float:
    """A delay in milliseconds, 0 to ``MAX_DELAY_MS``, for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= MAX_DELAY_MS:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be in [0, {MAX_DELAY_MS:g}] ms: {text}")
    return value


#: Markers queued after the data they follow: the source half-closed, or closed.
EOF = "eof"
CLOSE = "close"


class _Direction:
    """Bytes read from one side, queued with their due time, written to the other."""

    def __init__(self, link: LinkService, source: _Side) -> None:
        self.link = link
        self.source = source
        self.sink: _Side | None = None
        self.queue: deque[tuple[float, bytes | str]] = deque()
        self.pending = 0
        self.last_due = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def push(self, item: bytes | str) -> None:
        loop = self.link.loop
        due = max(self.last_due, loop.time() + self.link.delay_s)  # never overtakes
        self.last_due = due
        self.queue.append((due, item))
        if isinstance(item, bytes):
            self.pending += len(item)
            if self.pending > MAX_PENDING_BYTES:
                self.source.pause("queue")
        if self.timer is None:
            self.timer = loop.call_at(due, self._deliver)

    def start(self, sink: _Side) -> None:
        """The other side is connected: deliver what was read before it was."""
        self.sink = sink
        if self.queue and self.timer is None:
            self.timer = self.link.loop.call_at(self.queue[0][0], self._deliver)

    def _deliver(self) -> None:
        self.timer = None
        if self.sink is None:  # not connected yet: ``start`` delivers
            return
        now = self.link.loop.time()
        burst: list[bytes] = []
        while self.queue and self.queue[0][0] <= now:
            _, item = self.queue.popleft()
            if isinstance(item, bytes):
                burst.append(item)
                self.pending -= len(item)
                continue
            self._write(burst)
            burst = []
            self._end(item)
        self._write(burst)
        if self.pending <= MAX_PENDING_BYTES // 2:
            self.source.resume("queue")
        if self.queue:
            self.timer = self.link.loop.call_at(self.queue[0][0], self._deliver)

    def _sink_transport(self) -> asyncio.Transport | None:
        sink = self.sink
        if sink is None or sink.transport is None or sink.transport.is_closing():
            return None
        return sink.transport

    def _write(self, burst: list[bytes]) -> None:
        transport = self._sink_transport()
        if burst and transport is not None:
            data = b"".join(burst)  # one write per due burst
            transport.write(data)
            self.link.m_bytes.inc(len(data))

    def _end(self, marker: str) -> None:
        transport = self._sink_transport()
        if transport is None:
            return
        sink = self.sink
        assert sink is not None
        if marker == EOF and transport.can_write_eof() and not sink.read_eof:
            transport.write_eof()
            sink.wrote_eof = True
        else:  # both directions are done (or cannot half-close): close for good
            transport.close()  # flushes what is buffered first

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        self.pending = 0


class _Side(asyncio.Protocol):
    """One TCP connection of a relayed pair (the accepted one, or the one to the target)."""

    def __init__(self, link: LinkService) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.outgoing = _Direction(link, self)  # what this side sends, towards the peer
        self.peer: _Side | None = None
        self.paused: set[str] = set()
        self.closed = False
        self.read_eof = False  # this side sent us its FIN
        self.wrote_eof = False  # we sent this side ours

    def pair(self, peer: _Side) -> None:
        self.peer = peer
        self.outgoing.start(peer)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.outgoing.push(data)

    def eof_received(self) -> bool:
        self.read_eof = True
        self.outgoing.push(EOF)  # the peer's write side closes when this EOF is due
        # Keep our write side open (the answer may still be on its way), unless we
        # already half-closed it: then both directions are done and the transport closes.
        return not self.wrote_eof

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.transport = None
        peer = self.peer
        if peer is None:
            return
        if exc is not None:  # reset, not a clean close: the peer learns at once
            self.outgoing.cancel()
            peer.abort()
        elif not peer.closed:
            self.outgoing.push(CLOSE)  # close the peer once what we sent has arrived
        if peer.closed:
            self.link.connection_done(self)

    def abort(self) -> None:
        self.outgoing.cancel()
        if self.transport is not None:
            self.transport.abort()

    # Flow control: the sink's write buffer full, or our own queue full, stops reading.
    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause("sink")

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume("sink")

    def pause(self, reason: str) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused.add(reason)

    def resume(self, reason: str) -> None:
        if reason not in self.paused:
            return
        self.paused.discard(reason)
        if not self.paused and self.transport is not None:
            self.transport.resume_reading()


class _Accepted(_Side):
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if not self.link.admit(self):
            transport.abort()
            return
        # Bytes read before the target answers wait in the queue (``_Direction.start``).
        self.task = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        host, port = self.link.args.target
        try:
            _, upstream = await self.link.loop.create_connection(
                lambda: _Side(self.link), host, port
            )
        except OSError as exc:
            self.link.m_refused.inc()
            self.link.log.warning("target_unreachable", target=f"{host}:{port}", error=str(exc))
            if self.transport is not None:
                self.transport.abort()
            return
        if self.transport is None:  # the client left while we connected
            upstream.transport.close()
            return
        self.pair(upstream)
        upstream.pair(self)

    def connection_lost(self, exc) -> None:
        if self.peer is None:  # never paired: nothing to tear down on the other side
            self.closed = True
            self.transport = None
            self.link.connection_done(self)
            return
        super().connection_lost(exc)


class LinkService(Service):
    component = "link"
    default_port = 0
    description = "a TCP relay that adds latency: an emulated long network link"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("link")
        group.add_argument("--target", type=host_port, required=True, metavar="HOST:PORT",
                           help="where every accepted connection is relayed")  # fmt: skip
        group.add_argument("--delay-ms", type=delay_ms, default=0.0,
                           help="one-way delay added to every byte, each direction")  # fmt: skip
        group.add_argument("--max-connections", type=int, default=1024,
                           help="relayed connections at once; beyond, a new one is closed")  # fmt: skip

    @classmethod
    def check_arguments(cls, parser, args) -> None:
        if args.max_connections < 1:
            parser.error("--max-connections must be >= 1")

    async def start(self) -> dict[str, str]:
        self.loop = asyncio.get_running_loop()
        self.delay_s = self.args.delay_ms / 1000.0
        self.accepted: set[_Side] = set()
        m = self.metrics
        self.m_connections = m.counter("scalelab_link_connections_total", "Connections relayed")
        self.m_rejected = m.counter(
            "scalelab_link_connections_rejected_total", "Connections closed at --max-connections"
        )
        self.m_refused = m.counter(
            "scalelab_link_target_errors_total", "Connections the target did not accept"
        )
        self.m_bytes = m.counter("scalelab_link_bytes_total", "Bytes relayed, both directions")
        m.gauge("scalelab_link_delay_seconds", "One-way delay now added").set_function(
            lambda: self.delay_s
        )
        m.gauge("scalelab_link_open_connections", "Relayed connections open").set_function(
            lambda: len(self.accepted)
        )
        self.server = await self.loop.create_server(
            lambda: _Accepted(self), self.args.host, self.args.port, reuse_address=True
        )
        self.runtime.admin.register("delay", self.admin_delay)
        self.runtime.admin.register("delay", self.admin_get_delay, method="GET")
        return {"main": format_address(self.server.sockets[0].getsockname())}

    def admit(self, side: _Side) -> bool:
        if len(self.accepted) >= self.args.max_connections:
            self.m_rejected.inc()
            return False
        self.accepted.add(side)
        self.m_connections.inc()
        return True

    def connection_done(self, side: _Side) -> None:
        self.accepted.discard(side)
        if side.peer is not None:
            self.accepted.discard(side.peer)

    async def admin_delay(self, request: web.Request):
        body = await read_json(request)
        value = body.get("delay_ms") if isinstance(body, dict) else None
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or not 0 <= value <= MAX_DELAY_MS):  # fmt: skip
            return web.json_response(
                {"error": f"'delay_ms' must be a number in [0, {MAX_DELAY_MS:g}]"}, status=400
            )
        before = self.delay_s * 1000.0
        self.delay_s = value / 1000.0
        self.log.info("delay_changed", before_ms=before, delay_ms=value)
        return {"delay_ms": value, "before_ms": before}

    async def admin_get_delay(self, request: web.Request):
        return {"delay_ms": self.delay_s * 1000.0, "target": format_address(self.args.target)}

    async def drain(self) -> None:
        self.server.close()  # no new connections; relayed ones finish on their own

    async def stop(self) -> None:
        self.server.close()
        for side in list(self.accepted):
            side.abort()
            if side.peer is not None:
                side.peer.abort()
        self.accepted.clear()


if __name__ == "__main__":
    main(LinkService)
