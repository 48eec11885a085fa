"""Online resharding, the pure parts: what moves where, and what changed during the copy.

Moving a hot key or a key range to another group while traffic runs follows the shape
of Vitess' MoveTables/Reshard and of CockroachDB's range moves:

1. **copy** (no fence): read the rows of the moving keys from every source group and
   write them into a *staging* table on the target, noting the LSN of the snapshot each
   source answered from. Reads and writes go on as before; a staging table (not the
   live one) keeps fan-out reads from seeing rows twice.
2. **catch up** (no fence): follow each source's change feed from that LSN
   (``catchup.py`` names the moving keys each logged statement touched) and read those
   keys' rows again into staging, round after round, until a round changes few keys.
   This is Vitess' VReplication in miniature; it is what keeps the next step short.
3. **fence**: the router holds new statements on sharded tables that touch the groups
   involved (the sources and the target; others go on) and waits for those in flight;
   from now on nothing changes the moving rows. The last changes are caught up under
   it, exactly as in step 2. *Fallback*: when a feed cannot be used (the store does not
   offer one, the log was compacted past the copy's LSN: HTTP 410, the source has
   triggers) or a logged statement's keys cannot be named (a keyless UPDATE, an
   upsert, DDL), the router copies again (unfenced, if it can) or, under the fence,
   reads every moving row again and applies the difference (``diff_rows``): exact, but
   the fence then lasts one read of the whole range. ``/status`` says which path ran
   (``catchup``, ``catchup_note``) and how long the fence was (``fence_s``).
4. **switch**: on the target, one transaction moves the staging rows into the live
   table; the routing map gets the new placement (a directory entry over the old
   placement) and a higher version, saved to disk with the sources' copies marked as
   old copies (a *pending cleanup*, below).
5. **lift the fence**: held statements are planned again with the new map.
6. **clean up**: the sources delete the moved rows, outside the fence (until then the
   old copies are hidden from fan-outs like any pending cleanup).

No row is lost and none is duplicated: under the fence, staging equals the sources'
moving rows (every key changed since the copy was read again after its last change, or
everything was read again), it lands on the target in one transaction while the fence
holds, the rows sit in staging, invisible, until then, and from the switch on the
sources' copies are hidden until they are deleted.

Failures: anything before the target's commit aborts the move (staging is dropped on
the next try, the map is unchanged). After it, the move rolls forward: the map switches,
and a source whose deletes fail (it is down, or refuses) stays with *old copies* of
the moved rows: a *pending cleanup*, kept in the moves file so it survives a restart.
Until it is done, the router must not let those copies be seen: every statement sent
to that group for a fan-out (reads, and keyless UPDATE/DELETE, whose ``rows_affected``
would count them) is rewritten by ``without_moved`` to leave the moved keys out (all
rows of the moved keys on that group are old copies: new writes of those keys go to the
target since the switch), and the router retries the deletes in the background until
they succeed. A new resharding waits until no cleanup is pending (one stale range at a
time keeps the exclusions simple). A router that stops inside a move leaves the map
unchanged and staging tables behind, which the next move replaces, except in one
window: between sending the switch and recording it. So an *intent* (the move, marked
``switching``) is written to the moves file before the switch is sent, and the next
start asks the target whether the switch committed: its transaction drops the staging
tables, so their absence says it did. The outcome is recorded (a committed switch
becomes a move with its cleanup pending); while the target cannot say, statements on
the groups involved stay fenced, since a write on the wrong side would be lost.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from .placement import Directory, RoutingMap
from .sqlscan import CLAUSE_END, OP, WORD, Scan, canonical_key

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
            return f"{ident(column)} >= ? AND {ident(column)} < ?", [self.low, self.high]
        return f"{ident(column)} = ?", [self.key]

    def covers(self, key: Any) -> bool:
        """Is ``key`` (canonical, see ``sqlscan.canonical_key``) one of the moving keys?"""
        if self.low is not None:
            return isinstance(key, int) and self.low <= key < self.high  # type: ignore[operator]
        return key == self.key

    def condition(self, column: str) -> str:
        """``where`` with the values written out (for a rewritten client statement,
        whose own parameters must keep their numbers)."""
        col = ident(column)
        if self.low is not None:
            return f"{col} >= {int(self.low)} AND {col} < {int(self.high)}"  # type: ignore[arg-type]
        if isinstance(self.key, int):
            return f"{col} = {int(self.key)}"
        return f"{col} = '" + str(self.key).replace("'", "''") + "'"

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


def without_moved(sql: str, info: Scan, column: str, moves: list[Move]) -> str | None:
    """``sql`` (a SELECT, UPDATE or DELETE on a table keyed by ``column``) rewritten so
    that it leaves out the rows of ``moves``: its WHERE becomes ``(old) AND NOT
    coalesce(moved, 0)``, or one is added before the first clause that follows it.
    ``coalesce`` keeps rows whose key is NULL (``NULL >= 0`` is NULL, and ``NOT NULL``
    would drop them). None when the statement's shape is not one of those."""
    if info.verb not in ("select", "update", "delete") or not moves:
        return None
    moved = " OR ".join(f"({m.condition(column)})" for m in moves)
    exclude = f"NOT coalesce({moved}, 0)"
    if info.where is not None:
        if not info.where:
            return None
        first, last = info.where[0].start, info.where[-1].end
        return f"{sql[:first]}({sql[first:last]}) AND {exclude}{sql[last:]}"
    # No WHERE: add one after the table (FROM t / UPDATE t SET ...), before GROUP BY,
    # ORDER BY, LIMIT, RETURNING or the end.
    depth, after, at = 0, False, info.tokens[-1].end if info.tokens else 0
    for tok in info.tokens:
        if tok.kind == OP and tok.value in ("(", ")"):
            depth += 1 if tok.value == "(" else -1
        elif depth == 0 and tok.kind == WORD:
            if tok.value in ("from", "set"):
                after = True
            elif after and tok.value in CLAUSE_END:
                at = tok.start
                break
    if not after:
        return None
    return f"{sql[:at].rstrip()} WHERE {exclude} {sql[at:]}".rstrip()


def ident(name: str) -> str:
    """``name`` as an SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def diff_rows(copied: list[list[Any]], current: list[list[Any]]):
    """(rows to delete from staging, rows to add) turning ``copied`` into ``current``,
    as multisets (rows are compared whole)."""
    before = Counter(tuple(r) for r in copied)
    after = Counter(tuple(r) for r in current)
    gone = before - after
    added = after - before
    return list(gone.elements()), list(added.elements())


class Staged:
    """The rows in the staging tables, mirrored in memory by table and key, so that a
    catch-up can replace a key's rows and a full re-read can be applied as a diff."""

    def __init__(self, tables: dict[str, str]) -> None:
        self.tables = tables
        self.columns: dict[str, list[str]] = {}
        self.by_key: dict[str, dict[Any, list[list[Any]]]] = {t: {} for t in tables}
        self.count = 0

    def key_at(self, table: str) -> int:
        """Position of the key column in ``SELECT *`` rows of ``table``."""
        lowered = [c.lower() for c in self.columns.get(table, [])]
        if self.tables[table] not in lowered:
            raise ReshardError(f"table {table!r} has no column {self.tables[table]!r}")
        return lowered.index(self.tables[table])

    def add(self, table: str, columns: list[str], rows: list[list[Any]]) -> None:
        if columns:
            self.columns[table] = columns
        if not rows:
            return
        at = self.key_at(table)
        for row in rows:
            self.by_key[table].setdefault(canonical_key(row[at]), []).append(row)
        self.count += len(rows)
        if self.count > MAX_RESHARD_ROWS:
            raise ReshardError(f"more than {MAX_RESHARD_ROWS} rows to move at once")

    def replace(self, table: str, keys: list[Any], rows: list[list[Any]]) -> None:
        """The rows of ``keys`` are now ``rows`` (as read again from the source)."""
        for key in keys:
            self.count -= len(self.by_key[table].pop(key, ()))
        self.add(table, self.columns.get(table, []), rows)

    def rows(self, table: str) -> list[list[Any]]:
        return [row for rows in self.by_key[table].values() for row in rows]

    def reset(self, table: str, rows: list[list[Any]]) -> None:
        self.count -= sum(len(r) for r in self.by_key[table].values())
        self.by_key[table] = {}
        self.add(table, self.columns.get(table, []), rows)


@dataclass
class Progress:
    """What ``/status`` shows about the current (or last) resharding."""

    #: idle, copying, catching_up, fenced, cleaning_up, done, cleanup_pending, failed
    state: str = "idle"
    move: dict[str, Any] = field(default_factory=dict)
    rows_copied: int = 0
    rows_caught_up: int = 0
    rows_moved: int = 0
    #: How the copy was caught up: "changes" (from the sources' change feeds) or
    #: "reread" (every moving row read again under the fence), and why not "changes".
    catchup: str = ""
    catchup_note: str = ""
    catchup_rounds: int = 0  # unfenced rounds of tailing the feeds
    changes_seen: int = 0  # logged statements on sharded tables read from the feeds
    keys_refetched: int = 0  # moving keys whose rows were read again
    fence_s: float = 0.0  # how long statements on the groups involved were held
    #: Where the fence's time went: in-flight statements, catch-up, switch, deletes.
    fence_phases_ms: dict[str, float] = field(default_factory=dict)
    error: str = ""
