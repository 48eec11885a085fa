"""The cache server against real memcached clients (pymemcache, aiomcache), over TCP.

One server process serves most tests (each test uses its own keys); tests that need
their own limits (-m, -I, -c) start their own. TTL tests move the server's clock with
``POST /admin/clock`` instead of sleeping.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import uuid

import aiomcache
import pytest
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import MemcacheClientError, MemcacheServerError

import harness


@pytest.fixture(scope="module")
def server():
    proc = harness.start("cache", "-m", "16", name="cache-test")
    yield proc
    proc.stop(timeout_s=5)


@pytest.fixture
def mc(server):
    client = Client(server.address(), timeout=5, connect_timeout=5)
    yield client
    client.close()


@pytest.fixture
def key():
    return "k-" + uuid.uuid4().hex[:16]


def advance_clock(proc, seconds: int) -> None:
    body = json.dumps({"advance": seconds}).encode()
    status, _, reply = harness.http("POST", proc.url("admin") + "/admin/clock", body)
    assert status == 200, reply


def raw(proc, payload: bytes, expect_end: bytes, timeout_s: float = 5) -> bytes:
    """Send raw bytes, read until the reply ends with ``expect_end`` (or EOF)."""
    host, port = proc.address()
    return harness.exchange(f"{host}:{port}", payload, expect_end, timeout_s)


def metric(proc, name: str) -> float:
    body = harness.http("GET", proc.url("admin") + "/metrics")[2].decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics")


# --- storage and retrieval with pymemcache ------------------------------------------


def test_set_then_get_returns_value_and_flags(mc, key):
    assert mc.set(key, b"hello", flags=7, noreply=False) is True
    assert mc.get(key) == b"hello"
    assert mc.raw_command(f"get {key}".encode(), b"END\r\n").startswith(
        f"VALUE {key} 7 5\r\nhello".encode()
    )


def test_get_many_returns_only_hits(mc, key):
    mc.set(key + "a", b"1", noreply=False)
    mc.set(key + "b", b"2", noreply=False)
    assert mc.get_many([key + "a", key + "b", key + "c"]) == {key + "a": b"1", key + "b": b"2"}


def test_add_only_when_absent_replace_only_when_present(mc, key):
    assert mc.replace(key, b"x", noreply=False) is False
    assert mc.add(key, b"first", noreply=False) is True
    assert mc.add(key, b"second", noreply=False) is False
    assert mc.replace(key, b"third", noreply=False) is True
    assert mc.get(key) == b"third"


def test_append_and_prepend_keep_flags(mc, key):
    assert mc.append(key, b"x", noreply=False) is False
    mc.set(key, b"mid", flags=3, noreply=False)
    assert mc.append(key, b"-end", noreply=False) is True
    assert mc.prepend(key, b"start-", noreply=False) is True
    assert mc.raw_command(f"get {key}".encode(), b"END\r\n") == (
        f"VALUE {key} 3 13\r\nstart-mid-end\r\n".encode()
    )


def test_cas_race_only_first_writer_wins(mc, server, key):
    other = Client(server.address(), timeout=5)
    try:
        mc.set(key, b"v0", noreply=False)
        _, token_a = mc.gets(key)
        _, token_b = other.gets(key)
        assert token_a == token_b
        assert mc.cas(key, b"from-a", token_a, noreply=False) is True
        assert other.cas(key, b"from-b", token_b, noreply=False) is False  # EXISTS
        assert mc.get(key) == b"from-a"
        assert mc.cas(key + "missing", b"x", b"1", noreply=False) is None  # NOT_FOUND
    finally:
        other.close()


def test_delete_and_noreply_commands(mc, key):
    mc.set(key, b"v")  # pymemcache's default is noreply
    assert mc.get(key) == b"v"
    assert mc.delete(key, noreply=False) is True
    assert mc.delete(key, noreply=False) is False
    mc.set(key, b"v2", noreply=True)
    mc.delete(key, noreply=True)
    assert mc.get(key) is None


def test_incr_decr_wrap_and_floor(mc, key):
    assert mc.incr(key, 1, noreply=False) is None
    mc.set(key, b"10", noreply=False)
    assert mc.incr(key, 5, noreply=False) == 15
    assert mc.decr(key, 100, noreply=False) == 0
    mc.set(key, str(2**64 - 1).encode(), noreply=False)
    assert mc.incr(key, 2, noreply=False) == 1
    mc.set(key, b"abc", noreply=False)
    with pytest.raises(MemcacheClientError, match="non-numeric"):
        mc.incr(key, 1, noreply=False)


def test_binary_safe_values(mc, key):
    value = bytes(range(256)) * 4 + b"\r\nEND\r\n"
    mc.set(key, value, noreply=False)
    assert mc.get(key) == value


def test_large_value_near_item_limit_and_over_it(mc, key):
    near = b"x" * (1024 * 1024 - 512)
    assert mc.set(key, near, noreply=False) is True
    assert mc.get(key) == near
    with pytest.raises(MemcacheServerError, match="object too large"):
        mc.set(key, b"x" * (1024 * 1024 + 1), noreply=False)
    # A failed set must not leave the old value behind (memcached semantics).
    assert mc.get(key) is None
    assert mc.set(key, b"still usable", noreply=False) is True


def test_touch_gat_and_ttl_expiry_use_the_server_clock(server, key):
    mc = Client(server.address(), timeout=5)
    try:
        mc.set(key + "ttl", b"v", expire=100, noreply=False)
        mc.set(key + "keep", b"v", expire=0, noreply=False)
        mc.set(key + "touched", b"v", expire=100, noreply=False)
        assert mc.touch(key + "touched", 1000, noreply=False) is True
        assert mc.touch(key + "absent", 10, noreply=False) is False
        # gat sets a 100 s expiry on a key that had none
        assert mc.raw_command(f"gat 100 {key}keep".encode(), b"END\r\n").startswith(b"VALUE")
        advance_clock(server, 101)
        assert mc.get(key + "ttl") is None
        assert mc.get(key + "keep") is None
        assert mc.get(key + "touched") == b"v"
    finally:
        mc.close()


def test_negative_exptime_is_expired_at_once(mc, key):
    assert mc.set(key, b"v", expire=-1, noreply=False) is True
    assert mc.get(key) is None


def test_flush_all_and_admin_flush(mc, server, key):
    mc.set(key, b"v", noreply=False)
    assert mc.flush_all(noreply=False) is True
    assert mc.get(key) is None
    mc.set(key, b"v", noreply=False)
    status, _, _ = harness.http("POST", server.url("admin") + "/admin/flush")
    assert status == 200
    assert mc.get(key) is None


def test_version_and_stats(mc):
    assert mc.version().startswith(b"1.6")
    stats = mc.stats()
    assert stats[b"limit_maxbytes"] == 16 * 1024 * 1024
    assert b"curr_connections" in stats
    assert b"get_hits" in stats
    settings = mc.stats("settings")
    assert settings[b"item_size_max"] == 1024 * 1024


def test_hash_client_spreads_keys_over_two_nodes(spawn):
    a = spawn("cache", "-m", "8", name="node-a")
    b = spawn("cache", "-m", "8", name="node-b")
    client = HashClient([a.address(), b.address()], timeout=5)
    try:
        keys = [f"user:{i}" for i in range(200)]
        for k in keys:
            client.set(k, k.encode(), noreply=False)
        assert client.get_many(keys) == {k: k.encode() for k in keys}
        per_node = [Client(x.address()).stats()[b"curr_items"] for x in (a, b)]
        assert sum(per_node) == 200 and min(per_node) > 40, per_node
    finally:
        client.close()


# --- aiomcache -------------------------------------------------------------------------


async def test_aiomcache_basic_commands(server, key):
    client = aiomcache.Client(*server.address())
    try:
        k = key.encode()
        await client.set(k, b"value", exptime=0)
        assert await client.get(k) == b"value"
        assert await client.add(k, b"x") is False
        assert await client.replace(k, b"new") is True
        value, token = await client.gets(k)
        assert value == b"new"
        assert await client.cas(k, b"cas-ed", token) is True
        assert await client.get(k) == b"cas-ed"
        await client.set(k + b"n", b"41")
        assert await client.incr(k + b"n") == 42
        assert await client.touch(k, 50) is True
        assert await client.delete(k) is True
        assert await client.get(k) is None
        assert (await client.version()).startswith(b"1.6")
    finally:
        await client.close()


# --- protocol behaviour over a real socket ---------------------------------------------


def test_pipelined_commands_are_answered_in_order(server, key):
    k = key.encode()
    payload = b"".join(b"set %s%d 0 0 1\r\n%d\r\n" % (k, i, i % 10) for i in range(100))
    payload += b"get " + b" ".join(b"%s%d" % (k, i) for i in range(100)) + b"\r\n"
    reply = raw(server, payload, b"END\r\n")
    assert reply.count(b"STORED\r\n") == 100
    assert reply.count(b"VALUE ") == 100


def test_command_split_across_packets_still_parses(server, key):
    k = key.encode()
    with socket.create_connection(server.address(), timeout=5) as conn:
        for piece in (b"se", b"t " + k + b" 0 0 5\r", b"\nhel", b"lo\r", b"\nget ", k + b"\r\n"):
            conn.sendall(piece)
        received = b""
        while not received.endswith(b"END\r\n"):
            received += conn.recv(4096)
    assert received == b"STORED\r\nVALUE " + k + b" 0 5\r\nhello\r\nEND\r\n"


def test_bad_data_chunk_leaves_connection_usable(server, key):
    k = key.encode()
    reply = raw(server, b"set " + k + b" 0 0 3\r\nabcd\r\nget " + k + b"\r\n", b"END\r\n")
    assert reply == b"CLIENT_ERROR bad data chunk\r\nERROR\r\nEND\r\n"


def test_unknown_command_and_bad_line_errors(server):
    reply = raw(server, b"bogus\r\nset k x 0 1\r\nmn\r\n", b"MN\r\n")
    assert reply == b"ERROR\r\nCLIENT_ERROR bad command line format\r\nMN\r\n"


def test_oversized_line_is_refused_and_connection_closed(server):
    reply = raw(server, b"x" * 10_000, b"\r\n")
    assert reply == b"CLIENT_ERROR line too long\r\n"


def test_quit_closes_the_connection(server):
    assert raw(server, b"version\r\nquit\r\nversion\r\n", b"never") == (
        b"VERSION 1.6.18-scalelab\r\n"
    )


def test_meta_commands_over_the_wire(server, key):
    k = key.encode()
    payload = (b"ms " + k + b" 2 T0 F5 c\r\nhi\r\nmg " + k + b" v f k s Oab\r\n"
               b"md " + k + b" q\r\nmg " + k + b" v\r\nmn\r\n")  # fmt: skip
    reply = raw(server, payload, b"MN\r\n")
    lines = reply.split(b"\r\n")
    assert lines[0].startswith(b"HD c")
    assert lines[1] == b"VA 2 f5 k" + k + b" s2 Oab"
    assert lines[2] == b"hi"
    assert lines[3:] == [b"EN", b"MN", b""]


def test_metrics_count_hits_misses_and_items(server, mc, key):
    hits = metric(server, "scalelab_cache_get_hits_total")
    misses = metric(server, "scalelab_cache_get_misses_total")
    mc.set(key, b"v", noreply=False)
    mc.get(key)
    mc.get(key + "nope")
    assert metric(server, "scalelab_cache_get_hits_total") == hits + 1
    assert metric(server, "scalelab_cache_get_misses_total") == misses + 1
    assert metric(server, "scalelab_cache_items") >= 1


# --- limits ---------------------------------------------------------------------------


def test_eviction_under_small_memory_limit_keeps_recent_items(spawn):
    proc = spawn("cache", "-m", "1", "-I", "64k", name="small")
    mc = Client(proc.address(), timeout=5)
    try:
        value = b"v" * 1000
        for i in range(3000):  # ~3 MB into a 1 MB cache
            mc.set(f"key{i}", value, noreply=True)
            if i % 100 == 0:
                mc.get("key0")  # keep key0 recently used
        stats = mc.stats()
        assert stats[b"evictions"] > 0
        assert stats[b"bytes"] <= 1024 * 1024
        assert mc.get("key2999") == value
        assert mc.get("key1") is None
        assert mc.get("key0") == value
        assert metric(proc, "scalelab_cache_evictions_total") == stats[b"evictions"]
    finally:
        mc.close()


def test_connection_limit_refuses_the_extra_client(spawn):
    proc = spawn("cache", "-c", "2", name="conns")
    first = socket.create_connection(proc.address(), timeout=5)
    second = socket.create_connection(proc.address(), timeout=5)
    try:
        for conn in (first, second):
            conn.sendall(b"version\r\n")
            assert conn.recv(100).startswith(b"VERSION")
        third = socket.create_connection(proc.address(), timeout=5)
        assert third.recv(100) == b"ERROR Too many open connections\r\n"
        assert third.recv(100) == b""
        third.close()
        second.close()
        harness.wait_until_sync(
            lambda: metric(proc, "scalelab_cache_connections") == 1, what="one connection left"
        )
        fourth = socket.create_connection(proc.address(), timeout=5)
        fourth.sendall(b"version\r\n")
        assert fourth.recv(100).startswith(b"VERSION")
        fourth.close()
    finally:
        first.close()


def test_client_that_never_reads_is_paused_not_buffered(spawn):
    # Each 9-byte request asks for a 200 KB reply. A server that kept reading would
    # buffer gigabytes of replies; ours stops reading once its output is backed up, so
    # our sends soon block, and its memory stays bounded.
    proc = spawn("cache", "-m", "64", name="backpressure")
    mc = Client(proc.address(), timeout=5)
    mc.set("big", b"x" * 200_000, noreply=False)
    conn = socket.create_connection(proc.address(), timeout=5)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    conn.setblocking(False)
    request = b"get big\r\n" * 1000
    sent = 0
    try:
        # Send until the socket stays unwritable for a full second (the server stopped
        # reading), or until far more was accepted than any kernel buffer holds.
        while sent < 100 * 1024 * 1024:
            _, writable, _ = select.select([], [conn], [], 1.0)
            if not writable:
                break
            with contextlib.suppress(BlockingIOError):
                sent += conn.send(request)
        assert sent < 100 * 1024 * 1024, "server kept reading requests it could not answer"
        with open(f"/proc/{proc.pid}/status") as status:
            rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        assert rss_kib < 400 * 1024, rss_kib
        assert mc.version().startswith(b"1.6")  # others are still served
    finally:
        conn.close()
        mc.close()


def test_stats_items_slabs_and_reset_report_honest_figures(mc, key):
    mc.set(key, b"v" * 10, noreply=False)
    items = mc.stats("items")
    assert items[b"items:1:number"] >= 1
    slabs = mc.stats("slabs")
    assert slabs[b"total_malloced"] == mc.stats()[b"bytes"]
    assert mc.raw_command(b"stats reset", b"RESET\r\n") == b""  # ended by RESET
    assert mc.stats()[b"get_hits"] == 0


def test_sigterm_with_an_open_client_connection_exits_promptly(spawn):
    proc = spawn("cache", "--drain-timeout", "5", name="drain")
    conn = socket.create_connection(proc.address(), timeout=5)
    conn.sendall(b"version\r\n")
    assert conn.recv(100).startswith(b"VERSION")
    proc.signal(15)
    assert conn.recv(100) == b""  # the server closed our idle connection while draining
    assert proc.popen.wait(timeout=10) == 0
    conn.close()


def test_item_size_above_memory_limit_is_a_usage_error(tmp_path):
    import subprocess
    import sys

    from topologies.process import child_env

    argv = [sys.executable, "-m", "components.cache", "-m", "1", "-I", "2m"]
    result = subprocess.run(argv, capture_output=True, timeout=30, env=child_env())
    assert result.returncode == 2
    assert b"-I (item size) may not exceed -m" in result.stderr


def test_memcached_flags_map_onto_the_shared_ones():
    from components.cache.server import CacheService
    from components.common.runner import parse_args

    args = parse_args(CacheService, ["-p", "12345", "-l", "127.0.0.2", "-m", "8", "-I", "512k",
                                     "-c", "10", "-t", "1"])  # fmt: skip
    assert (args.port, args.host, args.memory_mb) == (12345, "127.0.0.2", 8)
    assert (args.max_item_size, args.conn_limit) == (512 * 1024, 10)
    assert args.admin_port == 22345  # the shared rule: public port + 10000
    assert parse_args(CacheService, ["--port", "0"]).port == 0
