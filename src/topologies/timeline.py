"""The seconds around each fault, as the users saw them: errors by kind and p99 per second.

A run's totals hide a failover: "0.4 % errors and p99 900 ms" could be a steady trickle
or two bad seconds around a killed primary. The chapter's claims ("the balancer ejects
a dead web server within a second or two") need the shape in time, and from the side
that matters: the client's. The load generator already keeps the run second by second
(``loadgen.timeline``: each request charged to the second it fell due, with its error
kind or its latency), with the Unix time of its ``t = 0`` (``timeline_started_at``) and
the row width (``timeline_step_s``). A scenario records the Unix time each event was
played (``ts``), so the event falls in row ``(ts - timeline_started_at) // step``, with no
clock to reconcile between processes.

``fault_windows`` cuts, for every event, the rows from ``WINDOW_BEFORE_S`` before its
second to ``WINDOW_AFTER_S`` after, and sums the errors of the window by kind (timeouts,
refused connections, 5xx...), so the report can say "kill web-1: 3 refused connections
in its second, none after". An earlier version scraped the balancer's ``/metrics`` once a
second instead; that is the server's view, which cannot see a request refused before it
reached the balancer, nor the time a user waited in a queue, so it is gone.

Pure (dicts in, dicts and lines out): tested on reports made by hand.
"""

from __future__ import annotations

import math

from loadgen.report import format_timeline

#: The window around an event: this many seconds before its second ...
WINDOW_BEFORE_S = 3
#: ... and this many after it.
WINDOW_AFTER_S = 5


def event_row(report: dict, ts: float) -> int | None:
    """The index of the timeline row the Unix time ``ts`` falls in (clamped to the run)."""
    rows = report.get("timeline") or []
    started_at = report.get("timeline_started_at")
    if not rows or started_at is None:
        return None
    step_s = report.get("timeline_step_s") or 1
    index = math.floor((ts - started_at) / step_s)
    return min(max(index, 0), len(rows) - 1)


def fault_windows(report: dict, events: list[dict], before_s: float = WINDOW_BEFORE_S,
                  after_s: float = WINDOW_AFTER_S) -> list[dict]:  # fmt: skip
    """One window per played event (scenario records: ``what``, ``at_s``, ``ts``).

    Each: ``what``, ``at_s`` (the scenario's time), ``load_s`` (seconds after the load's
    ``t = 0``; negative if played before it started), ``second`` (the ``t`` of the
    event's row), ``errors`` (kind -> count over the window), ``errors_from_event``
    (the same from the event's second on) and ``rows``: the client timeline rows of the
    window, each with ``offset_s`` (its ``t`` minus the event's).
    """
    rows = report.get("timeline") or []
    step_s = report.get("timeline_step_s") or 1
    windows = []
    for event in events:
        index = event_row(report, event["ts"])
        if index is None:
            continue
        first = max(0, index - math.ceil(before_s / step_s))
        last = min(len(rows) - 1, index + math.ceil(after_s / step_s))
        second = rows[index]["t"]
        cut = [{**row, "offset_s": row["t"] - second} for row in rows[first : last + 1]]
        windows.append({
            "what": event["what"],
            "at_s": event["at_s"],
            "load_s": round(event["ts"] - report["timeline_started_at"], 3),
            "second": second,
            "errors": _sum_errors(cut),
            "errors_from_event": _sum_errors(r for r in cut if r["offset_s"] >= 0),
            "rows": cut,
        })  # fmt: skip
    return windows


def _sum_errors(rows) -> dict[str, int]:
    total: dict[str, int] = {}
    for row in rows:
        for kind, n in row["errors"].items():
            total[kind] = total.get(kind, 0) + n
    return dict(sorted(total.items()))


def format_windows(windows: list[dict]) -> list[str]:
    """Each window as the load generator's timeline lines, the event's second marked."""
    lines = []
    for window in windows:
        # The whole window's errors: a request in flight when the fault struck belongs to
        # the second it was sent in, which may be the one before the event's.
        errors = ", ".join(f"{k} {n}" for k, n in window["errors"].items())
        lines += ["", f"around {window['what']} (played {window['load_s']:.1f} s into the load; "
                      f"errors in these seconds: {errors or 'none'}):"]  # fmt: skip
        rows = format_timeline(window["rows"])
        lines.append(rows[0])
        for row, line in zip(window["rows"], rows[1:], strict=True):
            lines.append(line + (f"   <- {window['what']}" if row["offset_s"] == 0 else ""))
    return lines
