"""Nondeterministic SQL becomes literals on the primary, and nothing else is touched."""

import sqlite3

from components.store.rewrite import Rewriter

NOW = 1_700_000_000.25  # 2023-11-14 22:13:20.250 UTC


def rewriter(bits=0x1234):
    return Rewriter(lambda: NOW, lambda n: bits & ((1 << n) - 1))


def test_plain_statements_are_returned_unchanged():
    sql = "INSERT INTO t(a, b) VALUES(?, 'x')"
    assert rewriter().rewrite(sql) is sql


def test_random_becomes_a_signed_integer_literal():
    assert rewriter(5).rewrite("INSERT INTO t VALUES(random())") == "INSERT INTO t VALUES(5)"
    out = rewriter((1 << 64) - 1).rewrite("SELECT RANDOM( )")
    assert out == "SELECT -1"


def test_randomblob_with_a_literal_size_becomes_a_blob_literal():
    assert rewriter(0xABCD).rewrite("SELECT randomblob(2)") == "SELECT X'abcd'"
    assert rewriter().rewrite("SELECT randomblob(n) FROM t") == "SELECT randomblob(n) FROM t"


def test_now_inside_time_functions_becomes_the_primary_time():
    out = rewriter().rewrite("INSERT INTO t VALUES(datetime('now'), strftime('%s','now'))")
    assert out == (
        "INSERT INTO t VALUES(datetime('2023-11-14 22:13:20.250'), "
        "strftime('%s','2023-11-14 22:13:20.250'))"
    )
    conn = sqlite3.connect(":memory:")
    select = "SELECT " + out.removeprefix("INSERT INTO t VALUES(")[:-1]
    assert conn.execute(select).fetchone() == (
        "2023-11-14 22:13:20", "1700000000",
    )  # fmt: skip


def test_current_keywords_become_literals():
    out = rewriter().rewrite("UPDATE t SET at = CURRENT_TIMESTAMP, d = current_date")
    assert out == "UPDATE t SET at = '2023-11-14 22:13:20', d = '2023-11-14'"


def test_strings_identifiers_and_comments_are_never_rewritten():
    sqls = [
        "INSERT INTO t VALUES('random()', 'now')",
        'SELECT "random"() FROM t',
        "SELECT [current_time] FROM t",
        "SELECT 1 -- random()\n",
        "SELECT 1 /* datetime('now') */",
        "INSERT INTO t VALUES('it''s random()')",
        "SELECT upper('now')",
    ]
    for sql in sqls:
        assert rewriter().rewrite(sql) == sql, sql


def test_schema_defaults_are_kept_for_per_insert_evaluation():
    sql = "CREATE TABLE t (at TEXT DEFAULT CURRENT_TIMESTAMP)"
    assert rewriter().rewrite(sql) == sql
