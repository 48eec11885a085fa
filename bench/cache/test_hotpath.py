"""pytest-benchmark for the cache's sans-IO hot paths: the parser, the LRU, both together.

Run: ``.venv/bin/python -m pytest bench/cache/test_hotpath.py --benchmark-only``
Each benchmark processes a batch of operations; divide the mean by the batch size
(printed in the test name) for ns per operation.
"""

from __future__ import annotations

import random
import types

import pytest

from components.cache.commands import Commands
from components.cache.lru import LruCache
from components.cache.protocol import RequestParser
from components.cache.server import CacheConnection

KEYS = 100_000
BATCH = 32
VALUE = b"x" * 100
NOW = 1_700_000_000


def _burst(seed: int) -> bytes:
    """32 pipelined requests, 90% get / 10% set, 16-byte keys, 100-byte values."""
    return b"".join(_requests(seed))


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


class _NullTransport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def _connection(cache: LruCache) -> CacheConnection:
    """A real CacheConnection on a stand-in service, writing into the void."""
    service = types.SimpleNamespace(
        args=types.SimpleNamespace(max_item_size=1 << 20, conn_limit=8), cache=cache,
        commands=Commands(cache), now=NOW, connections=set(), total_connections=0,
        rejected_connections=0, closed_bytes_read=0, closed_bytes_written=0,
    )  # fmt: skip
    conn = CacheConnection(service)
    conn.connection_made(_NullTransport())
    return conn


@pytest.fixture(scope="module")
def single_requests():
    """One request per burst (a request/response client), 90% get / 10% set."""
    return [request for seed in range(8) for request in _requests(seed)]


def _requests(seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    for _ in range(BATCH):
        key = b"%016d" % rnd.randrange(KEYS)
        if rnd.random() < 0.1:
            out.append(b"set %s 0 0 100\r\n%s\r\n" % (key, VALUE))
        else:
            out.append(b"get %s\r\n" % key)
    return out


@pytest.mark.parametrize("path", ["fast", "general"])
def test_connection_32_single_request_bursts(benchmark, loaded_cache, single_requests, path):
    """data_received for 32 bursts of one request each: the fast paths against the
    general path (parser, command objects, reply list) on the same connection."""
    conn = _connection(loaded_cache)
    received = conn.data_received
    batches = [single_requests[i : i + BATCH] for i in range(0, len(single_requests), BATCH)]
    state = {"i": 0}

    def serve():
        state["i"] = (state["i"] + 1) % len(batches)
        for request in batches[state["i"]]:
            if path == "general":
                conn.idle = False  # no fast path for this burst
            received(request)
        return conn.bytes_written

    benchmark(serve)
