"""pytest-benchmark for the cache's sans-IO hot paths: the parser, the LRU, both together.

Run: ``.venv/bin/python -m pytest bench/cache/test_hotpath.py --benchmark-only``
Each benchmark processes a batch of operations; divide the mean by the batch size
(printed in the test name) for ns per operation.
"""

from __future__ import annotations

import random

import pytest

from components.cache.commands import Commands
from components.cache.lru import LruCache
from components.cache.protocol import RequestParser

KEYS = 100_000
BATCH = 32
VALUE = b"x" * 100
NOW = 1_700_000_000


def _burst(seed: int) -> bytes:
    """32 pipelined requests, 90% get / 10% set, 16-byte keys, 100-byte values."""
    rnd = random.Random(seed)
    parts = []
    for _ in range(BATCH):
        key = b"%016d" % rnd.randrange(KEYS)
        if rnd.random() < 0.1:
            parts.append(b"set %s 0 0 100\r\n%s\r\n" % (key, VALUE))
        else:
            parts.append(b"get %s\r\n" % key)
    return b"".join(parts)


@pytest.fixture(scope="module")
def bursts():
    return [_burst(i) for i in range(64)]


@pytest.fixture(scope="module")
def loaded_cache():
    cache = LruCache(1 << 30, 1 << 20)
    for i in range(KEYS):
        cache.set(b"%016d" % i, VALUE, 0, 0, NOW)
    return cache


def test_parse_burst_of_32(benchmark, bursts):
    parser = RequestParser()
    state = {"i": 0}

    def parse():
        state["i"] = (state["i"] + 1) % len(bursts)
        parser.feed(bursts[state["i"]])
        n = 0
        while parser.next_command() is not None:
            n += 1
        return n

    assert benchmark(parse) == BATCH


def test_lru_get_batch_of_32(benchmark, loaded_cache):
    keys = [b"%016d" % i for i in random.Random(1).sample(range(KEYS), BATCH)]

    def gets():
        get_tail = loaded_cache.get_tail
        for key in keys:
            get_tail(key, NOW)

    benchmark(gets)


def test_lru_set_batch_of_32(benchmark, loaded_cache):
    keys = [b"%016d" % i for i in random.Random(2).sample(range(KEYS), BATCH)]

    def sets():
        cache_set = loaded_cache.set
        for key in keys:
            cache_set(key, VALUE, 0, 0, NOW)

    benchmark(sets)


def test_parse_and_execute_burst_of_32(benchmark, bursts, loaded_cache):
    commands = Commands(loaded_cache)
    parser = RequestParser()
    state = {"i": 0}

    def serve():
        state["i"] = (state["i"] + 1) % len(bursts)
        parser.feed(bursts[state["i"]])
        out: list[bytes] = []
        execute = commands.execute
        while (command := parser.next_command()) is not None:
            execute(command, NOW, out)
        return b"".join(out)

    reply = benchmark(serve)
    assert reply.count(b"END\r\n") + reply.count(b"STORED\r\n") == BATCH
