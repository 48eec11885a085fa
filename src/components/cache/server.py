"""The cache server: memcached's text protocol over asyncio, one LRU per process.

This is the thin shell around the sans-IO parts. Each connection owns a
``RequestParser``; every read burst is parsed into as many commands as it holds, each is
executed against the shared ``LruCache`` through ``Commands``, and all their replies
leave in one ``transport.write``: pipelining costs one syscall per burst, not one per
command. Nothing awaits inside a command, so commands are atomic with respect to each
other, which is what makes ``cas``, ``incr`` and ``add`` race-free on one node.

Time: memcached keeps a process-wide clock in whole seconds, updated by a timer, and
compares expiry times against it. So does this server (``now``, ticked every second),
and the tick also reclaims expired items in the background. For tests the clock can be
moved forward with ``POST /admin/clock {"advance": seconds}``, so TTL behaviour is
tested without sleeping.

Bounds: ``-c`` connections (the next one is told ``ERROR Too many open connections`` and
closed, as memcached does); ``-I`` item size; ``-m`` memory; command lines via the
parser; replies gathered from one burst are written out early past
``MAX_REPLY_BURST_BYTES``, and a client that does not read its replies stops being read
once its output buffer is over the transport's high-water mark (``pause_writing``).

One shortcut: a burst that is exactly one ``get <key>`` or one plain ``set`` (what a
request/response client sends) is answered without building a command object or a
reply list (``Commands.get_one``, ``single_set`` and ``Commands.set_one``), but only while
the parser is idle: a burst that is the data block of an earlier ``set`` is a value,
not a command. Property tests hold the fast paths to the general path's bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time

from components.common import Service
from components.common.admin import json_response, read_json
from components.common.cli import format_address, port

from .commands import Commands
from .lru import LruCache
from .protocol import DEFAULT_MAX_VALUE_BYTES, RequestParser, single_set

MIB = 1024 * 1024
CLOCK_TICK_S = 1.0
#: How many expired items one clock tick may reclaim (bounds the tick's pause).
RECLAIM_PER_TICK = 10_000
TOO_MANY_CONNECTIONS = b"ERROR Too many open connections\r\n"
#: Replies gathered from one read burst before they are written out early (see _process).
MAX_REPLY_BURST_BYTES = 1024 * 1024
#: Only sum reply sizes once a burst has produced this many pieces (keeps gets cheap).
REPLY_PIECES_CHECK = 64
#: Smallest and largest -I memcached accepts.
MIN_ITEM_BYTES = 1024
MAX_ITEM_BYTES = 1024 * MIB


def size_bytes(text: str) -> int:
    """memcached's ``-I`` syntax: a byte count with an optional k/m suffix (``512k``, ``2m``)."""
    match = re.fullmatch(r"(\d+)([kKmM]?)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1m or 512k)")
    value = int(match.group(1)) * {"": 1, "k": 1024, "m": MIB}[match.group(2).lower()]
    if not MIN_ITEM_BYTES <= value <= MAX_ITEM_BYTES:
        raise argparse.ArgumentTypeError(f"item size must be 1k..1024m, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


class CacheConnection(asyncio.Protocol):
    """One client connection: parse, execute, reply once per read burst."""

    __slots__ = ("service", "parser", "transport", "commands", "execute", "max_value_bytes",
                 "counted", "paused", "idle", "bytes_read", "bytes_written")  # fmt: skip

    def __init__(self, service: CacheService) -> None:
        self.service = service
        self.parser = RequestParser(service.args.max_item_size)
        self.commands = service.commands
        self.execute = service.commands.execute
        self.max_value_bytes = service.args.max_item_size
        self.transport: asyncio.Transport | None = None
        self.counted = False
        self.paused = False
        #: True when a burst may take a fast path: counted, not paused, and the parser
        #: holds nothing (no partial line, no awaited data block, nothing to swallow).
        self.idle = False
        # Per connection, so the hot path bumps its own slots; stats add them up.
        self.bytes_read = 0
        self.bytes_written = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        service = self.service
        if len(service.connections) >= service.args.conn_limit:
            service.rejected_connections += 1
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        self.counted = True
        self.idle = True
        service.connections.add(self)
        service.total_connections += 1

    def connection_lost(self, exc) -> None:
        self.idle = False
        if self.counted:
            service = self.service
            service.connections.discard(self)
            service.closed_bytes_read += self.bytes_read
            service.closed_bytes_written += self.bytes_written
            self.counted = False

    def data_received(self, data: bytes) -> None:
        if self.idle:
            # Fast paths: a burst that is exactly one plain "get <key>" or "set", which is
            # what a request/response client sends. They answer without command objects
            # or a reply list; anything they do not recognise (and every error) falls
            # through to the parser, which gives the same bytes, only slower.
            head = data[:4]
            if head == b"get ":
                if data[-2:] == b"\r\n":
                    reply = self.commands.get_one(data[4:-2], self.service.now)
                    if reply is not None:
                        self.bytes_read += len(data)
                        self.bytes_written += len(reply)
                        self.transport.write(reply)
                        return
            elif head == b"set ":
                fields = single_set(data, self.max_value_bytes)
                if fields is not None:
                    reply = self.commands.set_one(*fields, self.service.now)
                    self.bytes_read += len(data)
                    self.bytes_written += len(reply)
                    self.transport.write(reply)
                    return
        elif not self.counted:
            return
        self.bytes_read += len(data)
        parser = self.parser
        parser.feed(data)
        if not self.paused:
            self._process()
            self.idle = not self.paused and parser.idle()

    def _process(self) -> None:
        """Execute every complete command buffered, replying with one write.

        A burst of small requests can ask for far more output than it is long (a 64 KiB
        read of ``get big`` lines asks for gigabytes). So once the replies gathered pass
        ``MAX_REPLY_BURST_BYTES`` they are written out, and if that fills the transport
        past its high-water mark (``pause_writing``), parsing stops; ``resume_writing``
        continues with the commands still buffered.
        """
        service = self.service
        now = service.now
        execute = self.execute
        next_command = self.parser.next_command
        transport = self.transport
        out: list[bytes] = []
        close = False
        check_at = REPLY_PIECES_CHECK  # doubles, so sizing the replies stays O(n)
        while True:
            command = next_command()
            if command is None:
                break
            if execute(command, now, out):
                close = True
                break
            if len(out) > check_at:
                if sum(map(len, out)) <= MAX_REPLY_BURST_BYTES:
                    check_at = 2 * len(out)
                    continue
                self._write(out)
                out = []
                check_at = REPLY_PIECES_CHECK
                if self.paused:
                    return
        if out:
            self._write(out)
        if close:
            transport.close()

    def _write(self, out: list[bytes]) -> None:
        reply = out[0] if len(out) == 1 else b"".join(out)
        self.bytes_written += len(reply)
        self.transport.write(reply)

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop reading its requests until it does.
        self.paused = True
        self.idle = False
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        self.transport.resume_reading()
        if self.counted:
            self._process()
            self.idle = not self.paused and self.parser.idle()


class CacheService(Service):
    component = "cache"
    default_port = 11211
    description = "A memcached-compatible cache server (text and meta protocol)."

    @classmethod
    def add_arguments(cls, parser) -> None:
        group = parser.add_argument_group("memcached flags")
        # memcached's own short flags, mapped onto the shared ones where they overlap.
        group.add_argument("-p", dest="port", type=port, default=argparse.SUPPRESS,
                           help="TCP port (memcached's -p; same as --port)")  # fmt: skip
        group.add_argument("-l", dest="host", default=argparse.SUPPRESS,
                           help="address to listen on (memcached's -l; same as --host)")  # fmt: skip
        group.add_argument("-m", "--memory-limit", "--memory-mb", dest="memory_mb",
                           type=positive_int, default=64,
                           help="item memory in megabytes, as memcached counts it")  # fmt: skip
        group.add_argument("-I", "--max-item-size", dest="max_item_size", type=size_bytes,
                           default=DEFAULT_MAX_VALUE_BYTES,
                           help="largest item, bytes or with k/m suffix")  # fmt: skip
        group.add_argument("-c", "--conn-limit", dest="conn_limit", type=positive_int,
                           default=1024, help="max simultaneous connections")  # fmt: skip
        group.add_argument("-t", "--threads", dest="threads", type=positive_int, default=1,
                           help="accepted for memcached compatibility; one event loop serves "
                                "everything (run more processes to use more cores)")  # fmt: skip

    @classmethod
    def check_arguments(cls, parser, args) -> None:
        if args.max_item_size > args.memory_mb * MIB:
            parser.error("-I (item size) may not exceed -m (memory)")

    async def start(self) -> dict[str, str]:
        args = self.args
        if args.threads != 1:
            self.log.warning("threads_ignored", threads=args.threads,
                             reason="one event loop per process; run one node per core")  # fmt: skip
        self.cache = LruCache(args.memory_mb * MIB, args.max_item_size)
        self.connections: set[CacheConnection] = set()
        self.total_connections = 0
        self.rejected_connections = 0
        #: bytes of connections already closed (open ones keep their own count).
        self.closed_bytes_read = 0
        self.closed_bytes_written = 0
        self.clock_offset_s = 0
        self.now = int(time.time())
        self.commands = Commands(self.cache, self._settings(), self._server_stats)
        self.commands.started = self.now
        self._register_metrics()
        self.runtime.admin.register("flush", self._admin_flush)
        self.runtime.admin.register("clock", self._admin_clock)
        self.runtime.admin.register("stats", self._admin_stats, method="GET")
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: CacheConnection(self), args.host, args.port, reuse_address=True,
            backlog=1024,
        )  # fmt: skip
        self._tick_handle = loop.call_later(CLOCK_TICK_S, self._tick)
        return {"main": format_address(self.server.sockets[0].getsockname())}

    def _settings(self) -> dict[str, object]:
        args = self.args
        return {
            "maxbytes": args.memory_mb * MIB,
            "maxconns": args.conn_limit,
            "tcpport": args.port,
            "udpport": 0,
            "inter": args.host,
            "evictions": "on",
            "num_threads": 1,
            "cas_enabled": "yes",
            "item_size_max": args.max_item_size,
            "binding_protocol": "ascii",
            "flush_enabled": "yes",
            "lru_crawler": "yes",
        }

    def _server_stats(self):
        conns = self.connections
        return [
            ("max_connections", self.args.conn_limit),
            ("curr_connections", len(self.connections)),
            ("total_connections", self.total_connections),
            ("rejected_connections", self.rejected_connections),
            ("bytes_read", self.closed_bytes_read + sum(c.bytes_read for c in conns)),
            ("bytes_written", self.closed_bytes_written + sum(c.bytes_written for c in conns)),
        ]

    def _register_metrics(self) -> None:
        m = self.metrics
        counters = lambda: self.commands.counters  # noqa: E731 - "stats reset" swaps it
        cache = self.cache
        for name, help_text, read in [
            ("get_hits_total", "get hits", lambda: counters().get_hits),
            ("get_misses_total", "get misses", lambda: counters().get_misses),
            ("gets_total", "keys looked up by get/gets/gat/mg", lambda: counters().cmd_get),
            ("sets_total", "storage commands", lambda: counters().cmd_set),
            ("evictions_total", "items evicted to make room", lambda: cache.evictions),
            ("reclaimed_total", "expired items removed", lambda: cache.reclaimed),
            ("connections_total", "connections accepted", lambda: self.total_connections),
            ("rejected_connections_total", "connections refused at -c",
             lambda: self.rejected_connections),
        ]:  # fmt: skip
            m.counter(f"scalelab_cache_{name}", help_text).set_function(read)
        m.gauge("scalelab_cache_items", "items held").set_function(lambda: len(cache))
        m.gauge("scalelab_cache_bytes", "bytes held, as memcached counts them").set_function(
            lambda: cache.bytes
        )
        m.gauge("scalelab_cache_limit_bytes", "memory limit (-m)").set_function(
            lambda: cache.max_bytes
        )
        m.gauge("scalelab_cache_connections", "open client connections").set_function(
            lambda: len(self.connections)
        )

    def _tick(self) -> None:
        self.now = int(time.time()) + self.clock_offset_s
        self.cache.reclaim_expired(self.now, RECLAIM_PER_TICK)
        loop = asyncio.get_running_loop()
        self._tick_handle = loop.call_later(CLOCK_TICK_S, self._tick)

    async def _admin_flush(self, request):
        """``POST /admin/flush``: flush_all, for operators and tests."""
        self.cache.flush(self.now)
        self.log.info("flushed")
        return {"flushed": True}

    async def _admin_clock(self, request):
        """``POST /admin/clock {"advance": S}``: move the cache's clock S seconds ahead."""
        body = await read_json(request)
        advance = body.get("advance") if isinstance(body, dict) else None
        if not isinstance(advance, int) or isinstance(advance, bool) or advance < 0:
            return json_response({"error": "advance must be a non-negative integer"}, 400)
        self.clock_offset_s += advance
        self.now = int(time.time()) + self.clock_offset_s
        self.cache.reclaim_expired(self.now, RECLAIM_PER_TICK)
        return {"now": self.now, "offset": self.clock_offset_s}

    async def _admin_stats(self, request):
        """``GET /admin/stats``: memcached's general stats as JSON."""
        return dict(self.commands.general_stats(self.now))

    async def drain(self) -> None:
        # Requests are executed as they arrive; draining means: accept nothing new and
        # let the replies already queued reach their clients.
        self.server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()  # flushes the write buffer, then closes
        while self.connections:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if hasattr(self, "_tick_handle"):
            self._tick_handle.cancel()
        if hasattr(self, "server"):
            self.server.close()
        for conn in list(getattr(self, "connections", ())):
            if conn.transport is not None:
                conn.transport.abort()
