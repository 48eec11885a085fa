"""The SQLite state machine: one transaction per batch, the LSN inside it, rqlite's modes."""

import sqlite3
import threading
import time

import pytest

from components.store import database
from components.store.database import (
    BUDGET_EXCEEDED,
    META_TABLE,
    READ_ONLY_ERROR,
    Changes,
    Database,
    Failure,
    Rows,
)
from components.store.wal import Batch


@pytest.fixture
def db(tmp_path):
    database = Database(str(tmp_path / "s.sqlite"))
    database.apply(1, 1, Batch((("CREATE TABLE t (id INTEGER PRIMARY KEY, v)", None),), False))
    yield database
    database.close()


def count(db):
    return db.query([("SELECT count(*) FROM t", None)])[1][0].values[0][0]


def test_applied_lsn_and_epoch_are_committed_with_the_batch(db, tmp_path):
    db.apply(2, 3, Batch((("INSERT INTO t(v) VALUES(1)", None),), False))
    db.close()
    reopened = Database(str(tmp_path / "s.sqlite"))
    assert (reopened.applied_lsn, reopened.applied_epoch) == (2, 3)
    assert count(reopened) == 1


def test_without_transaction_a_failing_statement_is_undone_alone(db):
    results = db.apply(2, 1, Batch((("INSERT INTO t(v) VALUES(1)", None),
                                    ("INSERT INTO t(id) VALUES(1)", None),
                                    ("INSERT INTO t(v) VALUES(3)", None)), False))  # fmt: skip
    assert isinstance(results[1], Failure) and "UNIQUE" in results[1].error
    assert [type(r) for r in results] == [Changes, Failure, Changes]
    assert count(db) == 2


def test_without_transaction_a_failing_multi_row_statement_is_undone_by_sqlite_itself(db):
    db.apply(2, 1, Batch((("INSERT INTO t(id) VALUES(1)", None),), False))
    (failed,) = db.apply(3, 1, Batch((("INSERT INTO t(id) VALUES(10), (1)", None),), False))
    assert isinstance(failed, Failure) and count(db) == 1  # row 10 went with the statement
    # OR FAIL keeps what the statement did before the error, as in rqlite (autocommit)
    db.apply(4, 1, Batch((("INSERT OR FAIL INTO t(id) VALUES(11), (1)", None),), False))
    assert count(db) == 2
    group = db.apply_group([(5, 1, Batch((("INSERT INTO t(id) VALUES(20), (1)", None),), False)),
                            (6, 1, Batch((("INSERT INTO t(id) VALUES(21)", None),), False))])  # fmt: skip
    assert isinstance(group[0][0], Failure) and isinstance(group[1][0], Changes)
    assert count(db) == 3 and db.applied_lsn == 6


def test_with_transaction_the_first_error_rolls_back_everything(db):
    results = db.apply(2, 1, Batch((("INSERT INTO t(v) VALUES(1)", None),
                                    ("INSERT INTO nope VALUES(1)", None),
                                    ("INSERT INTO t(v) VALUES(3)", None)), True))  # fmt: skip
    assert [type(r) for r in results] == [Changes, Failure]
    assert count(db) == 0
    assert db.applied_lsn == 2  # the failed batch still consumed its LSN


def test_user_sql_cannot_control_transactions_or_touch_the_meta_table(db):
    for sql in ("BEGIN", "COMMIT", "SAVEPOINT x", f"DELETE FROM {META_TABLE}",
                "ATTACH 'x.db' AS x", "PRAGMA journal_mode=DELETE"):  # fmt: skip
        (result,) = db.apply(db.applied_lsn + 1, 1, Batch(((sql, None),), False))
        assert isinstance(result, Failure), sql
        assert "not authorized" in result.error
    assert db.query([(f"SELECT v FROM {META_TABLE} WHERE k='applied_lsn'", None)])[1][0].values


def test_queries_refuse_writes_with_rqlites_message(db):
    _, (result,) = db.query([("INSERT INTO t(v) VALUES(1)", None)])
    assert result == Failure(READ_ONLY_ERROR, result.time)
    assert count(db) == 0


def test_is_read_classifies_without_running(db):
    assert db.is_read("SELECT * FROM t WHERE id = ?", [1])
    assert db.is_read("PRAGMA table_info(t)", None)
    assert not db.is_read("INSERT INTO t(v) VALUES(1)", None)
    assert not db.is_read("CREATE TABLE u (a)", None)
    assert count(db) == 0


def test_blobs_are_base64_and_types_come_from_values(db):
    db.apply(2, 1, Batch((("INSERT INTO t(v) VALUES(x'0001ff')", None),), False))
    _, (rows,) = db.query([("SELECT id, v, 1.5, NULL FROM t", None)])
    assert rows == Rows(["id", "v", "1.5", "NULL"], ["integer", "blob", "real", ""],
                        [[1, "AAH/", 1.5, None]], rows.time)  # fmt: skip


def test_a_runaway_write_is_cut_by_a_deterministic_budget(db, monkeypatch):
    monkeypatch.setattr(database, "WRITE_BUDGET_STEPS", 500_000)  # keep the test quick
    loop = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t(v) SELECT x FROM c"
    (result,) = db.apply(2, 1, Batch(((loop, None),), False))
    assert result.error == BUDGET_EXCEEDED
    assert count(db) == 0 and db.applied_lsn == 2


def test_a_runaway_read_times_out(db):
    loop = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"
    _, (result,) = db.query([(loop, None)], timeout_s=0.05)
    assert result.error == "query timed out"


def test_an_lsn_cannot_be_applied_twice(db):
    with pytest.raises(ValueError):
        db.apply(1, 1, Batch((("SELECT 1", None),), False))


def test_backup_and_install_carry_the_lsn(db, tmp_path):
    db.apply(2, 4, Batch((("INSERT INTO t(v) VALUES('x')", None),), False))
    assert db.backup(str(tmp_path / "copy.sqlite")) == (2, 4)
    other = Database(str(tmp_path / "other.sqlite"))
    assert other.install(str(tmp_path / "copy.sqlite")) == 2
    assert other.applied_epoch == 4 and count(other) == 1
    assert sqlite3.connect(str(tmp_path / "other.sqlite")).execute(
        "SELECT v FROM t"
    ).fetchone() == ("x",)


def test_the_stores_own_statement_texts_cannot_be_replayed_by_a_client(db):
    # Without the random tag this exact text would hit sqlite3's statement cache, compiled
    # earlier by the store with the authorizer off.
    sql = f"INSERT OR REPLACE INTO {META_TABLE} (k, v) VALUES ('applied_lsn', ?), ('applied_epoch', ?)"
    (result,) = db.apply(2, 1, Batch(((sql, [999, 9]),), False))
    assert isinstance(result, Failure)
    assert db.applied_lsn == 2


def test_checkpoint_returns_the_durable_position(db):
    db.apply(2, 5, Batch((("INSERT INTO t(v) VALUES(1)", None),), False))
    assert db.checkpoint() == (2, 5)


def test_a_group_gives_each_batch_the_results_it_gets_alone(db, monkeypatch, tmp_path):
    monkeypatch.setattr(database, "WRITE_BUDGET_STEPS", 500_000)
    runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t(v) SELECT x FROM c"
    batches = [
        Batch((("INSERT INTO t(v) VALUES('a')", None),), False),
        Batch(
            (("INSERT INTO t(v) VALUES('b')", None), ("INSERT INTO t(id) VALUES(1)", None)), True
        ),
        Batch(((runaway, None),), False),  # rolls SQLite's whole transaction back
        Batch((("INSERT INTO t(v) VALUES('c')", None),), False),
    ]
    grouped = db.apply_group([(2 + i, 1, b) for i, b in enumerate(batches)])
    alone = Database(str(tmp_path / "alone.sqlite"))
    alone.apply(1, 1, Batch((("CREATE TABLE t (id INTEGER PRIMARY KEY, v)", None),), False))
    one_by_one = [alone.apply(2 + i, 1, b) for i, b in enumerate(batches)]

    def shape(outcomes):
        return [[(type(r).__name__, getattr(r, "error", None)) for r in rs] for rs in outcomes]

    assert shape(grouped) == shape(one_by_one)
    assert shape(grouped)[1] == [("Changes", None), ("Failure", "UNIQUE constraint failed: t.id")]
    assert [r[1] for r in db.query([("SELECT id, v FROM t", None)])[1][0].values] == ["a", "c"]
    assert db.applied_lsn == 5


def test_fast_reads_answer_small_queries_and_give_up_on_big_ones(db):
    db.apply(2, 1, Batch((("INSERT INTO t(v) VALUES(7)", None),), False))
    _, (rows,) = db.query_fast([("SELECT v FROM t WHERE id = ?", [1])])
    assert rows.values == [[7]]
    loop = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 100000) SELECT sum(x) FROM c"
    assert db.query_fast([(loop, None)]) is None
    assert db.query([(loop, None)])[1][0].values == [[5000050000]]
    _, (refused,) = db.query_fast([("DELETE FROM t", None)])
    assert refused.error == READ_ONLY_ERROR


@pytest.mark.parametrize("method", ["query", "query_fast"])
def test_statements_of_one_query_read_one_snapshot_named_by_its_lsn(db, method):
    """While another thread applies one INSERT per LSN, both counts of one query and the
    query's LSN always agree: they come from the same snapshot (LSN 1 made the table)."""
    stop = threading.Event()

    def writer():
        lsn = db.applied_lsn
        while not stop.is_set():
            lsn += 1
            db.apply(lsn, 1, Batch((("INSERT INTO t(v) VALUES(1)", None),), False))

    thread = threading.Thread(target=writer)
    thread.start()
    seen = set()
    deadline = time.monotonic() + 10
    try:
        while len(seen) < 20 and time.monotonic() < deadline:
            read = getattr(db, method)([("SELECT count(*) FROM t", None)] * 2)
            assert read is not None
            lsn, (first, second) = read
            assert first.values == second.values == [[lsn - 1]]
            seen.add(lsn)
    finally:
        stop.set()
        thread.join()
    assert len(seen) >= 20  # the writer did move underneath the reads
