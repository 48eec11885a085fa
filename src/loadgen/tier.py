"""Tier figures: what two scrapes of a component's ``/metrics`` say about a run.

The load generator sees the system from the outside (latency, throughput, errors). The
scaling story is told from the inside too: "the cache takes load off the database" is a
claim about the database's queries per second and the cache's hit ratio. So the report
scrapes every component before and after the run and differences the two scrapes:

- every **counter**: its increase over the run and its rate per second. A counter that
  went down was reset (the process restarted), so, as Prometheus' ``increase()`` does,
  the increase is then its new value;
- every **gauge**: its value before and after;
- every **histogram**: the count and mean of the observations made during the run, and
  the p50/p99 estimated from the bucket increases by linear interpolation inside the
  bucket (what PromQL's ``histogram_quantile`` does; only as good as the buckets);
- **derived figures**: any counter pair ``<prefix>_hits_total`` / ``<prefix>_misses_total``
  gives the hit ratio ``hits / (hits + misses)`` over the run, and any
  ``*_db_queries_total`` gives database queries per second.

Pure: scrapes and the elapsed time in, a JSON-able dict out.
"""

from __future__ import annotations

import math
from collections import defaultdict

from .exposition import Exposition

__all__ = ["tier_figures"]


def _increase(before: float | None, after: float) -> float:
    if before is None or after < before:
        return after
    return after - before


def _labels_dict(labels: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return dict(labels)


def tier_figures(before: Exposition, after: Exposition, elapsed_s: float) -> dict:
    """Counters, gauges, histograms and derived figures over one run (see the essay)."""
    elapsed_s = max(elapsed_s, 1e-9)
    counters = []
    gauges = []
    sums: dict[str, float] = defaultdict(float)  # counter name -> increase over all labels
    buckets: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    hist_count: dict[tuple, float] = {}
    hist_sum: dict[tuple, float] = {}
    for key, value in after.samples.items():
        name, labels = key
        kind = after.kind(name)
        old = before.samples.get(key)
        if kind == "counter" or (kind == "untyped" and name.endswith("_total")):
            delta = _increase(old, value)
            sums[name] += delta
            counters.append(
                {
                    "name": name,
                    "labels": _labels_dict(labels),
                    "delta": delta,
                    "per_s": round(delta / elapsed_s, 3),
                }
            )
        elif kind == "gauge":
            gauges.append(
                {"name": name, "labels": _labels_dict(labels), "before": old, "after": value}
            )
        elif kind == "histogram":
            if name.endswith("_bucket"):
                le = dict(labels).get("le")
                rest = tuple(kv for kv in labels if kv[0] != "le")
                if le is not None:
                    try:
                        bound = float(le)
                    except ValueError:
                        continue
                    buckets[(name[:-7], rest)].append((bound, _increase(old, value)))
            elif name.endswith("_count"):
                hist_count[(name[:-6], labels)] = _increase(old, value)
            elif name.endswith("_sum"):
                hist_sum[(name[:-4], labels)] = _increase(old, value)
    histograms = []
    for key, count in hist_count.items():
        if count <= 0:
            continue
        name, labels = key
        entry = {
            "name": name,
            "labels": _labels_dict(labels),
            "count": count,
            "per_s": round(count / elapsed_s, 3),
            "mean": hist_sum.get(key, 0.0) / count,
        }
        series = sorted(buckets.get(key, []))
        if series:
            entry["p50"] = _bucket_quantile(0.50, series)
            entry["p99"] = _bucket_quantile(0.99, series)
        histograms.append(entry)
    derived: dict[str, object] = {}
    hit_ratio = {}
    for name, hits in sums.items():
        if name.endswith("_hits_total"):
            prefix = name[: -len("_hits_total")]
            misses = sums.get(prefix + "_misses_total")
            if misses is not None and hits + misses > 0:
                hit_ratio[prefix] = round(hits / (hits + misses), 4)
    if hit_ratio:
        derived["hit_ratio"] = hit_ratio
    # A declared family with no series yet (no query ran) still means "0 queries/s".
    db_names = {n for n in sums if n.endswith("_db_queries_total")}
    db_names |= {
        n
        for n, kind in after.types.items()
        if kind == "counter" and n.endswith("_db_queries_total")
    }
    if db_names:
        derived["db_queries_per_s"] = round(sum(sums.get(n, 0.0) for n in db_names) / elapsed_s, 3)
    return {
        "elapsed_s": round(elapsed_s, 3),
        "counters": counters,
        "gauges": gauges,
        "histograms": histograms,
        "derived": derived,
    }


def _bucket_quantile(q: float, series: list[tuple[float, float]]) -> float | None:
    """histogram_quantile over cumulative (upper bound, count) pairs sorted by bound."""
    total = series[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in series:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound  # beyond the last finite bucket: its bound is all we know
            width = count - prev_count
            if width <= 0:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / width
        prev_bound, prev_count = bound, count
    return prev_bound
