"""Placement: which shard group owns a key, under four strategies, as a versioned map.

- ``modulo``: ``hash(key) % N``. Even and simple; changing N moves almost every key, so
  it suits a fixed number of groups (Instagram's early design: many logical shards,
  fixed, mapped onto fewer machines).
- ``consistent``: a hash ring with virtual nodes (``ring.py``); adding a group moves
  about 1/N of the keys (Dynamo, Cassandra).
- ``range``: ordered key ranges, each owned by a group (Bigtable, HBase, Spanner,
  CockroachDB). Range scans stay on one group and a range can be split or moved; the
  price is hot spots when new keys all land at one end (monotonic ids).
- ``directory``: a lookup table consulted first, for individual hot keys (the
  "celebrity problem": one user with millions of followers gets a group of its own) and
  key ranges, falling back to one of the other strategies for everything else
  (Pinterest's and Slack's mapping tables work this way).

A ``RoutingMap`` bundles the strategy with a version number. Every change of placement
(a resharding moving a range or a hot key) produces a new map with a higher version, so
a reader can tell which placement an answer was routed with (``/status``, the
``scalelab_shard_map_version`` metric).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from .ring import DEFAULT_VNODES, Ring, hash64, key_bytes

STRATEGIES = ("modulo", "consistent", "range", "directory")


class Modulo:
    name = "modulo"

    def __init__(self, groups: list[str]) -> None:
        self.groups = groups

    def group_for(self, key: int | str) -> str:
        return self.groups[hash64(key_bytes(key)) % len(self.groups)]

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name, "groups": self.groups}


class Consistent:
    name = "consistent"

    def __init__(self, groups: list[str], vnodes: int = DEFAULT_VNODES) -> None:
        self.groups = groups
        self.ring = Ring(groups, vnodes)

    def group_for(self, key: int | str) -> str:
        return self.ring.node_for(key)

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name, "groups": self.groups, "vnodes": self.ring.vnodes,
                "share": {g: round(s, 4) for g, s in self.ring.share().items()}}  # fmt: skip


class Range:
    """Ordered ranges ``[low, next low)``; keys below the first low go to the first range.

    Integer keys only: a range strategy over mixed ints and strings would need SQLite's
    cross-type ordering, and a sharding key is almost always a number.
    """

    name = "range"

    def __init__(self, bounds: list[tuple[int, str]]) -> None:
        if not bounds:
            raise ValueError("range strategy needs at least one range")
        bounds = sorted(bounds)
        self.lows = [low for low, _ in bounds]
        if len(set(self.lows)) != len(self.lows):
            raise ValueError("two ranges start at the same key")
        self.owners = [group for _, group in bounds]

    def group_for(self, key: int | str) -> str:
        if not isinstance(key, int):
            raise KeyError(f"range sharding needs an integer key, got {key!r}")
        i = bisect.bisect_right(self.lows, key) - 1
        return self.owners[max(i, 0)]

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name,
                "ranges": [{"low": lo, "group": g} for lo, g in zip(self.lows, self.owners,
                                                                     strict=True)]}  # fmt: skip


@dataclass
class Directory:
    """Hot keys and key ranges looked up first; everything else by ``fallback``."""

    fallback: Any
    keys: dict[Any, str] = field(default_factory=dict)
    ranges: list[tuple[int, int, str]] = field(default_factory=list)  # [low, high) -> group
    name: str = "directory"

    def group_for(self, key: int | str) -> str:
        group = self.keys.get(key)
        if group is not None:
            return group
        if isinstance(key, int):
            for low, high, owner in self.ranges:
                if low <= key < high:
                    return owner
        return self.fallback.group_for(key)

    def describe(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "keys": {str(k): g for k, g in self.keys.items()},
            "ranges": [{"low": lo, "high": hi, "group": g} for lo, hi, g in self.ranges],
            "fallback": self.fallback.describe(),
        }


@dataclass(frozen=True)
class RoutingMap:
    """A placement and its version; replaced as a whole, never mutated in place."""

    placement: Any
    version: int = 1

    def group_for(self, key: int | str) -> str:
        return self.placement.group_for(key)

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, **self.placement.describe()}
