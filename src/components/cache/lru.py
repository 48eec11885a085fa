"""A byte-bounded cache with LRU-like eviction and memcached's expiry rules.

A cache tier earns its keep by holding the hot part of the data in memory; it stays
safe by never holding more than it was given (``-m``). So every item is *charged* its
size, and when a new item does not fit, cold items are evicted until it does.

**Eviction is CLOCK, "second chance" LRU.** Items sit in a plain dict, in insertion
order. A hit only sets the item's ACTIVE bit (memcached's ITEM_ACTIVE). To make room, a
clock hand walks the items oldest first: an ACTIVE item loses its bit and goes to the
back of the line, an inactive one is evicted. Recently used items survive, the coldest
go first, as with exact LRU, but a hit moves nothing: memcached approximates LRU the same
way (its segmented LRU with the ACTIVE flag), and here it also saves the ~65 bytes per
item an ``OrderedDict``'s linked list would cost over a plain dict. The hand walks a
snapshot of the keys (``list(dict)``), taken when the previous one is used up, because a
dict cannot be iterated while it changes.

**One item, one bytes object.** A million items is a normal load, so the per-item cost
decides how much a node holds. A Python object per item (with its CAS as another int
object) costs ~110 bytes beyond the key and value; instead, each item is stored the way
memcached 1.4 laid it out in its slab chunk: a fixed binary header, then the ASCII
suffix `` <flags> <bytes>\\r\\n``, then the value and its ``\\r\\n``::

    | cas u64 | exptime i64 | atime i64 | bits u8 | " 0 100\\r\\n" | value | "\\r\\n" |

The suffix is exactly the tail of a ``VALUE`` reply line, so a plain ``get`` answers with
``b"VALUE " + key`` and a slice of the entry: no formatting on the hot path. ``Item`` is
the decoded view the less frequent commands work with; they write changes back with
``update``. Each item is charged what memcached 1.4 charged: a 48-byte header, 8 bytes
of CAS, the key and its NUL, the suffix, the value and its CRLF (``item_size``).

**Access time, like memcached, is coarse.** A hit rewrites the item's header (last
access time, FETCHED and ACTIVE bits) only when a bit is missing or the access time is
older than ``BUMP_INTERVAL_S`` (memcached's ITEM_UPDATE_INTERVAL, 60 s), so most hits
rebuild nothing.

**Time is passed in** (``now``, Unix seconds), never read. Expiry follows protocol.txt
"Expiration times": 0 never expires; up to 30 days is relative; larger is an absolute
Unix time; negative means already expired. Expired items are removed lazily when
touched, and by ``reclaim_expired`` (the server's background job, memcached's LRU
crawler), which works off a heap of (expiry, cas, key); an entry whose item has changed
since (another CAS or expiry) is skipped.

Every stored version of an item gets a fresh 64-bit CAS unique from one counter, the
token ``gets``/``cas`` use for optimistic concurrency.
"""

from __future__ import annotations

import heapq
import struct

__all__ = ["Item", "LruCache", "absolute_expiry", "item_size", "MAX_RELATIVE_EXPTIME_S"]

#: protocol.txt: an exptime above 30 days is an absolute Unix time, not an offset.
MAX_RELATIVE_EXPTIME_S = 60 * 60 * 24 * 30
#: memcached's item header (``sizeof(item)`` on 64-bit) and the CAS field after it.
ITEM_HEADER_BYTES = 48
CAS_BYTES = 8
#: An exptime meaning "already expired": non-zero and before any real ``now``.
EXPIRED = -1
#: memcached's ITEM_UPDATE_INTERVAL: rewrite an item's access time at most this often.
BUMP_INTERVAL_S = 60

# Item state bits.
FETCHED = 1  # read at least once since stored (mg h, expired_unfetched statistics)
STALE = 2  # invalidated by md I / ms I: served with the X flag until replaced
WIN_SENT = 4  # one client has been told it "won" the right to recache (mg N/R, W flag)
ACTIVE = 8  # hit since the clock hand last passed: spared once by eviction
_HIT_BITS = FETCHED | ACTIVE
#: Offset of the bits byte in an entry (after cas, exptime and atime).
_BITS_AT = 24

_HEADER = struct.Struct("<QqqB")  # cas, exptime, atime, bits
HEADER_BYTES = _HEADER.size
_pack = _HEADER.pack
_unpack = _HEADER.unpack_from


def absolute_expiry(exptime: int, now: float) -> int:
    """protocol.txt "Expiration times": the Unix time an item expires, or 0 for never."""
    if exptime == 0:
        return 0
    if exptime < 0:
        return EXPIRED
    if exptime <= MAX_RELATIVE_EXPTIME_S:
        return int(now) + exptime
    # An absolute time already in the past expires the item at once, as memcached does.
    return exptime if exptime > now else EXPIRED


def _suffix(flags: int, length: int) -> bytes:
    return b" %d %d\r\n" % (flags, length)


def item_size(key: bytes, value: bytes, flags: int) -> int:
    """Bytes charged against ``-m`` for one item, as memcached 1.4's ITEM_ntotal counts."""
    return (ITEM_HEADER_BYTES + CAS_BYTES + len(key) + 1 + len(_suffix(flags, len(value)))
            + len(value) + 2)  # fmt: skip


#: What ``item_size`` adds to the key, suffix and value: header, CAS, key NUL, CRLF.
_ITEM_FIXED_BYTES = ITEM_HEADER_BYTES + CAS_BYTES + 1 + 2


def _charged(key: bytes, entry: bytes) -> int:
    return ITEM_HEADER_BYTES + CAS_BYTES + len(key) + 1 + len(entry) - HEADER_BYTES


class Item:
    """A decoded view of one stored entry; changes reach the cache through ``update``."""

    __slots__ = ("value", "flags", "exptime", "cas", "atime", "bits")

    def __init__(self, value: bytes, flags: int, exptime: int, cas: int, atime: int,
                 bits: int = 0) -> None:  # fmt: skip
        self.value = value
        self.flags = flags
        self.exptime = exptime
        self.cas = cas
        self.atime = atime
        self.bits = bits

    @classmethod
    def decode(cls, entry: bytes) -> Item:
        cas, exptime, atime, bits = _unpack(entry)
        newline = entry.index(b"\n", HEADER_BYTES)
        _, flags, _length = entry[HEADER_BYTES : newline - 1].split(b" ")
        return cls(entry[newline + 1 : -2], int(flags), exptime, cas, atime, bits)

    def encode(self) -> bytes:
        return (_pack(self.cas, self.exptime, self.atime, self.bits)
                + _suffix(self.flags, len(self.value)) + self.value + b"\r\n")  # fmt: skip

    def ttl(self, now: float) -> int:
        """Seconds left, -1 for "never expires" (meta ``t`` flag)."""
        if not self.exptime:
            return -1
        return max(0, int(self.exptime - now + 0.999999))

    def __repr__(self) -> str:
        return f"Item(value={self.value[:32]!r}, flags={self.flags}, cas={self.cas})"


class LruCache:
    """Items by key, within ``max_bytes``, evicted by a CLOCK hand (see the module doc).

    ``get``/``peek`` return live items only (expired or flushed ones are removed on the
    way). ``set`` always stores (evicting as needed) and returns the new item, or None
    when the item alone is larger than the cache or than ``max_item_bytes``. Conditional
    storage (add, cas, ...) is built from these by the command layer.
    """

    # Slots: the hot paths read several of these per request, and a slot is one load.
    __slots__ = ("max_bytes", "max_item_bytes", "_items", "_hand", "_hand_at", "_expiries",
                 "bytes", "_next_cas", "oldest_live", "evictions", "evicted_unfetched",
                 "reclaimed", "expired_unfetched", "total_items")  # fmt: skip

    def __init__(self, max_bytes: int, max_item_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_item_bytes = max_item_bytes if max_item_bytes is not None else max_bytes
        self._items: dict[bytes, bytes] = {}
        #: the clock hand: a snapshot of keys, oldest first, and the position in it.
        self._hand: list[bytes] = []
        self._hand_at = 0
        self._expiries: list[tuple[int, int, bytes]] = []
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
        """Keys in the order the clock hand will visit them (for tests and debugging)."""
        return list(self._items)

    def entries(self):
        """(key, charged bytes) pairs, for tests that check the accounting."""
        return [(k, _charged(k, e)) for k, e in self._items.items()]

    def next_cas(self) -> int:
        self._next_cas += 1
        return self._next_cas

    # -- lookups

    def _live(self, key: bytes, now: float) -> bytes | None:
        entry = self._items.get(key)
        if entry is None:
            return None
        _, exptime, atime, bits = _unpack(entry)
        if (exptime and exptime <= now) or (self.oldest_live and atime <= self.oldest_live <= now):
            self._unlink(key, entry, bits, expired=True)
            return None
        return entry

    def _access(self, key: bytes, entry: bytes, now: float) -> bytes:
        """Record a hit: set FETCHED and ACTIVE, refresh the access time once a minute."""
        cas, exptime, atime, bits = _unpack(entry)
        if bits & _HIT_BITS != _HIT_BITS or now - atime >= BUMP_INTERVAL_S:
            entry = _pack(cas, exptime, int(now), bits | _HIT_BITS) + entry[HEADER_BYTES:]
            self._items[key] = entry
        return entry

    def get_tail(self, key: bytes, now: float) -> bytes | None:
        """The hot path of ``get``: `` <flags> <bytes>\\r\\n<value>\\r\\n``, or None.

        ``_live`` and ``_access`` inlined: this runs once per key of every get."""
        items = self._items
        entry = items.get(key)
        if entry is None:
            return None
        cas, exptime, atime, bits = _unpack(entry)
        if (exptime and exptime <= now) or (self.oldest_live and atime <= self.oldest_live <= now):
            self._unlink(key, entry, bits, expired=True)
            return None
        if bits & _HIT_BITS != _HIT_BITS or now - atime >= BUMP_INTERVAL_S:
            entry = _pack(cas, exptime, int(now), bits | _HIT_BITS) + entry[HEADER_BYTES:]
            items[key] = entry
        return entry[HEADER_BYTES:]

    def get(self, key: bytes, now: float) -> Item | None:
        """The live item, as it was before this access (``h``/``l`` report that), or None.

        The access itself is recorded (the item is marked ACTIVE)."""
        entry = self._live(key, now)
        if entry is None:
            return None
        self._access(key, entry, now)
        return Item.decode(entry)

    def peek(self, key: bytes, now: float) -> Item | None:
        """Like ``get`` without recording an access (meta ``u`` flag, ``me``)."""
        entry = self._live(key, now)
        return None if entry is None else Item.decode(entry)

    def bump(self, key: bytes, item: Item, now: float) -> None:
        """Record an access for an item obtained with ``peek`` (and write its changes)."""
        item.bits |= _HIT_BITS
        item.atime = int(now)
        self.update(key, item)

    def peek_oldest(self) -> Item | None:
        """The oldest item in clock order (``stats items`` age), without touching it."""
        for entry in self._items.values():
            return Item.decode(entry)
        return None

    # -- updates

    def set(self, key: bytes, value: bytes, flags: int, exptime: int, now: float,
            cas: int = 0, bits: int = 0) -> Item | None:  # fmt: skip
        """Store ``value`` under ``key`` (``exptime`` absolute, see ``absolute_expiry``)."""
        cas = self.put(key, value, flags, exptime, now, cas, bits)
        return Item(value, flags, exptime, cas, int(now), bits) if cas else None

    def put(self, key: bytes, value: bytes, flags: int, exptime: int, now: float,
            cas: int = 0, bits: int = 0) -> int:  # fmt: skip
        """``set`` without building the ``Item``: the new CAS, or 0 when it did not fit."""
        suffix = _suffix(flags, len(value))
        size = _ITEM_FIXED_BYTES + len(key) + len(suffix) + len(value)  # == item_size()
        if size > self.max_item_bytes or size > self.max_bytes:
            return 0
        if not cas:
            self._next_cas += 1
            cas = self._next_cas
        now = int(now)
        entry = _pack(cas, exptime, now, bits) + suffix + value + b"\r\n"
        items = self._items
        old = items.pop(key, None)
        if old is not None:
            self.bytes -= _charged(key, old)
        self.bytes += size
        if self.bytes > self.max_bytes:
            self._evict_for_room()
        items[key] = entry
        self.total_items += 1
        if exptime > 0:
            heapq.heappush(self._expiries, (exptime, cas, key))
            if len(self._expiries) > 2 * len(items) + 1024:
                self._rebuild_expiries()
        return cas

    def update(self, key: bytes, item: Item) -> None:
        """Write an item's changed metadata (cas, exptime, atime, bits) back."""
        entry = self._items.get(key)
        if entry is None:
            return
        old_exptime = _unpack(entry)[1]
        self._items[key] = (
            _pack(item.cas, item.exptime, item.atime, item.bits) + entry[HEADER_BYTES:]
        )
        if item.exptime > 0 and item.exptime != old_exptime:
            heapq.heappush(self._expiries, (item.exptime, item.cas, key))
            if len(self._expiries) > 2 * len(self._items) + 1024:
                self._rebuild_expiries()  # repeated touches must not grow the heap forever

    def replace_value(self, key: bytes, item: Item, value: bytes, now: float,
                      cas: int = 0) -> Item | None:  # fmt: skip
        """New value for a live item, keeping flags and expiry (append, prepend, incr)."""
        return self.set(key, value, item.flags, item.exptime, now, cas,
                        bits=item.bits & ~(STALE | WIN_SENT))  # fmt: skip

    def touch(self, key: bytes, item: Item, exptime: int) -> None:
        item.exptime = exptime
        self.update(key, item)

    def delete(self, key: bytes) -> bool:
        entry = self._items.pop(key, None)
        if entry is None:
            return False
        self.bytes -= _charged(key, entry)
        return True

    def flush(self, now: float, delay: int = 0) -> None:
        """flush_all: drop everything now, or everything not updated after ``delay``."""
        if delay <= 0:
            self._items.clear()
            self._expiries.clear()
            self._hand, self._hand_at = [], 0
            self.bytes = 0
            self.oldest_live = 0
        else:
            when = absolute_expiry(delay, now)
            self.oldest_live = when if when > 0 else now

    # -- memory and time management

    def _unlink(self, key: bytes, entry: bytes, bits: int, expired: bool) -> None:
        del self._items[key]
        self.bytes -= _charged(key, entry)
        if expired:
            self.reclaimed += 1
            if not bits & FETCHED:
                self.expired_unfetched += 1

    def _evict_for_room(self) -> None:
        items = self._items
        while self.bytes > self.max_bytes and items:
            if self._hand_at >= len(self._hand):
                self._hand = list(items)  # a new lap: every key, oldest first
                self._hand_at = 0
            key = self._hand[self._hand_at]
            self._hand_at += 1
            entry = items.get(key)
            if entry is None:
                continue  # deleted since the snapshot
            bits = entry[_BITS_AT]
            del items[key]
            if bits & ACTIVE:
                # Second chance: drop the bit, go to the back of the line.
                items[key] = entry[:_BITS_AT] + bytes((bits & ~ACTIVE,)) + entry[_BITS_AT + 1 :]
                continue
            self.bytes -= _charged(key, entry)
            self.evictions += 1
            if not bits & FETCHED:
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
            entry = items.get(key)
            if entry is None:
                continue
            current_cas, current_exptime, _, bits = _unpack(entry)
            # Skip entries for items replaced or re-touched since (other cas or expiry).
            if current_cas == cas and current_exptime == exptime:
                self._unlink(key, entry, bits, expired=True)
                removed += 1
        return removed

    def _rebuild_expiries(self) -> None:
        heap = []
        for key, entry in self._items.items():
            cas, exptime, _, _ = _unpack(entry)
            if exptime > 0:
                heap.append((exptime, cas, key))
        heapq.heapify(heap)
        self._expiries = heap
