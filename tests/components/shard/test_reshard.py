"""Online resharding through a real router and real stores, with writes running."""

import json
import sqlite3
import threading
from collections import Counter

import pyrqlite.dbapi2 as dbapi2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import harness
from components.shard.placement import Consistent, RoutingMap
from components.shard.reshard import Move, diff_rows, sources, switched, without_moved
from components.shard.sqlscan import scan


def test_switched_map_sends_the_moved_range_and_hot_key_to_the_target():
    routing = RoutingMap(Consistent(["g1", "g2", "g3"], 32))
    moved = switched(switched(routing, Move("g3", low=0, high=100)), Move("g1", key="vip"))
    assert moved.version == 3
    assert all(moved.group_for(k) == "g3" for k in range(100))
    assert moved.group_for("vip") == "g1"
    outside = [k for k in range(100, 400)]
    assert [moved.group_for(k) for k in outside] == [routing.group_for(k) for k in outside]
    assert sources(routing, Move("g3", low=0, high=5), ["g1", "g2", "g3"]) == ["g1", "g2"]


def test_diff_rows_is_a_multiset_difference():
    gone, added = diff_rows([[1, "a"], [1, "a"], [2, "b"]], [[1, "a"], [3, "c"]])
    assert sorted(gone) == [(1, "a"), (2, "b")] and added == [(3, "c")]


def _rows(store, sql):
    from urllib.parse import quote

    _, _, body = harness.http("GET", f"{store.url()}/db/query?q={quote(sql)}")
    return json.loads(body)["results"][0].get("values", [])


def _groups(stores):
    """[[groups]] of one store each, with the admin address of its change feed."""
    return "".join(f'[[groups]]\nname = "g{i}"\nnodes = ["{s.listen["main"]}"]\n'
                   f'admin = ["{s.listen["admin"]}"]\n' for i, s in enumerate(stores))  # fmt: skip


@pytest.mark.parametrize("catchup", ["changes", "reread"])
def test_range_moves_under_concurrent_writes_without_loss_or_duplicates(spawn, tmp_path,
                                                                        catchup):  # fmt: skip
    stores = [spawn("store", "--data-dir", str(tmp_path / f"s{i}"), name=f"s{i}")
              for i in range(2)]  # fmt: skip
    cfg = tmp_path / "s.toml"
    cfg.write_text(_groups(stores) + '[tables]\nusers = "id"\n')
    router = spawn("shard", "--shards", str(cfg), "--data-dir", str(tmp_path / "router"),
                   "--reshard-catchup", catchup)  # fmt: skip
    host, port = router.address()
    conn = dbapi2.connect(host=host, port=port)
    cur = conn.cursor()
    cur.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, score INTEGER)")
    for i in range(1, 61):
        cur.execute("INSERT INTO users (id, score) VALUES (?, 0)", (i,))

    expected = {i: 0 for i in range(1, 61)}
    stop = threading.Event()
    errors = []

    def writer():
        c = dbapi2.connect(host=host, port=port).cursor()
        k = 0
        while not stop.is_set() and k < 2000:
            k += 1
            key = 1 + k % 60
            try:
                c.execute("UPDATE users SET score = score + 1 WHERE id = ?", (key,))
                expected[key] += 1
                new = 60 + k
                if new < 100 or new % 7 == 0:
                    c.execute("INSERT INTO users (id, score) VALUES (?, 0)", (new,))
                    expected[new] = 0
            except Exception as exc:  # a 503 from the fence would show up here
                errors.append(repr(exc))

    counts = []

    def reader():  # a fan-out read during the move: never a row twice, never one missing
        c = dbapi2.connect(host=host, port=port).cursor()
        while not stop.is_set():
            try:
                c.execute("SELECT count(*) FROM users WHERE id <= 60")
                counts.append(c.fetchone()[0])
            except Exception as exc:
                errors.append(repr(exc))

    thread = threading.Thread(target=writer)
    thread.start()
    watcher = threading.Thread(target=reader)
    watcher.start()
    harness.wait_until_sync(lambda: len(expected) > 70, what="writes under way")
    status, _, body = harness.http("POST", router.url("admin") + "/admin/reshard",
                                   json.dumps({"low": 0, "high": 100, "to": "g1"}).encode())  # fmt: skip
    harness.wait_until_sync(lambda: len(expected) > 90, what="writes after the move")
    stop.set()
    thread.join(timeout=30)
    watcher.join(timeout=30)
    assert counts and set(counts) == {60}, Counter(counts)
    assert status == 200, body
    report = json.loads(body)
    assert report["state"] == "done" and report["rows_moved"] > 0
    assert report["catchup"] == catchup, report["catchup_note"]
    assert not errors, errors[:3]

    everywhere = _rows(stores[0], "SELECT id, score FROM users") + _rows(
        stores[1], "SELECT id, score FROM users")  # fmt: skip
    ids = [r[0] for r in everywhere]
    assert len(ids) == len(set(ids)), "a row is on two groups"
    assert dict(everywhere) == expected  # nothing lost, every update counted once
    assert all(i >= 100 for i in (r[0] for r in _rows(stores[0], "SELECT id FROM users")))  # g0
    assert any(r[0] < 100 for r in _rows(stores[1], "SELECT id FROM users"))  # g1 has them
    cur.execute("SELECT count(*) FROM users")
    assert cur.fetchone()[0] == len(expected)
    _, _, st = harness.http("GET", router.url() + "/status")
    assert json.loads(st)["scalelab"]["map"]["version"] == 2
    _, _, metrics = harness.http("GET", router.url("admin") + "/metrics")
    assert f"scalelab_shard_rows_moved_total {report['rows_moved']}" in metrics.decode()
    assert f"scalelab_shard_reshard_fence_seconds {report['fence_s']}" in metrics.decode()
    if catchup == "reread":
        return  # the rest does not depend on how the copy was caught up

    # A hot key moves back to g0 on its own; its row and its neighbours' stay right.
    status, _, body = harness.http("POST", router.url("admin") + "/admin/reshard",
                                   json.dumps({"key": 7, "to": "g0"}).encode())  # fmt: skip
    assert status == 200 and json.loads(body)["rows_moved"] == 1, body
    assert _rows(stores[0], "SELECT id, score FROM users WHERE id < 100") == [[7, expected[7]]]
    cur.execute("SELECT score FROM users WHERE id = 7")
    assert cur.fetchone()[0] == expected[7]
    cur.execute("UPDATE users SET score = -1 WHERE id = 7")
    assert _rows(stores[0], "SELECT score FROM users WHERE id = 7") == [[-1]]
    status, _, body = harness.http("POST", router.url("admin") + "/admin/reshard", b'{"to": "x"}')
    assert status == 400 and b"groups" in body

    # The new map survives a restart of the router.
    router.stop(timeout_s=5)
    again = spawn("shard", "--shards", str(cfg), "--data-dir", str(tmp_path / "router"))
    _, _, st = harness.http("GET", again.url() + "/status")
    assert json.loads(st)["scalelab"]["map"]["version"] == 3


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM users",
    "SELECT id, name FROM users WHERE name <> 'z' OR id = 3 ORDER BY id LIMIT 50",
    "SELECT name, count(*) FROM users GROUP BY name ORDER BY name",
    "SELECT id FROM users WHERE id IN (3, 150, 7) ORDER BY 1",
    "UPDATE users SET name = 'u'",
    "UPDATE users SET name = 'u' WHERE id > 2 RETURNING id",
    "DELETE FROM users",
    "DELETE FROM users WHERE name IS NULL",
])  # fmt: skip
def test_without_moved_leaves_out_the_old_copies_and_nothing_else(sql):
    """A group holding old copies of moved keys answers, once rewritten, exactly what it
    would answer had its cleanup run (rows with a NULL key included)."""
    moves = [Move("g2", low=0, high=10), Move("g2", key="vip")]
    rows = [(i, n) for i, n in [(1, "a"), (3, None), (9, "b"), (10, "c"), (150, "d"),
                                (-4, "e"), (None, "f"), ("vip", "g"), ("vips", "h")]]  # fmt: skip

    def db(with_old_copies):
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE TABLE users (id, name)")
        kept = [r for r in rows if with_old_copies or not (
            (isinstance(r[0], int) and 0 <= r[0] < 10) or r[0] == "vip")]  # fmt: skip
        conn.executemany("INSERT INTO users VALUES (?, ?)", kept)
        return conn

    rewritten = without_moved(sql, scan(sql), "id", moves)
    assert rewritten is not None and rewritten != sql
    stale, clean = db(True), db(False)

    def run(conn, text):
        before = conn.total_changes
        rows = conn.execute(text).fetchall()
        return sorted(rows, key=repr), conn.total_changes - before

    assert run(stale, rewritten) == run(clean, sql), rewritten
    assert sorted(stale.execute("SELECT * FROM users").fetchall(), key=repr) == sorted(
        clean.execute("SELECT * FROM users").fetchall()
        + [r for r in rows if r[0] in (1, 3, 9, "vip")],
        key=repr,
    )  # writes touched the old copies of no moved key


def test_without_moved_keeps_the_statements_parameters():
    sql = "SELECT * FROM users WHERE id > ?2 AND name = :n"
    out = without_moved(sql, scan(sql), "id", [Move("g1", key="it's")])
    assert out == ("SELECT * FROM users WHERE (id > ?2 AND name = :n) AND NOT "
                   "coalesce((\"id\" = 'it''s'), 0)")  # fmt: skip
    assert without_moved("INSERT INTO users (id) VALUES (1)", scan("INSERT INTO users (id) "
                                                                   "VALUES (1)"), "id",
                         [Move("g1", key=1)]) is None  # fmt: skip


def _cursor(proc):
    host, port = proc.address()
    return dbapi2.connect(host=host, port=port).cursor()


def _post(url, doc):
    status, _, body = harness.http("POST", url, json.dumps(doc).encode(),
                                   {"Content-Type": "application/json"})  # fmt: skip
    return status, json.loads(body)


def test_old_copies_left_by_a_failed_cleanup_are_never_counted(spawn, tmp_path):
    """The source refuses the deletes at the switch (a trigger stands in for a crash at
    that instant, which a test cannot time), later goes down and comes back: fan-out
    answers stay exact throughout, and the background cleanup finishes the move."""
    stores = [spawn("store", "--data-dir", str(tmp_path / f"s{i}"), name=f"s{i}")
              for i in range(2)]  # fmt: skip
    cfg = tmp_path / "s.toml"
    cfg.write_text('strategy = "range"\n[[ranges]]\nlow = 0\ngroup = "g0"\n[[ranges]]\n'
                   'low = 100\ngroup = "g1"\n' + "".join(
                       f'[[groups]]\nname = "g{i}"\nnodes = ["{s.listen["main"]}"]\n'
                       for i, s in enumerate(stores)) + '[tables]\nusers = "id"\n')  # fmt: skip
    router = spawn("shard", "--shards", str(cfg), "--data-dir", str(tmp_path / "router"))
    cur = _cursor(router)
    cur.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, score INTEGER)")
    for i in range(1, 41):
        cur.execute("INSERT INTO users (id, score) VALUES (?, 0)", (i,))
    status, doc = _post(
        stores[0].url() + "/db/execute",
        ["CREATE TRIGGER keep BEFORE DELETE ON users BEGIN SELECT RAISE(ABORT, 'no'); END"],
    )
    assert status == 200 and "error" not in doc["results"][0], doc

    status, report = _post(router.url("admin") + "/admin/reshard",
                           {"low": 0, "high": 20, "to": "g1"})  # fmt: skip
    assert status == 200 and report["state"] == "cleanup_pending", report
    assert _rows(stores[0], "SELECT count(*) FROM users WHERE id < 20") == [[19]]  # old copies
    assert _rows(stores[1], "SELECT count(*) FROM users WHERE id < 20") == [[19]]

    def exact_answers(c):
        c.execute("SELECT count(*), avg(id) FROM users")
        assert tuple(c.fetchone()) == (40, 20.5)
        c.execute("SELECT id FROM users ORDER BY id")
        assert [r[0] for r in c.fetchall()] == list(range(1, 41))
        c.execute("SELECT id FROM users WHERE id IN (5, 30) ORDER BY id")  # both groups
        assert [r[0] for r in c.fetchall()] == [5, 30]
        c.execute("UPDATE users SET score = score + 1")  # keyless: every group
        assert c.rowcount == 40

    exact_answers(cur)
    status, doc = _post(router.url("admin") + "/admin/reshard", {"key": 50, "to": "g1"})
    assert status == 409 and "cleanup pending" in doc["error"]
    _, _, st = harness.http("GET", router.url() + "/status")
    assert json.loads(st)["scalelab"]["cleanup_pending"] == {
        "g0": [{"low": 0, "high": 20, "to": "g1"}]
    }

    # The pending cleanup survives a restart of the router.
    router.stop(timeout_s=5)
    router = spawn("shard", "--shards", str(cfg), "--data-dir", str(tmp_path / "router"))
    cur = _cursor(router)
    exact_answers(cur)

    # The source goes down: its fan-outs fail, naming it, rather than answer wrongly.
    port = stores[0].address()[1]
    stores[0].kill()
    with pytest.raises(dbapi2.Error, match="g0"):
        cur.execute("SELECT count(*) FROM users")
    stores[0] = spawn("store", "--data-dir", str(tmp_path / "s0"), "--port", str(port),
                      name="s0")  # fmt: skip
    exact_answers(cur)
    _post(stores[0].url() + "/db/execute", ["DROP TRIGGER keep"])
    harness.wait_until_sync(
        lambda: not _rows(stores[0], "SELECT id FROM users WHERE id < 20"), what="cleanup"
    )
    harness.wait_until_sync(lambda: json.loads(harness.http(
        "GET", router.url() + "/status")[2])["scalelab"]["cleanup_pending"] == {},
        what="cleanup recorded")  # fmt: skip
    exact_answers(cur)
    _, _, metrics = harness.http("GET", router.url("admin") + "/metrics")
    assert "scalelab_shard_cleanup_pending 0" in metrics.decode()
    assert _post(router.url("admin") + "/admin/reshard", {"key": 50, "to": "g1"})[0] == 200


def test_a_switch_interrupted_by_a_router_stop_is_settled_from_the_target(spawn, tmp_path):
    """The moves file holds an intent ("switching"); at start the router asks the target:
    staging tables still there -> the switch never committed, the map stays; gone -> it
    committed, the move is recorded and the sources' old copies are cleaned up."""
    stores = [spawn("store", "--data-dir", str(tmp_path / f"s{i}"), name=f"s{i}")
              for i in range(2)]  # fmt: skip
    cfg = tmp_path / "s.toml"
    cfg.write_text('strategy = "range"\n[[ranges]]\nlow = 0\ngroup = "g0"\n[[ranges]]\n'
                   'low = 1000\ngroup = "g1"\n' + _groups(stores) + '[tables]\nusers = "id"\n')  # fmt: skip
    data = tmp_path / "router"
    data.mkdir()
    schema = "CREATE TABLE users (id INTEGER PRIMARY KEY, score INTEGER)"
    rows = [["INSERT INTO users (id, score) VALUES (?, 0)", i] for i in range(1, 11)]
    _post(stores[0].url() + "/db/execute", [schema, *rows])
    _post(stores[1].url() + "/db/execute", [schema, "CREATE TABLE _reshard_users AS SELECT * "
                                            "FROM users WHERE 0"])  # fmt: skip
    intent = [{"low": 0, "high": 100, "to": "g1", "switching": ["g0"]}]

    def start_router():
        (data / "moves.json").write_text(json.dumps(intent))
        router = spawn("shard", "--shards", str(cfg), "--data-dir", str(data))
        _, _, st = harness.http("GET", router.url() + "/status")
        return router, json.loads(st)["scalelab"]

    router, status = start_router()  # staging still on the target: not committed
    assert status["map"]["version"] == 1 and status["cleanup_pending"] == {}
    assert json.loads((data / "moves.json").read_text()) == []
    cur = _cursor(router)
    cur.execute("SELECT count(*) FROM users")
    assert cur.fetchone()[0] == 10
    router.stop(timeout_s=5)

    # As if the switch had committed: the rows are live on the target, staging is gone.
    _post(stores[1].url() + "/db/execute", ["DROP TABLE _reshard_users", *rows])
    router, status = start_router()
    assert status["map"]["version"] == 2
    cur = _cursor(router)
    cur.execute("SELECT count(*), sum(id) FROM users")  # never the old copies too
    assert tuple(cur.fetchone()) == (10, 55)
    harness.wait_until_sync(lambda: not _rows(stores[0], "SELECT id FROM users"),
                            what="old copies deleted")  # fmt: skip
    harness.wait_until_sync(lambda: json.loads((data / "moves.json").read_text()) == [
        {"low": 0, "high": 100, "to": "g1"}], what="cleanup recorded")  # fmt: skip


_STATEMENTS = [
    "SELECT count(*), sum(n) FROM users", "SELECT id, n FROM users WHERE n > 0 OR id = 5",
    "SELECT n, count(*) FROM users GROUP BY n", "SELECT id FROM users ORDER BY id LIMIT 4",
    "UPDATE users SET n = n + 1 WHERE n IS NOT NULL", "DELETE FROM users WHERE n < 2",
    "DELETE FROM users", "UPDATE users SET n = 0",
]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.tuples(st.one_of(st.none(), st.integers(-20, 40), st.sampled_from(["a", "k"])),
                            st.one_of(st.none(), st.integers(0, 3))), max_size=25),
    moves=st.lists(st.one_of(
        st.tuples(st.integers(-20, 40), st.integers(1, 20)).map(
            lambda r: Move("g", low=r[0], high=r[0] + r[1])),
        st.one_of(st.integers(-20, 40), st.sampled_from(["a", "k"])).map(
            lambda k: Move("g", key=k))), min_size=1, max_size=3),
    sql=st.sampled_from(_STATEMENTS),
)  # fmt: skip
def test_without_moved_equals_the_group_after_its_cleanup(rows, moves, sql):
    """Any rows, any moves: the rewritten statement on the group with old copies answers
    and changes exactly what the original does on the group once cleaned up."""

    def moved(key):
        return key is not None and any(m.covers(key) for m in moves)

    def db(with_old_copies):
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE TABLE users (id, n)")
        conn.executemany("INSERT INTO users VALUES (?, ?)",
                         [r for r in rows if with_old_copies or not moved(r[0])])  # fmt: skip
        return conn

    def run(conn, text):
        before = conn.total_changes
        got = conn.execute(text).fetchall()
        return sorted(got, key=repr), conn.total_changes - before

    stale, clean = db(True), db(False)
    assert run(stale, without_moved(sql, scan(sql), "id", moves)) == run(clean, sql)
    old_copies = sorted((r for r in rows if moved(r[0])), key=repr)
    assert sorted((r for r in stale.execute("SELECT * FROM users") if moved(r[0])),
                  key=repr) == old_copies  # fmt: skip
