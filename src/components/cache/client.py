"""An asyncio memcached client: a ketama ring over nodes, a pipelined pool per node.

This is the client the web tier uses for cache-aside. Three ideas, each a few lines:

- **Placement.** ``ring.Ring`` maps every key to one node, the same node libmemcached's
  weighted ketama picks, so other clients of the same pool agree.
- **Pipelining.** A connection writes each request as soon as it is made and keeps a
  FIFO of the requests awaiting replies; memcached answers in order, so the next reply
  belongs to the oldest waiter. Many concurrent coroutines share a few connections
  without waiting for each other's round trips. ``get_many`` sends one multi-key
  ``get`` per node, to all nodes at once.
- **Failure.** Every request has a deadline. A node whose requests fail
  ``failure_limit`` times in a row (refused, reset, timed out) is taken out of the ring,
  so its keys move to the other nodes (misses, not errors, for the web tier) and come
  back ``retry_after_s`` later, when the node is put back on the ring and tried again
  (libmemcached's SERVER_FAILURE_LIMIT, RETRY_TIMEOUT and REMOVE_FAILED_SERVERS). A
  request that failed on a node just ejected is retried once on the key's new node.

A timed-out connection is closed, never reused: a late reply would otherwise be read as
the answer to the next request.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable

from .protocol import Line, ResponseParser, Value, valid_key
from .ring import Ring

__all__ = ["CacheClient", "CacheError", "NodeError", "ServerError"]

DEFAULT_TIMEOUT_S = 1.0
DEFAULT_POOL_SIZE = 2
DEFAULT_FAILURE_LIMIT = 2
DEFAULT_RETRY_AFTER_S = 5.0


class CacheError(Exception):
    """Base of the client's errors."""


class NodeError(CacheError):
    """The node could not be reached or did not answer in time."""


class ServerError(CacheError):
    """The server answered with ERROR, CLIENT_ERROR or SERVER_ERROR."""


def _parse_node(node) -> tuple[str, int]:
    if isinstance(node, tuple):
        return node[0], int(node[1])
    host, _, port = str(node).rpartition(":")
    return host.strip("[]"), int(port)


class _Request:
    __slots__ = ("future", "multi", "values")

    def __init__(self, future: asyncio.Future, multi: bool) -> None:
        self.future = future
        self.multi = multi  # collect VALUE/STAT lines until END
        self.values: list = []


class _Connection(asyncio.Protocol):
    """One TCP connection with a FIFO of requests awaiting their replies."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.pending: deque[_Request] = deque()
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self._fail_all(NodeError(f"connection lost: {exc or 'closed by server'}"))

    def _fail_all(self, error: Exception) -> None:
        self.closed = True
        while self.pending:
            request = self.pending.popleft()
            if not request.future.done():
                request.future.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes, multi: bool) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.pending.append(_Request(future, multi))
        self.transport.write(data)
        return future

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        parser.feed(data)
        try:
            while self.pending and (event := parser.next_event()) is not None:
                request = self.pending[0]
                if isinstance(event, Value):
                    request.values.append(event)
                    continue
                text = event.text
                if request.multi and text.startswith(b"STAT "):
                    request.values.append(text)
                    continue
                self.pending.popleft()
                if request.future.done():  # its caller timed out; the stream stays aligned
                    continue
                if text == b"ERROR" or text.startswith((b"CLIENT_ERROR", b"SERVER_ERROR")):
                    request.future.set_exception(ServerError(text.decode(errors="replace")))
                elif request.multi:
                    request.future.set_result(request.values)
                else:
                    request.future.set_result(event)
        except ValueError as exc:  # a reply we cannot frame: the connection is unusable
            self._fail_all(NodeError(f"malformed reply: {exc}"))
            self.close()


class _Node:
    """A pool of connections to one server, and its failure record."""

    def __init__(self, address: tuple[str, int], pool_size: int, timeout_s: float) -> None:
        self.address = address
        self.pool_size = pool_size
        self.timeout_s = timeout_s
        self.connections: list[_Connection] = []
        self.connecting: asyncio.Future | None = None
        self.failures = 0
        self.dead_until = 0.0

    async def _connection(self) -> _Connection:
        live = [c for c in self.connections if not c.closed]
        self.connections = live
        if live:
            best = min(live, key=lambda c: len(c.pending))
            # Reuse an idle connection, or pipeline onto the least busy one once the
            # pool is full; otherwise open another.
            if not best.pending or len(live) >= self.pool_size:
                return best
        if self.connecting is not None:  # share one connect among concurrent callers
            return await asyncio.shield(self.connecting)
        loop = asyncio.get_running_loop()
        self.connecting = loop.create_future()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, *self.address), self.timeout_s
            )
        except (OSError, TimeoutError) as exc:
            error = NodeError(f"{self.address[0]}:{self.address[1]}: {exc or 'timeout'}")
            self.connecting.set_exception(error)
            self.connecting.exception()  # retrieved: nobody else may be waiting
            self.connecting = None
            raise error from None
        self.connections.append(conn)
        self.connecting.set_result(conn)
        self.connecting = None
        return conn

    async def call(self, data: bytes, multi: bool = False):
        conn = await self._connection()
        future = conn.send(data, multi)
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            conn.close()  # a late reply must never be taken for the next request's
            raise NodeError(f"{self.address[0]}:{self.address[1]}: timed out") from None

    def close(self) -> None:
        for conn in self.connections:
            conn.close()
        self.connections.clear()


class CacheClient:
    """memcached over several nodes. Keys are ``bytes`` or ``str`` (UTF-8)."""

    def __init__(self, nodes: Iterable, weights: dict | None = None, *,
                 pool_size: int = DEFAULT_POOL_SIZE, timeout_s: float = DEFAULT_TIMEOUT_S,
                 failure_limit: int = DEFAULT_FAILURE_LIMIT,
                 retry_after_s: float = DEFAULT_RETRY_AFTER_S, clock=time.monotonic,
                 ) -> None:  # fmt: skip
        addresses = [_parse_node(n) for n in nodes]
        if not addresses:
            raise ValueError("at least one node is needed")
        self.weights = {_parse_node(k): v for k, v in (weights or {}).items()}
        self._nodes = {a: _Node(a, pool_size, timeout_s) for a in addresses}
        self.failure_limit = failure_limit
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._all = addresses
        self.ring = Ring(addresses, self.weights)
        self._next_revival = float("inf")

    # -- placement and failure handling

    @property
    def dead_nodes(self) -> list[tuple[str, int]]:
        return [a for a, n in self._nodes.items() if n.dead_until]

    def _rebuild_ring(self) -> None:
        live = [a for a in self._all if not self._nodes[a].dead_until]
        self.ring = Ring(live, self.weights)
        dead = [self._nodes[a].dead_until for a in self._all if self._nodes[a].dead_until]
        self._next_revival = min(dead, default=float("inf"))

    def _revive_due(self) -> None:
        now = self._clock()
        if now < self._next_revival:
            return
        for node in self._nodes.values():
            if node.dead_until and node.dead_until <= now:
                node.dead_until = 0.0  # back on the ring; one more failure ejects it again
                node.failures = self.failure_limit - 1
        self._rebuild_ring()

    def _record_failure(self, node: _Node) -> bool:
        """Count a failure; True when the node was ejected from the ring by it."""
        node.failures += 1
        if node.failures >= self.failure_limit and not node.dead_until:
            node.dead_until = self._clock() + self.retry_after_s
            node.close()
            self._rebuild_ring()
            return True
        return False

    def node_for(self, key: bytes) -> tuple[str, int]:
        self._revive_due()
        return self.ring.node_for(key)

    async def _call(self, key: bytes, data: bytes, multi: bool = False):
        for attempt in range(2):
            self._revive_due()
            if not len(self.ring):
                raise NodeError("every node is marked dead")
            node = self._nodes[self.ring.node_for(key)]
            try:
                result = await node.call(data, multi)
            except NodeError:
                ejected = self._record_failure(node)
                if attempt == 0 and ejected and len(self.ring):
                    continue  # the key has a new home now: try it there once
                raise
            node.failures = 0
            return result
        raise AssertionError("unreachable")

    # -- commands

    @staticmethod
    def _key(key) -> bytes:
        raw = key.encode() if isinstance(key, str) else bytes(key)
        if not valid_key(raw):
            raise ValueError(f"invalid memcached key {raw[:60]!r}")
        return raw

    async def get(self, key) -> bytes | None:
        k = self._key(key)
        values = await self._call(k, b"get " + k + b"\r\n", multi=True)
        return values[0].value if values else None

    async def gets(self, key) -> tuple[bytes | None, int | None]:
        k = self._key(key)
        values = await self._call(k, b"gets " + k + b"\r\n", multi=True)
        return (values[0].value, values[0].cas) if values else (None, None)

    async def get_many(self, keys: Iterable) -> dict[bytes, bytes]:
        """One multi-key get per node, all nodes in parallel; missing keys are absent."""
        by_node: dict[tuple[str, int], list[bytes]] = {}
        for key in keys:
            k = self._key(key)
            by_node.setdefault(self.node_for(k), []).append(k)
        results = await asyncio.gather(
            *(self._call(ks[0], b"get " + b" ".join(ks) + b"\r\n", multi=True)
              for ks in by_node.values()),
            return_exceptions=True,
        )  # fmt: skip
        found: dict[bytes, bytes] = {}
        for result in results:
            if isinstance(result, NodeError):
                continue  # a dead node's keys are misses for a cache-aside reader
            if isinstance(result, BaseException):
                raise result
            for value in result:
                found[value.key] = value.value
        return found

    async def _store(self, verb: bytes, key, value: bytes, exptime: int, flags: int,
                     extra: bytes = b"") -> bytes:  # fmt: skip
        k = self._key(key)
        data = b"%s %s %d %d %d%s\r\n%s\r\n" % (verb, k, flags, exptime, len(value), extra, value)
        line: Line = await self._call(k, data)
        return line.text

    async def set(self, key, value: bytes, exptime: int = 0, flags: int = 0) -> bool:
        return await self._store(b"set", key, value, exptime, flags) == b"STORED"

    async def add(self, key, value: bytes, exptime: int = 0, flags: int = 0) -> bool:
        return await self._store(b"add", key, value, exptime, flags) == b"STORED"

    async def replace(self, key, value: bytes, exptime: int = 0, flags: int = 0) -> bool:
        return await self._store(b"replace", key, value, exptime, flags) == b"STORED"

    async def append(self, key, value: bytes) -> bool:
        return await self._store(b"append", key, value, 0, 0) == b"STORED"

    async def prepend(self, key, value: bytes) -> bool:
        return await self._store(b"prepend", key, value, 0, 0) == b"STORED"

    async def cas(self, key, value: bytes, cas_unique: int, exptime: int = 0,
                  flags: int = 0) -> bool | None:  # fmt: skip
        """True stored, False someone changed it (EXISTS), None no such item."""
        text = await self._store(b"cas", key, value, exptime, flags, b" %d" % cas_unique)
        return {b"STORED": True, b"EXISTS": False}.get(text)

    async def delete(self, key) -> bool:
        k = self._key(key)
        return (await self._call(k, b"delete " + k + b"\r\n")).text == b"DELETED"

    async def touch(self, key, exptime: int) -> bool:
        k = self._key(key)
        return (await self._call(k, b"touch %s %d\r\n" % (k, exptime))).text == b"TOUCHED"

    async def incr(self, key, delta: int = 1) -> int | None:
        return await self._arith(b"incr", key, delta)

    async def decr(self, key, delta: int = 1) -> int | None:
        return await self._arith(b"decr", key, delta)

    async def _arith(self, verb: bytes, key, delta: int) -> int | None:
        k = self._key(key)
        text = (await self._call(k, b"%s %s %d\r\n" % (verb, k, delta))).text
        return None if text == b"NOT_FOUND" else int(text)

    async def stats(self) -> dict[tuple[str, int], dict[str, str]]:
        """``stats`` of every live node."""
        out = {}
        for address in list(self.ring.nodes):
            lines = await self._nodes[address].call(b"stats\r\n", multi=True)
            out[address] = dict(line[5:].decode().split(" ", 1) for line in lines)
        return out

    async def flush_all(self) -> None:
        for address in list(self.ring.nodes):
            await self._nodes[address].call(b"flush_all\r\n")

    async def close(self) -> None:
        for node in self._nodes.values():
            node.close()
