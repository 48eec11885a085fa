"""The queue core: states, ordering, timers and watch lists, with a hand-driven clock."""

from hypothesis import given, settings
from hypothesis import strategies as st

from components.queue.broker import BURIED, DELAYED, HEAP_SLACK, READY, RESERVED, Broker


def setup():
    broker = Broker()
    return broker, broker.connect("producer"), broker.connect("worker")


def put(broker, session, body=b"x", pri=0, delay=0, ttr=60, now=0.0, tube=None):
    return broker.put(session, tube or session.use, pri, delay, ttr, body, now)


def test_reserve_takes_lowest_priority_then_oldest():
    broker, p, w = setup()
    a = put(broker, p, pri=5)
    b = put(broker, p, pri=1)
    c = put(broker, p, pri=1)
    got = [broker.reserve(w, 0.0)[1] for _ in range(3)]
    assert got == [b, c, a]
    assert all(job.state is RESERVED for job in got)


def test_delayed_job_becomes_ready_when_its_time_comes():
    broker, p, w = setup()
    job = put(broker, p, delay=10, now=100.0)
    assert job.state is DELAYED
    assert broker.reserve(w, 105.0, timeout=0) == ("timed_out", None)
    assert broker.next_wakeup() == 110.0
    broker.tick(110.0)
    assert job.state is READY
    assert broker.reserve(w, 110.0, timeout=0) == ("reserved", job)


def test_ttr_expiry_returns_job_to_ready_and_counts_a_timeout():
    broker, p, w = setup()
    job = put(broker, p, ttr=5)
    broker.reserve(w, 0.0)
    broker.tick(4.9)
    assert job.state is RESERVED
    broker.tick(5.0)
    assert job.state is READY and job.timeouts == 1 and broker.job_timeouts == 1
    assert w.reserved == {}


def test_ttr_zero_is_raised_to_one_second():
    broker, p, _ = setup()
    assert put(broker, p, ttr=0).ttr == 1


def test_touch_restarts_the_ttr():
    broker, p, w = setup()
    job = put(broker, p, ttr=5)
    broker.reserve(w, 0.0)
    assert broker.touch(w, job.id, 4.0)
    broker.tick(6.0)
    assert job.state is RESERVED
    broker.tick(9.0)
    assert job.state is READY


def test_reserve_in_the_safety_margin_is_deadline_soon_unless_a_job_is_ready():
    broker, p, w = setup()
    put(broker, p, ttr=5)
    broker.reserve(w, 0.0)
    assert broker.reserve(w, 4.5) == ("deadline_soon", None)
    other = put(broker, p, now=4.5)
    assert broker.reserve(w, 4.5) == ("reserved", other)


def test_blocked_reserve_is_woken_by_deadline_soon():
    broker, p, w = setup()
    put(broker, p, ttr=5)
    broker.reserve(w, 0.0)
    assert broker.reserve(w, 1.0) is None
    assert broker.next_wakeup() == 4.0
    broker.tick(4.0)
    assert broker.take_wakeups() == [(w, "deadline_soon", None)]
    assert not w.waiting


def test_blocked_reserve_gets_the_next_put_job():
    broker, p, w = setup()
    assert broker.reserve(w, 0.0) is None
    assert w.waiting and broker.waiting_count == 1
    job = put(broker, p)
    assert broker.take_wakeups() == [(w, "reserved", job)]
    assert job.reserver is w and not w.waiting


def test_waiters_are_served_first_come_first_served():
    broker, p, w = setup()
    w2 = broker.connect("w2")
    broker.reserve(w, 0.0)
    broker.reserve(w2, 0.0)
    a = put(broker, p)
    b = put(broker, p)
    assert broker.take_wakeups() == [(w, "reserved", a), (w2, "reserved", b)]


def test_reserve_with_timeout_times_out():
    broker, _, w = setup()
    assert broker.reserve(w, 0.0, timeout=2) is None
    broker.tick(1.9)
    assert broker.take_wakeups() == []
    broker.tick(2.0)
    assert broker.take_wakeups() == [(w, "timed_out", None)]


def test_paused_tube_holds_jobs_until_the_pause_ends():
    broker, p, w = setup()
    job = put(broker, p)
    assert broker.pause_tube("default", 10, 0.0)
    assert broker.reserve(w, 1.0) is None
    broker.tick(9.0)
    assert broker.take_wakeups() == []
    broker.tick(10.0)
    assert broker.take_wakeups() == [(w, "reserved", job)]
    assert not broker.pause_tube("nope", 1, 0.0)


def test_bury_and_kick_buried_before_delayed():
    broker, p, w = setup()
    delayed = put(broker, p, delay=100)
    job = put(broker, p)
    broker.reserve(w, 0.0)
    assert broker.bury(w, job.id, 7, 0.0)
    assert job.state is BURIED and job.pri == 7 and broker.peek_buried(p.use) is job
    assert broker.kick(p.use, 10, 0.0) == 1
    assert job.state is READY and delayed.state is DELAYED and job.kicks == 1
    broker.reserve(w, 0.0)
    broker.delete(w, job.id, 0.0)
    assert broker.kick(p.use, 10, 0.0) == 1
    assert delayed.state is READY


def test_kick_job_only_for_buried_or_delayed():
    broker, p, w = setup()
    job = put(broker, p)
    assert not broker.kick_job(job.id, 0.0)
    later = put(broker, p, delay=5)
    assert broker.kick_job(later.id, 0.0) and later.state is READY


def test_release_with_delay_and_new_priority():
    broker, p, w = setup()
    job = put(broker, p, pri=1)
    broker.reserve(w, 0.0)
    assert broker.release(w, job.id, 9, 3, 1.0)
    assert job.state is DELAYED and job.pri == 9 and job.releases == 1
    broker.tick(4.0)
    assert job.state is READY


def test_only_the_reserving_session_may_release_bury_touch_or_delete_a_reserved_job():
    broker, p, w = setup()
    job = put(broker, p)
    broker.reserve(w, 0.0)
    assert not broker.release(p, job.id, 0, 0, 0.0)
    assert not broker.bury(p, job.id, 0, 0.0)
    assert not broker.touch(p, job.id, 0.0)
    assert not broker.delete(p, job.id, 0.0)
    assert broker.delete(w, job.id, 0.0)
    assert broker.peek(job.id) is None


def test_delete_works_on_ready_delayed_and_buried_jobs():
    broker, p, _ = setup()
    a = put(broker, p)
    b = put(broker, p, delay=5)
    assert broker.delete(p, a.id, 0.0) and broker.delete(p, b.id, 0.0)
    assert broker.counts() == {"urgent": 0, "ready": 0, "reserved": 0, "delayed": 0, "buried": 0}


def test_reserve_job_by_id_and_not_when_already_reserved():
    broker, p, w = setup()
    a = put(broker, p)
    b = put(broker, p)
    assert broker.reserve_job(w, b.id, 0.0) is b
    assert broker.reserve_job(p, b.id, 0.0) is None
    assert broker.reserve(w, 0.0) == ("reserved", a)


def test_disconnect_releases_reserved_jobs_to_waiters():
    broker, p, w = setup()
    job = put(broker, p)
    broker.reserve(w, 0.0)
    w2 = broker.connect("w2")
    broker.reserve(w2, 0.0)
    broker.disconnect(w, 1.0)
    assert broker.take_wakeups() == [(w2, "reserved", job)]


def test_watch_lists_and_ignore_of_the_last_tube():
    broker, p, w = setup()
    assert broker.watch(w, "photos") == 2
    assert broker.watch(w, "photos") == 2
    assert broker.ignore(w, "default") == 1
    assert broker.ignore(w, "photos") is None
    broker.use(p, "photos")
    job = put(broker, p)
    assert broker.reserve(w, 0.0) == ("reserved", job)


def test_unused_empty_tube_is_dropped_but_default_stays():
    broker, p, w = setup()
    broker.use(p, "tmp")
    job = put(broker, p)
    broker.use(p, "default")
    assert "tmp" in broker.tubes
    broker.delete(p, job.id, 0.0)
    assert "tmp" not in broker.tubes and "default" in broker.tubes


def test_stats_report_ages_and_time_left():
    broker, p, w = setup()
    job = put(broker, p, ttr=30, now=100.0)
    broker.reserve(w, 100.0)
    stats = dict(broker.job_stats(job, 110.0))
    assert stats["state"] == "reserved" and stats["age"] == 10 and stats["time-left"] == 20
    tube = dict(broker.tube_stats(p.use, 110.0))
    assert tube["current-jobs-reserved"] == 1 and tube["total-jobs"] == 1


ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "reserve", "delete", "release", "bury", "kick", "tick"]),
        st.integers(0, 20),
        st.integers(0, 3),
    ),  # fmt: skip
    max_size=300,
)


@settings(max_examples=100)
@given(ops)
def test_counts_stay_consistent_and_heaps_bounded_under_any_sequence(sequence):
    broker, p, w = setup()
    now = 0.0
    for op, n, small in sequence:
        if op == "put":
            put(broker, p, pri=n, delay=small, ttr=1 + small, now=now)
        elif op == "reserve":
            broker.reserve(w, now, timeout=0)
        elif op == "delete":
            broker.delete(w, n, now)
        elif op == "release":
            broker.release(w, n, small, small, now)
        elif op == "bury":
            broker.bury(w, n, small, now)
        elif op == "kick":
            broker.kick(p.use, small, now)
        else:
            now += small
            broker.tick(now)
        states = [job.state for job in broker.jobs.values()]
        counts = broker.counts()
        assert counts["ready"] == states.count(READY)
        assert counts["delayed"] == states.count(DELAYED)
        assert counts["reserved"] == states.count(RESERVED) == len(w.reserved)
        assert counts["buried"] == states.count(BURIED)
        tube = p.use
        assert len(tube.ready) <= 2 * tube.ready_count + HEAP_SLACK + 1
        assert len(tube.delayed) <= 2 * tube.delayed_count + HEAP_SLACK + 1
