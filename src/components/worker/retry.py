"""What to do with a job that failed: retry later, or bury it for a human.

A failure is often transient (a storage hiccup), so the job is released back to the
queue with a delay that doubles on each attempt (exponential backoff, capped), which
spreads retries out instead of hammering a struggling dependency. A job that keeps
failing is probably poison (a malformed body): after ``max_failures`` attempts it is
buried, where it stays, visible in ``stats`` and ``peek-buried``, until someone kicks
it. The attempt count comes from the queue itself (``stats-job``'s ``releases``), so it
survives worker restarts.

A failure that is not the job's fault (``transient``: the web tier that stores results
is down or answers 5xx) is never a reason to bury: the job is released with the same
capped backoff however often it fails, so an outage of the result store delays jobs
instead of burying every one of them. The price: a store that fails one job forever
keeps that job cycling once per ``max_delay_s``, visible as releases in the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # "release" or "bury"
    delay_s: int = 0


def decide(failures: int, max_failures: int, base_delay_s: int, max_delay_s: int,
           transient: bool = False) -> Decision:  # fmt: skip
    """``failures`` counts this one (1 on the first failure)."""
    if failures >= max_failures and not transient:
        return Decision("bury")
    delay = min(max_delay_s, base_delay_s * (1 << min(failures - 1, 30)))
    return Decision("release", delay)
