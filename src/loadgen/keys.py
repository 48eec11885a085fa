"""Which key a simulated user asks for next: uniform or zipf over keys ``1..N``.

Real traffic is skewed: a few users, products or pages get most of the requests. That
skew is exactly what makes a cache worth having (the chapter's "cache tier" figure), so
the load generator has to reproduce it, or the hit ratio it measures means nothing.

The zipf law gives key of rank ``k`` a probability proportional to ``1 / k**s``. With
``s = 0`` every key is equally likely (uniform); around ``s = 1`` (classic web traffic)
the top 1 % of 1 000 keys draws ~40 % of requests; larger ``s`` is more skewed still.
Key ``1`` is the most popular, key ``N`` the least; the web tier seeds users ``1..N``, so
"the hottest user" is simply user 1.

Sampling is by inversion: the cumulative distribution is computed once (``N`` floats,
bounded by ``MAX_KEYS``), then each draw is one uniform random number and one binary
search, O(log N). The random generator is passed in, so draws are reproducible with a
seed and each worker process gets its own stream.
"""

from __future__ import annotations

import random
from array import array
from bisect import bisect_left
from itertools import accumulate

__all__ = ["KeySampler", "UniformKeys", "ZipfKeys", "MAX_KEYS"]

#: Upper bound on N: the zipf table costs 8 bytes per key (8 MB at this bound).
MAX_KEYS = 1_000_000


class KeySampler:
    """Draws keys in ``1..n``."""

    n: int

    def next(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def probability(self, key: int) -> float:  # pragma: no cover - interface
        raise NotImplementedError


class UniformKeys(KeySampler):
    """Every key in ``1..n`` equally likely."""

    def __init__(self, n: int, rng: random.Random) -> None:
        if not 1 <= n <= MAX_KEYS:
            raise ValueError(f"n must be in 1..{MAX_KEYS}")
        self.n = n
        self._randint = rng.randint

    def next(self) -> int:
        return self._randint(1, self.n)

    def probability(self, key: int) -> float:
        return 1.0 / self.n if 1 <= key <= self.n else 0.0


class ZipfKeys(KeySampler):
    """Key ``k`` in ``1..n`` with probability proportional to ``1 / k**s`` (``s >= 0``)."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        if not 1 <= n <= MAX_KEYS:
            raise ValueError(f"n must be in 1..{MAX_KEYS}")
        if not 0.0 <= s <= 10.0:
            raise ValueError("zipf skew s must be in 0..10")
        self.n = n
        self.s = s
        weights = [k**-s for k in range(1, n + 1)]
        self._norm = sum(weights)
        # cdf[i] = P(key <= i + 1), normalised so that the last entry is exactly 1.0.
        cdf = array("d", accumulate(w / self._norm for w in weights))
        cdf[-1] = 1.0
        self._cdf = cdf
        self._random = rng.random

    def next(self) -> int:
        # random() is in [0, 1); bisect_left finds the first rank whose cdf >= u.
        return bisect_left(self._cdf, self._random()) + 1

    def probability(self, key: int) -> float:
        return key**-self.s / self._norm if 1 <= key <= self.n else 0.0
