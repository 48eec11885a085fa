"""Timeline: per-second slots, coarse percentiles, bounds, merging and shipping exact."""

import pytest

from loadgen.results import Results
from loadgen.timeline import MAX_SLOTS, Timeline, coarse_bounds, coarse_index


def test_coarse_buckets_hold_their_values_within_about_three_percent():
    for value in [0, 1, 31, 32, 33, 1000, 12_345, 999_999, 10**9, (1 << 36) - 1]:
        low, high = coarse_bounds(coarse_index(value))
        assert low <= value <= high
        assert (high - low) <= max(1, value) / 16
    assert coarse_index(-5) == 0 and coarse_index(1 << 40) == coarse_index((1 << 36) - 1)


def test_requests_land_in_the_second_they_were_due():
    t = Timeline(duration_s=4, warmup_s=1)
    t.answer(0.2, 1_000, None)
    t.answer(1.5, 2_000, None)
    t.answer(1.9, 3_000, "http_5xx")
    t.failure(3.99, "timeout")
    rows = t.rows()
    assert [r["t"] for r in rows] == [0, 1, 2, 3]
    assert [r["warmup"] for r in rows] == [True, False, False, False]
    assert [r["requests"] for r in rows] == [1, 2, 0, 1]
    assert rows[1]["errors"] == {"http_5xx": 1} and rows[1]["answers"] == 2
    assert rows[1]["p50_ms"] == pytest.approx(2.0, rel=0.04)
    assert rows[1]["p99_ms"] == pytest.approx(3.0, rel=0.04) and rows[1]["max_ms"] == 3.0
    assert rows[2] == {"t": 2, "warmup": False, "requests": 0, "answers": 0, "errors": {},
                       "p50_ms": None, "p99_ms": None, "max_ms": None}  # fmt: skip
    assert rows[3]["errors"] == {"timeout": 1} and rows[3]["p99_ms"] is None


def test_p99_of_one_second_sees_its_slow_tail():
    t = Timeline(duration_s=2)
    for _ in range(98):
        t.answer(1.0, 1_000, None)
    t.answer(1.0, 500_000, None)
    t.answer(1.0, 800_000, None)
    row = t.rows()[1]
    assert row["p50_ms"] == pytest.approx(1.0, rel=0.04)
    assert row["p99_ms"] == pytest.approx(500.0, rel=0.04)
    assert t.rows()[0]["requests"] == 0


def test_long_runs_get_wider_slots_and_memory_stays_bounded():
    t = Timeline(duration_s=86_400)
    assert t.step_s == 24 and t.length == MAX_SLOTS
    for i in range(0, 86_400, 7):
        t.answer(float(i), i, None)
    t.answer(1e9, 1, None)  # clamped to the last slot, never a new one
    t.failure(-3.0, "connect")  # clamped to the first
    assert len(t.slots) == MAX_SLOTS
    assert all(len(s.buckets) <= coarse_index((1 << 36) - 1) + 1 for s in t.slots.values())
    assert len(t.rows()) == MAX_SLOTS


def test_merge_adds_slots_and_survives_shipping():
    a, b = Timeline(3, 1), Timeline(3, 1)
    a.answer(0.5, 100, None)
    a.failure(2.1, "dropped")
    b.answer(0.7, 10_000, "http_4xx")
    b.answer(2.2, 50, None)
    b = Timeline.from_dict(b.to_dict())
    a.merge(b)
    rows = a.rows()
    assert [r["requests"] for r in rows] == [2, 0, 2]
    assert rows[0]["errors"] == {"http_4xx": 1} and rows[0]["max_ms"] == 10.0
    assert rows[2]["errors"] == {"dropped": 1} and rows[2]["answers"] == 1


def test_bad_shipped_timelines_are_refused():
    with pytest.raises(ValueError):
        Timeline.from_dict({"duration_s": 2, "warmup_s": 0, "slots": {"5": {}}})
    with pytest.raises(ValueError):
        Timeline.from_dict({"slots": {}})
    bad = Timeline(2).to_dict()
    bad["slots"] = {"0": {"requests": 1, "errors": {}, "max": 1, "buckets": {"99999": 1}}}
    with pytest.raises(ValueError):
        Timeline.from_dict(bad)


def test_results_feed_the_timeline_warmup_included_and_ship_it():
    r = Results()
    r.timeline = Timeline(2, 1)
    r.answer("get", 200, 1_000, False, 0.3)
    r.failure("get", "weird", False, 0.4)
    r.answer("get", 503, 2_000, True, 1.2)
    r.answer("get", 200, 2_000, True)  # no offset: figures only
    copy = Results.from_dict(r.to_dict())
    rows = copy.timeline.rows()
    assert rows[0]["warmup"] and rows[0]["requests"] == 2 and rows[0]["errors"] == {"other": 1}
    assert rows[1]["requests"] == 1 and rows[1]["errors"] == {"http_5xx": 1}
    merged = Results()
    merged.merge(copy)
    merged.merge(copy)
    assert [row["requests"] for row in merged.timeline.rows()] == [4, 2]


def test_the_inlined_recording_uses_the_coarse_buckets():
    t = Timeline(1)
    values = [-7, 0, 5, 31, 32, 33, 63, 64, 1_000, 65_535, 10**9, 1 << 40]
    for v in values:
        t.answer(0.0, v, None)
    expected: dict[int, int] = {}
    for v in values:
        expected[coarse_index(v)] = expected.get(coarse_index(v), 0) + 1
    assert t.slots[0].buckets == expected
