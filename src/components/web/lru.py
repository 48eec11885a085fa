"""A byte-bounded least-recently-used cache with per-entry expiry, clock passed in.

This is the web tier's in-process cache (``--cache local:MB``) and the memory behind
its static-file cache. It is the simplest cache that is still honest about the two
things every cache must bound:

- *Memory.* The budget is in bytes, not entries, because entries differ in size (a user
  document is a few hundred bytes, a static asset may be megabytes). Each entry is
  charged its value's size plus its key plus ``ENTRY_OVERHEAD_BYTES`` for the
  bookkeeping, roughly what CPython spends on the dict slot, the entry object and the
  key string. Inserting evicts from the cold end until the new entry fits; an entry
  larger than the whole budget is refused rather than emptying the cache for nothing.
- *Staleness.* Every entry carries an absolute expiry time. Cache-aside (see
  ``repository.py``) deletes on write, and the TTL bounds how long a value can stay wrong
  when a delete is lost or another writer bypassed us.

Recency is an ``OrderedDict``: a hit moves the key to the hot end (``move_to_end``), the
victim is always at the cold end (``popitem(last=False)``); both are O(1). Expired
entries are dropped lazily when looked up, or when they reach the cold end and get
evicted; there is no sweeper thread, so the structure stays pure and deterministic. The
clock is a parameter (``now``, seconds on any monotonic scale) so tests drive time by
hand. memcached makes the same choices (lazy expiry, LRU eviction per slab class).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

#: Bytes charged per entry on top of key and value: dict slot, entry tuple, key object.
ENTRY_OVERHEAD_BYTES = 96


def entry_size(key: str, value: Any, size: int | None = None) -> int:
    """Bytes charged for one entry; ``size`` overrides ``len(value)`` for non-bytes values."""
    return ENTRY_OVERHEAD_BYTES + len(key) + (len(value) if size is None else size)


class LruCache:
    """``get(key, now)``, ``set(key, value, now, ttl_s)``, ``delete(key)`` within ``max_bytes``."""

    __slots__ = ("max_bytes", "used_bytes", "evictions", "expirations", "_entries")

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self.evictions = 0
        self.expirations = 0
        # key -> (value, expires_at, charged_bytes)
        self._entries: OrderedDict[str, tuple[Any, float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str, now: float) -> Any | None:
        """The value, or None when absent or expired at ``now`` (an expired entry is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            self._remove(key)
            self.expirations += 1
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def set(
        self,
        key: str,
        value: Any,
        now: float,
        ttl_s: float | None = None,
        size: int | None = None,
    ) -> bool:
        """Store ``value`` until ``now + ttl_s`` (forever when None); False if it cannot fit.

        A refused value also removes any older value under the same key: after a failed
        ``set`` the cache must not keep answering with what the caller just replaced.
        """
        charged = entry_size(key, value, size)
        if key in self._entries:
            self._remove(key)
        if charged > self.max_bytes:
            return False
        if ttl_s is not None and ttl_s <= 0:
            return False
        while self.used_bytes + charged > self.max_bytes:
            _, (_, _, victim_bytes) = self._entries.popitem(last=False)
            self.used_bytes -= victim_bytes
            self.evictions += 1
        expires_at = math.inf if ttl_s is None else now + ttl_s
        self._entries[key] = (value, expires_at, charged)
        self.used_bytes += charged
        return True

    def delete(self, key: str) -> bool:
        """Forget ``key``; True if it was present (expired or not)."""
        if key not in self._entries:
            return False
        self._remove(key)
        return True

    def clear(self) -> None:
        self._entries.clear()
        self.used_bytes = 0

    def recency_order(self) -> list[str]:
        """Keys from coldest to hottest (for tests and debugging)."""
        return list(self._entries)

    def _remove(self, key: str) -> None:
        _, _, charged = self._entries.pop(key)
        self.used_bytes -= charged
