"""Online resharding through a real router and real stores, with writes running."""

import json
import threading
from collections import Counter

import pyrqlite.dbapi2 as dbapi2

import harness
from components.shard.placement import Consistent, RoutingMap
from components.shard.reshard import Move, diff_rows, sources, switched


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


def test_range_moves_under_concurrent_writes_without_loss_or_duplicates(spawn, tmp_path):
    stores = [spawn("store", "--data-dir", str(tmp_path / f"s{i}"), name=f"s{i}")
              for i in range(2)]  # fmt: skip
    cfg = tmp_path / "s.toml"
    cfg.write_text("".join(f'[[groups]]\nname = "g{i}"\nnodes = ["{s.listen["main"]}"]\n'
                           for i, s in enumerate(stores)) + '[tables]\nusers = "id"\n')  # fmt: skip
    router = spawn("shard", "--shards", str(cfg), "--data-dir", str(tmp_path / "router"))
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
