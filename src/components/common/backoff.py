"""Exponential backoff with jitter: how long to wait before trying an absent peer again.

Every client here that loses its peer retries: a worker its queue, a web server its
queue, a replica its primary, the resharder a shard group, a worker the web tier it
stores through. How it waits decides what the peer meets when it comes back. Doubling
the pause after each failure keeps a client from hammering a peer that is down, and the
cap bounds how late its return is noticed. Jitter spreads the clients out: workers that
lost the same queue at the same moment would otherwise retry in lockstep, each wave
arriving at once, a thundering herd at the very moment the queue restarts. Each pause is
drawn uniformly between half and all of the doubled value ("equal jitter" in the AWS
Architecture Blog's "Exponential Backoff and Jitter"): spread out, yet still growing, and
never near zero.

Sans-IO: the caller sleeps (or compares clocks); the random draw is passed in, and
``rng=None`` gives the plain doubling, for tests that want exact pauses.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Pauses of ``first_s``, then doubling up to ``max_s``, each jittered; ``reset`` after a success."""

    __slots__ = ("first_s", "max_s", "rng", "_base")

    def __init__(
        self, first_s: float, max_s: float, rng: Callable[[], float] | None = random.random
    ) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"need 0 < first_s <= max_s, got {first_s} and {max_s}")
        self.first_s = first_s
        self.max_s = max_s
        self.rng = rng
        self._base = first_s

    def next(self) -> float:
        """The pause before the next attempt, after a failure; the next one doubles."""
        base = self._base
        self._base = min(base * 2, self.max_s)
        if self.rng is None:
            return base
        return base * (0.5 + 0.5 * self.rng())

    def reset(self) -> None:
        """The peer answered: the next failure starts again from ``first_s``."""
        self._base = self.first_s
