"""Online resharding, the pure parts: what moves where, and what changed during the copy.

Moving a hot key or a key range to another group while traffic runs follows the shape
of Vitess' MoveTables/Reshard and of CockroachDB's range moves:

1. **copy** (no fence): read the rows of the moving keys from every source group and
   write them into a *staging* table on the target. Reads and writes go on as before; a
   staging table (not the live one) keeps fan-out reads from seeing rows twice.
2. **fence**: the router holds new statements on sharded tables that touch the groups
   involved (the sources and the target; others go on) and waits for those in flight;
   from now on nothing changes the moving rows.
3. **catch up**: read the moving rows again and apply the difference to the staging
   table (``diff_rows``). Vitess tails the source's binlog for this; this router
   re-reads, which is simple and exact but makes the fence as long as one read of the
   range (the store's redo log is not exposed per table yet).
4. **switch**: on the target, one transaction moves the staging rows into the live
   table; the sources delete the moved rows; the routing map gets the new placement
   (a directory entry over the old placement) and a higher version, saved to disk.
5. **lift the fence**: held statements are planned again with the new map.

No row is lost (the fenced re-read is the final truth and lands on the target in one
transaction before the sources delete) and none is duplicated in an answer (the rows
sit in staging until the fence, and the sources delete them before traffic resumes).

Failures: anything before the target's commit aborts the move (staging is dropped on
the next try, the map is unchanged). After it, the move rolls forward: the sources'
deletes are retried, and if a source stays down the map switches anyway and ``/status``
says ``cleanup_pending`` with the groups whose old copies remain (fan-out reads would
count those twice until an operator deletes them). The router's own crash in the fence
leaves the map unchanged and staging tables behind, which the next move replaces.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from .placement import Directory, RoutingMap
from .sqlscan import canonical_key

#: Rows one resharding may hold in memory (its copy and its re-read).
MAX_RESHARD_ROWS = 200_000
STAGING_PREFIX = "_reshard_"


class ReshardError(ValueError):
    """The resharding request cannot be carried out as asked."""


@dataclass(frozen=True)
class Move:
    """A hot key, or the integer range [low, high), going to group ``to``."""

    to: str
    key: Any = None
    low: int | None = None
    high: int | None = None

    def where(self, column: str) -> tuple[str, list[Any]]:
        """The WHERE clause selecting the moving rows of a table keyed by ``column``."""
        if self.low is not None:
            return f'"{column}" >= ? AND "{column}" < ?', [self.low, self.high]
        return f'"{column}" = ?', [self.key]

    def describe(self) -> dict[str, Any]:
        if self.low is not None:
            return {"low": self.low, "high": self.high, "to": self.to}
        return {"key": self.key, "to": self.to}


def parse_move(doc: Any, groups: list[str]) -> Move:
    if not isinstance(doc, dict):
        raise ReshardError('body must be {"key": K, "to": G} or {"low": A, "high": B, "to": G}')
    to = doc.get("to")
    if to not in groups:
        raise ReshardError(f"'to' must be one of the groups {groups}")
    if "key" in doc:
        key = canonical_key(doc["key"])
        if key is None:
            raise ReshardError("key must be an integer or a string")
        return Move(to, key=key)
    low, high = doc.get("low"), doc.get("high")
    if not (isinstance(low, int) and isinstance(high, int)) or low >= high:
        raise ReshardError("a range needs integer low < high")
    return Move(to, low=low, high=high)


def sources(routing: RoutingMap, move: Move, groups: list[str]) -> list[str]:
    """Groups that may hold rows of the move: the key's owner, or (a range under hashing
    spreads over everyone) every group but the target."""
    if move.low is None:
        owner = routing.group_for(move.key)
        return [] if owner == move.to else [owner]
    return [g for g in groups if g != move.to]


def switched(routing: RoutingMap, move: Move) -> RoutingMap:
    """The map after the move: a directory entry over the current placement."""
    placement = routing.placement
    if isinstance(placement, Directory):
        keys, ranges = dict(placement.keys), list(placement.ranges)
        fallback = placement.fallback
    else:
        keys, ranges, fallback = {}, [], placement
    if move.low is not None:
        ranges.insert(0, (move.low, move.high, move.to))  # newest first: it wins
    else:
        keys[move.key] = move.to
    return replace(routing, placement=Directory(fallback, keys, ranges),
                   version=routing.version + 1)  # fmt: skip


def diff_rows(copied: list[list[Any]], current: list[list[Any]]):
    """(rows to delete from staging, rows to add) turning ``copied`` into ``current``,
    as multisets (rows are compared whole)."""
    before = Counter(tuple(r) for r in copied)
    after = Counter(tuple(r) for r in current)
    gone = before - after
    added = after - before
    return list(gone.elements()), list(added.elements())


@dataclass
class Progress:
    """What ``/status`` shows about the current (or last) resharding."""

    state: str = "idle"  # idle, copying, fenced, done, failed
    move: dict[str, Any] = field(default_factory=dict)
    rows_copied: int = 0
    rows_caught_up: int = 0
    rows_moved: int = 0
    fence_s: float = 0.0
    error: str = ""
