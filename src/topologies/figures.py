"""The figures a stage is judged by, read out of a load report, and the journey's table.

The load generator's report has the user's view (throughput, latency percentiles,
errors) and, under ``tier``, every component's counters and gauges over the run. Each
stage of the chapter makes one claim about one of those tiers, so this module picks out,
by the components' names and metric names:

- **db reads/s**: the reads the web tier sent to its database (``scalelab_web_db_
  queries_total{kind="read"}``, summed over web servers): the same measure in every
  stage, embedded SQLite or the store tier. Also **queries/s by store node**, which
  shows reads spread over the replicas;
- **cache hit ratio**: the web tier's own lookups (hits / (hits + misses)), whether
  the cache is in-process or the shared tier;
- **replication lag**: the largest lag, in log records, a store node reported at the
  end of the run;
- **edge hit ratio**: of the requests the edge could answer from its store (the static
  assets; the API is passed through), the share it did;
- **lb share**: each backend's share of the requests the balancer proxied, which
  shows the balance (and a dead or added server) at a glance;
- **queue** (the queued stage): jobs put and done (deleted by a worker) per second,
  and the jobs ready and reserved at the end of the run: whether the workers kept up;
- **shard groups** (the sharded stage's router): statements per second sent to each
  store group, statements sent to several groups (fan-outs), requests refused
  (cross-shard joins and transactions) and requests a group did not answer: whether
  the load is spread over the groups, and what a dead group cost;
- **requests/s by data centre** (the multi_dc stage): what each data centre's
  balancer proxied, which shows where users went before and after a failover (its
  web and store nodes, ``dc1-web-1``, count as web and store nodes above);
- **workers** (the queued stage's autoscaler): the pool at the start and the end of
  the run, its mean over the run (worker-seconds / seconds, what a cloud bill counts)
  and its p99, the queue's depth over the run (mean, p99), and the scaling steps up
  and down.

Pure: dicts in, dicts and text out. ``comparison_table`` renders one row per stage for
``scalelab journey``.
"""

from __future__ import annotations

import re


def _counters(tier: dict, component: str, name: str) -> list[dict]:
    figures = tier.get(component) or {}
    return [c for c in figures.get("counters", []) if c["name"] == name]


def _per_s(tier: dict, components: list[str], name: str, **labels: str) -> float:
    total = 0.0
    for component in components:
        for c in _counters(tier, component, name):
            if all(c["labels"].get(k) == v for k, v in labels.items()):
                total += c["per_s"]
    return total


def _delta(tier: dict, components: list[str], name: str, **labels: str) -> float:
    return sum(c["delta"] for comp in components for c in _counters(tier, comp, name)
               if all(c["labels"].get(k) == v for k, v in labels.items()))  # fmt: skip


def _gauge(tier: dict, component: str, name: str, when: str, **labels: str) -> float | None:
    """The sum of a gauge's series (``when``: "before" or "after"), None if none."""
    values = [g[when] for g in (tier.get(component) or {}).get("gauges", [])
              if g["name"] == name and g[when] is not None
              and all(g["labels"].get(k) == v for k, v in labels.items())]  # fmt: skip
    return sum(values) if values else None


def _histogram(tier: dict, component: str, name: str) -> dict:
    found = [h for h in (tier.get(component) or {}).get("histograms", []) if h["name"] == name]
    return found[0] if found else {}


def _queue_figures(tier: dict) -> dict:
    """Jobs through the queue, and (with an autoscaler) the pool that worked them."""
    figures = {
        "jobs_put_per_s": round(_per_s(tier, ["queue"], "scalelab_queue_puts_total"), 1),
        "jobs_done_per_s": round(_per_s(tier, ["queue"], "scalelab_queue_deletes_total"), 1),
        "jobs_ready": _gauge(tier, "queue", "scalelab_queue_jobs", "after", state="ready"),
        "jobs_reserved": _gauge(tier, "queue", "scalelab_queue_jobs", "after", state="reserved"),
    }
    if "autoscaler" in tier:
        pool = _histogram(tier, "autoscaler", "scalelab_autoscaler_pool_workers")
        backlog = _histogram(tier, "autoscaler", "scalelab_autoscaler_backlog_jobs")
        workers = "scalelab_autoscaler_workers"
        events = "scalelab_autoscaler_scale_events_total"
        figures["workers"] = {
            "start": _gauge(tier, "autoscaler", workers, "before"),
            "end": _gauge(tier, "autoscaler", workers, "after"),
            "mean": round(_per_s(tier, ["autoscaler"],
                                 "scalelab_autoscaler_worker_seconds_total"), 2),
            # Sizes sit alone in buckets bounded half-way between them: round back.
            "p99": None if pool.get("p99") is None else round(pool["p99"]),
            "scaled_up": _delta(tier, ["autoscaler"], events, direction="up"),
            "scaled_down": _delta(tier, ["autoscaler"], events, direction="down"),
        }  # fmt: skip
        figures["backlog"] = {"mean": round(backlog["mean"], 1) if backlog else None,
                              "p99": backlog.get("p99")}  # fmt: skip
    return figures


def _shard_figures(tier: dict) -> dict:
    """Statements by group through the shard router (the component named ``router``)."""
    per_group: dict[str, float] = {}
    for c in _counters(tier, "router", "scalelab_shard_queries_total"):
        group = c["labels"].get("group", "?")
        per_group[group] = per_group.get(group, 0.0) + c["per_s"]
    errors = {c["labels"].get("group", "?"): c["delta"]
              for c in _counters(tier, "router", "scalelab_shard_upstream_errors_total")}  # fmt: skip
    return {
        "queries_per_s": {g: round(v, 1) for g, v in sorted(per_group.items())},
        "fanout_per_s": round(_per_s(tier, ["router"], "scalelab_shard_fanout_queries_total"), 1),
        "refused": _delta(tier, ["router"], "scalelab_shard_refused_total"),
        "group_errors": {g: n for g, n in sorted(errors.items()) if n},
    }


#: A component of one data centre (the multi_dc stage): ``dc1-web-1``, ``dc2-lb``.
DATA_CENTRE = re.compile(r"dc[0-9]+-")


def _local(name: str) -> str:
    """``name`` without its data centre: ``dc2-web-1`` is a ``web-1`` for the figures."""
    match = DATA_CENTRE.match(name)
    return name[match.end() :] if match else name


def stage_figures(report: dict) -> dict:
    """The stage's summary figures from a ``loadgen`` report (see the module essay)."""
    tier = report.get("tier", {})
    webs = sorted(n for n in tier if _local(n).startswith("web"))
    stores = sorted(n for n in tier if _local(n).startswith("store"))
    latency = report.get("latency_ms", {})
    figures: dict = {
        "rps": report.get("throughput_rps", 0.0),
        "p50_ms": latency.get("p50"),
        "p99_ms": latency.get("p99"),
        "errors": report.get("errors", {}).get("total", 0),
        "errors_by_kind": report.get("errors", {}).get("by_kind", {}),
        "db_reads_per_s": round(
            _per_s(tier, webs, "scalelab_web_db_queries_total", kind="read"), 1
        ),
        "db_writes_per_s": round(
            _per_s(tier, webs, "scalelab_web_db_queries_total", kind="write"), 1
        ),
    }
    hits = _delta(tier, webs, "scalelab_web_cache_hits_total")
    misses = _delta(tier, webs, "scalelab_web_cache_misses_total")
    figures["cache_hit_ratio"] = round(hits / (hits + misses), 4) if hits + misses else None
    figures["cache_errors"] = _delta(tier, webs, "scalelab_web_cache_errors_total")
    if stores:
        figures["store_queries_per_s"] = {
            s: round(_per_s(tier, [s], "scalelab_store_queries_total"), 1) for s in stores
        }
        lags = [g["after"] for s in stores for g in (tier.get(s) or {}).get("gauges", [])
                if g["name"] == "scalelab_store_replication_lag_records"
                and g["after"] is not None]  # fmt: skip
        figures["replication_lag_records"] = max(lags) if lags else None
        # Queries a node refused over its emulated capacity (the client tried another).
        figures["store_rejected_per_s"] = round(
            _per_s(tier, stores, "scalelab_store_queries_rejected_total"), 1
        )
    if "edge" in tier:
        # Of the requests the edge could serve from its store (passes excluded: the API).
        results = {c["labels"].get("result"): c["delta"]
                   for c in _counters(tier, "edge", "scalelab_edge_requests_total")}  # fmt: skip
        cacheable = sum(v for k, v in results.items() if k not in ("pass", "uncached", "error"))
        figures["edge_hit_ratio"] = round(results.get("hit", 0) / cacheable, 4) \
            if cacheable else None  # fmt: skip
    if "lb" in tier:
        shares = {}
        for c in _counters(tier, "lb", "scalelab_lb_requests_total"):
            backend = c["labels"].get("backend", "?")
            shares[backend] = shares.get(backend, 0.0) + c["delta"]
        total = sum(shares.values())
        figures["lb_share"] = {b: round(n / total, 3) for b, n in sorted(shares.items())} \
            if total else {}  # fmt: skip
        figures["lb_retries"] = _delta(tier, ["lb"], "scalelab_lb_retries_total")
    centres = sorted(n.partition("-")[0] for n in tier if DATA_CENTRE.match(n) and
                     _local(n) == "lb")  # fmt: skip
    if centres:
        figures["dc_requests_per_s"] = {
            dc: round(_per_s(tier, [f"{dc}-lb"], "scalelab_lb_requests_total"), 1) for dc in centres
        }
    if "queue" in tier:
        figures["queue"] = _queue_figures(tier)
    if _counters(tier, "router", "scalelab_shard_queries_total"):
        figures["shards"] = _shard_figures(tier)
    return figures


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_figures(figures: dict) -> list[str]:
    lines = [
        f"stage figures: {figures['rps']:.1f} req/s, p50 {_num(figures['p50_ms'], '.2f')} ms, "
        f"p99 {_num(figures['p99_ms'], '.2f')} ms, errors {figures['errors']}",
        f"  db reads/s {figures['db_reads_per_s']:.1f}, writes/s {figures['db_writes_per_s']:.1f}"
        f", cache hit ratio {_num(figures['cache_hit_ratio'], '.3f')}"
        f" (cache errors {figures['cache_errors']:g})",
    ]
    if "store_queries_per_s" in figures:
        nodes = ", ".join(f"{n} {v:.1f}" for n, v in figures["store_queries_per_s"].items())
        lines.append(f"  store queries/s by node: {nodes}; refused over capacity/s "
                     f"{figures.get('store_rejected_per_s', 0):g}; replication lag (records) "
                     f"{_num(figures['replication_lag_records'], 'g')}")  # fmt: skip
    if "edge_hit_ratio" in figures:
        lines.append(
            f"  edge hit ratio (cacheable requests) {_num(figures['edge_hit_ratio'], '.3f')}"
        )
    if "dc_requests_per_s" in figures:
        centres = ", ".join(f"{dc} {v:.1f}" for dc, v in figures["dc_requests_per_s"].items())
        lines.append(f"  requests/s by data centre (its balancer): {centres}")
    if "lb_share" in figures:
        shares = ", ".join(f"{b} {100 * s:.1f}%" for b, s in figures["lb_share"].items())
        lines.append(f"  lb share: {shares or '-'}; retries {figures['lb_retries']:g}")
    if "shards" in figures:
        sh = figures["shards"]
        total = sum(sh["queries_per_s"].values())
        groups = ", ".join(f"{g} {v:.1f}" + (f" ({100 * v / total:.0f}%)" if total else "")
                           for g, v in sh["queries_per_s"].items())  # fmt: skip
        failed = ", ".join(f"{g} {n:g}" for g, n in sh["group_errors"].items()) or "none"
        lines.append(f"  shard groups: statements/s {groups or '-'}; fan-out/s "
                     f"{sh['fanout_per_s']:.1f}; refused {sh['refused']:g}; requests a "
                     f"group did not answer: {failed}")  # fmt: skip
    if "queue" in figures:
        q = figures["queue"]
        lines.append(f"  queue: jobs put/s {q['jobs_put_per_s']:.1f}, done/s "
                     f"{q['jobs_done_per_s']:.1f}; at the end ready {_num(q['jobs_ready'], 'g')}"
                     f", reserved {_num(q['jobs_reserved'], 'g')}")  # fmt: skip
        if "workers" in q:
            w, b = q["workers"], q["backlog"]
            lines.append(f"  workers: {_num(w['start'], 'g')} at the start, "
                         f"{_num(w['end'], 'g')} at the end, mean {w['mean']:.2f}, p99 "
                         f"{_num(w['p99'], 'd')}; scaled up {w['scaled_up']:g}x, down "
                         f"{w['scaled_down']:g}x; backlog (ready + reserved) mean "
                         f"{_num(b['mean'], '.1f')}, p99 {_num(b['p99'], '.0f')}")  # fmt: skip
    return lines


COLUMNS = (("stage", "<14", None), ("req/s", ">9", ".1f"), ("p50 ms", ">9", ".2f"),
           ("p99 ms", ">9", ".2f"), ("errors", ">7", "d"), ("db reads/s", ">11", ".1f"),
           ("hit ratio", ">10", ".3f"))  # fmt: skip
KEYS = ("stage", "rps", "p50_ms", "p99_ms", "errors", "db_reads_per_s", "cache_hit_ratio")


def comparison_table(rows: list[dict]) -> str:
    """One line per stage: ``rows`` are ``stage_figures`` dicts with a ``stage`` key."""
    head = "  ".join(format(title, align) for title, align, _ in COLUMNS)
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = []
        for (_, align, spec), key in zip(COLUMNS, KEYS, strict=True):
            value = row.get(key)
            text = str(value) if spec is None else _num(value, spec)
            cells.append(format(text, align))
        lines.append("  ".join(cells))
    return "\n".join(lines)
