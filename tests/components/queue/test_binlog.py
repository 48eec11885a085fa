"""The binlog without a server: record format, replay, torn tails, snapshots."""

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from components.queue import binlog
from components.queue.binlog import MAGIC, Binlog, Recovered, replay
from components.queue.broker import BURIED, DELAYED, READY, Broker


def open_log(path, broker=None, **kwargs):
    broker = broker or Broker()
    log = Binlog(str(path), **kwargs)
    log.open(broker)
    return broker, log


def commit(log):
    batch = log.take_batch()
    if batch is not None:
        log.write_batch(batch, fsync=True)
        log.complete(batch)
    return batch


def test_every_state_change_replays(tmp_path):
    broker, log = open_log(tmp_path)
    p = broker.connect()
    a = broker.put(p, p.use, 5, 0, 60, b"a", 100.0)
    b = broker.put(p, p.use, 6, 30, 60, b"b", 100.0)
    c = broker.put(p, p.use, 7, 0, 60, b"c", 100.0)
    broker.reserve(p, 100.0)  # a: reserved, not logged
    broker.reserve_job(p, c.id, 100.0)
    broker.bury(p, c.id, 9, 100.0)
    d = broker.put(p, p.use, 1, 0, 60, b"d", 100.0)
    broker.delete(p, d.id, 100.0)
    commit(log)
    log.close()
    restored, log2 = open_log(tmp_path)
    jobs = {j.id: (j.state, j.pri, j.body) for j in restored.iter_jobs()}
    assert jobs == {a.id: (READY, 5, b"a"), b.id: (DELAYED, 6, b"b"), c.id: (BURIED, 9, b"c")}
    assert restored.jobs[b.id].deadline_at == 130.0
    assert restored.next_id == d.id + 1
    log2.close()


def test_restart_leaves_one_segment(tmp_path):
    for _ in range(3):
        broker, log = open_log(tmp_path)
        p = broker.connect()
        broker.put(p, p.use, 0, 0, 60, b"x", 0.0)
        commit(log)
        log.close()
    segments = [n for n in os.listdir(tmp_path) if n.startswith("binlog.")]
    assert len(segments) == 1
    broker, log = open_log(tmp_path)
    assert len(broker.jobs) == 3
    log.close()


def test_compaction_replaces_history_with_live_jobs(tmp_path):
    broker, log = open_log(tmp_path, compact_min_bytes=1000)
    p = broker.connect()
    keep = broker.put(p, p.use, 0, 0, 60, b"keep", 0.0)
    for _ in range(50):
        job = broker.put(p, p.use, 0, 0, 60, b"z" * 100, 0.0)
        broker.delete(p, job.id, 0.0)
        commit(log)
    assert log.compactions >= 1
    assert log.log_bytes < 1000 + 300
    log.close()
    restored, log = open_log(tmp_path)
    assert list(restored.jobs) == [keep.id]
    log.close()


def test_a_suffix_of_segments_left_by_a_crash_mid_compaction_replays_right(tmp_path):
    # History: segment 1 puts jobs 1 and 2, segment 2 deletes job 1, then a compaction
    # writes snapshot segment 3 (job 2 only) and unlinks the old segments oldest first.
    # A crash after the first unlink leaves segments 2 and 3: a suffix, which replays
    # to the right state. (Newest first would leave 1 and 3, resurrecting job 1.)
    broker = Broker()
    j1 = broker.restore(1, "default", 0, 0, 60, b"1", READY, 0.0, 0.0)
    j2 = broker.restore(2, "default", 0, 0, 60, b"2", READY, 0.0, 0.0)
    segment = {
        1: MAGIC + binlog.encode_full(j1) + binlog.encode_full(j2),
        2: MAGIC + binlog.encode_delete(1),
        3: MAGIC + binlog.encode_full(j2),
    }

    def state(indices):
        recovered = Recovered()
        for i in indices:
            replay(segment[i], recovered)
        return sorted(recovered.jobs)

    assert state([1, 2, 3]) == [2]
    assert state([2, 3]) == [2]  # what oldest-first unlinking can leave behind
    assert state([1, 3]) == [1, 2]  # what newest-first could leave: job 1 is back
    for i in (2, 3):
        (tmp_path / f"binlog.{i:010d}").write_bytes(segment[i])
    restored, log = open_log(tmp_path)
    assert sorted(restored.jobs) == [2]
    log.close()


def test_unfinished_snapshot_is_ignored_and_removed(tmp_path):
    broker, log = open_log(tmp_path)
    p = broker.connect()
    broker.put(p, p.use, 0, 0, 60, b"x", 0.0)
    commit(log)
    log.close()
    (tmp_path / "binlog.0000000099.tmp").write_bytes(MAGIC + b"garbage")
    broker, log = open_log(tmp_path)
    assert len(broker.jobs) == 1
    assert not (tmp_path / "binlog.0000000099.tmp").exists()
    log.close()


def test_segments_are_preallocated_and_written_in_place(tmp_path):
    broker, log = open_log(tmp_path, preallocate_bytes=4096)
    (name,) = log.segment_files()
    segment = tmp_path / name
    assert segment.stat().st_size == 4096  # the snapshot, then zeros to the step
    p = broker.connect()
    bodies = [bytes([65 + i % 26]) * 300 for i in range(30)]  # ~10 KB: two more steps
    for body in bodies:
        broker.put(p, p.use, 0, 0, 60, body, 0.0)
        commit(log)
    big = [bytes([97 + i]) * 5000 for i in range(3)]  # one batch longer than a step
    for body in big:
        broker.put(p, p.use, 0, 0, 60, body, 0.0)
    commit(log)
    bodies += big
    data = segment.read_bytes()
    assert len(data) % 4096 == 0 and len(data) >= log.log_bytes
    recovered = Recovered()
    end = replay(data, recovered)
    assert end == log.log_bytes  # every record where the last one ended, zeros after
    assert not data[end:].strip(b"\x00")
    assert recovered.torn_bytes == 0  # a zero tail is preallocation, not a tear
    assert [job[4] for job in recovered.jobs.values()] == bodies
    log.close()
    restored, log = open_log(tmp_path, preallocate_bytes=4096)
    assert [job.body for job in restored.iter_jobs()] == bodies
    log.close()


def test_without_preallocation_segments_hold_records_only(tmp_path):
    broker, log = open_log(tmp_path, preallocate_bytes=0)
    p = broker.connect()
    broker.put(p, p.use, 0, 0, 60, b"x", 0.0)
    commit(log)
    (name,) = log.segment_files()
    assert (tmp_path / name).stat().st_size == log.log_bytes
    log.close()


def test_a_torn_record_inside_the_zero_tail_is_cut(tmp_path):
    broker, log = open_log(tmp_path, preallocate_bytes=4096)
    p = broker.connect()
    kept = broker.put(p, p.use, 0, 0, 60, b"kept", 0.0)
    commit(log)
    end = log.log_bytes
    log.close()
    (name,) = log.segment_files()
    segment = tmp_path / name
    data = bytearray(segment.read_bytes())
    torn = binlog.encode_full(kept)[:20]  # a crash mid-write: the head of a record
    data[end : end + len(torn)] = torn
    recovered = Recovered()
    assert replay(bytes(data), recovered) == end
    assert recovered.torn_bytes == len(data) - end
    assert list(recovered.jobs) == [kept.id]


records = st.lists(
    st.tuples(
        st.sampled_from(["put", "update", "delete"]), st.integers(1, 8), st.binary(max_size=20)
    ),  # fmt: skip
    min_size=1,
    max_size=30,
)


@settings(max_examples=150)
@given(records, st.data())
def test_replay_of_any_truncation_is_the_state_of_a_record_prefix(ops, data):
    broker = Broker()
    tube = broker.tubes["default"]
    stream = [MAGIC]
    states = [{}]
    live: dict[int, bytes] = {}
    for op, job_id, body in ops:
        if op == "put":
            job = broker.restore(job_id, "default", 1, 0, 60, body, READY, 0.0, 0.0)
            stream.append(binlog.encode_full(job))
            live[job_id] = body
        elif op == "update" and job_id in broker.jobs:
            stream.append(binlog.encode_update(broker.jobs[job_id]))
        else:
            stream.append(binlog.encode_delete(job_id))
            live.pop(job_id, None)
            if job_id in broker.jobs:
                broker.delete(broker.connect(), job_id, 0.0)
        states.append(dict(live))
    assert tube is broker.tubes["default"]
    whole = b"".join(stream)
    cut = data.draw(st.integers(len(MAGIC), len(whole)))
    recovered = Recovered()
    good = replay(whole[:cut], recovered)
    # Exactly the records wholly before the cut were applied, nothing after.
    boundaries = [sum(len(s) for s in stream[: i + 1]) for i in range(len(stream))]
    applied = max(i for i, end in enumerate(boundaries) if end <= cut)
    assert good == boundaries[applied]
    assert {k: v[4] for k, v in recovered.jobs.items()} == states[applied]
    assert recovered.torn_bytes == cut - good


def test_a_group_commit_is_one_frame_and_replays_whole(tmp_path):
    broker, log = open_log(tmp_path, preallocate_bytes=0)
    p = broker.connect()
    jobs = [broker.put(p, p.use, i, 0, 60, b"body%d" % i, 0.0) for i in range(5)]
    broker.delete(p, jobs[0].id, 0.0)
    batch = log.take_batch()
    assert batch.records == 6
    length, _ = binlog._HEADER.unpack_from(batch.data)
    assert len(batch.data) == binlog._HEADER.size + length  # one header for all six
    log.write_batch(batch, fsync=True)
    log.complete(batch)
    log.close()
    restored, log = open_log(tmp_path)
    assert [j.body for j in restored.iter_jobs()] == [b"body%d" % i for i in range(1, 5)]
    log.close()


def test_a_torn_group_frame_is_cut_whole():
    broker = Broker()
    jobs = [broker.restore(i, "default", 0, 0, 60, b"j%d" % i, READY, 0.0, 0.0) for i in (1, 2)]
    first = binlog.encode_frames([binlog.encode_full(jobs[0])[binlog._HEADER.size :]])
    group = binlog.encode_frames([binlog.encode_full(j)[binlog._HEADER.size :] for j in jobs])
    whole = MAGIC + first + group
    for cut in range(len(MAGIC) + len(first), len(whole)):
        recovered = Recovered()
        assert replay(whole[:cut], recovered) == len(MAGIC) + len(first)
        assert list(recovered.jobs) == [1]  # job 2 was only in the torn group
    recovered = Recovered()
    assert replay(whole, recovered) == len(whole)


def test_a_frame_whose_records_do_not_fill_it_exactly_is_the_tail():
    broker = Broker()
    job = broker.restore(1, "default", 0, 0, 60, b"x", READY, 0.0, 0.0)
    record = binlog.encode_full(job)[binlog._HEADER.size :]
    for payload in (record + b"\x03", record[:-1], record + b"\x09" + bytes(8)):
        recovered = Recovered()
        assert replay(MAGIC + binlog._frame(payload), recovered) == len(MAGIC)  # CRC is fine
        assert recovered.jobs == {}


def test_a_batch_past_the_frame_limit_is_split_between_records(tmp_path, monkeypatch):
    monkeypatch.setattr(binlog, "MAX_FRAME_BYTES", 1000)
    broker, log = open_log(tmp_path, preallocate_bytes=0)
    p = broker.connect()
    bodies = [bytes([97 + i]) * 300 for i in range(10)]
    for body in bodies:
        broker.put(p, p.use, 0, 0, 60, body, 0.0)
    batch = commit(log)
    frames, at = [], 0
    while at < len(batch.data):
        length, _ = binlog._HEADER.unpack_from(batch.data, at)
        frames.append(length)
        at += binlog._HEADER.size + length
    assert len(frames) > 1 and max(frames) <= 1000
    log.close()
    restored, log = open_log(tmp_path)
    assert [j.body for j in restored.iter_jobs()] == bodies
    log.close()
