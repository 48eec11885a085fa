"""Tier figures from two scrapes: deltas, rates, resets, hit ratio, db queries/s."""

import pytest

from components.common.metrics import Registry
from loadgen.exposition import parse_exposition
from loadgen.tier import tier_figures


def scrape(registry: Registry):
    return parse_exposition(registry.render())


@pytest.fixture
def registry():
    r = Registry()
    r.counter("scalelab_web_cache_hits_total", "hits")
    r.counter("scalelab_web_cache_misses_total", "misses")
    r.counter("scalelab_web_db_queries_total", "queries", ["op"])
    r.gauge("scalelab_web_connections", "open connections")
    r.histogram("scalelab_web_request_duration_seconds", "latency", buckets=(0.01, 0.1, 1.0))
    return r


def test_counter_deltas_rates_and_derived_figures(registry):
    hits = registry.get("scalelab_web_cache_hits_total")
    misses = registry.get("scalelab_web_cache_misses_total")
    queries = registry.get("scalelab_web_db_queries_total")
    hits.inc(100)  # before the window: must not count
    before = scrape(registry)
    hits.inc(90)
    misses.inc(10)
    queries.labels("select").inc(10)
    queries.labels("update").inc(30)
    figures = tier_figures(before, scrape(registry), elapsed_s=2.0)
    counters = {(c["name"], tuple(c["labels"].items())): c for c in figures["counters"]}
    assert counters[("scalelab_web_cache_hits_total", ())]["delta"] == 90
    assert counters[("scalelab_web_cache_hits_total", ())]["per_s"] == 45
    assert counters[("scalelab_web_db_queries_total", (("op", "update"),))]["delta"] == 30
    assert figures["derived"]["hit_ratio"] == {"scalelab_web_cache": 0.9}
    assert figures["derived"]["db_queries_per_s"] == 20.0


def test_a_counter_that_went_down_was_reset(registry):
    before = parse_exposition("# TYPE x_total counter\nx_total 500\n")
    after = parse_exposition("# TYPE x_total counter\nx_total 7\n")
    (counter,) = tier_figures(before, after, 1.0)["counters"]
    assert counter["delta"] == 7


def test_a_series_born_during_the_run_counts_from_zero():
    before = parse_exposition("")
    after = parse_exposition('# TYPE y_total counter\ny_total{a="b"} 4\n')
    assert tier_figures(before, after, 1.0)["counters"][0]["delta"] == 4


def test_no_hit_ratio_without_traffic(registry):
    figures = tier_figures(scrape(registry), scrape(registry), 1.0)
    assert "hit_ratio" not in figures["derived"]
    assert figures["derived"]["db_queries_per_s"] == 0


def test_gauges_show_before_and_after(registry):
    gauge = registry.get("scalelab_web_connections")
    gauge.set(3)
    before = scrape(registry)
    gauge.set(8)
    figures = tier_figures(before, scrape(registry), 1.0)
    assert {"name": "scalelab_web_connections", "labels": {}, "before": 3, "after": 8} in figures[
        "gauges"
    ]


def test_histogram_count_mean_and_interpolated_quantiles(registry):
    hist = registry.get("scalelab_web_request_duration_seconds")
    hist.observe(5.0)  # before the window
    before = scrape(registry)
    for _ in range(50):
        hist.observe(0.005)
    for _ in range(50):
        hist.observe(0.05)
    (h,) = tier_figures(before, scrape(registry), 10.0)["histograms"]
    assert h["count"] == 100 and h["per_s"] == 10
    assert h["mean"] == pytest.approx(0.0275)
    assert h["p50"] == pytest.approx(0.01)  # the 50th of 100 is the last in the first bucket
    assert 0.01 < h["p99"] <= 0.1
