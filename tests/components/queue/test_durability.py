"""The binlog: restart restores every job, torn tails are cut, kill -9 loses no ack.

All against real processes: ``-b DIR -f 0`` (a put is answered only after fsync) and a
real ``kill -9`` while producers are putting. A kill proves "acknowledged => written";
the page cache survives a process death, so "acknowledged => fsynced" is checked
separately, from the fsync counter seen by a client doing one put at a time.
"""

import os
import threading

import greenstalk
import pytest

import harness
from components.queue import binlog


def durable(spawn, directory, *flags):
    return spawn("queue", "-b", str(directory), "-f", "0", *flags)


def reserve_all(client) -> list[str]:
    """Every ready job's body (reserved, not deleted: no fsync per job)."""
    bodies = []
    while True:
        try:
            bodies.append(client.reserve(timeout=0).body)
        except greenstalk.TimedOutError:
            return bodies


def test_restart_restores_ids_bodies_priorities_and_states(spawn, tmp_path):
    queue = durable(spawn, tmp_path)
    with greenstalk.Client(queue.address()) as c:
        c.use("photos")
        ready = c.put("ready", priority=5)
        delayed = c.put("delayed", delay=3600)
        buried = c.put("buried", priority=2)
        reserved = c.put("reserved", priority=3)
        gone = c.put("gone")
        c.watch("photos")
        c.bury(c.reserve_job(buried), priority=9)
        c.reserve_job(reserved)
        c.delete(gone)
    queue.kill()
    queue = durable(spawn, tmp_path)
    with greenstalk.Client(queue.address()) as c:
        states = {i: c.stats_job(i) for i in (ready, delayed, buried, reserved)}
        assert {i: s["state"] for i, s in states.items()} == {
            ready: "ready", delayed: "delayed", buried: "buried", reserved: "ready",
        }  # fmt: skip
        assert states[ready]["pri"] == 5 and states[buried]["pri"] == 9
        assert states[ready]["tube"] == "photos"
        assert 3500 < states[delayed]["time-left"] <= 3600  # the deadline was kept
        assert c.peek(reserved).body == "reserved"
        try:
            c.peek(gone)
            raise AssertionError("a deleted job came back")
        except greenstalk.NotFoundError:
            pass
        assert c.put("next") > gone  # ids are never reused


def test_torn_tail_is_cut_not_fatal(spawn, tmp_path):
    queue = durable(spawn, tmp_path)
    with greenstalk.Client(queue.address()) as c:
        kept = [c.put(f"job-{i}") for i in range(5)]
    queue.kill()
    segment = sorted(p for p in tmp_path.iterdir() if p.name.startswith("binlog."))[-1]
    whole = segment.read_bytes()
    # Half of a valid record right after the last whole one, in the preallocated zeros,
    # as a crash in the middle of a write leaves it.
    end = binlog.replay(whole, binlog.Recovered())
    assert not whole[end:].strip(b"\x00"), "the segment ends in its preallocated zeros"
    record = binlog._frame(b"\x01" + b"\x00" * 60)
    half = record[: len(record) // 2]
    segment.write_bytes(whole[:end] + half + whole[end + len(half) :])
    queue = durable(spawn, tmp_path)
    with greenstalk.Client(queue.address()) as c:
        assert [c.peek(i).body for i in kept] == [f"job-{i}" for i in range(5)]
    assert '"torn_bytes_cut":' in queue.log_tail(50)
    # Garbage that fails its CRC is cut the same way.
    queue.kill()
    segment = sorted(p for p in tmp_path.iterdir() if p.name.startswith("binlog."))[-1]
    segment.write_bytes(segment.read_bytes() + os.urandom(100))
    queue = durable(spawn, tmp_path)
    with greenstalk.Client(queue.address()) as c:
        assert c.stats()["current-jobs-ready"] == 5


def test_kill_9_during_concurrent_puts_loses_no_acknowledged_job(spawn, tmp_path):
    rounds, producers = 3, 8
    acknowledged: list[str] = []  # over all rounds: jobs are never deleted here
    for round_no in range(rounds):
        queue = durable(spawn, tmp_path)
        acked: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def produce(n, queue=queue, acked=acked, lock=lock, stop=stop, round_no=round_no):
            try:
                with greenstalk.Client(queue.address()) as c:
                    i = 0
                    while not stop.is_set():
                        body = f"r{round_no}-p{n}-{i}"
                        c.put(body)  # returns only after the fsync
                        with lock:
                            acked.append(body)
                        i += 1
            except (OSError, greenstalk.Error):
                return  # the server died mid-put: that put was never acknowledged

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(producers)]
        for t in threads:
            t.start()
        harness.wait_until_sync(lambda acked=acked: len(acked) >= 100, what="puts acknowledged")
        queue.kill()  # SIGKILL while producers are mid-put
        stop.set()
        for t in threads:
            t.join(10)
        with lock:
            acknowledged += acked
        queue = durable(spawn, tmp_path)
        with greenstalk.Client(queue.address()) as c:
            bodies = reserve_all(c)  # reserved jobs come back ready after the next kill
        assert len(bodies) == len(set(bodies)), "a job came back twice"
        missing = set(acknowledged) - set(bodies)
        assert not missing, f"round {round_no}: {len(missing)} acknowledged jobs lost"
        queue.kill()


def test_group_commit_shares_fsyncs_between_producers(spawn, tmp_path):
    queue = durable(spawn, tmp_path)

    def produce():
        with greenstalk.Client(queue.address()) as c:
            for i in range(50):
                c.put(f"x{i}")

    threads = [threading.Thread(target=produce) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    metrics = harness.http("GET", queue.url("admin") + "/metrics")[2].decode()
    values = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line and line[0] != "#")
    puts = float(values["scalelab_queue_puts_total"])
    fsyncs = float(values["scalelab_queue_fsyncs_total"])
    assert puts == 800
    assert fsyncs < puts, "every put paid its own fsync: no group commit"


def test_compaction_keeps_disk_proportional_to_live_jobs(spawn, tmp_path):
    # Disk use is the live log plus at most one preallocation step: keep the step small.
    queue = durable(spawn, tmp_path, "--compact-min-bytes", "20000", "--preallocate-bytes", "4096")
    body = "b" * 1000
    with greenstalk.Client(queue.address()) as c:
        keep = [c.put(f"keep-{i}") for i in range(5)]
        for _ in range(15):
            ids = [c.put(body) for _ in range(10)]
            for job_id in ids:
                c.delete(job_id)
        stats = c.stats()
    size = sum(p.stat().st_size for p in tmp_path.iterdir())
    written = 150 * (binlog.FULL_OVERHEAD + len("default") + 1000)
    assert size < 40_000 < written, f"binlog holds {size} bytes for 5 live jobs"
    assert stats["binlog-records-migrated"] > 0
    queue.kill()
    queue = durable(spawn, tmp_path, "--compact-min-bytes", "20000")
    with greenstalk.Client(queue.address()) as c:
        assert [c.peek(i).body for i in keep] == [f"keep-{i}" for i in range(5)]
        assert c.stats()["current-jobs-ready"] == 5


def test_periodic_fsync_mode_persists_on_clean_shutdown(spawn, tmp_path):
    queue = spawn("queue", "-b", str(tmp_path), "-f", "200")
    with greenstalk.Client(queue.address()) as c:
        ids = [c.put(f"j{i}") for i in range(10)]
        c.delete(ids[0])
    assert queue.stop() == 0
    queue = spawn("queue", "-b", str(tmp_path), "-f", "200")
    with greenstalk.Client(queue.address()) as c:
        assert c.stats()["current-jobs-ready"] == 9


def test_a_put_is_acknowledged_only_after_an_fsync_covering_it(spawn, tmp_path):
    # kill -9 cannot tell "written" from "fsynced" (the page cache survives a process
    # death), so check the ordering directly: one client, one put at a time, each ack
    # must have waited for an fsync of its own.
    queue = durable(spawn, tmp_path)
    with greenstalk.Client(queue.address()) as c:
        for i in range(20):
            c.put(f"p{i}")
            assert fsyncs(queue) >= i + 1


def fsyncs(queue) -> float:
    metrics = harness.http("GET", queue.url("admin") + "/metrics")[2].decode()
    for line in metrics.splitlines():
        if line.startswith("scalelab_queue_fsyncs_total "):
            return float(line.split()[1])
    raise AssertionError("no fsync counter")


def test_kill_9_during_puts_deletes_and_compactions(spawn, tmp_path):
    """Acknowledged deletes stay deleted and acknowledged puts stay put, while the log
    is being compacted underneath (a tiny --compact-min-bytes compacts constantly)."""
    flags = ("--compact-min-bytes", "4096")
    live: set[str] = set()
    deleted: set[str] = set()
    compactions = 0
    for round_no in range(2):
        queue = durable(spawn, tmp_path, *flags)
        lock = threading.Lock()
        stop = threading.Event()

        def work(n, queue=queue, lock=lock, stop=stop, round_no=round_no):
            try:
                with greenstalk.Client(queue.address()) as c:
                    i = 0
                    while not stop.is_set():
                        body = f"r{round_no}-w{n}-{i}"
                        job_id = c.put(body)
                        with lock:
                            live.add(body)
                        if i % 3:  # two in three deleted: the log soon outgrows 2x live
                            with lock:  # in doubt until the delete is acknowledged
                                live.discard(body)
                            c.delete(job_id)
                            with lock:
                                deleted.add(body)
                        i += 1
            except (OSError, greenstalk.Error):
                return

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        target = 150 * (round_no + 1)
        harness.wait_until_sync(lambda t=target: len(deleted) >= t, what="load")
        queue.kill()
        stop.set()
        for t in threads:
            t.join(10)
        compactions += queue.log_tail(10_000).count("binlog_compacted")
        queue = durable(spawn, tmp_path, *flags)
        with greenstalk.Client(queue.address()) as c:
            bodies = reserve_all(c)
        queue.kill()
        assert len(bodies) == len(set(bodies)), "a job came back twice"
        lost, undone = live - set(bodies), deleted & set(bodies)
        assert not lost, f"acknowledged puts lost: {sorted(lost)[:10]}"
        assert not undone, f"acknowledged deletes undone: {sorted(undone)[:10]}"
    assert compactions > 0


def test_periodic_mode_answers_at_once_and_fsyncs_within_the_period(spawn, tmp_path):
    queue = spawn("queue", "-b", str(tmp_path), "-f", "500")
    with greenstalk.Client(queue.address()) as c:
        for i in range(20):
            c.put(f"p{i}")
        # Twenty sequential puts did not wait for twenty fsyncs...
        assert fsyncs(queue) < 20
        # ...but the timer syncs what was written, with no further traffic.
        harness.wait_until_sync(lambda: fsyncs(queue) >= 1, what="periodic fsync")
        written = c.stats()["binlog-records-written"]
        assert written >= 20


def test_a_foreign_binlog_is_refused_not_compacted_away(tmp_path):
    foreign = tmp_path / "binlog.1"  # beanstalkd names its own files this way
    foreign.write_bytes(b"\x07\x00\x00\x00 beanstalkd's format")
    with pytest.raises(harness.process.StartError) as error:
        harness.start("queue", "-b", str(tmp_path), log_path=tmp_path.parent / "q.log")
    assert "not a scalelab queue binlog" in str(error.value)
    assert foreign.read_bytes().endswith(b"beanstalkd's format")


def test_a_second_queue_on_the_same_binlog_is_refused(spawn, tmp_path):
    first = durable(spawn, tmp_path)
    with pytest.raises(harness.process.StartError) as error:
        harness.start("queue", "-b", str(tmp_path), log_path=tmp_path.parent / "q2.log")
    assert "in use by another queue process" in str(error.value)
    first.kill()  # the kernel drops the lock with the process
    durable(spawn, tmp_path)
