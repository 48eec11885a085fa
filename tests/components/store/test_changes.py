"""The change feed (``GET /admin/changes``) and the LSN of a query's snapshot: together they
let a caller (the shard router resharding online) copy rows, then tail exactly the writes
made after the copy, and end with the same table as the store."""

import json
import sqlite3
from urllib.parse import quote

import pytest

import harness

TOKEN = "feed-secret"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = harness.start("store", "--data-dir", str(tmp_path_factory.mktemp("feed")),
                         "--admin-token", TOKEN)  # fmt: skip
    yield proc
    proc.stop(timeout_s=5)


def api(proc, path, statements, qs=""):
    status, _, body = harness.http("POST", f"{proc.url()}{path}{qs}",
                                   json.dumps(statements).encode(),
                                   {"Content-Type": "application/json"})  # fmt: skip
    assert status == 200, body
    return json.loads(body)


def execute(proc, statements, qs=""):
    return api(proc, "/db/execute", statements, qs)


def select(proc, statements, qs=""):
    return api(proc, "/db/query", statements, qs)


def changes(proc, qs, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, _, body = harness.http("GET", f"{proc.url('admin')}/admin/changes?{qs}",
                                   headers=headers)  # fmt: skip
    return status, json.loads(body)


def replay(conn, change):
    for statement in change["statements"]:
        if isinstance(statement, str):
            conn.execute(statement)
        elif len(statement) == 2 and isinstance(statement[1], dict):
            conn.execute(statement[0], statement[1])
        else:
            conn.execute(statement[0], statement[1:])


def test_feed_lists_the_logged_records_in_order_with_their_statements_as_logged(node):
    start = execute(node, ["CREATE TABLE feed (id INTEGER PRIMARY KEY, v, r)"])["lsn"]
    execute(node, [["INSERT INTO feed(v) VALUES(?)", "a"],
                   ["INSERT INTO feed(v) VALUES(:v)", {"v": "b"}]])  # fmt: skip
    last = execute(node, ["INSERT INTO feed(v, r) VALUES('c', random())"], "?transaction")["lsn"]
    status, doc = changes(node, f"since={start - 1}")
    assert status == 200
    assert doc["lsn"] == last and doc["first_lsn"] <= start
    assert [c["lsn"] for c in doc["changes"]] == list(range(start, last + 1))
    first, second, third = doc["changes"]
    assert first["statements"] == ["CREATE TABLE feed (id INTEGER PRIMARY KEY, v, r)"]
    assert second["statements"] == [["INSERT INTO feed(v) VALUES(?)", "a"],
                                    ["INSERT INTO feed(v) VALUES(:v)", {"v": "b"}]]  # fmt: skip
    assert (second["transaction"], third["transaction"]) == (False, True)
    assert "random()" not in third["statements"][0]  # the rewrite's value, as replicas get it
    assert all(c["epoch"] == 1 for c in doc["changes"])


def test_feed_is_bounded_by_limit_and_empty_at_the_head(node):
    base = execute(node, ["CREATE TABLE lim (v)"])["lsn"]
    for v in range(3):
        head = execute(node, [["INSERT INTO lim VALUES(?)", v]])["lsn"]
    status, doc = changes(node, f"since={base}&limit=2")
    assert status == 200 and [c["lsn"] for c in doc["changes"]] == [base + 1, base + 2]
    status, doc = changes(node, f"since={head}")
    assert status == 200 and doc["changes"] == [] and doc["lsn"] == head


def test_a_copy_at_a_query_lsn_plus_the_feed_from_it_equals_the_table(node):
    execute(node, ["CREATE TABLE src (id INTEGER PRIMARY KEY, v TEXT)"])
    execute(node, [["INSERT INTO src(v) VALUES(?)", f"v{i}"] for i in range(5)])
    # Two statements of one query read one snapshot, named by the answer's lsn.
    copy = select(node, ["SELECT id, v FROM src ORDER BY id", "SELECT count(*) FROM src"])
    snapshot_lsn = copy["lsn"]
    rows = copy["results"][0]["values"]
    assert copy["results"][1]["values"] == [[len(rows)]]
    execute(
        node, [["UPDATE src SET v = ? WHERE id = ?", "changed", 1], "DELETE FROM src WHERE id = 2"]
    )
    execute(node, [["INSERT INTO src(v) VALUES(?)", "later"]])
    mirror = sqlite3.connect(":memory:")
    mirror.execute("CREATE TABLE src (id INTEGER PRIMARY KEY, v TEXT)")
    mirror.executemany("INSERT INTO src VALUES(?, ?)", rows)
    since = snapshot_lsn
    while True:
        status, doc = changes(node, f"since={since}&limit=1")  # page by page
        assert status == 200
        if not doc["changes"]:
            break
        for change in doc["changes"]:
            assert change["lsn"] == since + 1
            if "src" in json.dumps(change["statements"]):  # other tests' tables: not ours
                replay(mirror, change)
            since = change["lsn"]
    final = select(node, ["SELECT id, v FROM src ORDER BY id"])
    assert final["lsn"] == since
    assert [list(r) for r in mirror.execute("SELECT id, v FROM src ORDER BY id")] == final[
        "results"
    ][0]["values"]


def test_query_answers_carry_the_lsn_of_their_snapshot(node):
    lsn = execute(node, ["CREATE TABLE ql (v)"])["lsn"]
    status, _, body = harness.http("GET", f"{node.url()}/db/query?q={quote('SELECT 1')}")
    assert status == 200 and json.loads(body)["lsn"] >= lsn


def test_feed_needs_the_admin_token_and_integers(node):
    assert changes(node, "since=0", token=None)[0] == 401
    assert changes(node, "since=0", token="wrong")[0] == 401
    status, doc = changes(node, "since=x")
    assert status == 400 and "since" in doc["error"]
    assert changes(node, "limit=5")[0] == 400
    assert changes(node, "since=0&limit=0")[0] == 400
    assert changes(node, "since=-1")[0] == 400


def test_feed_answers_410_after_the_log_was_compacted_past_since(store):
    proc = store("compact", "--admin-token", TOKEN)
    execute(proc, ["CREATE TABLE c (v)"])
    for v in range(4):
        head = execute(proc, [["INSERT INTO c VALUES(?)", v]])["lsn"]
    status, _, body = harness.http("POST", proc.url("admin") + "/admin/checkpoint",
                                   headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    assert status == 200 and json.loads(body)["compacted"] > 0
    status, doc = changes(proc, "since=0")
    assert status == 410
    assert "compacted" in doc["error"] and doc["first_lsn"] > 1 and doc["lsn"] == head
    status, doc = changes(proc, f"since={doc['first_lsn'] - 1}")  # still in the log
    assert status == 200 and doc["changes"][-1]["lsn"] == head
