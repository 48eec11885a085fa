"""The run second by second: requests, errors by kind, p50 and p99 of each second.

A run's totals hide the shape of a fault: "0.4 % errors, p99 900 ms" may be a steady
trickle or two bad seconds around a killed primary. The timeline keeps, for every
second of the run (warm-up included, and marked), how many requests fell due, how many
failed and how, and a small latency histogram, so a report can put the scenario's
events next to the seconds they hurt. It is the user's view (measured by the client,
from each request's *due* time, see ``loadgen.engine``); ``topologies.timeline`` cuts
the seconds around each of a scenario's faults out of it.

A request belongs to the second its due time falls in (closed loop: when it was sent),
not the second its answer came back: a request sent just before a primary died and
timing out ten seconds later is charged to the second of the fault, which is where a
reader looks for it. The same rule marks warm-up (``loadgen.results``).

**Bounded memory.** A slot holds a few counters and a *coarse* histogram: log-linear
like ``loadgen.histogram`` but with 5 bits of precision (16 sub-buckets per power of
two, values known to within ~3 %), stored sparsely, so a slot is at most 528 counters
and usually a few dozen. There are at most ``MAX_SLOTS`` slots: a run longer than that
many seconds gets slots ``ceil(duration / MAX_SLOTS)`` seconds wide (``step_s``).

**Merging.** Workers of ``--procs N`` share one start instant, so slot ``i`` is the same
wall-clock second in each; the parent adds their slots counter by counter, exactly as
whole-run histograms add up.

Pure (no clock, no IO): the engine passes each request's offset from the start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["Timeline", "MAX_SLOTS", "coarse_index", "coarse_bounds"]

#: At most this many rows; longer runs get wider slots.
MAX_SLOTS = 3600
_BITS = 5
_SUB = 1 << _BITS
_HALF = _SUB >> 1
#: Same clamp as ``loadgen.histogram.MAX_VALUE_US``.
_MAX_US = (1 << 36) - 1


def coarse_index(value_us: int) -> int:
    """The coarse bucket of a latency in microseconds (clamped to 0..2**36-1)."""
    value_us = min(max(value_us, 0), _MAX_US)
    shift = value_us.bit_length() - _BITS
    if shift <= 0:
        return value_us
    return _SUB + (shift - 1) * _HALF + (value_us >> shift) - _HALF


def coarse_bounds(index: int) -> tuple[int, int]:
    """The inclusive range of values in coarse bucket ``index``."""
    if index < _SUB:
        return index, index
    shift = (index - _SUB) // _HALF + 1
    low = ((index - _SUB) % _HALF + _HALF) << shift
    return low, low + (1 << shift) - 1


_MAX_INDEX = coarse_index(_MAX_US)


class _Slot:
    __slots__ = ("requests", "errors", "buckets", "max")

    def __init__(self) -> None:
        self.requests = 0
        self.errors: dict[str, int] = {}
        self.buckets: dict[int, int] = {}  # coarse index -> answers
        self.max = 0

    def percentile(self, percent: float, answers: int) -> int:
        """Nearest rank, the middle of its bucket, never above the exact max."""
        rank = max(1, math.ceil(percent / 100.0 * answers))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                low, high = coarse_bounds(index)
                return min((low + high) // 2, self.max)
        return self.max  # pragma: no cover - buckets always add up to answers


class Timeline:
    """Per-second (per ``step_s``) slots of one run, or of several workers merged."""

    def __init__(self, duration_s: float, warmup_s: float = 0.0) -> None:
        self.duration_s = float(duration_s)
        self.warmup_s = float(warmup_s)
        self.step_s = max(1, math.ceil(self.duration_s / MAX_SLOTS))
        self.slots: dict[int, _Slot] = {}
        self._last = self.length - 1

    @property
    def length(self) -> int:
        """Number of slots the whole run covers."""
        return max(1, math.ceil(self.duration_s / self.step_s))

    def _slot(self, at_s: float) -> _Slot:
        index = int(at_s // self.step_s) if at_s > 0 else 0
        if index >= self._last:
            index = self._last
        slot = self.slots.get(index)
        if slot is None:
            slot = self.slots[index] = _Slot()
        return slot

    # -- recording (the hot path) ------------------------------------------------------
    def answer(self, at_s: float, latency_us: int, error: str | None) -> None:
        """A request due ``at_s`` after the start got an answer (``error``: http_4xx/5xx)."""
        slot = self._slot(at_s)
        slot.requests += 1
        # coarse_index, inlined: this runs once per request.
        if latency_us < _SUB:
            index = latency_us if latency_us > 0 else 0
        else:
            if latency_us > _MAX_US:
                latency_us = _MAX_US
            shift = latency_us.bit_length() - _BITS
            index = _SUB + (shift - 1) * _HALF + (latency_us >> shift) - _HALF
        buckets = slot.buckets
        buckets[index] = buckets.get(index, 0) + 1
        if latency_us > slot.max:
            slot.max = latency_us
        if error is not None:
            slot.errors[error] = slot.errors.get(error, 0) + 1

    def failure(self, at_s: float, error: str) -> None:
        """A request due ``at_s`` after the start got no answer (``error`` kind)."""
        slot = self._slot(at_s)
        slot.requests += 1
        slot.errors[error] = slot.errors.get(error, 0) + 1

    # -- merging and shipping ----------------------------------------------------------
    def merge(self, other: Timeline) -> None:
        """Add another worker's timeline (same start, same duration) into this one."""
        for index, theirs in other.slots.items():
            slot = self.slots.get(index)
            if slot is None:
                slot = self.slots[index] = _Slot()
            slot.requests += theirs.requests
            for error, n in theirs.errors.items():
                slot.errors[error] = slot.errors.get(error, 0) + n
            for bucket, n in theirs.buckets.items():
                slot.buckets[bucket] = slot.buckets.get(bucket, 0) + n
            slot.max = max(slot.max, theirs.max)

    def to_dict(self) -> dict:
        return {
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "slots": {
                str(i): {"requests": s.requests, "errors": s.errors, "max": s.max,
                         "buckets": {str(b): n for b, n in s.buckets.items()}}
                for i, s in self.slots.items()
            },
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping) -> Timeline:
        """Rebuild from ``to_dict()``; raises ValueError on data that does not fit."""
        try:
            timeline = cls(float(data["duration_s"]), float(data["warmup_s"]))
            for key, raw in data["slots"].items():
                index = int(key)
                if not 0 <= index < timeline.length:
                    raise ValueError(f"slot {key} outside the run")
                slot = timeline.slots[index] = _Slot()
                slot.requests = int(raw["requests"])
                slot.errors = {str(e): int(n) for e, n in raw["errors"].items()}
                slot.max = int(raw["max"])
                for bucket, n in raw["buckets"].items():
                    if not 0 <= int(bucket) <= _MAX_INDEX or int(n) < 0:
                        raise ValueError(f"slot {key}: bucket {bucket} out of range")
                    slot.buckets[int(bucket)] = int(n)
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a timeline: {error}") from None
        return timeline

    # -- the report ----------------------------------------------------------------------
    def rows(self, until_s: float | None = None) -> list[dict]:
        """One row per slot from 0 to the end of the run (or ``until_s``), empty ones too.

        Each row: ``t`` (slot start, seconds from the run's start), ``warmup`` (the slot
        starts inside the warm-up), ``requests`` (due in the slot, whatever became of
        them), ``answers``, ``errors`` (kind -> count, http_4xx/5xx included), and over
        the answers ``p50_ms``, ``p99_ms``, ``max_ms`` (None with no answers).
        """
        length = self.length
        if until_s is not None:
            length = min(length, max(1, math.ceil(until_s / self.step_s)))
        if self.slots:
            length = max(length, max(self.slots) + 1)
        empty = _Slot()
        out = []
        for index in range(length):
            slot = self.slots.get(index, empty)
            answers = sum(slot.buckets.values())
            t = index * self.step_s
            row: dict = {
                "t": t,
                "warmup": t < self.warmup_s,
                "requests": slot.requests,
                "answers": answers,
                "errors": dict(sorted(slot.errors.items())),
                "p50_ms": None,
                "p99_ms": None,
                "max_ms": None,
            }
            if answers:
                row["p50_ms"] = slot.percentile(50.0, answers) / 1000.0
                row["p99_ms"] = slot.percentile(99.0, answers) / 1000.0
                row["max_ms"] = slot.max / 1000.0
            out.append(row)
        return out
