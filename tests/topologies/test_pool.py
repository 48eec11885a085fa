"""``process.Pool``: copies of one component, one more or one fewer at a time."""

import signal

import pytest
from topology_helpers import ENV, echo_round_trip, wait_all_dead

import harness
from topologies import process


@pytest.fixture
def pool(tmp_path):
    pool = process.Pool("echo", [], prefix="echo", log_dir=tmp_path, module="echo_service",
                        env=ENV, stop_timeout_s=5)  # fmt: skip
    yield pool
    pool.close()


def test_grow_starts_named_copies_each_with_its_own_log(pool, tmp_path):
    first, second = pool.grow(), pool.grow()
    assert [p.name for p in pool.members] == ["echo-1", "echo-2"]
    assert len(pool) == 2
    for proc in (first, second):
        assert echo_round_trip(proc.listen["main"]) == b"hello\n"
        assert proc.log_path == tmp_path / f"{proc.name}.log"


def test_shrink_drains_the_newest_copy(pool):
    pool.grow()
    newest = pool.grow()
    proc, code = pool.shrink()
    assert proc is newest and code == 0  # SIGTERM, drained, exit 0
    assert [p.name for p in pool.members] == ["echo-1"]
    assert b'"event":"stopped"' in newest.log_path.read_bytes()


def test_shrink_of_an_empty_pool_is_none(pool):
    assert pool.shrink() is None


def test_reap_forgets_a_copy_that_died_and_names_are_never_reused(pool):
    pool.grow()
    victim = pool.grow()
    victim.signal(signal.SIGKILL)
    harness.wait_until_sync(lambda: not victim.alive(), what="the killed copy gone")
    assert pool.reap() == [victim]
    assert pool.reap() == []
    assert pool.grow().name == "echo-3"
    assert [p.name for p in pool.members] == ["echo-1", "echo-3"]


def test_close_stops_every_copy(pool):
    pids = [pool.grow().pid for _ in range(3)]
    pool.close()
    assert len(pool) == 0
    wait_all_dead(pids)
