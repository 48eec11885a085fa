"""The SQL scanner: tokens, tables, the shard key of WHERE / IN / INSERT, merge facts."""

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.shard.sqlscan import (
    IDENT,
    NUMBER,
    PARAM,
    STRING,
    ScanError,
    canonical_key,
    key_values,
    scan,
    tokenize,
)


def keys(sql, params=None, column="id"):
    return key_values(scan(sql).where, column, params)


def test_tokens_cover_strings_identifiers_numbers_and_parameters():
    toks = tokenize("SELECT \"a b\", 'it''s', 0x10, 1.5e3, ?, ?7, ?, :n -- c\n/* x */ [t]")
    kinds = [(t.kind, t.value) for t in toks]
    assert (IDENT, "a b") in kinds and (STRING, "it's") in kinds
    assert (NUMBER, 16) in kinds and (NUMBER, 1500.0) in kinds
    assert [t.value for t in toks if t.kind == PARAM] == [1, 7, 8, "n"]
    assert (IDENT, "t") in kinds


@pytest.mark.parametrize("sql", ["SELECT 'open", 'SELECT "open', "SELECT [open", "a ?0"])
def test_lexically_broken_sql_is_a_scan_error(sql):
    with pytest.raises(ScanError):
        tokenize(sql)


def test_semicolon_inside_a_statement_is_refused():
    with pytest.raises(ScanError):
        scan("SELECT 1; DROP TABLE users")
    assert scan("SELECT 1;").verb == "select"


@pytest.mark.parametrize("sql,params,expected", [
    ("SELECT * FROM users WHERE id = 5", None, [5]),
    ("SELECT * FROM users WHERE 5 = id", None, [5]),
    ("SELECT * FROM users u WHERE u.id = ?", [9], [9]),
    ("SELECT * FROM users WHERE \"id\" == :k", {"k": "x"}, ["x"]),
    ("SELECT * FROM users WHERE id IN (1, 2, ?)", [3], [1, 2, 3]),
    ("SELECT * FROM users WHERE name = 'a' AND id = -4", None, [-4]),
    ("SELECT * FROM users WHERE id IN (1, 2) AND id = 2", None, [2]),
    ("SELECT * FROM users WHERE score BETWEEN 1 AND 3 AND id = 8 ORDER BY id", None, [8]),
    ("UPDATE users SET name = 'x' WHERE id = 3", None, [3]),
    ("DELETE FROM users WHERE id = ?2", [1, 2], [2]),
])  # fmt: skip
def test_pinned_keys(sql, params, expected):
    assert keys(sql, params) == expected


@pytest.mark.parametrize("sql,params", [
    ("SELECT * FROM users", None),
    ("SELECT * FROM users WHERE id = 1 OR id = 2", None),
    ("SELECT * FROM users WHERE name = 'a' OR id = 2", None),
    ("SELECT * FROM users WHERE id > 5", None),
    ("SELECT * FROM users WHERE id = 1 + 1", None),
    ("SELECT * FROM users WHERE id = ?", []),  # parameter missing
    ("SELECT * FROM users WHERE (id = 1 OR name = 'x')", None),
    ("SELECT * FROM users WHERE id IN (SELECT id FROM other)", None),
    ("SELECT * FROM users WHERE other_id = 3", None),
    ("SELECT * FROM users WHERE name = 'id = 3'", None),
])  # fmt: skip
def test_unpinned_keys_are_none_never_a_guess(sql, params):
    assert keys(sql, params) is None


def test_insert_columns_and_rows():
    info = scan("INSERT INTO users (id, name) VALUES (1, 'a'), (?, ?)")
    assert info.tables == ["users"] and info.insert_columns == ["id", "name"]
    assert len(info.insert_rows) == 2
    assert scan("INSERT INTO t SELECT * FROM u").insert_select


def test_tables_of_joins_and_ddl():
    assert scan("SELECT * FROM a JOIN b ON a.x = b.x").tables == ["a", "b"]
    assert scan("SELECT * FROM a, b").tables == ["a", ",", "b"]
    assert scan("SELECT * FROM a, (SELECT 1), c x").tables == ["a", ",", "c"]
    assert scan("CREATE TABLE IF NOT EXISTS main.users (id)").tables == ["users"]
    assert scan("CREATE INDEX ix ON users (name)").tables == ["users"]
    assert scan("DROP TABLE IF EXISTS users").tables == ["users"]


@pytest.mark.parametrize("sql,reason", [
    ("SELECT avg(x) + 1 FROM t", "aggregate"),
    ("SELECT group_concat(x) FROM t", "aggregate"),
    ("SELECT count(DISTINCT x) FROM t", "aggregate"),
    ("SELECT x, count(*) FROM t", "aggregate"),
    ("SELECT sum(x) + 1 FROM t", "aggregate"),
    ("SELECT y FROM t GROUP BY x", "not grouped"),
    ("SELECT DISTINCT x FROM t", "DISTINCT"),
    ("SELECT x FROM t LIMIT 1 OFFSET 2", "OFFSET"),
    ("SELECT x FROM t LIMIT 2, 1", "offset"),
    ("SELECT x FROM t ORDER BY x + 1", "ORDER BY"),
    ("SELECT x FROM t ORDER BY x COLLATE nocase", "ORDER BY"),
    ("SELECT row_number() OVER () FROM t", "window"),
])  # fmt: skip
def test_unmergeable_selects_say_why(sql, reason):
    info = scan(sql)
    assert not info.mergeable and reason in info.unmergeable_reason


@pytest.mark.parametrize("sql", [
    "SELECT name, count(*) FROM t GROUP BY name",
    "SELECT t.name, sum(x) AS s FROM t GROUP BY name ORDER BY s DESC",
    "SELECT a, b, min(c) FROM t GROUP BY b, a",
    "SELECT name FROM t GROUP BY name",
])  # fmt: skip
def test_group_by_plain_shown_columns_is_mergeable(sql):
    info = scan(sql)
    assert info.mergeable, info.unmergeable_reason
    assert "group" in [a.func for a in info.aggregates]


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM t GROUP BY name",
    "SELECT name, x, count(*) FROM t GROUP BY name",
    "SELECT name, count(*) FROM t GROUP BY lower(name)",
    "SELECT name, count(*) FROM t GROUP BY name HAVING count(*) > 1",
    "SELECT name, count(*) FROM t GROUP BY name ORDER BY 2 DESC LIMIT 3",
])  # fmt: skip
def test_group_by_that_cannot_be_matched_across_shards_is_refused(sql):
    assert not scan(sql).mergeable


def test_mergeable_select_facts():
    info = scan("SELECT count(*) AS n, sum(x), min(y) m, max(z), total(w) FROM t")
    assert info.mergeable and [a.func for a in info.aggregates] == [
        "count", "sum", "min", "max", "total"]  # fmt: skip
    info = scan("SELECT a, b FROM t ORDER BY b DESC, 1 LIMIT ?")
    assert [(o.column, o.descending) for o in info.order_by] == [("b", True), (1, False)]
    assert info.limit.kind == PARAM


def test_canonical_key_folds_integer_spellings():
    assert canonical_key("42") == canonical_key(42) == canonical_key(42.0) == 42
    assert canonical_key("042") is None and canonical_key("-7") == -7  # 042 = 42 if INTEGER
    assert canonical_key(1.5) is None and canonical_key(None) is None
    assert canonical_key("٣") == "٣"  # a non-ASCII digit is text, not 3
    assert canonical_key(" 5") is None and canonical_key("5.0") is None  # affinity decides


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_scans_or_is_a_scan_error(text):
    try:
        info = scan(text)
    except ScanError:
        return
    key_values(info.where, "id", None)


_idents = st.text(string.ascii_lowercase, min_size=1, max_size=6).filter(
    lambda s: s not in {"id", "or", "and", "in", "is", "not", "between", "like", "as",
                        "order", "group", "limit", "having", "window", "union", "except",
                        "intersect", "returning", "select", "from", "where", "on"})  # fmt: skip
_values = st.one_of(st.integers(-(2**62), 2**62), st.text(string.printable, max_size=8))


def _literal(v):
    return str(v) if isinstance(v, int) else "'" + v.replace("'", "''") + "'"


@settings(max_examples=200, deadline=None)
@given(key=_values, others=st.lists(st.tuples(_idents, _values), max_size=4),
       position=st.integers(0, 4), as_param=st.booleans())  # fmt: skip
def test_key_conjunct_is_found_among_any_others(key, others, position, as_param):
    conjuncts = [f"{c} = {_literal(v)}" for c, v in others]
    conjuncts.insert(
        min(position, len(conjuncts)), "id = ?" if as_param else f"id = {_literal(key)}"
    )
    sql = "SELECT * FROM users WHERE " + " AND ".join(conjuncts)
    assert keys(sql, [key] if as_param else None) == [key]
    assert keys(sql.replace(" AND ", " OR ", 1)) is None or not others


# -- soundness against SQLite: a pinned key set always contains every matching row's key --

_atoms = st.one_of(
    st.builds(lambda v: f"id = {v}", st.integers(-3, 12)),
    st.builds(lambda v: f"{v} = id", st.integers(-3, 12)),
    st.builds(lambda v: f"id = '{v}'", st.integers(-3, 12)),
    st.builds(lambda v: f"id = ' {v}'", st.integers(-3, 12)),
    st.builds(lambda v: f"id IN ('{v}.0', '+{v}')", st.integers(-3, 12)),
    st.builds(lambda v: f"id = {v}.0", st.integers(-3, 12)),
    st.builds(
        lambda vs: "id IN (" + ", ".join(map(str, vs)) + ")",
        st.lists(st.integers(-3, 12), min_size=1, max_size=4),
    ),  # fmt: skip
    st.builds(lambda a, b: f"v BETWEEN {a} AND {b}", st.integers(0, 5), st.integers(0, 5)),
    st.builds(lambda v: f"v > {v}", st.integers(0, 5)),
    st.builds(lambda v: f"t.id = {v}", st.integers(-3, 12)),
    st.just("v IS NULL"),
    st.just("id = v"),
)
_clauses = st.recursive(
    _atoms,
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"{a} AND {b}", inner, inner),
        st.builds(lambda a, b: f"{a} OR {b}", inner, inner),
        st.builds(lambda a: f"({a})", inner),
        st.builds(lambda a: f"NOT ({a})", inner),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(clause=_clauses, values=st.lists(st.one_of(st.none(), st.integers(0, 12)), min_size=13,
                                        max_size=13))  # fmt: skip
def test_pinned_keys_are_sound_against_sqlite(clause, values):
    import sqlite3

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    db.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(values)))
    sql = f"SELECT id FROM t WHERE {clause}"
    matched = {row[0] for row in db.execute(sql)}
    pinned = keys(sql)
    canonical = {canonical_key(v) for v in (pinned or [])}
    if pinned is not None and None not in canonical:  # (None: the router asks every group)
        assert matched <= canonical, (sql, pinned, matched)
