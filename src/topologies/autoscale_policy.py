"""How many workers a queue needs right now: the autoscaler's decision, pure.

The queued stage sizes its worker pool by the queue's depth, the way KEDA scales a
Kubernetes deployment on a queue or an AWS target-tracking policy scales on
``ApproximateNumberOfMessages``. The rule is a proportion, then two guards against
reacting to noise:

1. **Desired count.** ``desired = ceil(jobs / jobs_per_worker)``, clamped to
   ``[min_workers, max_workers]``. ``jobs`` is the tube's ready jobs *plus* the reserved
   ones (beanstalkd's ``current-jobs-ready`` + ``current-jobs-reserved``, protocol.txt
   "stats-tube"): a job a worker holds is still demand, and counting only the waiting
   ones would shrink the pool while every worker is busy and the backlog only just
   drained (KEDA's SQS scaler counts in-flight messages for the same reason). Set
   ``jobs_per_worker`` a little above one worker's concurrency: the pool then holds a
   short backlog per worker, which keeps every slot fed between polls.
2. **Up at once.** A backlog is users waiting (a photo not yet processed), so a desired
   count above the current one is applied in one step.
3. **Down slowly.** A desired count below the current one must hold for ``cooldown_s``,
   and the last change must be at least ``cooldown_s`` old, before *one* worker is
   stopped; the next step waits another cool-down. A burst that pauses for a second
   would otherwise stop workers just before the next burst needs them (flapping: every
   start costs a process start-up, every stop a drain), the problem Kubernetes' HPA
   solves with its scale-down stabilisation window.

The same rule sizes a web tier by the requests in flight at its balancer
(``desired_for``/``decide_demand``: any demand that adds up over the pool).

Refused: predicting the future (no trend, no schedule) and scaling on latency or CPU.
The queue's depth is the one signal that is both cheap and exactly the work left.

Pure: the caller passes the queue's figures, the count of workers it observed running
and the clock; ``decide`` returns the count to run. A worker that died is simply not
counted, so the next decision replaces it (``min_workers`` is a floor, not a hope). A
pool found above ``max_workers`` (an extra worker the caller could not stop) comes down
by the same slow steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: The most workers one autoscaler runs: each is an OS process, and this is a laptop.
MAX_WORKERS = 64
#: The largest depth the policy believes (a figure beyond it is a corrupt reply).
MAX_JOBS = 1 << 40

UP, DOWN, HOLD = "up", "down", "hold"


class RulesError(ValueError):
    """Scaling rules that cannot hold (min above max, a zero target...)."""


@dataclass(frozen=True, slots=True)
class ScalingRules:
    min_workers: int = 1
    max_workers: int = 4
    jobs_per_worker: float = 8.0
    cooldown_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_workers <= self.max_workers <= MAX_WORKERS:
            raise RulesError(f"need 0 <= min_workers ({self.min_workers}) <= max_workers "
                             f"({self.max_workers}) <= {MAX_WORKERS}")  # fmt: skip
        if not 0 < self.jobs_per_worker <= MAX_JOBS:
            raise RulesError(f"jobs_per_worker must be > 0, got {self.jobs_per_worker}")
        if not 0 <= self.cooldown_s <= 86_400:
            raise RulesError(f"cooldown_s must be in 0..86400, got {self.cooldown_s}")

    def clamp(self, workers: int) -> int:
        return max(self.min_workers, min(self.max_workers, workers))

    def desired(self, ready: int, reserved: int) -> int:
        """The pool size the queue's depth asks for, within the bounds (rule 1)."""
        return self.desired_for(max(0, ready) + max(0, reserved))

    def desired_for(self, demand: float) -> int:
        """The pool size ``demand`` asks for at ``jobs_per_worker`` each (rule 1), for any
        demand that adds up over the pool: jobs in a queue, requests in flight at a
        balancer (the web tier's autoscaler, ``autoscale.py --lb``)."""
        demand = min(MAX_JOBS, max(0.0, demand))
        return self.clamp(math.ceil(demand / self.jobs_per_worker))


@dataclass(frozen=True, slots=True)
class Decision:
    """What to run now: ``target`` workers (``action`` says how it compares to now)."""

    target: int
    desired: int
    action: str  # UP, DOWN or HOLD
    reason: str


class ScalingPolicy:
    """The decision over time: remembers the last change and since when a lower count
    was wanted, which is all the cool-down needs (see the module essay)."""

    def __init__(self, rules: ScalingRules, now: float) -> None:
        self.rules = rules
        self.last_change_at = now  # the pool's first size counts as a change
        self.low_since: float | None = None  # desired < current, continuously, since then

    def decide(self, ready: int, reserved: int, workers: int, now: float) -> Decision:
        return self.decide_demand(max(0, ready) + max(0, reserved), workers, now,
                                  f"{ready} ready + {reserved} reserved jobs")  # fmt: skip

    def decide_demand(self, demand: float, workers: int, now: float, what: str) -> Decision:
        """``decide`` for any additive demand; ``what`` describes it in the reason."""
        rules = self.rules
        desired = rules.desired_for(demand)
        if desired > workers:
            self.last_change_at, self.low_since = now, None
            return Decision(desired, desired, UP, f"{what} want {desired} workers")
        if desired == workers:
            self.low_since = None
            return Decision(workers, desired, HOLD, "the pool matches the demand")
        if self.low_since is None:
            self.low_since = now
        calm = min(now - self.low_since, now - self.last_change_at)
        if calm < rules.cooldown_s:
            return Decision(workers, desired, HOLD,
                            f"{desired} would do; cooling down ({calm:.1f} of "
                            f"{rules.cooldown_s:g} s)")  # fmt: skip
        # One step, and the next one waits a full cool-down again.
        self.last_change_at = self.low_since = now
        return Decision(workers - 1, desired, DOWN,
                        f"{desired} have done for {calm:.1f} s: one worker fewer")  # fmt: skip
