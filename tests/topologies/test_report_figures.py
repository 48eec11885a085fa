"""The timeline's per-second rows and the stage figures, on scrapes and reports made by hand."""

import pytest

from loadgen.exposition import parse_exposition
from topologies.figures import comparison_table, format_figures, stage_figures
from topologies.timeline import format_timeline, quantile, second_row

LB_BEFORE = """# TYPE scalelab_lb_requests_total counter
scalelab_lb_requests_total{backend="a",status="200"} 100
scalelab_lb_requests_total{backend="b",status="200"} 100
# TYPE scalelab_lb_rejected_total counter
scalelab_lb_rejected_total{reason="no_backend"} 1
# TYPE scalelab_lb_request_duration_seconds histogram
scalelab_lb_request_duration_seconds_bucket{backend="a",le="0.01"} 100
scalelab_lb_request_duration_seconds_bucket{backend="a",le="0.1"} 100
scalelab_lb_request_duration_seconds_bucket{backend="a",le="+Inf"} 100
scalelab_lb_request_duration_seconds_bucket{backend="b",le="0.01"} 100
scalelab_lb_request_duration_seconds_bucket{backend="b",le="0.1"} 100
scalelab_lb_request_duration_seconds_bucket{backend="b",le="+Inf"} 100
"""
# One second later: a +150, b +40 of which 10 were 503s, 5 answered by the lb itself;
# 100 of the 190 proxied took up to 10 ms, 90 up to 100 ms.
LB_AFTER = """# TYPE scalelab_lb_requests_total counter
scalelab_lb_requests_total{backend="a",status="200"} 250
scalelab_lb_requests_total{backend="b",status="200"} 130
scalelab_lb_requests_total{backend="b",status="503"} 10
# TYPE scalelab_lb_rejected_total counter
scalelab_lb_rejected_total{reason="no_backend"} 6
# TYPE scalelab_lb_request_duration_seconds histogram
scalelab_lb_request_duration_seconds_bucket{backend="a",le="0.01"} 200
scalelab_lb_request_duration_seconds_bucket{backend="a",le="0.1"} 250
scalelab_lb_request_duration_seconds_bucket{backend="a",le="+Inf"} 250
scalelab_lb_request_duration_seconds_bucket{backend="b",le="0.01"} 100
scalelab_lb_request_duration_seconds_bucket{backend="b",le="0.1"} 140
scalelab_lb_request_duration_seconds_bucket{backend="b",le="+Inf"} 140
"""


def test_second_row_sums_backends_counts_5xx_and_rejections_as_errors():
    row = second_row(parse_exposition(LB_BEFORE), parse_exposition(LB_AFTER), 0.5)
    assert row["rps"] == (150 + 30 + 10 + 5) / 0.5
    assert row["errors_per_s"] == (10 + 5) / 0.5
    # rank 0.99 * 190 = 188.1 falls in (0.01, 0.1] holding 90 after the first 100
    expected = 0.01 + 0.09 * (188.1 - 100) / 90
    assert row["p99_ms"] == pytest.approx(expected * 1000, abs=0.01)


def test_a_restarted_counter_counts_its_new_value():
    after = LB_BEFORE.replace("} 100", "} 7")
    row = second_row(parse_exposition(LB_BEFORE), parse_exposition(after), 1.0)
    assert row["rps"] == 7 + 7  # a and b restarted at 7; rejected unchanged (1 -> 1)


def test_quantile_edges():
    assert quantile(0.99, []) is None
    assert quantile(0.99, [(0.1, 0), (float("inf"), 0)]) is None
    assert quantile(0.5, [(0.1, 10), (float("inf"), 10)]) == pytest.approx(0.05)
    assert quantile(0.99, [(0.1, 0), (float("inf"), 5)]) == 0.1  # only "above 0.1" is known


def test_timeline_marks_events_on_their_second():
    rows = [{"t_s": float(t), "rps": 100.0, "errors_per_s": 0.0, "p99_ms": 5.0}
            for t in range(1, 6)]  # fmt: skip
    rows[2]["p99_ms"] = None
    lines = format_timeline(rows, [{"at_s": 2.5, "what": "kill web-1"}])
    assert len(lines) == 6
    assert lines[3].endswith("<- kill web-1") and "-" in lines[3]
    assert not any("<-" in line for line in lines[:3] + lines[4:])


def test_a_long_timeline_shows_only_the_seconds_around_events():
    rows = [{"t_s": float(t), "rps": 1.0, "errors_per_s": 0.0, "p99_ms": 1.0}
            for t in range(1, 201)]  # fmt: skip
    lines = format_timeline(rows, [{"at_s": 100, "what": "kill x"}])
    shown = [float(line.split()[0]) for line in lines[1:]]
    assert shown == [float(t) for t in range(97, 109)]


def test_a_long_run_without_events_is_thinned_to_the_window():
    rows = [{"t_s": float(t), "rps": 1.0, "errors_per_s": 0.0, "p99_ms": 1.0}
            for t in range(1, 301)]  # fmt: skip
    lines = format_timeline(rows, [], window_s=60)
    shown = [float(line.split()[0]) for line in lines[1:]]
    assert shown == [float(t) for t in range(5, 301, 5)]


def counter(name, delta, per_s, **labels):
    return {"name": name, "labels": labels, "delta": delta, "per_s": per_s}


REPORT = {
    "throughput_rps": 1000.0,
    "latency_ms": {"p50": 2.0, "p99": 9.5},
    "errors": {"total": 3, "by_kind": {"http_5xx": 3}},
    "tier": {
        "web-1": {"counters": [
            counter("scalelab_web_db_queries_total", 100, 10.0, kind="read"),
            counter("scalelab_web_db_queries_total", 20, 2.0, kind="write"),
            counter("scalelab_web_cache_hits_total", 900, 90.0),
            counter("scalelab_web_cache_misses_total", 100, 10.0)]},
        "web-2": {"counters": [
            counter("scalelab_web_db_queries_total", 50, 5.0, kind="read"),
            counter("scalelab_web_cache_hits_total", 400, 40.0),
            counter("scalelab_web_cache_misses_total", 100, 10.0)]},
        "store-1": {"counters": [counter("scalelab_store_queries_total", 60, 6.0)],
                    "gauges": [{"name": "scalelab_store_replication_lag_records", "labels": {},
                                "before": 0, "after": 0}]},
        "store-2": {"counters": [counter("scalelab_store_queries_total", 90, 9.0),
                                 counter("scalelab_store_queries_rejected_total", 12, 1.2)],
                    "gauges": [{"name": "scalelab_store_replication_lag_records", "labels": {},
                                "before": 0, "after": 4}]},
        "lb": {"counters": [
            counter("scalelab_lb_requests_total", 750, 75.0, backend="a", status="200"),
            counter("scalelab_lb_requests_total", 250, 25.0, backend="b", status="200"),
            counter("scalelab_lb_retries_total", 2, 0.2)]},
        "failover": {"error": "connection refused"},
        "edge": {"counters": [
            counter("scalelab_edge_requests_total", 95, 9.5, result="hit"),
            counter("scalelab_edge_requests_total", 4, 0.4, result="miss"),
            counter("scalelab_edge_requests_total", 1, 0.1, result="revalidated"),
            counter("scalelab_edge_requests_total", 900, 90.0, result="pass")]},
    },
}  # fmt: skip


def test_stage_figures_pick_each_tiers_claim():
    figures = stage_figures(REPORT)
    assert figures["db_reads_per_s"] == 15.0 and figures["db_writes_per_s"] == 2.0
    assert figures["cache_hit_ratio"] == pytest.approx(1300 / 1500, abs=1e-4)
    assert figures["store_queries_per_s"] == {"store-1": 6.0, "store-2": 9.0}
    assert figures["replication_lag_records"] == 4
    assert figures["store_rejected_per_s"] == 1.2
    assert figures["lb_share"] == {"a": 0.75, "b": 0.25} and figures["lb_retries"] == 2
    assert figures["edge_hit_ratio"] == 0.95  # passes (the API) are not the edge's to serve
    text = "\n".join(format_figures(figures))
    assert "a 75.0%" in text and "store-2 9.0" in text and "0.867" in text
    assert "refused over capacity/s 1.2" in text


def test_single_server_figures_have_no_store_or_lb_lines():
    report = {**REPORT, "tier": {"web-1": REPORT["tier"]["web-1"]}}
    figures = stage_figures(report)
    assert "lb_share" not in figures and "store_queries_per_s" not in figures
    assert "edge_hit_ratio" not in figures
    assert len(format_figures(figures)) == 2


def test_comparison_table_has_one_row_per_stage():
    rows = [{"stage": "single_server", **stage_figures(REPORT)},
            {"stage": "cached", **stage_figures({"tier": {}})}]  # fmt: skip
    table = comparison_table(rows).splitlines()
    assert table[0].split()[:3] == ["stage", "req/s", "p50"]
    assert table[2].split() == ["single_server", "1000.0", "2.00", "9.50", "3", "15.0", "0.867"]
    assert table[3].split()[-1] == "-"
