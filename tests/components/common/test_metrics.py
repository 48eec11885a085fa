import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from components.common.metrics import Registry


def parse(registry):
    return {f.name: f for f in text_string_to_metric_families(registry.render())}


def test_counter_with_labels_renders_each_child():
    registry = Registry()
    hits = registry.counter("scalelab_cache_get_hits_total", "Cache hits", ["node"])
    hits.labels(node="a").inc()
    hits.labels("a").inc(2)
    hits.labels(node="b").inc()
    samples = {
        s.labels["node"]: s.value for s in parse(registry)["scalelab_cache_get_hits"].samples
    }
    assert samples == {"a": 3, "b": 1}


def test_counter_refuses_to_go_down():
    counter = Registry().counter("x_total", "x")
    with pytest.raises(ValueError):
        counter.inc(-1)


def test_gauge_callback_is_read_at_scrape_time():
    registry = Registry()
    depth = [3]
    registry.gauge("scalelab_queue_depth_jobs", "depth").set_function(lambda: depth[0])
    assert parse(registry)["scalelab_queue_depth_jobs"].samples[0].value == 3
    depth[0] = 7
    assert parse(registry)["scalelab_queue_depth_jobs"].samples[0].value == 7


def test_histogram_buckets_are_cumulative_and_le_is_inclusive():
    registry = Registry()
    h = registry.histogram("lat_seconds", "latency", buckets=[0.1, 1.0])
    for value in (0.05, 0.1, 0.5, 2.0):
        h.observe(value)
    samples = parse(registry)["lat_seconds"].samples
    buckets = {s.labels["le"]: s.value for s in samples if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 2, "1.0": 3, "+Inf": 4}
    assert [s.value for s in samples if s.name.endswith("_count")] == [4]
    assert math.isclose([s.value for s in samples if s.name.endswith("_sum")][0], 2.65)


def test_label_values_are_escaped():
    registry = Registry()
    registry.counter("req_total", "r", ["path"]).labels(path='a"b\\c\nd').inc()
    sample = parse(registry)["req"].samples[0]
    assert sample.labels["path"] == 'a"b\\c\nd'


def test_invalid_names_and_duplicate_registration_are_refused():
    registry = Registry()
    with pytest.raises(ValueError):
        registry.counter("bad-name", "x")
    with pytest.raises(ValueError):
        registry.counter("ok_total", "x", ["__reserved"])
    registry.counter("ok_total", "x")
    with pytest.raises(ValueError):
        registry.counter("ok_total", "x")
    with pytest.raises(ValueError):
        registry.histogram("h", "x", ["le"])


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_histogram_count_and_inf_bucket_match_observations(values):
    registry = Registry()
    h = registry.histogram("h_seconds", "h")
    for value in values:
        h.observe(value)
    samples = parse(registry)["h_seconds"].samples
    inf = [s.value for s in samples if s.labels.get("le") == "+Inf"][0]
    count = [s.value for s in samples if s.name == "h_seconds_count"][0]
    assert inf == count == len(values)
    cumulative = [s.value for s in samples if s.name == "h_seconds_bucket"]
    assert cumulative == sorted(cumulative)


def test_counter_callback_is_read_at_scrape_time():
    registry = Registry()
    hits = [5]
    registry.counter("scalelab_cache_get_hits_total", "hits").set_function(lambda: hits[0])
    assert parse(registry)["scalelab_cache_get_hits"].samples[0].value == 5
    hits[0] = 9
    assert parse(registry)["scalelab_cache_get_hits"].samples[0].value == 9
