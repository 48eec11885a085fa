"""The asyncio client other tiers use: writes to the primary, reads spread over replicas.

This is the application side of the chapter's replicated database: the web tier hands
the client every node it knows, and the client

- **finds the primary** by asking each node's ``/status`` (the writable node with the
  highest epoch), and finds it again when a write fails because the primary changed;
- **spreads reads** round-robin over all nodes with ``level=none`` (a replica answers
  from its own copy), or sends them to the primary for ``weak``/``strong``;
- **offers read-your-writes**: every write returns its LSN; a read given ``min_lsn``
  is answered only by a node that has applied that write (the node waits, bounded), so
  a user who just saved a profile sees it even when the read lands on a replica.

A node that does not answer in time (paused, overloaded, cut off) is the costly failure:
every request sent to it waits for the whole deadline. So a node whose request timed out
or whose connection failed is *suspect* for ``suspect_s``: reads try it last, after every
other node, so one stalled replica does not hold a share of all reads for a timeout
each; and primary discovery asks every node with a short deadline (``status_timeout_s``)
so a stalled node slows the search for the primary by that much, not by a full timeout.

Retries are careful about duplicates: a write is retried on another node only when it
certainly did not run (the connection was refused, or the node answered 503: "leader not
found", "leader not reachable", overloaded); after a timeout or a dropped connection
(also a pooled connection to a node that just died) the outcome is unknown: the caller
gets a ``StoreError`` and may retry an idempotent write; the next call rediscovers the
primary. Reads are retried on the next node freely.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

Statement = str | Sequence[Any]
LSN_HEADER = "X-Scalelab-Lsn"
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_STATUS_TIMEOUT_S = 1.0
DEFAULT_SUSPECT_S = 2.0


class StoreError(Exception):
    """The store could not answer (no primary, every node down, a bad request)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SqlError(StoreError):
    """A statement failed; ``results`` holds every statement's result."""

    def __init__(self, message: str, results: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.results = results


@dataclass(frozen=True, slots=True)
class Answer:
    """rqlite's ``results`` list, the node that answered and, for writes, the LSN."""

    results: list[dict[str, Any]]
    node: str
    lsn: int | None = None

    def rows(self, index: int = 0) -> list[dict[str, Any]]:
        """Result ``index`` as a list of ``{column: value}``."""
        result = self.results[index]
        columns = result.get("columns", [])
        return [dict(zip(columns, row, strict=True)) for row in result.get("values", [])]

    def raise_for_errors(self) -> Answer:
        for result in self.results:
            if "error" in result:
                raise SqlError(result["error"], self.results)
        return self


class StoreClient:
    """A client for a set of store nodes (``host:port`` API addresses)."""

    def __init__(
        self,
        nodes: Sequence[str],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        session: aiohttp.ClientSession | None = None,
        status_timeout_s: float = DEFAULT_STATUS_TIMEOUT_S,
        suspect_s: float = DEFAULT_SUSPECT_S,
        clock=time.monotonic,
    ) -> None:
        if not nodes:
            raise ValueError("a store client needs at least one node")
        self.nodes = list(dict.fromkeys(nodes))
        self.primary: str | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = session
        self._own_session = session is None
        self._round_robin = itertools.cycle(range(len(self.nodes)))
        timeouts = [t for t in (timeout_s, status_timeout_s) if t is not None]
        self._status_timeout = aiohttp.ClientTimeout(total=min(timeouts) if timeouts else None)
        self.suspect_s = suspect_s
        self._clock = clock
        #: node -> monotonic time until which it is tried last (see the module essay)
        self.suspects: dict[str, float] = {}

    def _suspect(self, node: str) -> None:
        self.suspects[node] = self._clock() + self.suspect_s

    def _order(self, candidates: list[str]) -> list[str]:
        """``candidates`` with the nodes still suspect moved to the end (stable)."""
        if not self.suspects:
            return candidates
        now = self._clock()
        for node, until in list(self.suspects.items()):
            if until <= now:
                del self.suspects[node]
        return sorted(candidates, key=lambda n: n in self.suspects)

    async def __aenter__(self) -> StoreClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- discovery -------------------------------------------------------------------

    async def discover(self) -> str:
        """Ask every node who it is; remember and return the primary's address."""
        reports = await asyncio.gather(*(self._status(n) for n in self.nodes))
        primaries = [r for r in reports if r and r.get("writable")]
        if not primaries:
            self.primary = None
            raise StoreError("no writable primary among " + ", ".join(self.nodes), 503)
        best = max(primaries, key=lambda r: r["epoch"])
        self.primary = best["api_addr"]
        return self.primary

    async def _status(self, node: str) -> dict[str, Any] | None:
        try:
            async with self._http().get(f"http://{node}/status", timeout=self._status_timeout) as r:
                return (await r.json())["scalelab"]
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not isinstance(exc, aiohttp.ClientResponseError):
                self._suspect(node)
            return None
        except (KeyError, ValueError):
            return None

    # -- writes ----------------------------------------------------------------------

    async def execute(
        self, statements: Sequence[Statement], *, transaction: bool = False
    ) -> Answer:
        """Run write statements on the primary; ``Answer.lsn`` is the write's position."""
        query = "?transaction" if transaction else ""
        body = orjson.dumps(list(statements))
        for attempt in range(2):
            primary = self.primary or await self.discover()
            try:
                return await self._post(primary, f"/db/execute{query}", body)
            except _NotRun:
                self.primary = None  # it moved: find it again, then retry once
                if attempt == 1:
                    raise StoreError(
                        f"no primary accepted the write (tried {primary})", 503
                    ) from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.primary = None  # the next call looks for the primary again
                self._suspect(primary)
                raise StoreError(f"write outcome unknown ({primary}): {exc!r}") from None
        raise AssertionError("unreachable")

    # -- reads -----------------------------------------------------------------------

    async def query(
        self,
        statements: Sequence[Statement],
        *,
        level: str = "none",
        min_lsn: int | None = None,
        freshness: str | None = None,
    ) -> Answer:
        """Run read statements; ``level=none`` spreads them over every node."""
        params = f"?level={level}"
        if min_lsn:
            params += f"&min_lsn={min_lsn}"
        if freshness:
            params += f"&freshness={freshness}"
        body = orjson.dumps(list(statements))
        if level != "none":
            primary = self.primary or await self.discover()
            candidates = [primary]
        else:
            start = next(self._round_robin)
            candidates = self._order(self.nodes[start:] + self.nodes[:start])
        last_error: Exception | None = None
        for node in candidates:
            try:
                return await self._post(node, f"/db/query{params}", body)
            except _Unreachable as exc:  # reads are safe to try elsewhere
                last_error = exc
                self._suspect(node)
            except (_NotRun, StoreError) as exc:
                last_error = exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                last_error = exc
                self._suspect(node)
        raise StoreError(f"no node answered the read: {last_error}", 503)

    # -- one request -----------------------------------------------------------------

    async def _post(self, node: str, path: str, body: bytes) -> Answer:
        try:
            async with self._http().post(
                f"http://{node}{path}", data=body, timeout=self._timeout,
                headers={"Content-Type": "application/json"},
            ) as response:  # fmt: skip
                payload = await response.read()
                if response.status == 503:
                    raise _NotRun(payload.decode(errors="replace"))
                if response.status != 200:
                    raise StoreError(payload.decode(errors="replace")[:500], response.status)
                doc = orjson.loads(payload)
                lsn = response.headers.get(LSN_HEADER)
                if "error" in doc:
                    raise StoreError(str(doc["error"]), response.status)
                return Answer(doc["results"], node, int(lsn) if lsn else None)
        except aiohttp.ClientConnectorError as exc:
            raise _Unreachable(str(exc)) from None
        except orjson.JSONDecodeError:
            raise StoreError(f"{node} answered something that is not JSON") from None


class _NotRun(Exception):
    """The request certainly did not execute: safe to send elsewhere."""


class _Unreachable(_NotRun):
    """Not run because the node could not be connected to at all (down, or no listener)."""
