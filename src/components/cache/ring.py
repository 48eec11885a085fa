"""Consistent hashing on a ketama continuum, compatible with libmemcached's weighted ketama.

With ``node = nodes[hash(key) % len(nodes)]``, adding or losing one cache node remaps
almost every key, which empties the whole cache tier at once. Consistent hashing (Karger
et al. 1997, popularised for memcached by last.fm's *libketama*) places each node at many
pseudo-random points on a circle of 2**32 positions; a key belongs to the first point at
or after its own hash. Adding a node steals only the arcs in front of its new points,
about 1/(N+1) of the keys; removing one hands only its own arcs to its neighbours.

The exact construction matters, because every client of the same cache must agree on
where a key lives (a PHP, C and Python web tier sharing one memcached pool). This is
libketama's, as libmemcached implements it under ``MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED``
(``libmemcached/hosts.cc``, ``update_continuum``):

- node *i* gets ``floor(weight_i / total_weight * 40 * N + 1e-10) * 4`` points, that is
  160 per node when weights are equal (the float32 arithmetic is reproduced);
- its points come from MD5 digests of ``"host-j"`` when the port is 11211, else
  ``"host:port-j"``, for j = 0, 1, ...; each 16-byte digest yields four points, the
  little-endian 32-bit words at offsets 0, 4, 8 and 12;
- a key hashes to the first little-endian word of MD5(key);
- points are sorted; a key's node is the first point >= its hash, wrapping to the first.

``tests/components/cache/test_ring.py`` checks this against libmemcached itself (through
ctypes) when the library is installed. Ties between equal points are broken by node
order, as a stable sort of libmemcached's continuum does.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterable
from hashlib import md5

__all__ = ["Ring", "key_hash", "DEFAULT_PORT", "POINTS_PER_SERVER"]

#: memcached's port: its nodes are hashed without the port, as libmemcached does.
DEFAULT_PORT = 11211
#: libmemcached's MEMCACHED_POINTS_PER_SERVER_KETAMA.
POINTS_PER_SERVER = 160
POINTS_PER_HASH = 4
_UNPACK_FOUR = struct.Struct("<4I").unpack
_UNPACK_ONE = struct.Struct("<I").unpack_from


def _float32(value: float) -> float:
    """Round to IEEE single precision: libmemcached computes the point count in float."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def key_hash(key: bytes) -> int:
    """The position of a key on the continuum: MD5, first 32-bit word, little-endian."""
    return _UNPACK_ONE(md5(key).digest())[0]


def node_label(host: str, port: int) -> str:
    """The string libmemcached hashes for a node (without the ``-j`` suffix)."""
    return host if port == DEFAULT_PORT else f"{host}:{port}"


class Ring:
    """Nodes on a ketama continuum. Nodes are ``(host, port)`` pairs with a weight.

    ``node_for(key)`` is a binary search over the sorted points. The ring is immutable;
    ``with_nodes``/``without`` build a new one (cheap: a few hundred MD5s per node), so a
    client can swap rings atomically when a node dies or returns.
    """

    def __init__(self, nodes: Iterable[tuple[str, int]] = (),
                 weights: dict[tuple[str, int], int] | None = None) -> None:  # fmt: skip
        self.nodes: list[tuple[str, int]] = list(dict.fromkeys(nodes))
        self.weights = {n: (weights or {}).get(n, 1) for n in self.nodes}
        for node, weight in self.weights.items():
            if weight <= 0:
                raise ValueError(f"weight of {node} must be positive")
        points: list[tuple[int, int]] = []
        total = sum(self.weights.values())
        count = len(self.nodes)
        for index, node in enumerate(self.nodes):
            share = _float32(self.weights[node] / total)
            per_server = int(
                _float32(_float32(share * (POINTS_PER_SERVER / POINTS_PER_HASH)) * count)
                + 0.0000000001
            )
            label = node_label(*node)
            for j in range(per_server):
                digest = md5(f"{label}-{j}".encode()).digest()
                for point in _UNPACK_FOUR(digest):
                    points.append((point, index))
        points.sort()
        self._positions = [point for point, _ in points]
        self._owners = [self.nodes[index] for _, index in points]

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def points(self) -> int:
        return len(self._positions)

    def node_for(self, key: bytes) -> tuple[str, int]:
        if not self._positions:
            raise LookupError("the ring has no nodes")
        index = bisect_left(self._positions, key_hash(key))
        if index == len(self._positions):
            index = 0
        return self._owners[index]

    def with_nodes(self, *nodes: tuple[str, int], weight: int = 1) -> Ring:
        weights = dict(self.weights)
        for node in nodes:
            weights[node] = weight
        return Ring([*self.nodes, *nodes], weights)

    def without(self, *nodes: tuple[str, int]) -> Ring:
        gone = set(nodes)
        kept = [n for n in self.nodes if n not in gone]
        return Ring(kept, {n: self.weights[n] for n in kept})
