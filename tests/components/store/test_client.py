"""The asyncio client against real nodes: primary discovery, spread reads, failover."""

import json

import pytest

import harness
from components.store.client import SqlError, StoreClient, StoreError


def metric(proc, name):
    for line in harness.http("GET", proc.url("admin") + "/metrics")[2].decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def admin(proc, op):
    code, _, body = harness.http("POST", f"{proc.url('admin')}/admin/{op}", b"{}")
    assert code == 200, body
    return json.loads(body)


async def test_client_writes_to_the_primary_spreads_reads_and_follows_a_failover(store):
    primary = store("p")
    replica = store("r", "--join", primary.listen["main"])
    nodes = [replica.listen["main"], primary.listen["main"]]  # the replica listed first
    async with StoreClient(nodes) as client:
        answer = await client.execute(["CREATE TABLE u (id INTEGER PRIMARY KEY, name TEXT)"])
        assert client.primary == primary.listen["main"] and answer.lsn == 1
        answer = await client.execute([["INSERT INTO u(name) VALUES(?)", "ada"]])
        # read-your-writes: whichever node answers has applied the write
        for _ in range(4):
            read = await client.query(["SELECT name FROM u"], min_lsn=answer.lsn)
            assert read.rows() == [{"name": "ada"}]
        assert metric(replica, "scalelab_store_queries_total") >= 2  # reads were spread
        assert metric(primary, "scalelab_store_queries_total") >= 2

        with pytest.raises(SqlError, match="no such table"):
            (await client.execute(["INSERT INTO nope VALUES(1)"])).raise_for_errors()
        strong = await client.query(["SELECT count(*) AS n FROM u"], level="strong")
        assert strong.node == primary.listen["main"] and strong.rows() == [{"n": 1}]

        primary.kill()
        admin(replica, "promote")
        try:
            answer = await client.execute([["INSERT INTO u(name) VALUES(?)", "grace"]])
        except StoreError as exc:
            # A pooled connection to the dead primary: the client cannot know the write
            # did not run, so it says so and looks for the primary on the next call.
            assert "outcome unknown" in str(exc) and client.primary is None
            answer = await client.execute([["INSERT INTO u(name) VALUES(?)", "grace"]])
        assert client.primary == replica.listen["main"]
        read = await client.query(["SELECT count(*) AS n FROM u"])  # the dead node is skipped
        assert read.rows() == [{"n": 2}]


async def test_client_without_any_live_node_raises_store_error():
    async with StoreClient(["127.0.0.1:9"], timeout_s=1) as client:
        with pytest.raises(StoreError):
            await client.execute(["SELECT 1"])
        with pytest.raises(StoreError):
            await client.query(["SELECT 1"])


async def test_a_stalled_replica_is_tried_last_after_it_timed_out_once(store):
    import os
    import signal

    primary = store("p")
    replica = store("r", "--join", primary.listen["main"])
    nodes = [replica.listen["main"], primary.listen["main"]]
    async with StoreClient(nodes, timeout_s=1, suspect_s=60) as client:
        await client.execute(["CREATE TABLE u (id INTEGER PRIMARY KEY)"])
        await client.query(["SELECT 1"])  # both nodes answer while healthy
        assert client.suspects == {}
        os.kill(replica.pid, signal.SIGSTOP)
        try:
            answers = [await client.query(["SELECT count(*) FROM u"]) for _ in range(6)]
            # at most the first read waited on the replica; then it was tried last
            assert {a.node for a in answers} == {primary.listen["main"]}
            assert list(client.suspects) == [replica.listen["main"]]
            # discovery asks the stalled node with the short status deadline only
            assert await client.discover() == primary.listen["main"]
        finally:
            os.kill(replica.pid, signal.SIGCONT)


def test_suspects_expire_and_keep_the_order_stable():
    now = [100.0]
    client = StoreClient(["a:1", "b:2", "c:3"], suspect_s=5, clock=lambda: now[0])
    client._suspect("a:1")
    assert client._order(["a:1", "b:2", "c:3"]) == ["b:2", "c:3", "a:1"]
    now[0] += 5
    assert client._order(["a:1", "b:2", "c:3"]) == ["a:1", "b:2", "c:3"]
    assert client.suspects == {}
