"""Routing: a request's statements in, a plan out (which groups run what, how to merge).

Pure: the config, the routing map, the statements and an id generator go in; a ``Plan``
comes out; ``server.py`` carries it out. The rules, in the order they are applied:

1. Each statement is scanned (``sqlscan.py``) and placed: no sharded table -> the home
   group; a sharded table with its key pinned -> the groups owning those keys; a
   sharded table without a pinned key -> every group (a *fan-out*).
2. Statements the router cannot answer correctly are refused before anything runs:
   two sharded tables, or a sharded table with an unsharded one, in one statement (the
   rows to join live on different machines; real systems co-locate tables by key or
   ship rows between nodes, e.g. Citus' repartition joins); a subquery over a sharded
   table; an INSERT without its key column (unless the router generates ids), with
   rows for several groups, or fed by SELECT; an UPDATE of the key column (the row
   would have to move); a fan-out read whose result cannot be merged exactly.
3. If every statement goes to the same single group, the request goes there whole, so
   rqlite's own semantics (``?transaction``, errors) hold unchanged.
4. Otherwise, a write request that is a transaction (``?transaction``, which pyrqlite
   always sets) spanning several groups is refused. Without ``?transaction`` rqlite runs
   a request's statements one by one, each atomic on its own and its error reported on
   its own, and so does the router, each statement on its groups (the web tier creates
   its tables so). A
   transaction over several databases needs two-phase commit (prepare everywhere, then
   commit everywhere, with a coordinator log to finish after a crash; XA, Vitess'
   ``transaction_mode=twopc``) or a database built on it from the start (Spanner and
   CockroachDB: 2PC over Paxos/Raft groups with synchronised clocks). Without that, a
   crash between two shards' commits leaves half a transaction, so the router says no.
   A *single* write statement without a key (DDL, ``DELETE FROM t``) is sent to every
   group: each group applies it atomically, the whole is not atomic across groups
   (Vitess' scatter DML has the same property); a failure on some groups is reported
   with the groups named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import ShardConfig
from .hotkeys import SpaceSaving
from .ids import Snowflake
from .merge import partial_query
from .placement import RoutingMap
from .sqlscan import (
    MISSING,
    Scan,
    ScanError,
    Token,
    canonical_key,
    key_values,
    scan,
    scan_cached,
    value_of,
)

Statement = tuple[str, Any]
#: Tries to find an id that lands on a multi-row INSERT's group (expected: one per group).
MAX_ID_TRIES = 10_000
_READ_VERBS = frozenset({"select", "pragma", "explain", "with", "values"})


class Refused(Exception):
    """The router will not run this request; the message says why (rqlite-shaped)."""

    def __init__(self, message: str, index: int = 0) -> None:
        super().__init__(message)
        self.index = index


@dataclass(slots=True)
class Step:
    """One statement and where it runs; ``merge`` is set for a read over several groups."""

    statement: Statement
    groups: list[str]
    scan: Scan
    params: Any = None
    sharded: bool = False

    @property
    def fan_out(self) -> bool:
        return len(self.groups) > 1


@dataclass(slots=True)
class Plan:
    steps: list[Step]
    #: When the whole request goes to one group: that group (and the statements, maybe
    #: rewritten with generated ids).
    single: str | None = None
    generated_ids: int = 0
    groups: set[str] = field(default_factory=set)


def is_read(sql: str) -> bool:
    """For ``/db/request``: does the statement only read? (by its first word)"""
    word = sql.lstrip().split(None, 1)[:1]
    return bool(word) and word[0].lower().rstrip(";(") in _READ_VERBS


class Router:
    def __init__(self, config: ShardConfig, ids: Snowflake) -> None:
        self.config = config
        self.map: RoutingMap = config.routing
        self.ids = ids
        self.all_groups = list(config.groups)
        #: Keys of single-key statements, per sharded table (the celebrity finder).
        self.hot: dict[str, SpaceSaving] = {t: SpaceSaving() for t in config.tables}

    def plan(self, statements: list[Statement], *, write: bool, transaction: bool) -> Plan:
        steps = []
        generated = 0
        for index, statement in enumerate(statements):
            try:
                step, made = self._place(statement)
            except Refused as exc:
                raise Refused(str(exc), index) from None
            except ScanError as exc:
                raise Refused(f"cannot route statement: {exc}", index) from None
            generated += made
            steps.append(step)
        groups = {g for s in steps for g in s.groups}
        plan = Plan(steps, generated_ids=generated, groups=groups)
        if len(groups) == 1 and all(not s.fan_out for s in steps):
            plan.single = next(iter(groups))
            return plan
        writes = [s for s in steps if s.scan.writes]
        if write and writes and transaction and len(steps) > 1:
            raise Refused(
                "cross-shard transaction refused: the statements of this request run on "
                f"groups {sorted(groups)}, and the router has no two-phase commit to make "
                "them atomic; send one shard's statements per request"
            )
        for i, step in enumerate(steps):
            if step.fan_out and not step.scan.writes and not step.scan.mergeable:
                raise Refused(
                    "cannot merge this query across shards exactly: "
                    f"{step.scan.unmergeable_reason}; pin the shard key "
                    "(WHERE key = ? or key IN (...)) or simplify the query",
                    i,
                )
            if step.fan_out and not step.scan.writes and step.scan.aggregates:
                sql, params = step.statement  # avg(x) -> sum(x) and count(x) per shard
                rewritten, step.scan = partial_query(sql, step.scan)
                step.statement = (rewritten, params)
        return plan

    def _place(self, statement: Statement) -> tuple[Step, int]:
        sql, params = statement
        info = scan_cached(sql)
        sharded = [t for t in info.tables if t in self.config.tables]
        others = [t for t in info.tables if t not in self.config.tables and t != ","]
        home = [self.config.home]
        if not sharded:
            return Step(statement, home, info, params), 0
        table = sharded[0]
        if len(sharded) > 1 or others or "," in info.tables or "join" in _words(info):
            raise Refused(
                f"a statement over sharded table {table!r} and other tables "
                f"({', '.join(t for t in info.tables if t != ',')}) would join rows that "
                "live on different groups; the router does not join across shards"
            )
        if info.has_subquery:
            raise Refused(f"a subquery over sharded table {table!r} would see one shard only")
        column = self.config.tables[table]
        if info.verb in ("insert", "replace"):
            return self._place_insert(statement, info, table, column)
        if info.verb == "update":
            refuse_key_update(info, column, table)
        if info.verb in ("select", "update", "delete"):
            values = key_values(info.where, column, params)
            if values is not None:
                groups = self._groups_for(values)
                if len(values) == 1 and (key := canonical_key(values[0])) is not None:
                    self.hot[table].add(key)
                return Step(statement, groups or home, info, params, True), 0
        if info.verb not in ("select", "update", "delete", "create", "drop", "alter",
                             "pragma", "explain", "analyze", "reindex"):  # fmt: skip
            raise Refused(f"cannot route {info.verb.upper() or 'this'} statement on sharded "
                          f"table {table!r}")  # fmt: skip
        return Step(statement, list(self.all_groups), info, params, True), 0

    def _groups_for(self, values: list[Any]) -> list[str]:
        groups: list[str] = []
        for value in values:
            key = canonical_key(value)
            if key is None:  # 5.5 or ' 5' may equal a key, by column affinity: ask all
                return list(self.all_groups)
            try:
                group = self.map.group_for(key)
            except KeyError as exc:
                raise Refused(str(exc.args[0])) from None
            if group not in groups:
                groups.append(group)
        return groups

    def _place_insert(self, statement: Statement, info: Scan, table: str, column: str):
        sql, params = statement
        if info.insert_select or info.insert_rows is None:
            raise Refused(f"INSERT into sharded table {table!r} needs VALUES rows "
                          "(INSERT ... SELECT would read other shards)")  # fmt: skip
        if info.insert_columns is None:
            raise Refused(f"INSERT into sharded table {table!r} must name its columns, "
                          f"including the shard key {column!r}")  # fmt: skip
        if column not in info.insert_columns:
            if self.config.ids.get(table) != column:
                raise Refused(f"INSERT into sharded table {table!r} must give the shard key "
                              f"{column!r} (or configure [ids] {table} = \"{column}\")")  # fmt: skip
            return self._insert_with_ids(statement, info, column)
        where = info.insert_columns.index(column)
        keys = []
        for row in info.insert_rows:
            if where >= len(row):
                raise Refused("an INSERT row has fewer values than columns")
            value = value_of(row[where], params)
            key = canonical_key(value) if value is not None else None
            if key is None or value is MISSING:
                raise Refused(f"the shard key {column!r} of an INSERT must be a literal or a "
                              "parameter with an integer or text value")  # fmt: skip
            keys.append(key)
        groups = self._groups_for(keys)
        if len(keys) == 1:
            self.hot[table].add(keys[0])
        if len(groups) > 1:
            raise Refused(
                f"this INSERT has rows for groups {groups}: a statement that writes several "
                "groups is not atomic; insert each group's rows in its own request"
            )
        return Step(statement, groups, info, params, True), 0

    def _insert_with_ids(self, statement: Statement, info: Scan, column: str):
        """Add the key column with Snowflake ids, all landing on one group."""
        sql, params = statement
        assert info.insert_rows is not None and info.insert_columns_open is not None
        ids = [self.ids.next_id()]
        group = self.map.group_for(ids[0])
        for _ in info.insert_rows[1:]:
            for _ in range(MAX_ID_TRIES):
                candidate = self.ids.next_id()
                if self.map.group_for(candidate) == group:
                    ids.append(candidate)
                    break
            else:
                raise Refused("could not generate ids that land on one group")
        # Splice from the end, so earlier offsets stay valid.
        edits = [(info.insert_columns_open, f"{column}, ")]
        edits += [(at, f"{i}, ") for at, i in zip(info.insert_row_opens, ids, strict=True)]
        for at, text in sorted(edits, reverse=True):
            sql = sql[:at] + text + sql[at:]
        return Step((sql, params), [group], scan(sql), params, True), len(ids)


def _words(info: Scan) -> set[str]:
    return {t.value for t in info.tokens if t.kind == "word"}


def refuse_key_update(info: Scan, column: str, table: str) -> None:
    """``UPDATE t SET key = ...`` (or ``SET (key, x) = ...``) would need the row moved to
    another group. Only assignment targets count: ``SET n = (CASE WHEN key = 1 ...)``
    reads the key, it does not change it."""
    tokens: list[Token] = info.tokens
    try:
        start = next(i for i, t in enumerate(tokens) if t.kind == "word" and t.value == "set")
    except StopIteration:
        return
    depth = 0
    target: list[Token] = []
    in_target = True
    for tok in tokens[start + 1 :]:
        if tok.kind == "op" and tok.value == "(":
            depth += 1
        elif tok.kind == "op" and tok.value == ")":
            depth -= 1
        if depth == 0 and tok.kind == "word" and tok.value in ("where", "from", "returning"):
            break
        if depth == 0 and tok.kind == "op" and tok.value == ",":
            target, in_target = [], True
            continue
        if in_target:
            if depth == 0 and tok.kind == "op" and tok.value in ("=", "=="):
                names = {str(t.value).lower() for t in target if t.kind in ("word", "ident")}
                if column in names:
                    raise Refused(f"UPDATE of the shard key {column!r} of {table!r} would "
                                  "move the row to another group; delete and re-insert it "
                                  "instead")  # fmt: skip
                in_target = False
            else:
                target.append(tok)
