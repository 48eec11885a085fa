"""What a run measured: latencies per request kind, answers per status, errors per kind.

One ``Results`` object lives in each worker; ``--procs N`` ships each worker's results
to the parent as a dict (``to_dict``) and adds them up there (``merge``), which is why
every part of it is a count or a mergeable histogram and nothing is an average.

The vocabulary of failure (``ERROR_KINDS``) is deliberately small and fixed, so two
reports can be compared line by line:

- ``connect``: the TCP connection could not be made (refused, unreachable);
- ``timeout``: no complete answer within the profile's ``timeout_s``;
- ``disconnect``: the server closed or reset the connection mid-request;
- ``protocol``: the server answered something that is not valid HTTP;
- ``http_4xx`` / ``http_5xx``: an answer with that status class (it is an answer, so its
  latency is in the histograms too; a 503 from an overloaded tier is the classic one);
- ``dropped``: open loop only, the request was due but the bound on outstanding requests
  was reached, so it was never sent (never unbounded memory; see ``loadgen.engine``);
- ``other``: any other client-side failure.

Requests that started during the warm-up are only counted (``warmup_requests``,
``warmup_errors``), never put in a figure. When the engine gives each request its offset
from the start (``at_s``), it also goes on the per-second ``timeline``
(``loadgen.timeline``), warm-up included and marked there. Everything here is bounded: request kinds by
the profile, statuses by HTTP's 100..599, error kinds by the list above.
"""

from __future__ import annotations

from collections.abc import Mapping

from .histogram import Histogram
from .timeline import Timeline

__all__ = ["Results", "ERROR_KINDS"]

ERROR_KINDS = (
    "connect", "timeout", "disconnect", "protocol", "http_4xx", "http_5xx", "dropped", "other",
)  # fmt: skip


class Results:
    """Counts and histograms of one run (or of several merged)."""

    def __init__(self) -> None:
        self.latency = Histogram()  # every answer of the measured window
        self.by_kind: dict[str, Histogram] = {}
        self.status: dict[str, dict[int, int]] = {}  # request kind -> status -> answers
        self.errors: dict[str, dict[str, int]] = {}  # error kind -> request kind -> count
        self.warmup_requests = 0
        self.warmup_errors = 0
        self.window_s = 0.0  # length of the measured window
        # The last second, for the progress line (reset by take_interval).
        self.interval = Histogram()
        self.interval_errors = 0
        self.timeline: Timeline | None = None  # set by the engine for a run

    # -- recording (the hot path) ------------------------------------------------------
    def answer(
        self, kind: str, status: int, latency_us: int, measured: bool, at_s: float | None = None
    ) -> None:
        """An HTTP answer arrived ``latency_us`` after the request was due (at ``at_s``)."""
        self.interval.record(latency_us)
        error = None
        if status >= 500:
            error = "http_5xx"
        elif status >= 400:
            error = "http_4xx"
        if at_s is not None and self.timeline is not None:
            self.timeline.answer(at_s, latency_us, error)
        if error is not None:
            self.interval_errors += 1
        if not measured:
            self.warmup_requests += 1
            if error is not None:
                self.warmup_errors += 1
            return
        self.latency.record(latency_us)
        hist = self.by_kind.get(kind)
        if hist is None:
            hist = self.by_kind[kind] = Histogram()
        hist.record(latency_us)
        statuses = self.status.setdefault(kind, {})
        statuses[status] = statuses.get(status, 0) + 1
        if error is not None:
            self._count_error(error, kind, 1)

    def failure(self, kind: str, error: str, measured: bool, at_s: float | None = None) -> None:
        """A request that got no HTTP answer (``error`` is one of ``ERROR_KINDS``)."""
        self.interval_errors += 1
        if error not in ERROR_KINDS:
            error = "other"
        if at_s is not None and self.timeline is not None:
            self.timeline.failure(at_s, error)
        if not measured:
            self.warmup_errors += 1
            return
        self._count_error(error, kind, 1)

    def _count_error(self, error: str, kind: str, n: int) -> None:
        per_kind = self.errors.setdefault(error, {})
        per_kind[kind] = per_kind.get(kind, 0) + n

    def take_interval(self) -> dict:
        """The last interval's answers and errors, then start a new interval."""
        snapshot = {"histogram": self.interval.to_dict(), "errors": self.interval_errors}
        self.interval.clear()
        self.interval_errors = 0
        return snapshot

    # -- reading -----------------------------------------------------------------------
    @property
    def requests(self) -> int:
        """Answers in the measured window (any status)."""
        return self.latency.count

    @property
    def error_count(self) -> int:
        return sum(sum(per.values()) for per in self.errors.values())

    @property
    def failures(self) -> int:
        """Requests of the measured window that got no answer at all."""
        return sum(sum(per.values()) for e, per in self.errors.items() if not e.startswith("http_"))

    def status_totals(self) -> dict[int, int]:
        totals: dict[int, int] = {}
        for statuses in self.status.values():
            for status, n in statuses.items():
                totals[status] = totals.get(status, 0) + n
        return dict(sorted(totals.items()))

    # -- merging -----------------------------------------------------------------------
    def merge(self, other: Results) -> None:
        """Add another worker's results into these."""
        self.latency.merge(other.latency)
        for kind, hist in other.by_kind.items():
            self.by_kind.setdefault(kind, Histogram()).merge(hist)
        for kind, statuses in other.status.items():
            mine = self.status.setdefault(kind, {})
            for status, n in statuses.items():
                mine[status] = mine.get(status, 0) + n
        for error, per_kind in other.errors.items():
            for kind, n in per_kind.items():
                self._count_error(error, kind, n)
        self.warmup_requests += other.warmup_requests
        self.warmup_errors += other.warmup_errors
        self.window_s = max(self.window_s, other.window_s)
        if other.timeline is not None:
            if self.timeline is None:
                self.timeline = Timeline(other.timeline.duration_s, other.timeline.warmup_s)
            self.timeline.merge(other.timeline)

    def to_dict(self) -> dict:
        return {
            "latency": self.latency.to_dict(),
            "by_kind": {k: h.to_dict() for k, h in self.by_kind.items()},
            "status": {k: {str(s): n for s, n in v.items()} for k, v in self.status.items()},
            "errors": self.errors,
            "warmup_requests": self.warmup_requests,
            "warmup_errors": self.warmup_errors,
            "window_s": self.window_s,
            "timeline": None if self.timeline is None else self.timeline.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Results:
        results = cls()
        results.latency = Histogram.from_dict(data["latency"])
        results.by_kind = {k: Histogram.from_dict(h) for k, h in data["by_kind"].items()}
        results.status = {
            k: {int(s): int(n) for s, n in v.items()} for k, v in data["status"].items()
        }
        results.errors = {e: {k: int(n) for k, n in v.items()} for e, v in data["errors"].items()}
        results.warmup_requests = int(data["warmup_requests"])
        results.warmup_errors = int(data["warmup_errors"])
        results.window_s = float(data["window_s"])
        if data.get("timeline") is not None:
            results.timeline = Timeline.from_dict(data["timeline"])
        return results
