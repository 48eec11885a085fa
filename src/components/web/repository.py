"""Cache-aside over the user store: the policy, written once for every cache and database.

Cache-aside (also "lazy loading"), the pattern the chapter describes for its cache tier:

- *read*: ask the cache; on a hit, done. On a miss, read the database, put the encoded
  document in the cache with a TTL, and answer;
- *write*: write the database first, then delete the cached copy (not update it: a
  delete cannot leave a newer value overwritten by an older one when two writers race,
  and the next read repopulates it).

What it does not solve, stated plainly: between a reader's database read and its cache
fill, a writer may commit and delete; the reader then caches the old value until the TTL
ends. That window is small and bounded by ``ttl_s``; closing it needs leases (as in
Facebook's memcache paper, NSDI 2013), which a later stage may add.

The cache holds the *encoded* JSON bytes, so a hit is answered without touching the
database or the JSON encoder. Every database call is counted here by kind (read or
write), and every cache lookup as a hit or a miss; the load generator's report turns
those counters into "db queries/s" and "cache hit ratio".
"""

from __future__ import annotations

from dataclasses import dataclass

from components.common.metrics import Counter

from .cache import Cache, CacheUnavailable
from .protocol import encode_user
from .storage import UserStore


def cache_key(user_id: int) -> str:
    return f"user:{user_id}"


@dataclass
class RepositoryMetrics:
    db_reads: object  # counter children: .inc()
    db_writes: object
    cache_hits: object
    cache_misses: object
    cache_errors: object

    @classmethod
    def from_counters(
        cls, db_queries: Counter, hits: Counter, misses: Counter, errors: Counter
    ) -> RepositoryMetrics:
        return cls(db_queries.labels("read"), db_queries.labels("write"), hits, misses, errors)


class UserRepository:
    def __init__(
        self, store: UserStore, cache: Cache, ttl_s: float, metrics: RepositoryMetrics
    ) -> None:
        self.store = store
        self.cache = cache
        self.ttl_s = ttl_s
        self.metrics = metrics

    async def get_json(self, user_id: int) -> bytes | None:
        """The user's encoded document, or None when there is no such user."""
        key = cache_key(user_id)
        try:
            cached = await self.cache.get(key)
        except CacheUnavailable:
            self.metrics.cache_errors.inc()
            cached = None
        if cached is not None:
            self.metrics.cache_hits.inc()
            return cached
        self.metrics.cache_misses.inc()
        self.metrics.db_reads.inc()
        user = await self.store.get(user_id)
        if user is None:
            # Absence is not cached: a user created a moment later must be visible at once.
            return None
        encoded = encode_user(user_id, user)
        try:
            await self.cache.set(key, encoded, self.ttl_s)
        except CacheUnavailable:
            self.metrics.cache_errors.inc()
        return encoded

    async def create(self, user: dict) -> int:
        self.metrics.db_writes.inc()
        user_id = await self.store.create(user)
        # A cache entry under a brand-new id could only be a leftover; clear it anyway.
        await self._invalidate(user_id)
        return user_id

    async def replace(self, user_id: int, user: dict) -> bool:
        self.metrics.db_writes.inc()
        found = await self.store.replace(user_id, user)
        await self._invalidate(user_id)
        return found

    async def delete(self, user_id: int) -> bool:
        self.metrics.db_writes.inc()
        found = await self.store.delete(user_id)
        await self._invalidate(user_id)
        return found

    async def _invalidate(self, user_id: int) -> None:
        # A delete that cannot reach the cache leaves a stale copy there until its TTL:
        # the write itself succeeded, so we count the failure rather than fail the request.
        try:
            await self.cache.delete(cache_key(user_id))
        except CacheUnavailable:
            self.metrics.cache_errors.inc()
