"""The log-linear histogram: precision, percentiles, merging, bounded size, shipping."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.histogram import MAX_VALUE_US, Histogram, bucket_bounds, bucket_index

values_us = st.integers(min_value=0, max_value=10**9)


def exact_percentile(values: list[int], percent: float) -> int:
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100.0 * len(ordered)))
    return ordered[rank - 1]


def histogram_of(values) -> Histogram:
    hist = Histogram()
    for v in values:
        hist.record(v)
    return hist


@given(values_us)
def test_every_value_lands_in_a_bucket_that_holds_it(value):
    low, high = bucket_bounds(bucket_index(value))
    assert low <= value <= high


@given(values_us)
def test_bucket_width_is_within_one_percent_of_its_values(value):
    low, high = bucket_bounds(bucket_index(value))
    assert (high - low + 1) <= max(1, low / 128)


def test_small_values_are_exact():
    hist = histogram_of(range(256))
    assert hist.percentile(50) == 127
    assert hist.percentile(100) == 255
    assert hist.min == 0 and hist.max == 255


@settings(max_examples=200)
@given(
    st.lists(values_us, min_size=1, max_size=300),
    st.sampled_from([1.0, 50.0, 90.0, 99.0, 99.9, 100.0]),
)
def test_percentiles_are_within_one_percent_of_the_exact_nearest_rank(values, percent):
    hist = histogram_of(values)
    exact = exact_percentile(values, percent)
    assert abs(hist.percentile(percent) - exact) <= max(1, exact * 0.01)


@given(st.lists(values_us, min_size=1, max_size=200))
def test_percentiles_in_one_pass_match_single_lookups(values):
    hist = histogram_of(values)
    many = hist.percentiles((50.0, 90.0, 99.0, 99.9))
    assert many == {p: hist.percentile(p) for p in (50.0, 90.0, 99.0, 99.9)}


@given(st.lists(values_us), st.lists(values_us))
def test_merging_equals_recording_everything_in_one(a, b):
    merged = histogram_of(a)
    merged.merge(histogram_of(b))
    assert merged.to_dict() == histogram_of(a + b).to_dict()


def test_max_min_mean_and_count_are_exact():
    hist = histogram_of([1_000, 2_000, 123_456_789])
    assert (hist.count, hist.min, hist.max) == (3, 1_000, 123_456_789)
    assert hist.mean() == pytest.approx((1_000 + 2_000 + 123_456_789) / 3)


def test_record_seconds_rounds_to_microseconds():
    hist = Histogram()
    hist.record_seconds(0.0015)
    assert hist.max == 1500


def test_negative_and_huge_values_are_clamped():
    hist = histogram_of([-5, MAX_VALUE_US * 4])
    assert hist.min == 0
    assert hist.max == MAX_VALUE_US


def test_memory_does_not_grow_with_samples():
    hist = Histogram()
    size = len(hist.counts)
    for v in range(0, 10**9, 997_331):
        hist.record(v)
    assert len(hist.counts) == size


def test_empty_histogram_reports_zero():
    hist = Histogram()
    assert hist.percentile(99) == 0
    assert hist.percentiles() == {50.0: 0, 90.0: 0, 99.0: 0, 99.9: 0}
    assert hist.summary_ms()["max"] == 0


def test_percentile_outside_range_is_rejected():
    with pytest.raises(ValueError):
        Histogram().percentile(0)
    with pytest.raises(ValueError):
        Histogram().percentile(101)


@given(st.lists(values_us))
def test_dict_form_round_trips(values):
    hist = histogram_of(values)
    assert Histogram.from_dict(hist.to_dict()).to_dict() == hist.to_dict()


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"count": 1, "total": 1, "min": 1, "max": 1, "buckets": {"1": 2}},
        {"count": 1, "total": 1, "min": 1, "max": 1, "buckets": {"99999999": 1}},
        {"count": 1, "total": 1, "min": 1, "max": 1, "buckets": {"1": -1}},
        {"unit": "ns", "count": 0, "total": 0, "min": 0, "max": 0, "buckets": {}},
        {"count": 0, "total": 0, "min": 0, "max": 0, "buckets": []},
    ],
)
def test_inconsistent_dict_is_rejected(data):
    with pytest.raises(ValueError):
        Histogram.from_dict(data)


def test_clear_forgets_everything():
    hist = histogram_of([5, 50_000])
    hist.clear()
    assert hist.to_dict() == Histogram().to_dict()
