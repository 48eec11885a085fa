"""The asyncio client against real cache processes: placement, pipelining, failures."""

from __future__ import annotations

import asyncio

import pytest
from pymemcache.client.base import Client

import harness
from components.cache.client import CacheClient, NodeError, ServerError


@pytest.fixture
def two_nodes(spawn):
    """Two nodes a test may kill."""
    return [spawn("cache", "-m", "8", name=f"node-{i}") for i in range(2)]


@pytest.fixture(scope="module")
def shared_nodes():
    """Two nodes shared by the tests that leave them running (each uses its own keys)."""
    procs = [harness.start("cache", "-m", "8", name=f"shared-{i}") for i in range(2)]
    yield procs
    for proc in procs:
        proc.stop(timeout_s=5)


async def test_commands_round_trip_over_two_nodes(shared_nodes):
    client = CacheClient([p.address() for p in shared_nodes])
    try:
        assert await client.set("a", b"1") is True
        assert await client.get("a") == b"1"
        assert await client.add("a", b"2") is False
        assert await client.replace("a", b"3") is True
        value, token = await client.gets("a")
        assert value == b"3"
        assert await client.cas("a", b"4", token) is True
        assert await client.cas("a", b"5", token) is False
        assert await client.cas("zz", b"5", 1) is None
        assert await client.append("a", b"x") and await client.prepend("a", b"<")
        assert await client.get("a") == b"<4x"
        await client.set("n", b"10")
        assert await client.incr("n", 5) == 15
        assert await client.decr("n", 20) == 0
        assert await client.incr("missing") is None
        assert await client.touch("a", 100) is True
        assert await client.delete("a") is True
        assert await client.get("a") is None
        with pytest.raises(ServerError, match="non-numeric"):
            await client.set("s", b"abc")
            await client.incr("s")
        with pytest.raises(ValueError):
            await client.get("has space")
    finally:
        await client.close()


async def test_each_key_lands_on_its_ring_node(shared_nodes):
    addresses = [p.address() for p in shared_nodes]
    client = CacheClient(addresses)
    try:
        keys = [f"placed:{i}" for i in range(100)]
        for key in keys:
            await client.set(key, key.encode())
        direct = {a: Client(a) for a in addresses}
        for key in keys:
            owner = client.node_for(key.encode())
            assert direct[owner].get(key) == key.encode()
            other = next(a for a in addresses if a != owner)
            assert direct[other].get(key) is None
        assert await client.get_many(keys + ["nope"]) == {k.encode(): k.encode() for k in keys}
        for c in direct.values():
            c.close()
    finally:
        await client.close()


async def test_concurrent_requests_pipeline_over_one_connection(shared_nodes):
    proc = shared_nodes[0]
    client = CacheClient([proc.address()], pool_size=1)
    try:
        await asyncio.gather(*(client.set(f"pipe{i}", b"%d" % i) for i in range(300)))
        values = await asyncio.gather(*(client.get(f"pipe{i}") for i in range(300)))
        assert values == [b"%d" % i for i in range(300)]
        node = client._nodes[proc.address()]
        assert len(node.connections) == 1
    finally:
        await client.close()


async def test_dead_node_is_ejected_then_retried_after_interval(two_nodes):
    now = [1000.0]
    addresses = [p.address() for p in two_nodes]
    client = CacheClient(addresses, timeout_s=2, failure_limit=2, retry_after_s=30,
                         clock=lambda: now[0])  # fmt: skip
    try:
        victim_proc = two_nodes[0]
        victim = victim_proc.address()
        keys = [f"key{i}" for i in range(50)]
        victim_keys = [k for k in keys if client.node_for(k.encode()) == victim]
        assert victim_keys
        for key in keys:
            await client.set(key, b"v")
        victim_proc.kill()
        # First failure: not yet ejected, the error reaches the caller.
        with pytest.raises(NodeError):
            await client.get(victim_keys[0])
        # Second failure ejects the node, and the request is retried on the new owner.
        assert await client.get(victim_keys[0]) is None  # a miss there, not an error
        assert client.dead_nodes == [victim]
        assert all(client.node_for(k.encode()) != victim for k in keys)
        assert await client.set(victim_keys[1], b"moved") is True
        assert await client.get(victim_keys[1]) == b"moved"
        # After the retry interval the node is back on the ring and tried again; it is
        # still down, so one failure ejects it at once and the call succeeds elsewhere.
        now[0] += 31
        assert client.node_for(victim_keys[1].encode()) == victim
        assert await client.get(victim_keys[1]) == b"moved"
        assert client.dead_nodes == [victim]
    finally:
        await client.close()


async def test_request_times_out_against_a_silent_server():
    async def swallow(reader, writer):
        await reader.read(1 << 16)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()[:2]
    client = CacheClient([address], timeout_s=0.2, failure_limit=5)
    try:
        with pytest.raises(NodeError, match="timed out"):
            await client.get("k")
    finally:
        await client.close()
        server.close()


async def test_get_many_treats_a_dead_node_as_misses(two_nodes):
    addresses = [p.address() for p in two_nodes]
    client = CacheClient(addresses, failure_limit=1)
    try:
        keys = [f"key{i}" for i in range(40)]
        for key in keys:
            await client.set(key, b"v")
        survivors = {k.encode() for k in keys if client.node_for(k.encode()) == addresses[0]}
        assert 0 < len(survivors) < len(keys)
        two_nodes[1].kill()
        found = await client.get_many(keys)
        assert set(found) == survivors
        assert client.dead_nodes == [addresses[1]]
    finally:
        await client.close()


async def test_stats_and_flush_all_reach_every_node(shared_nodes):
    addresses = [p.address() for p in shared_nodes]
    # A generous deadline: on a loaded machine two 1 s timeouts would take a node off the
    # ring and move its keys, which is the failover behaviour, not the weighting tested here.
    client = CacheClient(addresses, weights={addresses[0]: 3, addresses[1]: 1}, timeout_s=10)
    try:
        await client.flush_all()  # the nodes are shared: start from empty ones
        keys = [f"w{i}" for i in range(400)]
        for key in keys:
            await client.set(key, b"v")
        stats = await client.stats()
        items = {a: int(stats[a]["curr_items"]) for a in addresses}
        assert sum(items.values()) == 400
        assert items[addresses[0]] > 2 * items[addresses[1]]  # weight 3 : 1
        await client.flush_all()
        assert await client.get_many(keys) == {}
    finally:
        await client.close()
