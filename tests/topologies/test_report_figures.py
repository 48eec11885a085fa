"""The windows around faults and the stage figures, on reports made by hand."""

import pytest

from topologies.figures import comparison_table, format_figures, stage_figures
from topologies.timeline import event_row, fault_windows, format_windows


def timeline_row(t, requests=100, errors=None, p99_ms=5.0):
    return {"t": t, "warmup": t < 1, "requests": requests, "answers": requests,
            "errors": errors or {}, "p50_ms": 1.0, "p99_ms": p99_ms, "max_ms": p99_ms}  # fmt: skip


def run_report(rows, started_at=1000.0, step_s=1):
    return {"timeline": rows, "timeline_started_at": started_at, "timeline_step_s": step_s}


def test_an_event_falls_in_the_row_of_its_wall_clock_second():
    report = run_report([timeline_row(t) for t in range(10)])
    assert event_row(report, 1004.99) == 4
    assert event_row(report, 1005.0) == 5
    assert event_row(report, 990.0) == 0  # played before the load started: its first row
    assert event_row(report, 2000.0) == 9  # after its end: its last row
    assert event_row({"timeline": [], "timeline_started_at": 1000.0}, 1001) is None
    wide = run_report([timeline_row(t) for t in range(0, 20, 2)], step_s=2)
    assert event_row(wide, 1005.0) == 2  # 2-second rows: t = 4


def test_a_window_holds_the_seconds_around_its_event_with_errors_by_kind():
    rows = [timeline_row(t) for t in range(12)]
    rows[5] = timeline_row(5, errors={"connect_refused": 3, "http_5xx": 1}, p99_ms=900.0)
    rows[6] = timeline_row(6, errors={"connect_refused": 1})
    rows[1] = timeline_row(1, errors={"timeout": 2})
    events = [{"what": "kill web-1", "at_s": 5.0, "ts": 1005.4},
              {"what": "add web-3", "at_s": 11.0, "ts": 1011.2}]  # fmt: skip
    first, last = fault_windows(run_report(rows), events)
    assert first["second"] == 5 and first["load_s"] == 5.4
    assert [r["t"] for r in first["rows"]] == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert [r["offset_s"] for r in first["rows"]][:4] == [-3, -2, -1, 0]
    assert first["rows"][3]["p99_ms"] == 900.0
    assert first["errors"] == first["errors_from_event"] == {"connect_refused": 4, "http_5xx": 1}
    assert [r["t"] for r in last["rows"]] == [8, 9, 10, 11]  # cut at the end of the run
    assert last["errors"] == {} and last["second"] == 11
    wide = fault_windows(run_report(rows), events[:1], before_s=5)
    assert wide[0]["rows"][0]["t"] == 0 and wide[0]["errors"]["timeout"] == 2
    assert wide[0]["errors_from_event"] == first["errors_from_event"]


def test_no_timeline_means_no_windows():
    assert fault_windows({"timeline": [], "timeline_started_at": None}, [
        {"what": "kill x", "at_s": 1.0, "ts": 5.0}]) == []  # fmt: skip


def test_windows_as_text_mark_the_event_on_its_second():
    rows = [timeline_row(t) for t in range(8)]
    rows[4] = timeline_row(4, errors={"connect_refused": 7}, p99_ms=None)
    [window] = fault_windows(run_report(rows), [{"what": "kill web-1", "at_s": 4.0,
                                                 "ts": 1004.5}])  # fmt: skip
    lines = format_windows([window])
    assert "kill web-1" in lines[1] and "connect_refused 7" in lines[1]
    marked = [line for line in lines if line.endswith("<- kill web-1")]
    assert len(marked) == 1 and marked[0].split()[0] == "4" and "connect_refused 7" in marked[0]
    assert len(lines) == 3 + len(window["rows"])  # blank, title, header, one per row


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


def test_data_centre_tiers_count_as_their_tier_and_each_centre_has_its_requests():
    tier = {"dc1-web-1": REPORT["tier"]["web-1"], "dc2-web-1": REPORT["tier"]["web-2"],
            "dc1-store": REPORT["tier"]["store-1"], "dc2-store": REPORT["tier"]["store-2"],
            "dc1-lb": REPORT["tier"]["lb"],
            "dc2-lb": {"counters": [counter("scalelab_lb_requests_total", 40, 4.0,
                                            backend="c", status="200")]}}  # fmt: skip
    figures = stage_figures({**REPORT, "tier": tier})
    assert figures["db_reads_per_s"] == 15.0
    assert figures["store_queries_per_s"] == {"dc1-store": 6.0, "dc2-store": 9.0}
    assert figures["dc_requests_per_s"] == {"dc1": 100.0, "dc2": 4.0}
    assert "data centre (its balancer): dc1 100.0, dc2 4.0" in "\n".join(format_figures(figures))
    assert "dc_requests_per_s" not in stage_figures(REPORT)


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
