"""The failover controller: its decisions (pure) and the process against real store nodes."""

import asyncio
import os
import signal

import orjson

import harness
from components.store.client import StoreClient
from contract import ContractSuite
from topologies.failover import FailoverPolicy, Promote, Repoint, Report


def report(node, role="replica", epoch=1, lsn=10, primary="api-a", writable=None):
    return Report(node, f"api-{node}", role, role == "primary" if writable is None else writable,
                  epoch, lsn, primary)  # fmt: skip


def healthy(epoch=1, lsn_b=10, lsn_c=10):
    return {"a": report("a", "primary", epoch, 10, "api-a"),
            "b": report("b", lsn=lsn_b, epoch=epoch), "c": report("c", lsn=lsn_c, epoch=epoch)}  # fmt: skip


def test_a_healthy_cluster_needs_nothing():
    policy = FailoverPolicy(3)
    assert policy.observe(healthy()) == []
    assert policy.primary == "a" and policy.missed == 0


def test_promotes_the_most_advanced_replica_after_n_misses_and_only_once():
    policy = FailoverPolicy(3)
    policy.observe(healthy())
    down = {**healthy(lsn_b=7, lsn_c=9), "a": None}
    assert policy.observe(down) == []
    assert policy.observe(down) == []
    assert policy.observe(down) == [Promote("c", 2)]
    for _ in range(2):  # waiting for c to show up as primary: no second promotion
        assert policy.observe(down) == []
    after = {"a": None, "b": report("b", lsn=7), "c": report("c", "primary", 2, 9, "api-c")}
    assert policy.observe(after) == [Repoint("b", "api-c", 2)]


def test_a_primary_that_comes_back_is_repointed_never_promoted_again():
    policy = FailoverPolicy(1)
    policy.observe(healthy())
    assert policy.observe({**healthy(), "a": None}) == [Promote("b", 2)]
    back = {"a": report("a", "primary", 1, 12, "api-a"),
            "b": report("b", "primary", 2, 10, "api-b"),
            "c": report("c", epoch=2, primary="api-b")}  # fmt: skip
    assert policy.observe(back) == [Repoint("a", "api-b", 2)]
    assert policy.primary == "b"


def test_the_fencing_epoch_is_above_every_epoch_seen():
    policy = FailoverPolicy(1)
    reports = {"a": None, "b": report("b", epoch=5), "c": report("c", epoch=3, lsn=99)}
    assert policy.observe(reports) == [Promote("c", 6)]


def test_no_replica_reachable_means_no_promotion():
    policy = FailoverPolicy(1)
    assert policy.observe({"a": None, "b": None}) == []


def test_a_promotion_that_never_shows_up_is_retried_elsewhere():
    policy = FailoverPolicy(2)
    down = {"a": None, "b": report("b", lsn=5), "c": report("c", lsn=9)}
    policy.observe(down)
    assert policy.observe(down) == [Promote("c", 2)]
    assert policy.observe({**down, "c": None}) == []
    assert policy.observe({**down, "c": None}) == [Promote("b", 3)]


# -- the process -------------------------------------------------------------------------


class TestContract(ContractSuite):
    component = "failover"
    module = "topologies.failover"
    flags = ("--nodes", "127.0.0.1:9")


def status(proc):
    return orjson.loads(harness.http("GET", proc.url("admin") + "/admin/status")[2])


def controller_view(proc):
    return orjson.loads(harness.http("GET", proc.url("main") + "/status")[2])


def test_a_paused_primary_is_replaced_once_and_rejoins_as_a_replica(spawn, tmp_path):
    primary = spawn("store", "--data-dir", str(tmp_path / "a"), "--sync-replicas", "1",
                    "--sync-timeout", "2", name="a")  # fmt: skip
    replicas = [spawn("store", "--data-dir", str(tmp_path / n), "--join",
                      primary.listen["main"], "--sync-replicas", "1", name=n) for n in "bc"]  # fmt: skip
    stores = [primary, *replicas]
    controller = spawn("failover", "--nodes", ",".join(s.listen["admin"] for s in stores),
                       "--interval-s", "0.2", "--misses", "3", module="topologies.failover")  # fmt: skip
    harness.wait_until_sync(lambda: controller_view(controller)["primary"] is not None,
                            what="controller sees the primary")  # fmt: skip

    async def write(n):
        async with StoreClient([s.listen["main"] for s in stores], timeout_s=3) as client:
            await client.execute(["CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY)"])
            acked = []
            for i in range(n):
                await client.execute([["INSERT INTO t(id) VALUES(?)", i]])
                acked.append(i)
            return acked

    acked = asyncio.run(write(20))
    os.kill(primary.pid, signal.SIGSTOP)
    try:
        harness.wait_until_sync(lambda: any(status(r)["writable"] for r in replicas), 10,
                                what="a replica promoted")  # fmt: skip
        new = next(r for r in replicas if status(r)["writable"])
        other = next(r for r in replicas if r is not new)
        assert status(new)["epoch"] == 2
        harness.wait_until_sync(lambda: status(other)["primary"] == new.listen["main"], 10,
                                what="the other replica follows the new primary")  # fmt: skip
    finally:
        os.kill(primary.pid, signal.SIGCONT)
    harness.wait_until_sync(lambda: not status(primary)["writable"], 10,
                            what="the old primary stepped down")  # fmt: skip
    assert status(primary)["primary"] == new.listen["main"] and status(primary)["epoch"] == 2
    writable = [s for s in stores if status(s)["writable"]]
    assert writable == [new]
    view = controller_view(controller)
    assert [e["event"] for e in view["events"]].count("promoted") == 1

    async def count():
        async with StoreClient([s.listen["main"] for s in stores]) as client:
            answer = await client.query(["SELECT count(*) FROM t"], level="strong")
            return answer.results[0]["values"][0][0]

    assert asyncio.run(count()) == len(acked)  # semi-sync: no acknowledged write lost


def test_misses_below_one_exit_2():
    flags = ("--nodes", "127.0.0.1:9", "--misses", "0")
    import subprocess
    import sys

    from topologies.process import child_env

    result = subprocess.run([sys.executable, "-m", "topologies.failover", *flags],
                            capture_output=True, env=child_env(), timeout=30)  # fmt: skip
    assert result.returncode == 2, result.stderr
