"""Catch-up from the change feed: which of the moving rows changed since they were copied.

A resharding copies the moving rows while writes go on, so the copy is stale by the time
it is complete. Vitess' VReplication and CockroachDB's range moves close the gap from
the source's log (the binlog, the Raft log) rather than by reading everything again,
which is what lets their final write fence be short. The store offers the same two
pieces (``GET /admin/changes?since=LSN``: its redo records after an LSN; and the
``"lsn"`` of every query answer: the last write its snapshot contains), so a copy taken
at LSN *L* plus every record after *L* is the table's exact history.

What this module does with a record is deliberately modest: it *names the moving keys a
statement touched*; it does not replay the statement. The router then reads those keys'
rows again from their source and replaces them in the staging table. Replaying SQL on
a staging table is exact only if the staging table behaves like the live one (same
constraints, same neighbours for ``INSERT OR REPLACE`` and upserts, the same failures),
and a statement that failed on the source is logged all the same; re-reading a key is
exact whatever the statement did, is idempotent (a key read twice is read right twice),
and, once the fence holds every write, the last re-read is the truth.

A statement's keys are known only where the router itself would pin them
(``sqlscan.key_values``): ``INSERT`` rows that give the key; ``UPDATE``/``DELETE`` whose
WHERE pins it with ``=`` or ``IN``. Anything else that touches a moving table (a keyless
``UPDATE``, ``REPLACE``/upsert, which may rewrite another row through a unique column,
an ``UPDATE`` of the key column itself, ``INSERT ... SELECT``, DDL, text the scanner
cannot read) makes the answer ``unknown``, and the router falls back to reading every
moving row again (``reshard.py``). Triggers could change rows no statement names, so a
source with triggers is never caught up this way (the router checks before it starts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .reshard import Move
from .router import Refused, refuse_key_update
from .sqlscan import MISSING, ScanError, canonical_key, key_values, scan, value_of


@dataclass(slots=True)
class Touch:
    """What one logged statement did to the sharded tables."""

    table: str | None  # the sharded table it writes (None: none of them)
    keys: list[Any] | None = None  # canonical keys it touched (None: cannot tell)
    why: str = ""  # when keys is None: the reason


@dataclass(slots=True)
class Changed:
    """The moving keys touched by a run of change records, per table."""

    keys: dict[str, set[Any]] = field(default_factory=dict)
    #: Why some statement's keys could not be named ('' when every one could).
    unknown: str = ""
    statements: int = 0  # statements that wrote a sharded table

    @property
    def count(self) -> int:
        return sum(len(k) for k in self.keys.values())


def split_statement(statement: Any) -> tuple[str, Any]:
    """A logged statement (``sql``, ``[sql, p1, ...]`` or ``[sql, {named}]``) as
    ``(sql, params)``, the forms ``sqlscan`` takes."""
    if isinstance(statement, str):
        return statement, None
    if isinstance(statement, list) and statement and isinstance(statement[0], str):
        if len(statement) == 2 and isinstance(statement[1], dict):
            return statement[0], statement[1]
        return statement[0], list(statement[1:])
    raise ValueError(f"not a statement: {statement!r:.80}")


def touched(statement: Any, tables: dict[str, str]) -> Touch:
    """Which sharded table (``tables``: table -> key column) ``statement`` writes, and
    which of its keys."""
    try:
        sql, params = split_statement(statement)
        info = scan(sql)
    except (ValueError, ScanError) as exc:  # ScanError is a ValueError; both say why
        return Touch("?", None, f"unreadable statement: {exc}")
    sharded = [t for t in info.tables if t in tables]
    if not sharded:
        return Touch(None)
    table = sharded[0]
    column = tables[table]
    if len([t for t in info.tables if t != ","]) > 1:
        return Touch(table, None, f"a statement over {table!r} and other tables")
    verb = info.verb
    if verb in ("insert", "replace"):
        return _insert(info, table, column, params)
    if verb in ("update", "delete"):
        if verb == "update":
            try:
                refuse_key_update(info, column, table)
            except Refused:
                return Touch(table, None, f"an UPDATE of the shard key of {table!r}")
        values = key_values(info.where, column, params)
        if values is None:
            return Touch(table, None, f"an {verb.upper()} of {table!r} without a pinned key")
        return _canonical(table, values)
    return Touch(table, None, f"{verb.upper() or 'a statement'} on {table!r}")


def _insert(info, table: str, column: str, params: Any) -> Touch:
    words = {t.value for t in info.tokens[:4] if t.kind == "word"}
    if (
        info.verb == "replace"
        or "replace" in words
        or any(t.kind == "word" and t.value == "conflict" for t in info.tokens)
    ):
        return Touch(table, None, f"REPLACE or an upsert into {table!r} (it may change "
                     "another row through a unique column)")  # fmt: skip
    if info.insert_rows is None or info.insert_columns is None:
        return Touch(table, None, f"an INSERT into {table!r} without VALUES and columns")
    if column not in info.insert_columns:
        return Touch(table, None, f"an INSERT into {table!r} without its key {column!r}")
    at = info.insert_columns.index(column)
    values = []
    for row in info.insert_rows:
        value = value_of(row[at], params) if at < len(row) else None
        if value is MISSING:
            return Touch(table, None, f"an INSERT into {table!r} with a computed key")
        values.append(value)
    return _canonical(table, values)


def _canonical(table: str, values: list[Any]) -> Touch:
    keys = []
    for value in values:
        if value is None:
            continue  # NULL matches no key (a NULL key is never moving)
        key = canonical_key(value)
        if key is None:  # 5.5 or ' 5': equal to a key or not, by the column's affinity
            return Touch(table, None, f"a key value {value!r} of {table!r} that is not "
                         "an integer or plain text")  # fmt: skip
        keys.append(key)
    return Touch(table, keys)


def changed_keys(changes: list[dict[str, Any]], tables: dict[str, str], move: Move) -> Changed:
    """The moving keys that the statements of ``changes`` (change-feed records) touched."""
    out = Changed({t: set() for t in tables})
    for change in changes:
        for statement in change.get("statements", ()):
            touch = touched(statement, tables)
            if touch.table is None:
                continue
            out.statements += 1
            if touch.keys is None:
                out.unknown = out.unknown or touch.why
                continue
            out.keys[touch.table].update(k for k in touch.keys if move.covers(k))
    return out
