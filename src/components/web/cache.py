"""The cache as the web tier sees it: get, set with a TTL, delete. Two implementations now.

``Cache`` is deliberately memcached-shaped (opaque bytes under string keys, a TTL per
value, no enumeration), so that ``--cache memcached:HOST:PORT,...`` (``cache_tier.py``) is
one more entry in ``BACKENDS`` and no handler changes. The cache-aside *policy* (read
through on a miss, delete on write, count hits and misses) lives in ``repository.py``,
once, for every backend.

- ``--cache local:MB``: ``LocalCache``, an in-process byte-bounded LRU (``lru.py``) on
  the monotonic clock. Fastest possible (no network, no serialisation beyond the JSON we
  already produce), but private to one process: with two web servers, a write through one
  leaves the other's copy stale until its TTL runs out. That is the chapter's reason for
  a shared cache tier.
- ``--cache none``: ``NoCache``, every read goes to the database; the baseline that
  shows what the cache buys.

The methods are coroutines even for the local cache so that a networked backend fits
the same call sites. A networked backend raises ``CacheUnavailable`` when a node is down;
the repository then treats the lookup as a miss and serves from the database: a cache
outage costs latency and database load, never an error to the user.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable

from .lru import LruCache

MAX_LOCAL_CACHE_MB = 16_384


class CacheUnavailable(Exception):
    """The cache could not answer (node down, timeout); callers fall back to the database."""


class Cache(abc.ABC):
    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    @abc.abstractmethod
    async def delete(self, key: str) -> None: ...

    async def clear(self) -> None:
        """Drop everything (an admin operation; optional for shared backends)."""
        return None

    async def close(self) -> None:
        """Release connections; nothing to do for in-process caches."""
        return None

    def stats(self) -> dict[str, float]:
        """Figures worth exporting as gauges (bytes used, entries, evictions)."""
        return {}


class LocalCache(Cache):
    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.lru = LruCache(max_bytes)
        self._clock = clock

    async def get(self, key: str) -> bytes | None:
        return self.lru.get(key, self._clock())

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self.lru.set(key, value, self._clock(), ttl_s)

    async def delete(self, key: str) -> None:
        self.lru.delete(key)

    async def clear(self) -> None:
        self.lru.clear()

    def stats(self) -> dict[str, float]:
        return {
            "used_bytes": self.lru.used_bytes,
            "limit_bytes": self.lru.max_bytes,
            "entries": len(self.lru),
            "evictions": self.lru.evictions,
        }


class NoCache(Cache):
    async def get(self, key: str) -> bytes | None:
        return None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        return None

    async def delete(self, key: str) -> None:
        return None


def _local(rest: str) -> Cache:
    try:
        megabytes = float(rest)
    except ValueError:
        raise ValueError(f"local cache size must be a number of MB, got {rest!r}") from None
    if not 0 < megabytes <= MAX_LOCAL_CACHE_MB:
        raise ValueError(f"local cache size must be in (0, {MAX_LOCAL_CACHE_MB}] MB")
    return LocalCache(int(megabytes * 1024 * 1024))


def _none(rest: str) -> Cache:
    if rest:
        raise ValueError("'none' takes no argument")
    return NoCache()


def _memcached(rest: str) -> Cache:
    from .cache_tier import open_memcached  # the cache tier's client, only when used

    return open_memcached(rest)


#: scheme -> factory(rest_of_spec).
BACKENDS: dict[str, Callable[[str], Cache]] = {
    "local": _local,
    "none": _none,
    "memcached": _memcached,  # cache_tier.py: the shared tier, ketama hashing
}


def open_cache(spec: str) -> Cache:
    """``local:MB`` or ``none``; raises ValueError with what is accepted."""
    scheme, _, rest = spec.partition(":")
    factory = BACKENDS.get(scheme)
    if factory is None:
        raise ValueError(f"expected local:MB, memcached:HOST:PORT,... or none, got {spec!r}")
    return factory(rest)
