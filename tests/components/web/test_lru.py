"""The byte-bounded LRU: pure, clock passed in."""

from hypothesis import given
from hypothesis import strategies as st

from components.web.lru import ENTRY_OVERHEAD_BYTES, LruCache, entry_size


def charged(key, value):
    return ENTRY_OVERHEAD_BYTES + len(key) + len(value)


def test_get_returns_what_set_stored():
    cache = LruCache(10_000)
    assert cache.set("a", b"alpha", now=0)
    assert cache.get("a", now=1) == b"alpha"
    assert cache.used_bytes == charged("a", b"alpha")


def test_get_after_ttl_expiry_misses_and_frees_the_bytes():
    cache = LruCache(10_000)
    cache.set("a", b"x", now=100, ttl_s=5)
    assert cache.get("a", now=104.999) == b"x"
    assert cache.get("a", now=105) is None
    assert cache.used_bytes == 0 and len(cache) == 0
    assert cache.expirations == 1


def test_least_recently_used_is_evicted_first():
    size = charged("k1", b"v" * 10)
    cache = LruCache(3 * size)
    for key in ("k1", "k2", "k3"):
        cache.set(key, b"v" * 10, now=0)
    cache.get("k1", now=1)  # k1 becomes the hottest; k2 is now the coldest
    cache.set("k4", b"v" * 10, now=2)
    assert cache.recency_order() == ["k3", "k1", "k4"]
    assert cache.evictions == 1
    assert cache.used_bytes == 3 * size


def test_a_large_value_evicts_as_many_entries_as_it_needs():
    small = charged("a", b"1")
    cache = LruCache(4 * small)
    for key in "abcd":
        cache.set(key, b"1", now=0)
    big = b"x" * (2 * small)
    assert cache.set("z", big, now=0)
    assert cache.used_bytes <= cache.max_bytes
    assert "z" in cache and "a" not in cache and "b" not in cache and "c" not in cache


def test_value_larger_than_the_budget_is_refused_and_drops_the_old_value():
    cache = LruCache(200)
    cache.set("k", b"old", now=0)
    assert not cache.set("k", b"x" * 500, now=0)
    assert cache.get("k", now=0) is None
    assert cache.used_bytes == 0


def test_overwrite_replaces_value_and_accounting():
    cache = LruCache(10_000)
    cache.set("k", b"short", now=0)
    cache.set("k", b"a much longer value", now=0)
    assert cache.get("k", now=0) == b"a much longer value"
    assert cache.used_bytes == charged("k", b"a much longer value")


def test_delete_removes_and_reports_presence():
    cache = LruCache(10_000)
    cache.set("k", b"v", now=0)
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.get("k", now=0) is None and cache.used_bytes == 0


def test_non_positive_ttl_stores_nothing():
    cache = LruCache(10_000)
    assert not cache.set("k", b"v", now=0, ttl_s=0)
    assert cache.get("k", now=0) is None


def test_explicit_size_is_charged_for_non_bytes_values():
    cache = LruCache(10_000)
    cache.set("asset", object(), now=0, size=1000)
    assert cache.used_bytes == entry_size("asset", None, 1000)


operations = st.lists(
    st.tuples(
        st.sampled_from(["set", "get", "delete"]),
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.binary(max_size=120),
        st.floats(min_value=0.5, max_value=20),
    ),
    max_size=80,
)


@given(operations, st.integers(min_value=0, max_value=800))
def test_matches_a_reference_model_and_never_exceeds_its_budget(ops, budget):
    """Against a plain list model: same answers, bytes accounted exactly, never over budget."""
    cache = LruCache(budget)
    model: list[tuple[str, bytes, float]] = []  # coldest first: (key, value, expires_at)
    now = 0.0
    for op, key, value, ttl in ops:
        now += 1.0
        model = [entry for entry in model if entry[0] != key or op == "set" or entry[2] > now]
        index = next((i for i, entry in enumerate(model) if entry[0] == key), None)
        if op == "set":
            if index is not None:
                model.pop(index)
            size = charged(key, value)
            if size <= budget:
                while sum(charged(k, v) for k, v, _ in model) + size > budget:
                    model.pop(0)
                model.append((key, value, now + ttl))
            cache.set(key, value, now, ttl)
        elif op == "get":
            expected = None
            if index is not None:
                expected = model[index][1]
                model.append(model.pop(index))
            assert cache.get(key, now) == expected
        else:
            if index is not None:
                model.pop(index)
            cache.delete(key)
        assert cache.used_bytes <= budget
        live = [k for k, _, exp in model if exp > now]
        assert [k for k in cache.recency_order() if k in live] == live
