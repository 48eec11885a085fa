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
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

LSN_HEADER = "X-Scalelab-Lsn"
UPSTREAM_TIMEOUT_S = 30.0
STATUS_TIMEOUT_S = 2.0


class GroupDown(Exception):
    """No node of the group took the request, and it certainly did not run."""


class OutcomeUnknown(Exception):
    """The request was sent but its answer was lost: it may or may not have run."""


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
    def __init__(self, name: str, nodes: tuple[str, ...], session: aiohttp.ClientSession) -> None:
        self.name = name
        self.nodes = list(nodes)
        self.primary: str | None = None
        self.epoch = 0
        self._session = session
        self._round_robin = itertools.cycle(range(len(self.nodes)))
        self._discovering: asyncio.Future | None = None

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
        try:
            async with self._session.request(
                method, f"http://{node}{path_qs}", data=body,
                headers={"Content-Type": "application/json"} if body is not None else None,
                timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S),
            ) as response:  # fmt: skip
                payload = await response.read()
                return Reply(response.status, payload, response.content_type,
                             response.headers.get(LSN_HEADER), node)  # fmt: skip
        except aiohttp.ClientConnectorError as exc:
            raise GroupDown(f"group {self.name}: {node} unreachable: {exc}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OutcomeUnknown(f"group {self.name}: answer from {node} lost: {exc!r}") from None
