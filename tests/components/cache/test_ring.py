"""The ketama ring: agreement with libmemcached, and how few keys move when nodes change."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.cache.ring import POINTS_PER_SERVER, Ring, key_hash

KEYS = [b"key:%d" % i for i in range(4000)]


def _libmemcached():
    for name in ("libmemcached.so.11", ctypes.util.find_library("memcached")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.memcached_create.restype = ctypes.c_void_p
        lib.memcached_create.argtypes = [ctypes.c_void_p]
        lib.memcached_free.argtypes = [ctypes.c_void_p]
        lib.memcached_server_add_with_weight.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint16, ctypes.c_uint32]  # fmt: skip
        lib.memcached_behavior_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64]
        lib.memcached_generate_hash.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.memcached_generate_hash.restype = ctypes.c_uint32
        return lib
    return None


MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED = 16


@pytest.mark.parametrize(
    "nodes",
    [
        [("10.0.0.1", 11211, 1), ("10.0.0.2", 11211, 1), ("10.0.0.3", 11211, 1)],
        [
            ("10.0.0.1", 11211, 1),
            ("10.0.0.2", 11211, 2),
            ("cache-3", 11212, 1),
            ("127.0.0.1", 40000, 3),
        ],  # fmt: skip
        [("127.0.0.1", 41001, 5)],
    ],
)
def test_same_node_as_libmemcached_weighted_ketama(nodes):
    lib = _libmemcached()
    if lib is None:
        pytest.skip("libmemcached not installed")
    memc = lib.memcached_create(None)
    try:
        for host, port, weight in nodes:
            assert lib.memcached_server_add_with_weight(memc, host.encode(), port, weight) == 0
        assert lib.memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1) == 0
        ring = Ring([(h, p) for h, p, _ in nodes], {(h, p): w for h, p, w in nodes})
        for key in KEYS:
            index = lib.memcached_generate_hash(memc, key, len(key))
            assert ring.node_for(key) == nodes[index][:2], key
    finally:
        lib.memcached_free(memc)


def test_key_hash_is_first_little_endian_word_of_md5():
    # MD5("") = d41d8cd98f00b204e9800998ecf8427e
    assert key_hash(b"") == 0xD98C1DD4


def test_equal_weights_give_160_points_per_node():
    ring = Ring([("a", 1), ("b", 1), ("c", 1)])
    assert ring.points == 3 * POINTS_PER_SERVER


def _nodes(n):
    return [(f"10.0.0.{i}", 11211) for i in range(1, n + 1)]


@settings(max_examples=15, deadline=None)
@given(st.integers(min_value=2, max_value=8))
def test_adding_a_node_moves_about_one_in_n_plus_one_keys_all_to_it(n):
    before = Ring(_nodes(n))
    new = ("10.0.1.1", 11211)
    after = before.with_nodes(new)
    moved = [k for k in KEYS if before.node_for(k) != after.node_for(k)]
    assert all(after.node_for(k) == new for k in moved)  # keys only move to the new node
    share = len(moved) / len(KEYS)
    assert abs(share - 1 / (n + 1)) < 0.5 / (n + 1), share


@settings(max_examples=15, deadline=None)
@given(st.integers(min_value=2, max_value=8), st.data())
def test_removing_a_node_moves_only_its_keys(n, data):
    before = Ring(_nodes(n))
    gone = data.draw(st.sampled_from(before.nodes))
    after = before.without(gone)
    for key in KEYS:
        if before.node_for(key) != gone:
            assert after.node_for(key) == before.node_for(key)
        else:
            assert after.node_for(key) != gone


def test_weight_shares_keys_in_proportion():
    ring = Ring([("a", 1), ("b", 1)], {("a", 1): 3, ("b", 1): 1})
    share_a = sum(ring.node_for(k) == ("a", 1) for k in KEYS) / len(KEYS)
    assert 0.65 < share_a < 0.85
