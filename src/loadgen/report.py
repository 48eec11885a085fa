"""The report of a run: one JSON-able dict, and its rendering as text for a terminal.

The dict is the contract (``--json FILE`` writes it, ``run_load`` returns it, the
launcher's ``--report`` embeds it); the text is a view of it. Latencies are in
milliseconds with the percentiles every figure of the journey uses (p50, p90, p99,
p99.9, max), overall and per request kind; answers per status; errors per kind; and for
each scraped component the tier figures (``loadgen.tier``).

``timeline`` is the run second by second (``loadgen.timeline``): a list of rows
``{"t", "warmup", "requests", "answers", "errors", "p50_ms", "p99_ms", "max_ms"}``, one per
``timeline_step_s`` seconds (1 unless the run is longer than an hour), from the start of
the run (warm-up included, rows marked ``"warmup": true``) to its end, seconds without a
request included, so a fault shows as the seconds it hurt. ``timeline_started_at`` is
the Unix time of ``t = 0`` (the start of the warm-up), so events stamped with
``time.time()`` (a scenario's kills and restarts) fall in row
``int((ts - timeline_started_at) // timeline_step_s)``.

The progress line shows the *last second* only (its own histogram), because a
cumulative p99 hides what is happening now: a stall that started five seconds ago
barely moves a p99 over two minutes.
"""

from __future__ import annotations

from .histogram import Histogram
from .profile import Profile
from .results import Results

__all__ = ["build_report", "format_report", "format_progress", "format_timeline"]

_PERCENTILES = ("p50", "p90", "p99", "p99.9", "max")
#: At most this many counter lines per component in the text report (all are in JSON).
MAX_COUNTER_LINES = 20
#: The text report shows the timeline for runs of at most this many rows (all in JSON).
MAX_TIMELINE_LINES = 60


def build_report(
    *,
    target: str,
    profile: Profile,
    procs: int,
    results: Results,
    tier: dict[str, dict],
    interrupted: bool = False,
    until_s: float | None = None,
    started_at: float | None = None,
) -> dict:
    """The report dict; ``until_s``: seconds the run lasted, if cut short (timeline rows);
    ``started_at``: the run's start (``t = 0``) as a Unix time."""
    window_s = results.window_s
    timeline = results.timeline
    requests = results.requests
    errors = results.error_count
    return {
        "target": target,
        "profile": profile.to_dict(),
        "procs": procs,
        "interrupted": interrupted,
        "window_s": round(window_s, 3),
        "requests": requests,
        "throughput_rps": round(requests / window_s, 2) if window_s > 0 else 0.0,
        "errors": {
            "total": errors,
            "ratio": round(errors / max(1, requests + results.failures), 6),
            "by_kind": {e: sum(per.values()) for e, per in sorted(results.errors.items())},
            "by_request": results.errors,
        },
        "warmup": {"requests": results.warmup_requests, "errors": results.warmup_errors},
        "latency_ms": results.latency.summary_ms(),
        "by_kind": {
            kind: {
                "requests": hist.count,
                "latency_ms": hist.summary_ms(),
                "status": {str(s): n for s, n in sorted(results.status.get(kind, {}).items())},
            }
            for kind, hist in sorted(results.by_kind.items())
        },
        "status": {str(s): n for s, n in results.status_totals().items()},
        "tier": tier,
        "histogram_us": results.latency.to_dict(),
        "timeline_started_at": None if started_at is None else round(started_at, 3),
        "timeline_step_s": timeline.step_s if timeline is not None else 1,
        "timeline": timeline.rows(until_s) if timeline is not None else [],
    }


def _latency_row(label: str, summary: dict) -> str:
    cells = "".join(f"{summary.get(p, 0.0):>10.2f}" for p in _PERCENTILES)
    return f"  {label:<16}{summary.get('count', 0):>9}{cells}"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def format_report(report: dict) -> str:
    p = report["profile"]
    if p["mode"] == "closed":
        load = f"closed loop, {p['users']} users, think {p['think_ms']:g} ms"
    else:
        load = f"open loop, {p['rate']:g} req/s"
    keys = p["keys"]
    skew = f" s={keys['s']:g}" if keys["distribution"] == "zipf" else ""
    mix = ", ".join(
        f"{r['name']} once first" if r.get("first") else f"{r['name']} {r['weight']:g}"
        for r in p["requests"]
    )
    if not p.get("cookies", True):
        mix += " (cookies off)"
    lines = [
        f"scalelab load  {report['target']}  profile {p['name']} ({load})  procs {report['procs']}",
        f"mix {mix}; "
        f"writes {100 * p['write_fraction']:.1f} %; keys {keys['distribution']}{skew} "
        f"over 1..{keys['n']}",
        f"duration {p['duration_s']:g} s, warm-up {p['warmup_s']:g} s excluded "
        f"({report['warmup']['requests']} requests); measured window {report['window_s']:.2f} s"
        + ("  [INTERRUPTED]" if report["interrupted"] else ""),
        f"requests {report['requests']}  throughput {report['throughput_rps']:.1f} req/s  "
        f"errors {report['errors']['total']} ({100 * report['errors']['ratio']:.2f} %)",
        "",
        f"  {'latency ms':<16}{'count':>9}" + "".join(f"{h:>10}" for h in _PERCENTILES),
        _latency_row("all", report["latency_ms"]),
    ]
    for kind, entry in report["by_kind"].items():
        lines.append(_latency_row(kind, entry["latency_ms"]))
    if report["status"]:
        statuses = "  ".join(f"{s}: {n}" for s, n in report["status"].items())
        lines += ["", f"  status  {statuses}"]
    if report["errors"]["total"]:
        parts = []
        for error, per in sorted(report["errors"]["by_request"].items()):
            detail = ", ".join(f"{k} {n}" for k, n in sorted(per.items()))
            parts.append(f"{error}: {sum(per.values())} ({detail})")
        lines.append("  errors  " + "; ".join(parts))
    timeline = report.get("timeline", [])
    if 1 < len(timeline) <= MAX_TIMELINE_LINES:
        lines += ["", *format_timeline(timeline)]
    for component, figures in report["tier"].items():
        lines += ["", *format_tier(component, figures)]
    return "\n".join(lines)


def format_timeline(rows: list[dict]) -> list[str]:
    """The per-second rows: requests, errors (by kind) and p50/p99 of each second."""

    def ms(value: float | None) -> str:
        return f"{value:>9.2f}" if value is not None else f"{'-':>9}"

    lines = [f"  {'second':<10}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}  errors"]
    for row in rows:
        label = f"{row['t']:g}" + (" warm" if row["warmup"] else "")
        errors = ", ".join(f"{kind} {n}" for kind, n in row["errors"].items())
        lines.append(
            f"  {label:<10}{row['requests']:>9}{ms(row['p50_ms'])}{ms(row['p99_ms'])}  {errors}".rstrip()
        )
    return lines


def format_tier(component: str, figures: dict) -> list[str]:
    if "error" in figures:
        return [f"tier {component}: metrics unavailable ({figures['error']})"]
    lines = [f"tier {component}  (over {figures['elapsed_s']:.2f} s between scrapes)"]
    derived = figures.get("derived", {})
    if "db_queries_per_s" in derived:
        lines.append(f"  db queries/s      {derived['db_queries_per_s']:.1f}")
    for prefix, ratio in derived.get("hit_ratio", {}).items():
        lines.append(f"  hit ratio         {ratio:.3f}  ({prefix})")
    counters = sorted(
        (c for c in figures.get("counters", []) if c["delta"]), key=lambda c: -c["delta"]
    )
    for c in counters[:MAX_COUNTER_LINES]:
        lines.append(
            f"  {c['name'] + _labels(c['labels']):<60} +{c['delta']:<10g} {c['per_s']:>10.1f}/s"
        )
    if len(counters) > MAX_COUNTER_LINES:
        lines.append(f"  ... {len(counters) - MAX_COUNTER_LINES} more counters in the JSON report")
    for h in figures.get("histograms", []):
        # Prometheus convention: base units (seconds); a report reads better in ms.
        scale, unit = (1000.0, " ms") if h["name"].endswith("_seconds") else (1.0, "")
        quantiles = ""
        if h.get("p50") is not None and h.get("p99") is not None:
            quantiles = f"  ~p50 {h['p50'] * scale:.3g}{unit}  ~p99 {h['p99'] * scale:.3g}{unit}"
        lines.append(
            f"  {h['name'] + _labels(h['labels']):<60} n={h['count']:g}  "
            f"mean {h['mean'] * scale:.3g}{unit}{quantiles}"
        )
    return lines


def format_progress(second: int, phase: str, interval: Histogram, errors_total: int) -> str:
    """One line per second: the last second's rate and latency, errors so far."""
    p = interval.percentiles((50.0, 99.0))
    return (
        f"[{second:>4d}s] {phase:<7} {interval.count:>8d} req/s  "
        f"p50 {p[50.0] / 1000:>8.2f} ms  p99 {p[99.0] / 1000:>8.2f} ms  errors {errors_total}"
    )
