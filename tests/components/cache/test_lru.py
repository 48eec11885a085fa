"""The LRU core: byte accounting, eviction order, memcached's expiry rules. No sockets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from components.cache.lru import (
    EXPIRED,
    MAX_RELATIVE_EXPTIME_S,
    LruCache,
    absolute_expiry,
    item_size,
)

NOW = 1_700_000_000


def test_item_is_charged_as_memcached_1_4_counts_it():
    # 48-byte header + 8-byte CAS + key + NUL + " <flags> <bytes>\r\n" + value + CRLF
    assert item_size(b"a", b"x", 0) == 48 + 8 + 2 + len(b" 0 1\r\n") + 3
    assert item_size(b"a", b"x", 12345) == 48 + 8 + 2 + len(b" 12345 1\r\n") + 3


def test_exptime_relative_up_to_thirty_days_then_absolute():
    assert absolute_expiry(0, NOW) == 0
    assert absolute_expiry(10, NOW) == NOW + 10
    assert absolute_expiry(MAX_RELATIVE_EXPTIME_S, NOW) == NOW + MAX_RELATIVE_EXPTIME_S
    assert absolute_expiry(NOW + 50, NOW) == NOW + 50  # an absolute Unix time
    assert absolute_expiry(MAX_RELATIVE_EXPTIME_S + 1, NOW) == EXPIRED  # absolute, past
    assert absolute_expiry(-1, NOW) == EXPIRED


def test_get_after_ttl_expiry_misses():
    cache = LruCache(1 << 20)
    cache.set(b"k", b"v", 0, absolute_expiry(10, NOW), NOW)
    assert cache.get(b"k", NOW + 9) is not None
    assert cache.get(b"k", NOW + 10) is None
    assert len(cache) == 0 and cache.bytes == 0
    assert cache.reclaimed == 1 and cache.expired_unfetched == 0  # it was read once
    cache.set(b"j", b"v", 0, absolute_expiry(10, NOW), NOW)
    assert cache.get(b"j", NOW + 10) is None
    assert cache.expired_unfetched == 1


def test_least_recently_used_is_evicted_first():
    size = item_size(b"k0", b"v" * 100, 0)
    cache = LruCache(3 * size)
    for i in range(3):
        cache.set(b"k%d" % i, b"v" * 100, 0, 0, NOW)
    cache.get(b"k0", NOW)  # k1 is now the coldest
    cache.set(b"k3", b"v" * 100, 0, 0, NOW)
    assert cache.keys() == [b"k2", b"k0", b"k3"]
    assert cache.evictions == 1
    assert cache.bytes == 3 * size


def test_item_larger_than_limit_is_refused():
    cache = LruCache(1 << 20, max_item_bytes=1000)
    assert cache.set(b"k", b"v" * 1000, 0, 0, NOW) is None
    assert len(cache) == 0


def test_cas_unique_changes_on_every_store():
    cache = LruCache(1 << 20)
    first = cache.set(b"k", b"1", 0, 0, NOW).cas
    second = cache.set(b"k", b"2", 0, 0, NOW).cas
    other = cache.set(b"j", b"1", 0, 0, NOW).cas
    assert len({first, second, other}) == 3


def test_delayed_flush_kills_items_updated_before_it_once_due():
    cache = LruCache(1 << 20)
    cache.set(b"old", b"v", 0, 0, NOW)
    cache.flush(NOW, delay=10)
    assert cache.get(b"old", NOW + 5) is not None
    assert cache.get(b"old", NOW + 10) is None


def test_reclaim_expired_frees_untouched_items_and_skips_replaced_ones():
    cache = LruCache(1 << 20)
    cache.set(b"a", b"v", 0, NOW + 5, NOW)
    cache.set(b"b", b"v", 0, NOW + 5, NOW)
    cache.set(b"b", b"v2", 0, 0, NOW)  # replaced without expiry: the heap entry is stale
    cache.set(b"c", b"v", 0, NOW + 50, NOW)
    assert cache.reclaim_expired(NOW + 10) == 1
    assert sorted(cache.keys()) == [b"b", b"c"]


ops = st.lists(
    st.tuples(
        st.sampled_from(["set", "get", "delete"]),
        st.integers(min_value=0, max_value=30),
        st.integers(min_value=0, max_value=400),
        st.integers(min_value=-1, max_value=20),
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_accounting_matches_contents_and_never_exceeds_the_limit(operations):
    cache = LruCache(4000)
    now = NOW
    for op, k, size, ttl in operations:
        key = b"key%d" % k
        now += 1
        if op == "set":
            cache.set(key, b"x" * size, k % 2, absolute_expiry(ttl, now), now)
        elif op == "get":
            cache.get(key, now)
        else:
            cache.delete(key)
        cache.reclaim_expired(now)
        total = sum(size for _, size in cache.entries())
        assert cache.bytes == total <= cache.max_bytes


def test_expiry_heap_stays_bounded_under_repeated_touches():
    cache = LruCache(1 << 20)
    item = cache.set(b"k", b"v", 0, NOW + 10, NOW)
    for i in range(10_000):
        cache.touch(b"k", item, NOW + 11 + i)
    assert len(cache._expiries) <= 2 * len(cache) + 1024 + 1
    assert cache.reclaim_expired(NOW + 5000) == 0  # stale heap entries are skipped
    assert cache.get(b"k", NOW + 5000) is not None


def test_clock_spares_hit_items_once_and_still_evicts_when_all_are_hot():
    size = item_size(b"k0", b"v" * 100, 0)
    cache = LruCache(4 * size)
    for i in range(4):
        cache.set(b"k%d" % i, b"v" * 100, 0, 0, NOW)
    for i in range(4):
        cache.get(b"k%d" % i, NOW)  # every item is ACTIVE
    cache.set(b"k4", b"v" * 100, 0, 0, NOW)
    # One lap clears every ACTIVE bit; the next visit evicts the oldest.
    assert cache.keys() == [b"k1", b"k2", b"k3", b"k4"]
    cache.get(b"k1", NOW)
    cache.set(b"k5", b"v" * 100, 0, 0, NOW)
    assert b"k1" in cache and b"k2" not in cache
    assert cache.evictions == 2 and cache.bytes == 4 * size
