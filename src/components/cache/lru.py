"""A byte-bounded LRU cache with memcached's expiry rules: the data structure of the tier.

A cache tier earns its keep by holding the hot part of the data in memory; it stays
safe by never holding more than it was given (``-m``). So every item is *charged* its
size, and when a new item does not fit, the least recently used items are evicted until
it does, exactly the policy memcached's LRU follows (memcached segments its LRU into
hot/warm/cold and bumps lazily; the observable contract, "recently used survives, the
coldest goes first", is the same). Each item is charged as memcached charges it
(``items.c``, ``ITEM_ntotal``): a 48-byte header, the key and its NUL, the value and its
CRLF, 8 bytes of CAS, and 4 bytes of client flags when they are non-zero. Python needs
more memory than that per item; the bench measures the real RSS, this class keeps the
accounting memcached users expect to read from ``stats``.

Time is passed in (``now``, Unix seconds), never read: the same code runs under the
server's clock, a test's fake clock, or a benchmark's constant. Expiry follows
protocol.txt "Expiration times": ``0`` never expires; up to 30 days is relative to now;
larger is an absolute Unix time; negative means already expired. Expired items are
removed lazily when touched, and by ``reclaim_expired``, which the server calls in the
background so that memory held by expired but never-touched items comes back (memcached's
LRU crawler does the same job). It works off a heap of (expiry, cas, key): an entry whose
item has since changed (another CAS) is simply skipped.

Every stored version of an item gets a fresh 64-bit CAS unique from one counter, the
token ``gets``/``cas`` use for optimistic concurrency.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict

__all__ = ["Item", "LruCache", "absolute_expiry", "item_size", "MAX_RELATIVE_EXPTIME_S"]

#: protocol.txt: an exptime above 30 days is an absolute Unix time, not an offset.
MAX_RELATIVE_EXPTIME_S = 60 * 60 * 24 * 30
#: memcached's item header (``sizeof(item)`` on 64-bit) and the CAS field after it.
ITEM_HEADER_BYTES = 48
CAS_BYTES = 8
#: An exptime meaning "already expired": non-zero and before any real ``now``.
EXPIRED = -1

# Item state bits (one small int instead of three attributes: memory per item matters).
FETCHED = 1  # read at least once since stored (mg h, expired_unfetched statistics)
STALE = 2  # invalidated by md I / ms I: served with the X flag until replaced
WIN_SENT = 4  # one client has been told it "won" the right to recache (mg N/R, W flag)


def absolute_expiry(exptime: int, now: float) -> float:
    """protocol.txt "Expiration times": the Unix time an item expires, or 0 for never."""
    if exptime == 0:
        return 0
    if exptime < 0:
        return EXPIRED
    if exptime <= MAX_RELATIVE_EXPTIME_S:
        return now + exptime
    # An absolute time already in the past expires the item at once, as memcached does.
    return exptime if exptime > now else EXPIRED


def item_size(key: bytes, value: bytes, flags: int) -> int:
    """Bytes charged against ``-m`` for one item, as memcached's ITEM_ntotal counts."""
    return ITEM_HEADER_BYTES + len(key) + 1 + len(value) + 2 + CAS_BYTES + (4 if flags else 0)


class Item:
    """One cached value and its metadata. Slotted: a million of these are normal."""

    __slots__ = ("value", "flags", "exptime", "cas", "atime", "bits")

    def __init__(self, value: bytes, flags: int, exptime: float, cas: int, now: float) -> None:
        self.value = value
        self.flags = flags
        self.exptime = exptime
        self.cas = cas
        self.atime = now
        self.bits = 0

    def ttl(self, now: float) -> int:
        """Seconds left, -1 for "never expires" (meta ``t`` flag)."""
        if not self.exptime:
            return -1
        left = self.exptime - now
        return max(0, int(left + 0.999999))

    def __repr__(self) -> str:
        return f"Item(value={self.value[:32]!r}, flags={self.flags}, cas={self.cas})"


class LruCache:
    """Items by key, least recently used first, within ``max_bytes``.

    ``get``/``peek`` return live items only (expired or flushed ones are removed on
    the way). ``set`` always stores (evicting as needed) and returns the new item, or
    None when the item alone is larger than the whole cache or than ``max_item_bytes``.
    Conditional storage (add, cas, ...) is built from these by the command layer.
    """

    def __init__(self, max_bytes: int, max_item_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_item_bytes = max_item_bytes if max_item_bytes is not None else max_bytes
        self._items: OrderedDict[bytes, Item] = OrderedDict()
        self._expiries: list[tuple[float, int, bytes]] = []
        self.bytes = 0
        self._next_cas = 0
        #: flush_all with a delay: items last updated at or before this time are dead
        #: once ``now`` reaches it (protocol.txt "flush_all"). 0 when none pending.
        self.oldest_live: float = 0
        # memcached's statistics of the same names.
        self.evictions = 0
        self.evicted_unfetched = 0
        self.reclaimed = 0
        self.expired_unfetched = 0
        self.total_items = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: bytes) -> bool:
        return key in self._items

    def keys(self):
        """Keys from least to most recently used (for tests and debugging)."""
        return list(self._items)

    def next_cas(self) -> int:
        self._next_cas += 1
        return self._next_cas

    # -- lookups

    def get(self, key: bytes, now: float) -> Item | None:
        """The live item for ``key``, bumped to most recently used, or None."""
        item = self._items.get(key)
        if item is None:
            return None
        if (item.exptime and item.exptime <= now) or (
            self.oldest_live and item.atime <= self.oldest_live <= now
        ):
            self._unlink(key, item, expired=True)
            return None
        self._items.move_to_end(key)
        return item

    def peek(self, key: bytes, now: float) -> Item | None:
        """Like ``get`` without the LRU bump (meta ``u`` flag, ``me``)."""
        item = self._items.get(key)
        if item is None:
            return None
        if (item.exptime and item.exptime <= now) or (
            self.oldest_live and item.atime <= self.oldest_live <= now
        ):
            self._unlink(key, item, expired=True)
            return None
        return item

    def peek_oldest(self) -> Item | None:
        """The least recently used item (``stats items`` age), without touching it."""
        for item in self._items.values():
            return item
        return None

    # -- updates

    def set(self, key: bytes, value: bytes, flags: int, exptime: float, now: float,
            cas: int = 0) -> Item | None:  # fmt: skip
        """Store ``value`` under ``key`` (``exptime`` absolute, see ``absolute_expiry``)."""
        size = item_size(key, value, flags)
        if size > self.max_item_bytes or size > self.max_bytes:
            return None
        items = self._items
        old = items.pop(key, None)
        if old is not None:
            self.bytes -= item_size(key, old.value, old.flags)
        self.bytes += size
        if self.bytes > self.max_bytes:
            self._evict_for_room()
        if not cas:
            self._next_cas += 1
            cas = self._next_cas
        item = Item(value, flags, exptime, cas, now)
        items[key] = item
        self.total_items += 1
        if exptime > 0:
            heapq.heappush(self._expiries, (exptime, cas, key))
            if len(self._expiries) > 2 * len(items) + 1024:
                self._rebuild_expiries()
        return item

    def replace_value(self, key: bytes, item: Item, value: bytes, now: float) -> Item | None:
        """New value for a live item, keeping flags and expiry (append, prepend, incr)."""
        stored = self.set(key, value, item.flags, item.exptime, now)
        if stored is not None:
            stored.bits = item.bits & ~(STALE | WIN_SENT)
        return stored

    def touch(self, key: bytes, item: Item, exptime: float) -> None:
        item.exptime = exptime
        if exptime > 0:
            heapq.heappush(self._expiries, (exptime, item.cas, key))

    def bump_cas(self, item: Item) -> int:
        """A new CAS unique for an item changed in place (md I)."""
        self._next_cas += 1
        item.cas = self._next_cas
        return item.cas

    def delete(self, key: bytes) -> bool:
        item = self._items.pop(key, None)
        if item is None:
            return False
        self.bytes -= item_size(key, item.value, item.flags)
        return True

    def flush(self, now: float, delay: int = 0) -> None:
        """flush_all: drop everything now, or everything not updated after ``delay``."""
        if delay <= 0:
            self._items.clear()
            self._expiries.clear()
            self.bytes = 0
            self.oldest_live = 0
        else:
            when = absolute_expiry(delay, now)
            self.oldest_live = when if when > 0 else now

    # -- memory and time management

    def _unlink(self, key: bytes, item: Item, expired: bool) -> None:
        del self._items[key]
        self.bytes -= item_size(key, item.value, item.flags)
        if expired:
            self.reclaimed += 1
            if not item.bits & FETCHED:
                self.expired_unfetched += 1

    def _evict_for_room(self) -> None:
        items = self._items
        while self.bytes > self.max_bytes and items:
            key, item = items.popitem(last=False)
            self.bytes -= item_size(key, item.value, item.flags)
            self.evictions += 1
            if not item.bits & FETCHED:
                self.evicted_unfetched += 1

    def reclaim_expired(self, now: float, limit: int = 1000) -> int:
        """Remove up to ``limit`` items whose expiry has passed; returns how many."""
        heap = self._expiries
        items = self._items
        removed = 0
        examined = 0
        while heap and heap[0][0] <= now and examined < limit:
            exptime, cas, key = heapq.heappop(heap)
            examined += 1
            item = items.get(key)
            # Skip entries for items replaced or re-touched since (other cas or expiry).
            if item is not None and item.cas == cas and item.exptime == exptime:
                self._unlink(key, item, expired=True)
                removed += 1
        return removed

    def _rebuild_expiries(self) -> None:
        self._expiries = [
            (it.exptime, it.cas, k) for k, it in self._items.items() if it.exptime > 0
        ]
        heapq.heapify(self._expiries)
