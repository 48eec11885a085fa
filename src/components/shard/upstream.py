"""One shard group as the router sees it: a store primary and its replicas, over HTTP.

The router keeps, per group, the node it believes is the primary. It learns it from the
nodes' ``/status`` (``scalelab.writable`` and ``epoch``: the writable node with the
highest epoch, as ``components.store.client`` does) and learns it again whenever a
request to it fails in a way that proves it did not run (the connection was refused, or
the node answered 503 "leader not found"/"not reachable"): that is how a group's
failover (a replica promoted by an operator or controller) is followed without a
restart. A request whose outcome is unknown (a timeout, a connection dropped after the
request was sent) is never retried: the caller gets an error and decides.

Reads at ``level=none`` go round-robin over every node of the group (a replica may
answer from its own, possibly stale, copy, exactly as it would without the router);
other reads and all writes go to the primary.

Why not reuse ``components.store.client.StoreClient``: it parses answers and raises on
SQL errors, while the router passes a single group's answer through byte for byte
(status, body, LSN header) and only parses the answers it has to merge.

Requests to the stores are the router's hot path, so they go over a small pool of
keep-alive connections per node, each an ``asyncio.Protocol`` framed by the shared
HTTP/1.1 codec (``common/http1.py``): one ``transport.write`` per request, the answer
parsed as it arrives. (aiohttp's client, used only for the rare ``/status`` calls, costs
noticeably more per request.) A pooled connection idle for longer than
``IDLE_REUSE_S`` is not reused, well inside the store's keep-alive timeout (aiohttp's
75 s), so a request is never written into a connection the store is closing.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from components.common.http1 import (
    NEED_DATA,
    Data,
    EndOfMessage,
    Parser,
    ProtocolError,
    Response,
    serialize_request_head,
)

LSN_HEADER = "X-Scalelab-Lsn"
UPSTREAM_TIMEOUT_S = 30.0
STATUS_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 5.0
#: Open connections per store node at most; further requests wait for one.
MAX_CONNECTIONS_PER_NODE = 64
#: A pooled connection idle longer than this is closed rather than reused.
IDLE_REUSE_S = 15.0
#: Largest answer accepted from a store (a fan-out read holds one per group).
MAX_REPLY_BYTES = 64 * 1024 * 1024


class GroupDown(Exception):
    """No node of the group took the request, and it certainly did not run."""


class OutcomeUnknown(Exception):
    """The request was sent but its answer was lost: it may or may not have run."""


class FeedGone(Exception):
    """The primary's change feed cannot continue from the asked position: the log was
    compacted past it (410), the feed is not offered or not allowed (404, 401), or the
    primary is unreachable. A resharding then reads the moving rows again instead;
    ``retry`` says a fresh copy can be followed again (the log moved on, the feed is
    still there)."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str
    lsn: str | None
    node: str

    def json(self) -> Any:
        return orjson.loads(self.body)


class Group:
    def __init__(self, name: str, nodes: tuple[str, ...], session: aiohttp.ClientSession,
                 admin: tuple[str, ...] = (), admin_token: str | None = None) -> None:  # fmt: skip
        self.name = name
        self.nodes = list(nodes)
        self.admin = list(admin)
        self._admin_token = admin_token
        self.primary: str | None = None
        self.epoch = 0
        self._session = session
        self._round_robin = itertools.cycle(range(len(self.nodes)))
        self._discovering: asyncio.Future | None = None
        self._pools: dict[str, _Pool] = {}

    async def discover(self) -> str:
        """Find the primary (one discovery at a time; concurrent callers share it)."""
        if self._discovering is not None:
            return await asyncio.shield(self._discovering)
        loop = asyncio.get_running_loop()
        self._discovering = loop.create_future()
        try:
            reports = await asyncio.gather(*(self._status(n) for n in self.nodes))
            primaries = [r for r in reports if r and r.get("writable")]
            if not primaries:
                self.primary = None
                raise GroupDown(f"group {self.name}: no writable primary among {self.nodes}")
            best = max(primaries, key=lambda r: r.get("epoch", 0))
            self.primary, self.epoch = best["api_addr"], best.get("epoch", 0)
            self._discovering.set_result(self.primary)
            return self.primary
        except BaseException as exc:
            self._discovering.set_exception(exc)
            self._discovering.exception()  # retrieved: no "never retrieved" warning
            raise
        finally:
            self._discovering = None

    async def _status(self, node: str) -> dict[str, Any] | None:
        try:
            async with self._session.get(
                f"http://{node}/status", timeout=aiohttp.ClientTimeout(total=STATUS_TIMEOUT_S)
            ) as r:
                return (await r.json())["scalelab"]
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError, TypeError):
            return None

    async def send(self, method: str, path_qs: str, body: bytes | None, *,
                   to_primary: bool = True) -> Reply:  # fmt: skip
        """Send to the primary (retried once after a rediscovery when it certainly did not
        run), or for ``to_primary=False`` to the next node in turn (reads, retried on the
        others)."""
        if not to_primary:
            start = next(self._round_robin)
            last: Exception | None = None
            for node in self.nodes[start:] + self.nodes[:start]:
                try:
                    reply = await self._request(node, method, path_qs, body)
                except (GroupDown, OutcomeUnknown) as exc:
                    last = exc
                    continue
                if reply.status != 503:
                    return reply
                last = GroupDown(reply.body.decode(errors="replace")[:200])
            raise GroupDown(f"group {self.name}: no node answered the read: {last}")
        for attempt in range(2):
            node = self.primary or await self.discover()
            try:
                reply = await self._request(node, method, path_qs, body)
            except GroupDown:
                self.primary = None
                if attempt:
                    raise
                continue
            if reply.status == 503 and attempt == 0:
                self.primary = None  # not the primary any more, or overloaded: look again
                continue
            return reply
        raise GroupDown(f"group {self.name}: no primary took the request")

    async def _request(self, node: str, method: str, path_qs: str, body: bytes | None) -> Reply:
        pool = self._pools.get(node)
        if pool is None:
            pool = self._pools[node] = _Pool(node)
        try:
            return await pool.request(method, path_qs, body)
        except GroupDown as exc:
            raise GroupDown(f"group {self.name}: {exc}") from None
        except OutcomeUnknown as exc:
            raise OutcomeUnknown(f"group {self.name}: {exc}") from None

    async def changes(self, since: int, limit: int) -> dict[str, Any]:
        """The primary's redo records after LSN ``since`` (``GET /admin/changes`` on its
        admin listener): ``{"lsn": durable, "first_lsn", "changes": [...]}``. Rare (a
        few calls per resharding), so over aiohttp, like ``/status``."""
        primary = self.primary or await self.discover()
        if primary not in self.nodes or len(self.admin) != len(self.nodes):
            raise FeedGone(f"group {self.name}: no admin address known for {primary}")
        url = f"http://{self.admin[self.nodes.index(primary)]}/admin/changes"
        headers = {"Authorization": f"Bearer {self._admin_token}"} if self._admin_token else {}
        try:
            async with self._session.get(
                url, params={"since": str(since), "limit": str(limit)}, headers=headers,
                timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S)) as r:  # fmt: skip
                status = r.status
                chunks, size = [], 0
                async for chunk in r.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > MAX_REPLY_BYTES:  # the store sends ~1 MiB at most
                        raise FeedGone(f"group {self.name}: change feed answer over "
                                       f"{MAX_REPLY_BYTES} bytes")  # fmt: skip
                    chunks.append(chunk)
                body = b"".join(chunks)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FeedGone(f"group {self.name}: change feed unreachable: {exc!r}") from None
        if status != 200:
            raise FeedGone(f"group {self.name}: change feed answered {status}: "
                           f"{body[:200].decode(errors='replace')}", retry=status == 410)  # fmt: skip
        try:
            doc = orjson.loads(body)
            if not isinstance(doc.get("lsn"), int) or not isinstance(doc.get("changes"), list):
                raise ValueError("no lsn or changes")
        except (ValueError, AttributeError) as exc:
            raise FeedGone(f"group {self.name}: not a change feed answer: {exc}") from None
        return doc

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to a store node, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = Parser(response=True)
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._head: Response | None = None
        self._body: list[bytes] = []
        self._size = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, data: bytes, method: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self._head, self._body, self._size = None, [], 0
        self.parser.expect_response(method)
        self.transport.write(data)  # type: ignore[union-attr]
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        try:
            while (event := self.parser.next_event()) is not NEED_DATA:
                if isinstance(event, Response):
                    self._head = event
                elif isinstance(event, Data):
                    self._size += len(event.data)
                    if self._size > MAX_REPLY_BYTES:
                        raise ProtocolError(502, f"answer over {MAX_REPLY_BYTES} bytes")
                    self._body.append(event.data)
                elif isinstance(event, EndOfMessage):
                    self._finish()
                    return
        except ProtocolError as exc:
            self._fail(OutcomeUnknown(f"bad answer: {exc.detail}"))

    def _finish(self) -> None:
        head = self._head
        if head is None or self.waiter is None or self.waiter.done():
            self._fail(OutcomeUnknown("an answer nobody asked for"))
            return
        if not head.keep_alive:
            self.close()
        self.idle_since = time.monotonic()
        content_type = (head.get(b"content-type") or b"application/json").split(b";")[0]
        lsn = head.get(LSN_HEADER.lower().encode())
        self.waiter.set_result((head.status, b"".join(self._body), content_type.decode(),
                                lsn.decode() if lsn else None))  # fmt: skip

    def _fail(self, exc: Exception) -> None:
        self.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(OutcomeUnknown(f"connection closed before the answer "
                                                     f"({exc or 'EOF'})"))  # fmt: skip

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Pool:
    """Keep-alive connections to one node, at most ``MAX_CONNECTIONS_PER_NODE``."""

    def __init__(self, node: str) -> None:
        self.node = node
        host, _, port = node.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS_PER_NODE)

    async def request(self, method: str, path_qs: str, body: bytes | None) -> Reply:
        async with self.slots:
            conn = self._reuse()
            if conn is None:
                try:
                    _, conn = await asyncio.wait_for(
                        asyncio.get_running_loop().create_connection(
                            _Connection, self.host, self.port), CONNECT_TIMEOUT_S)  # fmt: skip
                except (OSError, TimeoutError) as exc:
                    raise GroupDown(f"{self.node} unreachable: {exc!r}") from None
            payload = body or b""
            head = serialize_request_head(method.encode(), path_qs.encode(), [
                (b"Host", self.node.encode()), (b"Content-Type", b"application/json"),
                (b"Content-Length", b"%d" % len(payload))])  # fmt: skip
            done = False
            try:
                status, data, content_type, lsn = await asyncio.wait_for(
                    conn.send(head + payload, method.encode()), UPSTREAM_TIMEOUT_S
                )
                done = True
            except TimeoutError:
                raise OutcomeUnknown(f"no answer from {self.node} within "
                                     f"{UPSTREAM_TIMEOUT_S}s") from None  # fmt: skip
            except OutcomeUnknown as exc:
                raise OutcomeUnknown(f"answer from {self.node} lost: {exc}") from None
            finally:
                if done and not conn.closed:
                    self.idle.append(conn)
                else:
                    conn.close()  # cancelled or failed mid-request: never reuse it
            return Reply(status, data, content_type, lsn, self.node)

    def _reuse(self) -> _Connection | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()  # the most recently used: warmest, least likely closed
            if not conn.closed and now - conn.idle_since < IDLE_REUSE_S:
                return conn
            conn.close()
        return None

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()
