"""Fan-out merges against one SQLite holding every row: equal answers, or a refusal.

Random rows are placed on three in-memory databases by the router's own placement;
random queries are planned by the router, run on the groups it names and merged; the
answer must equal the single database's (row order compared wherever SQL defines one).
"""

import sqlite3
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from components.shard import config
from components.shard.ids import Snowflake
from components.shard.merge import MergeError, merge_rows, order_positions, sort_key
from components.shard.router import Refused, Router

CONFIG = config.parse({
    "strategy": "consistent", "vnodes": 16,
    "groups": [{"name": f"g{i}", "nodes": [f"n{i}:1"]} for i in range(3)],
    "tables": {"t": "id"},
})  # fmt: skip
ROUTER = Router(CONFIG, Snowflake(0, lambda: 0))
SCHEMA = "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score INTEGER)"

rows = st.lists(
    st.tuples(st.integers(-1000, 1000), st.sampled_from([None, "a", "b", "B", "é", "zz"]),
              st.one_of(st.none(), st.integers(-5, 5))),  # fmt: skip
    max_size=30, unique_by=lambda r: r[0],
)  # fmt: skip
projections = st.sampled_from([
    "*", "id, name", "name, score", "score", "count(*)", "count(score), sum(score)",
    "min(name), max(name), min(score), max(score)", "total(score) AS t, count(*) n",
    "avg(score)", "name, count(*)", "DISTINCT name", "id * 2 AS d",
    "name, count(*), sum(score), max(id)", "score, name, min(id)", "name",
    "AVG( score ), avg(id) AS d", "name, avg(score), count(score)", "avg(score * 0.5) a",
    "name, avg(score) AS \"avg\", avg(id)",
])  # fmt: skip
wheres = st.sampled_from([
    "", " WHERE score > 0", " WHERE name = 'a'", " WHERE id IN (1, 2, 3, 500, -7)",
    " WHERE id = 4", " WHERE score IS NULL OR id > 10", " WHERE name >= 'b' AND score <= 2",
])  # fmt: skip
orders = st.sampled_from([
    "", " ORDER BY id", " ORDER BY name, id DESC", " ORDER BY score DESC", " ORDER BY 1",
    " ORDER BY name DESC, score", " ORDER BY d DESC", " GROUP BY name",
    " GROUP BY name ORDER BY 2 DESC, name", " GROUP BY score, name", " GROUP BY id % 3",
    " GROUP BY name HAVING count(*) > 1",
])  # fmt: skip
limits = st.sampled_from(["", " LIMIT 0", " LIMIT 3", " LIMIT 100", " LIMIT 2 OFFSET 1"])


def _rqlite(cursor):
    columns = [d[0] for d in cursor.description]
    values = [list(r) for r in cursor.fetchall()]
    doc = {"columns": columns, "types": [""] * len(columns)}
    if values:
        doc["values"] = values
    return doc


def _type(value):
    return {int: "integer", float: "real", str: "text", type(None): ""}[type(value)]


@settings(max_examples=300, deadline=None)
@given(data=rows, projection=projections, where=wheres, order=orders, limit=limits)
def test_sharded_answer_equals_single_database_or_is_refused(data, projection, where, order,
                                                             limit):  # fmt: skip
    sql = f"SELECT {projection} FROM t{where}{order}{limit}"
    oracle = sqlite3.connect(":memory:")
    shards = {g: sqlite3.connect(":memory:") for g in CONFIG.groups}
    for db in [oracle, *shards.values()]:
        db.execute(SCHEMA)
    oracle.executemany("INSERT INTO t VALUES (?, ?, ?)", data)
    for row in data:
        shards[ROUTER.map.group_for(row[0])].execute("INSERT INTO t VALUES (?, ?, ?)", row)
    try:
        oracle_cur = oracle.execute(sql)
    except sqlite3.Error:
        return  # not valid SQL for SQLite either (ORDER BY d without d)
    expected = _rqlite(oracle_cur)
    try:
        plan = ROUTER.plan([(sql, None)], write=False, transaction=False)
    except Refused:
        allowed = ("GROUP BY id", "HAVING", "DISTINCT", "OFFSET", "name, count",
                   "score, name", "GROUP BY name", "GROUP BY score", "name, avg")  # fmt: skip
        assert any(w in sql for w in allowed), sql
        return
    step = plan.steps[0]
    sent = step.statement[0]  # maybe rewritten for the shards (avg -> sum and count)
    parts = [_rqlite(shards[g].execute(sent)) for g in step.groups]
    try:
        got = parts[0] if len(parts) == 1 else merge_rows(parts, step.scan, None)
    except MergeError:  # answered as an error: ORDER BY a column the result lacks
        assert not set(c.lower() for c in expected["columns"]) >= {
            o.column for o in step.scan.order_by if isinstance(o.column, str)
        }, sql
        return
    assert got["columns"] == expected["columns"]
    if len(parts) > 1:  # the store's rule: the type of a column's first non-NULL value
        assert got["types"] == [_type(next((r[c] for r in expected.get("values", [])
                                            if r[c] is not None), None))
                                for c in range(len(expected["columns"]))], sql  # fmt: skip
    got_rows, want_rows = got.get("values", []), expected.get("values", [])
    assert len(got_rows) == len(want_rows), sql
    if step.scan.order_by and step.scan.aggregates is None and len(parts) > 1:
        positions = order_positions(step.scan, expected["columns"])
        proj = [[sort_key(r[i]) for i, _ in positions] for r in got_rows]
        assert proj == [[sort_key(r[i]) for i, _ in positions] for r in want_rows], sql
    if "LIMIT" not in sql or step.scan.aggregates is not None:
        assert Counter(map(repr, got_rows)) == Counter(map(repr, want_rows)), sql
    else:
        all_rows = Counter(map(repr, oracle.execute(sql.split(" LIMIT")[0]).fetchall()))
        assert all(all_rows[repr(tuple(r))] for r in got_rows), sql
