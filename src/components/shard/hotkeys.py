"""Finding hot keys (the "celebrity problem") in bounded memory: the Space-Saving sketch.

Sharding by user spreads users evenly, not their traffic: one celebrity's key can get
more requests than a whole group can serve. Before an operator can move that key to a
group of its own (``POST /admin/reshard {"key": ...}``, a directory entry), the router
has to notice it, without keeping a counter per key ever seen.

Space-Saving (Metwally, Agrawal, El Abbadi, "Efficient Computation of Frequent and Top-k
Elements in Data Streams", ICDT 2005) keeps ``capacity`` counters. A counted key adds one
to its counter; a new key, when the table is full, takes over the smallest counter and
adds one to it, remembering that counter's old value as its possible overcount
(``error``). Every key with true frequency above ``total / capacity`` is guaranteed to
be in the table, and ``count - error <= true count <= count``. Eviction scans for the
minimum (O(capacity)), which is cheap for the few dozen counters a router needs.
"""

from __future__ import annotations

from typing import Any

DEFAULT_CAPACITY = 64


class SpaceSaving:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.total = 0
        self._counts: dict[Any, list[int]] = {}  # key -> [count, error]

    def add(self, key: Any, weight: int = 1) -> None:
        self.total += weight
        entry = self._counts.get(key)
        if entry is not None:
            entry[0] += weight
            return
        if len(self._counts) < self.capacity:
            self._counts[key] = [weight, 0]
            return
        victim = min(self._counts, key=lambda k: self._counts[k][0])
        floor = self._counts.pop(victim)[0]
        self._counts[key] = [floor + weight, floor]

    def top(self, n: int = 10) -> list[tuple[Any, int, int]]:
        """The ``n`` heaviest keys as ``(key, count, guaranteed)``; ``guaranteed`` is
        ``count - error``, a lower bound of the true count."""
        ranked = sorted(self._counts.items(), key=lambda kv: kv[1][0], reverse=True)[:n]
        return [(key, count, count - error) for key, (count, error) in ranked]
