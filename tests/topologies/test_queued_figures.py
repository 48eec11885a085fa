"""The queued stage's figures, read from two scrapes of the queue and the autoscaler."""

from loadgen.exposition import parse_exposition
from loadgen.tier import tier_figures
from topologies.autoscale import BACKLOG_BUCKETS, POOL_BUCKETS
from topologies.figures import format_figures, stage_figures


def queue_metrics(puts, deletes, ready, reserved):
    return parse_exposition(
        "# TYPE scalelab_queue_puts_total counter\n"
        f"scalelab_queue_puts_total {puts}\n"
        "# TYPE scalelab_queue_deletes_total counter\n"
        f"scalelab_queue_deletes_total {deletes}\n"
        "# TYPE scalelab_queue_jobs gauge\n"
        f'scalelab_queue_jobs{{tube="photos",state="ready"}} {ready}\n'
        f'scalelab_queue_jobs{{tube="photos",state="reserved"}} {reserved}\n'
        'scalelab_queue_jobs{tube="photos",state="buried"} 0\n'
    )


def histogram(name, bounds, values):
    lines = [f"# TYPE {name} histogram"]
    for bound in bounds:
        lines.append(f'{name}_bucket{{le="{bound!r}"}} {sum(v <= bound for v in values)}')
    lines.append(f'{name}_bucket{{le="+Inf"}} {len(values)}')
    lines.append(f"{name}_sum {sum(values)}")
    lines.append(f"{name}_count {len(values)}")
    return "\n".join(lines) + "\n"


def autoscaler_metrics(workers, worker_seconds, ups, downs, pool, backlog):
    return parse_exposition(
        "# TYPE scalelab_autoscaler_workers gauge\n"
        f"scalelab_autoscaler_workers {workers}\n"
        "# TYPE scalelab_autoscaler_worker_seconds_total counter\n"
        f"scalelab_autoscaler_worker_seconds_total {worker_seconds}\n"
        "# TYPE scalelab_autoscaler_scale_events_total counter\n"
        f'scalelab_autoscaler_scale_events_total{{direction="up"}} {ups}\n'
        f'scalelab_autoscaler_scale_events_total{{direction="down"}} {downs}\n'
        + histogram("scalelab_autoscaler_pool_workers", POOL_BUCKETS, pool)
        + histogram("scalelab_autoscaler_backlog_jobs", BACKLOG_BUCKETS, backlog)
    )


def test_queue_and_worker_figures_over_a_ten_second_run():
    # 10 s: 300 jobs put, 280 done; the pool went 1 -> 4 -> 3 (30 worker-seconds).
    pool = [1] * 2 + [4] * 16 + [3] * 2
    backlog = [40] * 4 + [10] * 12 + [0] * 4
    tier = {
        "queue": tier_figures(queue_metrics(100, 100, 0, 0),
                              queue_metrics(400, 380, 15, 5), 10.0),
        "autoscaler": tier_figures(autoscaler_metrics(1, 50, 0, 0, [], []),
                                   autoscaler_metrics(3, 80, 1, 1, pool, backlog), 10.0),
    }  # fmt: skip
    figures = stage_figures({"tier": tier})
    queue = figures["queue"]
    assert (queue["jobs_put_per_s"], queue["jobs_done_per_s"]) == (30.0, 28.0)
    assert (queue["jobs_ready"], queue["jobs_reserved"]) == (15, 5)
    assert queue["workers"] == {"start": 1, "end": 3, "mean": 3.0, "p99": 4,
                                "scaled_up": 1, "scaled_down": 1}  # fmt: skip
    assert queue["backlog"]["mean"] == 14.0
    assert 20 <= queue["backlog"]["p99"] <= 50  # within the bucket the 40s fell in
    text = "\n".join(format_figures(figures))
    assert "queue: jobs put/s 30.0, done/s 28.0; at the end ready 15, reserved 5" in text
    assert "workers: 1 at the start, 3 at the end, mean 3.00, p99 4; scaled up 1x" in text


def test_a_queue_without_an_autoscaler_has_no_worker_figures():
    tier = {"queue": tier_figures(queue_metrics(0, 0, 0, 0), queue_metrics(5, 5, 0, 0), 1.0)}
    queue = stage_figures({"tier": tier})["queue"]
    assert queue["jobs_done_per_s"] == 5.0 and "workers" not in queue
    assert "workers:" not in "\n".join(format_figures(stage_figures({"tier": tier})))


def test_stages_without_a_queue_report_no_queue_figures():
    assert "queue" not in stage_figures({"tier": {}})
