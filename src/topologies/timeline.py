"""A per-second timeline of the front door, so a fault's cost can be read second by second.

A run's totals hide a failover: "0.4 % errors and p99 900 ms" could be a steady trickle
or two bad seconds around a killed primary. The chapter's claims ("the balancer ejects
a dead web server within a second or two") need the shape in time. So while the load
runs, ``TimelineSampler`` scrapes the entry component's ``/metrics`` (the balancer's,
or the web server's in stages without one) once a second and turns each pair of scrapes
into one row: requests per second, errors per second (answers with a 5xx status plus the
requests the balancer answered itself, such as 502 after a failed backend) and the p99
latency of that second, estimated from the increases of the latency histogram's
buckets summed over all its label sets (every backend, every route), interpolated
inside the bucket as PromQL's ``histogram_quantile`` does.

This is the server's view: the time from the balancer receiving a request to its
answer, which leaves out the client's own queueing; the load generator's figures are
the user's view of the whole run. Pure row arithmetic (``second_row``) is separate from
the sampling thread, so it is tested on scrapes made up by hand.
"""

from __future__ import annotations

import math
import threading
import time
import urllib.request
from collections import defaultdict

from loadgen.exposition import Exposition, ExpositionError, parse_exposition

INTERVAL_S = 1.0
MAX_ROWS = 3600
SCRAPE_TIMEOUT_S = 0.8


def _families(scrape: Exposition) -> tuple[str | None, str | None]:
    """The entry's requests counter (with a ``status`` label) and latency histogram."""
    requests = latency = None
    for (name, labels), _ in scrape.samples.items():
        if (
            requests is None
            and name.endswith("_requests_total")
            and any(k == "status" for k, _ in labels)
        ):
            requests = name
        if latency is None and name.endswith("_request_duration_seconds_bucket"):
            latency = name
    return requests, latency


def _delta(before: Exposition, key, value: float) -> float:
    old = before.samples.get(key)
    return value if old is None or value < old else value - old


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile from cumulative ``(upper bound, count)`` pairs, sorted by bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound  # beyond the last finite bucket: its bound is all we know
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return buckets[-1][0]


def second_row(before: Exposition, after: Exposition, elapsed_s: float) -> dict:
    """One timeline row from two scrapes ``elapsed_s`` apart."""
    elapsed_s = max(elapsed_s, 1e-9)
    requests_name, latency_name = _families(after)
    requests = errors = 0.0
    buckets: dict[float, float] = defaultdict(float)
    for key, value in after.samples.items():
        name, labels = key
        if name == requests_name:
            increase = _delta(before, key, value)
            requests += increase
            if dict(labels).get("status", "").startswith("5"):
                errors += increase
        elif name == "scalelab_lb_rejected_total":
            increase = _delta(before, key, value)
            requests += increase
            errors += increase
        elif name == latency_name:
            le = dict(labels).get("le")
            if le is not None:
                buckets[float(le)] += _delta(before, key, value)
    p99 = quantile(0.99, sorted(buckets.items()))
    return {
        "rps": round(requests / elapsed_s, 1),
        "errors_per_s": round(errors / elapsed_s, 1),
        "p99_ms": None if p99 is None else round(p99 * 1000, 2),
    }


class TimelineSampler(threading.Thread):
    """Scrapes ``metrics_url`` every second from ``started_at`` until ``stop()``."""

    def __init__(self, metrics_url: str, started_at: float | None = None,
                 interval_s: float = INTERVAL_S) -> None:  # fmt: skip
        super().__init__(name="timeline", daemon=True)
        self.url = metrics_url
        self.started_at = time.time() if started_at is None else started_at
        self.interval_s = interval_s
        self.rows: list[dict] = []
        self._halt = threading.Event()

    def _scrape(self) -> Exposition | None:
        try:
            with urllib.request.urlopen(self.url, timeout=SCRAPE_TIMEOUT_S) as response:
                return parse_exposition(response.read().decode())
        except (OSError, ExpositionError, UnicodeDecodeError):
            return None  # the entry itself down or paused: a gap in the timeline

    def run(self) -> None:
        previous, previous_at = self._scrape(), time.time()
        tick = 1
        while len(self.rows) < MAX_ROWS:
            due = self.started_at + tick * self.interval_s
            if self._halt.wait(max(0.0, due - time.time())):
                return
            scrape, now = self._scrape(), time.time()
            row = {"t_s": round(now - self.started_at, 2)}
            if scrape is not None and previous is not None:
                row.update(second_row(previous, scrape, now - previous_at))
            else:
                row.update(rps=None, errors_per_s=None, p99_ms=None)
            self.rows.append(row)
            if scrape is not None:
                previous, previous_at = scrape, now
            tick += 1

    def stop(self) -> None:
        self._halt.set()


def format_timeline(rows: list[dict], events: list[dict], window_s: float = 60.0) -> list[str]:
    """The timeline as text, each event marked on the second it happened in.

    A run shorter than ``window_s`` is shown whole. A longer one shows, with events, the
    seconds from 3 before to 8 after each event, and without, one row in N so that at
    most ``window_s`` rows are printed (the JSON report keeps every row).
    """
    if not rows:
        return []
    show = set(range(len(rows)))
    if rows[-1]["t_s"] > window_s:
        if events:
            show = {i for i, row in enumerate(rows)
                    for e in events if -3 <= row["t_s"] - e["at_s"] <= 8}  # fmt: skip
        else:
            step = math.ceil(len(rows) / window_s)
            show = set(range(step - 1, len(rows), step))
    lines = [f"  {'t s':>6}  {'req/s':>8}  {'errors/s':>8}  {'p99 ms':>9}"]
    previous_t = 0.0
    for i, row in enumerate(rows):
        if i not in show:
            previous_t = row["t_s"]
            continue
        marks = [e["what"] for e in events if previous_t < e["at_s"] <= row["t_s"]]
        cells = (_cell(row["rps"], ".1f"), _cell(row["errors_per_s"], ".1f"),
                 _cell(row["p99_ms"], ".2f"))  # fmt: skip
        line = f"  {row['t_s']:>6.1f}  {cells[0]:>8}  {cells[1]:>8}  {cells[2]:>9}"
        lines.append(line + ("   <- " + "; ".join(marks) if marks else ""))
        previous_t = row["t_s"]
    return lines


def _cell(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)
