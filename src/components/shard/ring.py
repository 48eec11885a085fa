"""Consistent hashing: a ring of virtual nodes, so adding a group moves about 1/N of keys.

With ``hash(key) % N`` almost every key changes groups when N changes (from 4 to 5
groups, 80% move), which turns adding capacity into moving the whole data set. Karger et
al. (1997, the paper behind Akamai; later Dynamo and Cassandra) put the groups on a
circle of hash values instead: a key belongs to the first group point at or after its own
hash, clockwise. A new group takes over only the arcs just before its points, so about
1/(N+1) of the keys move, and all of them move *to* the new group.

One point per group gives very uneven arcs; each group therefore gets ``vnodes`` points
("virtual nodes", Dynamo §4.2), and the load evens out as vnodes grows (the spread of arc
sizes falls roughly as 1/sqrt(vnodes)). Weights give a bigger group more points.

The hash is BLAKE2b truncated to 64 bits: stable across processes and Python versions
(Python's own ``hash`` is salted per process, which would give each router its own ring).
Lookups are a binary search over the sorted points: O(log(N * vnodes)).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping

DEFAULT_VNODES = 128
MAX_VNODES = 4096


def hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def key_bytes(key: int | str) -> bytes:
    """How a (canonical) key is hashed: ints and strings never collide with each other."""
    if isinstance(key, int):
        return b"i" + str(key).encode()
    return b"s" + key.encode("utf-8", "surrogatepass")


class Ring:
    """A hash ring of groups; ``Ring.node_for(key)`` is the group that owns ``key``."""

    def __init__(
        self,
        nodes: Iterable[str],
        vnodes: int = DEFAULT_VNODES,
        weights: Mapping[str, int] | None = None,
    ) -> None:
        if not 1 <= vnodes <= MAX_VNODES:
            raise ValueError(f"vnodes must be in 1..{MAX_VNODES}")
        self.vnodes = vnodes
        self.nodes = list(dict.fromkeys(nodes))
        if not self.nodes:
            raise ValueError("a ring needs at least one node")
        points: list[tuple[int, str]] = []
        for node in self.nodes:
            count = vnodes * (weights or {}).get(node, 1)
            points.extend((hash64(f"{node}#{i}".encode()), node) for i in range(count))
        points.sort()
        self._hashes = [h for h, _ in points]
        self._owners = [n for _, n in points]

    def node_for(self, key: int | str) -> str:
        h = hash64(key_bytes(key))
        i = bisect.bisect_left(self._hashes, h)
        return self._owners[i if i < len(self._owners) else 0]

    def share(self) -> dict[str, float]:
        """Fraction of the hash space each node owns (the load it can expect)."""
        span = 1 << 64
        owned = dict.fromkeys(self.nodes, 0)
        previous = self._hashes[-1] - span
        for h, node in zip(self._hashes, self._owners, strict=True):
            owned[node] += h - previous
            previous = h
        return {node: size / span for node, size in owned.items()}
