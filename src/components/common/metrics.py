"""Metrics primitives cheap enough for hot paths, rendered in the Prometheus text format.

Every figure a scalelab report prints (cache hit ratio, DB queries per second, queue
depth, replication lag) is scraped from some server's ``GET /metrics``. So the primitives
sit on hot paths: a cache ``get`` increments a counter, a proxied request observes a
histogram. They are shaped for that:

- A metric with labels hands out one *child* per label combination (``labels(...)``);
  callers look a child up once and keep it, so the hot path is a single attribute
  increment (``child.inc()``), no dict lookup, no lock. asyncio servers are
  single-threaded, so no lock is needed.
- A histogram has fixed buckets; ``observe`` is one ``bisect`` and two additions. Buckets
  are stored non-cumulatively and summed only when scraped.
- Gauges may be *callbacks*, evaluated at scrape time, for values the server already
  holds (queue length, connections, bytes used): nothing to keep in sync.

Rendering follows the Prometheus text exposition format 0.0.4: ``# HELP`` and ``# TYPE``
lines, label values escaped, histogram ``_bucket{le=...}``, ``_sum`` and ``_count``.
What this refuses: summaries with quantiles (merge-unfriendly; use histograms) and
metric names that do not match ``[a-zA-Z_:][a-zA-Z0-9_:]*``.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "Counter",
    "Gauge",
    "Histogram",
    "Registry",
    "DEFAULT_LATENCY_BUCKETS_S",
    "CONTENT_TYPE",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Latency buckets in seconds: 100 µs to 10 s, roughly three per decade.
DEFAULT_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_INF_BUCKET = 'le="+Inf"'


def _format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape_label_value(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    """What every metric kind shares: a name, help text, label names and children."""

    kind = ""

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        for label in self.labelnames:
            if not _LABEL_RE.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r}")
        self._children: dict[tuple[str, ...], object] = {}
        if not self.labelnames:
            self._default = self._new_child()
            self._children[()] = self._default

    def _new_child(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def labels(self, *values: object, **kwvalues: object):
        """The child for one combination of label values; keep it for hot paths."""
        if kwvalues:
            if values:
                raise ValueError("pass label values positionally or by name, not both")
            try:
                values = tuple(kwvalues[n] for n in self.labelnames)
            except KeyError as missing:
                raise ValueError(f"missing label {missing} for {self.name}") from None
            if len(kwvalues) != len(self.labelnames):
                raise ValueError(f"unexpected labels for {self.name}: {sorted(kwvalues)}")
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def remove(self, *values: object) -> None:
        """Forget one label combination (a backend that left the pool)."""
        self._children.pop(tuple(str(v) for v in values), None)

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {_escape_help(self.help)}")
        out.append(f"# TYPE {self.name} {self.kind}")
        for key, child in self._children.items():
            self._render_child(out, key, child)

    def _render_child(self, out: list[str], key: tuple[str, ...], child) -> None:
        out.append(f"{self.name}{_label_text(self.labelnames, key)} {_format_value(child.get())}")


class _CounterChild:
    __slots__ = ("value", "callback")

    def __init__(self) -> None:
        self.value = 0
        self.callback: Callable[[], float] | None = None

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount

    def set_function(self, callback: Callable[[], float]) -> None:
        """Read a count the server already keeps (e.g. memcached's stats) at scrape time."""
        self.callback = callback

    def get(self) -> float:
        return self.callback() if self.callback is not None else self.value


class Counter(_Metric):
    """A monotonically increasing count. Name it ``..._total``."""

    kind = "counter"

    def _new_child(self) -> _CounterChild:
        return _CounterChild()

    def inc(self, amount: float = 1) -> None:
        self._default.inc(amount)

    def set_function(self, callback: Callable[[], float]) -> None:
        self._default.set_function(callback)

    def get(self) -> float:
        return self._default.get()


class _GaugeChild:
    __slots__ = ("value", "callback")

    def __init__(self) -> None:
        self.value = 0
        self.callback: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        self.value = value

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def set_function(self, callback: Callable[[], float]) -> None:
        """Evaluate ``callback`` at scrape time instead of holding a value."""
        self.callback = callback

    def get(self) -> float:
        return self.callback() if self.callback is not None else self.value


class Gauge(_Metric):
    """A value that goes up and down, or a callback read when scraped."""

    kind = "gauge"

    def _new_child(self) -> _GaugeChild:
        return _GaugeChild()

    def set(self, value: float) -> None:
        self._default.set(value)

    def inc(self, amount: float = 1) -> None:
        self._default.inc(amount)

    def dec(self, amount: float = 1) -> None:
        self._default.dec(amount)

    def set_function(self, callback: Callable[[], float]) -> None:
        self._default.set_function(callback)

    def get(self) -> float:
        return self._default.get()


class _HistogramChild:
    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        # One slot per finite bound plus the +Inf bucket; non-cumulative.
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le = "less or equal").
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


class Histogram(_Metric):
    """Observations counted into fixed buckets (``le`` upper bounds, cumulative on scrape)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Iterable[str] = (),
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS_S,
    ) -> None:
        bounds = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        if not bounds:
            raise ValueError("a histogram needs at least one finite bucket")
        self.bounds = bounds
        super().__init__(name, help, labelnames)
        if "le" in self.labelnames:
            raise ValueError("'le' is reserved for histogram buckets")

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self.bounds)

    def observe(self, value: float) -> None:
        self._default.observe(value)

    def _render_child(self, out: list[str], key: tuple[str, ...], child: _HistogramChild) -> None:
        running = 0
        names = self.labelnames
        for bound, count in zip(self.bounds, child.counts, strict=False):
            running += count
            labels = _label_text(names, key, f'le="{bound!r}"')
            out.append(f"{self.name}_bucket{labels} {running}")
        running += child.counts[-1]
        out.append(f"{self.name}_bucket{_label_text(names, key, _INF_BUCKET)} {running}")
        out.append(f"{self.name}_sum{_label_text(names, key)} {_format_value(child.sum)}")
        out.append(f"{self.name}_count{_label_text(names, key)} {child.count}")


class Registry:
    """The metrics one server exposes; ``render()`` is the body of ``GET /metrics``."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def register(self, metric: _Metric) -> _Metric:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Counter:
        return self.register(Counter(name, help, labelnames))  # type: ignore[return-value]

    def gauge(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Gauge:
        return self.register(Gauge(name, help, labelnames))  # type: ignore[return-value]

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Iterable[str] = (),
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS_S,
    ) -> Histogram:
        return self.register(Histogram(name, help, labelnames, buckets))  # type: ignore[return-value]

    def get(self, name: str) -> _Metric | None:
        return self._metrics.get(name)

    def render(self) -> str:
        out: list[str] = []
        for metric in self._metrics.values():
            metric.render(out)
        out.append("")
        return "\n".join(out)
