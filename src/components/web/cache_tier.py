"""``--cache memcached:HOST:PORT,...``: the shared cache tier (stage 5 of the journey).

An in-process cache is private to one web server: with several behind a load balancer,
each holds its own copy, a write through one leaves the others stale, and every copy
costs memory N times. A cache *tier* is shared: every web server asks the same
memcached nodes, a write deletes the one copy, and the cache grows by adding nodes.

Keys are placed with consistent hashing (``components.cache.client``: libmemcached's
ketama ring), so adding or losing a node moves only that node's share of the keys.

A dead node is the failure this module exists to contain. The client gives every call a
deadline (``timeout_s``, short: a cache answer that takes longer than the database is
worth nothing) and, after ``failure_limit`` failures in a row, takes the node off the
ring for ``retry_after_s``, so its keys move to the live nodes as misses. Every failure
is raised here as ``CacheUnavailable``: the repository serves the read from the database
and counts ``scalelab_web_cache_errors_total``; the user sees latency, never an error.

TTL: memcached's expiry is whole seconds (``exptime``); a fractional TTL rounds up, and
a TTL of 0 here means "cache nothing" (as for the local cache), not memcached's "never
expire", so ``set`` then stores nothing.
"""

from __future__ import annotations

import math

from components.cache.client import CacheClient, CacheError

from .cache import Cache, CacheUnavailable

DEFAULT_TIMEOUT_S = 0.25
DEFAULT_RETRY_AFTER_S = 5.0
#: memcached reads an exptime above 30 days as a Unix time, not a duration.
MAX_TTL_S = 30 * 24 * 3600


def parse_nodes(text: str) -> list[str]:
    """``HOST:PORT,HOST:PORT`` into a list; ValueError naming the bad part."""
    nodes = [part.strip() for part in text.split(",")]
    for node in nodes:
        host, sep, port = node.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"memcached node must be HOST:PORT, got {node!r}")
    if len(set(nodes)) != len(nodes):
        raise ValueError(f"memcached nodes listed twice in {text!r}")
    return nodes


class MemcachedCache(Cache):
    def __init__(self, nodes: list[str], *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 retry_after_s: float = DEFAULT_RETRY_AFTER_S) -> None:  # fmt: skip
        self.nodes = nodes
        self.client = CacheClient(nodes, timeout_s=timeout_s, retry_after_s=retry_after_s)

    async def get(self, key: str) -> bytes | None:
        try:
            return await self.client.get(key)
        except CacheError as exc:
            raise CacheUnavailable(str(exc)) from None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        try:
            await self.client.set(key, value, exptime=min(MAX_TTL_S, math.ceil(ttl_s)))
        except CacheError as exc:
            raise CacheUnavailable(str(exc)) from None

    async def delete(self, key: str) -> None:
        try:
            await self.client.delete(key)
        except CacheError as exc:
            raise CacheUnavailable(str(exc)) from None

    async def clear(self) -> None:
        try:
            await self.client.flush_all()
        except CacheError as exc:
            raise CacheUnavailable(str(exc)) from None

    async def close(self) -> None:
        await self.client.close()

    def stats(self) -> dict[str, float]:
        return {"nodes": len(self.nodes), "nodes_down": len(self.client.dead_nodes)}


def open_memcached(rest: str) -> Cache:
    return MemcachedCache(parse_nodes(rest))
