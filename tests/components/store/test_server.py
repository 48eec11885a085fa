"""A real store process driven by pyrqlite (its DB-API) and by plain HTTP, as curl would."""

import json

import pyrqlite.dbapi2 as dbapi2
import pytest

import harness


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """One store process shared by the tests that only need *a* node (each uses its own
    tables): a process start costs a second on a busy 2-core machine."""
    proc = harness.start("store", "--data-dir", str(tmp_path_factory.mktemp("shared")))
    yield proc
    proc.stop(timeout_s=5)


def connect(proc):
    host, port = proc.address()
    return dbapi2.connect(host=host, port=port)


def post(proc, path, statements, headers=None):
    return harness.http("POST", proc.url() + path, json.dumps(statements).encode(),
                        {"Content-Type": "application/json", **(headers or {})})  # fmt: skip


def query(proc, sql, qs=""):
    from urllib.parse import quote

    status, headers, body = harness.http("GET", f"{proc.url()}/db/query?q={quote(sql)}{qs}")
    return status, json.loads(body) if body[:1] in b"[{" else body


def test_pyrqlite_creates_inserts_and_selects_with_parameters(node):
    conn = connect(node)
    cursor = conn.cursor()
    cursor.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
    cursor.execute("INSERT INTO users(name, score) VALUES(?, ?)", ("fiona", 1.5))
    assert cursor.lastrowid == 1
    cursor.execute(
        "INSERT INTO users(name, score) VALUES(:name, :score)", {"name": "o'hara", "score": 2}
    )
    cursor.executemany("INSERT INTO users(name) VALUES(?)", [("a",), ("b",)])
    cursor.execute("SELECT id, name, score FROM users ORDER BY id")
    rows = cursor.fetchall()
    assert (rows[0][0], rows[0]["name"], rows[0]["score"]) == (1, "fiona", 1.5)
    assert (rows[1][0], rows[1]["name"], rows[1]["score"]) == (2, "o'hara", 2.0)
    assert rows[2]["score"] is None
    assert len(rows) == 4
    assert [d[0] for d in cursor.description] == ["id", "name", "score"]
    cursor.execute("UPDATE users SET score = 0 WHERE id > 2")
    assert cursor.rowcount == 2
    cursor.execute("SELECT count(*) FROM users WHERE score = 0", consistency="strong")
    assert cursor.fetchone()[0] == 2
    conn.close()


def test_pyrqlite_sees_sql_errors_and_the_node_keeps_serving(node):
    proc = node
    conn = connect(proc)
    cursor = conn.cursor()
    with pytest.raises(dbapi2.Error, match="no such table"):
        cursor.execute("SELECT * FROM missing")
    with pytest.raises(dbapi2.Error, match="syntax error"):
        cursor.execute("INSERT INTO nonsense gibberish")
    cursor.execute("SELECT 1 + 1")
    assert cursor.fetchone()[0] == 2
    assert proc.alive()


def test_blobs_round_trip_through_pyrqlite(node):
    conn = connect(node)
    cursor = conn.cursor()
    cursor.execute("CREATE TABLE b (v BLOB)")
    cursor.execute("INSERT INTO b VALUES(?)", (b"\x00\x01\xff",))
    cursor.execute("SELECT v FROM b")
    assert cursor.fetchone()[0] == b"\x00\x01\xff"


def test_execute_without_transaction_keeps_the_good_statements(node):
    post(node, "/db/execute", ["CREATE TABLE notx (id INTEGER PRIMARY KEY)"])
    status, headers, body = post(node, "/db/execute", [
        "INSERT INTO notx VALUES(1)", "INSERT INTO notx VALUES(1)", "INSERT INTO notx VALUES(2)"])  # fmt: skip
    assert status == 200
    results = json.loads(body)["results"]
    assert results[0] == {"last_insert_id": 1, "rows_affected": 1}
    assert "UNIQUE constraint failed" in results[1]["error"]
    assert results[2] == {"last_insert_id": 2, "rows_affected": 1}
    assert int(headers["X-Scalelab-Lsn"]) > 1
    assert query(node, "SELECT count(*) FROM notx")[1]["results"][0]["values"] == [[2]]


def test_execute_with_transaction_is_all_or_nothing(node):
    post(node, "/db/execute", ["CREATE TABLE tx (id INTEGER PRIMARY KEY)"])
    status, _, body = post(node, "/db/execute?transaction", [
        "INSERT INTO tx VALUES(1)", "INSERT INTO tx VALUES(1)", "INSERT INTO tx VALUES(2)"])  # fmt: skip
    results = json.loads(body)["results"]
    assert len(results) == 2 and "error" in results[1]
    assert "values" not in query(node, "SELECT * FROM tx")[1]["results"][0]


def test_query_levels_associative_timings_and_writes_refused(node):
    post(node, "/db/execute", ["CREATE TABLE lv (a, b)", ["INSERT INTO lv VALUES(?, ?)", 1, "x"]])
    status, doc = query(node, "SELECT a, b FROM lv", "&associative&timings&level=strong")
    assert status == 200
    assert doc["results"][0]["rows"] == [{"a": 1, "b": "x"}]
    assert "time" in doc and "time" in doc["results"][0]
    _, doc = query(node, "DELETE FROM lv", "&level=none")
    assert doc["results"][0] == {"error": "attempt to change database via query operation"}
    status, _, body = post(node, "/db/query?level=weak", [["SELECT b FROM lv WHERE a = ?", 1]])
    assert json.loads(body)["results"][0]["values"] == [["x"]]


def test_unified_request_endpoint_mixes_reads_and_writes(node):
    post(node, "/db/execute", ["CREATE TABLE uni (a)"])
    _, _, body = post(node, "/db/request", ["INSERT INTO uni VALUES(5)", "SELECT a FROM uni"])
    results = json.loads(body)["results"]
    assert results[0]["rows_affected"] == 1
    assert results[1] == {"columns": ["a"], "types": ["integer"], "values": [[5]]}
    _, _, body = post(node, "/db/request", ["SELECT count(*) FROM uni"])
    assert json.loads(body)["results"][0]["values"] == [[1]]


def test_bad_requests_are_400_and_bodies_are_bounded(node):
    status, _, body = harness.http("POST", node.url() + "/db/execute", b"not json")
    assert status == 400 and b"invalid JSON" in body
    too_many = ["SELECT 1"] * 1001
    assert post(node, "/db/execute", too_many)[0] == 400
    huge = b'["' + b"x" * (5 * 1024 * 1024) + b'"]'
    assert harness.http("POST", node.url() + "/db/execute", huge)[0] == 413
    assert harness.http("GET", node.url() + "/db/query")[0] == 400
    assert harness.http("GET", node.url() + "/db/query?q=SELECT+1&freshness=forever")[0] == 400
    assert node.alive()


def test_nondeterministic_functions_are_logged_as_values(node):
    status, _, _ = post(node, "/db/execute", ["CREATE TABLE nd (r, at)",
                        "INSERT INTO nd VALUES(random(), datetime('now'))"])  # fmt: skip
    assert status == 200
    data_dir = node.argv[node.argv.index("--data-dir") + 1]
    with open(f"{data_dir}/redo.log", "rb") as fh:
        log = fh.read()
    assert b"INSERT INTO nd VALUES(" in log
    assert b"random()" not in log and b"'now'" not in log


def test_status_readyz_nodes_and_backup(node, tmp_path):
    _, headers, _ = post(node, "/db/execute", ["CREATE TABLE st (a)", "INSERT INTO st VALUES(1)"])
    status, _, body = harness.http("GET", node.url() + "/status")
    mine = json.loads(body)["scalelab"]
    assert (mine["role"], mine["epoch"]) == ("primary", 1)
    assert mine["applied_lsn"] == mine["lsn"] == int(headers["X-Scalelab-Lsn"])
    assert json.loads(body)["store"]["raft"]["state"] == "Leader"
    assert harness.http("GET", node.url() + "/readyz")[0] == 200
    nodes = json.loads(harness.http("GET", node.url() + "/nodes")[2])
    assert nodes[node.name]["leader"] is True
    listed = json.loads(harness.http("GET", node.url() + "/nodes?ver=2")[2])["nodes"]
    assert listed[0]["id"] == node.name and listed[0]["api_addr"] == node.url()
    status, headers, data = harness.http("GET", node.url() + "/db/backup")
    assert status == 200 and data.startswith(b"SQLite format 3\x00")
    import sqlite3

    (tmp_path / "copy.sqlite").write_bytes(data)
    assert sqlite3.connect(tmp_path / "copy.sqlite").execute("SELECT a FROM st").fetchall() == [
        (1,)
    ]


def test_metrics_count_executes_queries_and_fsyncs(node):
    def metric(name):
        text = harness.http("GET", node.url("admin") + "/metrics")[2].decode()
        return next(float(line.split()[1]) for line in text.splitlines()
                    if line.startswith(name + " "))  # fmt: skip

    names = ("scalelab_store_executes_total", "scalelab_store_queries_total",
             "scalelab_store_fsyncs_total", "scalelab_store_group_commit_batches_count")  # fmt: skip
    before = [metric(n) for n in names]
    post(node, "/db/execute", ["CREATE TABLE mt (a)"])
    query(node, "SELECT * FROM mt")
    assert [metric(n) - b for n, b in zip(names, before, strict=True)] == [1, 1, 1, 1]


def test_restart_replays_the_log_and_a_log_that_lost_applied_records_restarts_after_the_database(
    store, tmp_path
):
    from components.store.wal import HEADER, HEADER_BYTES

    proc = store("restart")
    post(proc, "/db/execute", ["CREATE TABLE d (a)"])
    for i in range(20):
        post(proc, "/db/execute", [["INSERT INTO d VALUES(?)", i]])
    proc.stop()
    proc = store("restart")
    assert query(proc, "SELECT count(*) FROM d")[1]["results"][0]["values"] == [[20]]
    proc.stop()
    # Damage the log behind SQLite's back: keep record 1 and a torn scrap of record 2.
    path = tmp_path / "restart" / "redo.log"
    data = path.read_bytes()
    length = HEADER.unpack_from(data)[0]
    path.write_bytes(data[: HEADER_BYTES + length + 5])
    proc = store("restart")
    assert "log_behind_database" in proc.log_tail(50)
    assert query(proc, "SELECT count(*) FROM d")[1]["results"][0]["values"] == [[20]]
    status, headers, _ = post(proc, "/db/execute", [["INSERT INTO d VALUES(?)", 99]])
    assert status == 200 and headers["X-Scalelab-Lsn"] == "22"


def test_backup_as_sql_loads_into_another_node(node, store):
    post(node, "/db/execute", ["CREATE TABLE dumped (id INTEGER PRIMARY KEY, v TEXT)",
                               "INSERT INTO dumped(v) VALUES('semi;colon')",
                               "INSERT INTO dumped(v) VALUES('it''s')"])  # fmt: skip
    status, _, dump = harness.http("GET", node.url() + "/db/backup?fmt=sql")
    assert status == 200 and b"semi;colon" in dump and b"_scalelab_meta" not in dump
    other = store("loaded")
    status, headers, body = harness.http("POST", other.url() + "/db/load", dump,
                                         {"Content-Type": "text/plain"})  # fmt: skip
    assert status == 200, body
    assert "error" not in json.loads(body)["results"][0]
    _, doc = query(other, "SELECT v FROM dumped ORDER BY id")
    assert doc["results"][0]["values"] == [["semi;colon"], ["it's"]]
    # A SQLite file is accepted too; this one holds the same tables again, so its load
    # fails as one transaction and changes nothing.
    _, _, file_bytes = harness.http("GET", node.url() + "/db/backup")
    status, _, body = harness.http("POST", other.url() + "/db/load", file_bytes,
                                   {"Content-Type": "application/octet-stream"})  # fmt: skip
    assert status == 200 and "already exists" in json.loads(body)["results"][0]["error"]
    assert query(other, "SELECT count(*) FROM dumped")[1]["results"][0]["values"] == [[2]]
    assert harness.http("POST", other.url() + "/db/load", b"SELECT 'unterminated")[0] == 400


def test_queued_writes_answer_with_a_sequence_number_and_commit_later(node):
    post(node, "/db/execute", ["CREATE TABLE queued (a)"])
    status, _, body = post(node, "/db/execute?queue", [["INSERT INTO queued VALUES(?)", 1]])
    doc = json.loads(body)
    assert status == 200 and doc["results"] == [] and doc["sequence_number"] >= 1
    harness.wait_until_sync(
        lambda: query(node, "SELECT count(*) FROM queued")[1]["results"][0]["values"] == [[1]],
        what="queued write committed",
    )
    cursor = connect(node).cursor()
    cursor.execute("INSERT INTO queued VALUES(?)", (2,), queue=True, wait=True)
    cursor.execute("SELECT count(*) FROM queued")
    assert cursor.fetchone()[0] == 2


def test_semi_sync_without_replicas_falls_back_to_async_after_one_timeout(store):
    proc = store("semisync", "--sync-replicas", "1", "--sync-timeout", "0.2")
    status, _, body = post(proc, "/db/execute", ["CREATE TABLE s (a)"])
    assert status == 200 and json.loads(body)["results"] == [{}]
    for i in range(3):  # after one timeout, semi-sync is off: no more waiting
        assert post(proc, "/db/execute", [["INSERT INTO s VALUES(?)", i]])[0] == 200
    text = harness.http("GET", proc.url("admin") + "/metrics")[2].decode()
    assert "scalelab_store_semisync_timeouts_total 1" in text
    assert "scalelab_store_semisync_async_writes_total 3" in text


def test_an_unrecoverable_data_directory_fails_start_cleanly(tmp_path):
    data = tmp_path / "broken"
    data.mkdir()
    (data / "store.sqlite").write_bytes(b"this is not a database" * 100)
    try:
        harness.start("store", "--data-dir", str(data), log_path=tmp_path / "broken.log")
    except harness.process.StartError as error:
        assert "exited with code 1" in str(error) and "start_failed" in str(error)
        assert "Traceback" not in str(error)
    else:
        raise AssertionError("a store with a garbage database file started")
