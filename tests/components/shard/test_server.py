"""pyrqlite through the router to three real store processes, checked against the stores."""

import json
import sqlite3

import pyrqlite.dbapi2 as dbapi2
import pytest

import harness

SQL_CREATE = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, score INTEGER)"


def _config(path, stores, strategy="consistent", extra=""):
    groups = "".join(
        f'[[groups]]\nname = "g{i}"\nnodes = ["{s.listen["main"]}"]\n'
        for i, s in enumerate(stores, 1)
    )
    path.write_text(
        f'strategy = "{strategy}"\nhome = "g1"\n{extra}\n{groups}'
        '[tables]\nusers = "id"\n[ids]\nusers = "id"\n'
    )
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("shard")
    stores = [harness.start("store", "--data-dir", str(base / f"s{i}"), name=f"s{i}")
              for i in range(3)]  # fmt: skip
    router = harness.start("shard", "--shards", str(_config(base / "shards.toml", stores)))
    yield router, stores
    router.stop(timeout_s=5)
    for s in stores:
        s.stop(timeout_s=5)


def connect(proc):
    host, port = proc.address()
    return dbapi2.connect(host=host, port=port)


def store_rows(store, sql):
    from urllib.parse import quote

    _, _, body = harness.http("GET", f"{store.url()}/db/query?q={quote(sql)}")
    return json.loads(body)["results"][0].get("values", [])


@pytest.fixture(scope="module")
def loaded(cluster):
    router, stores = cluster
    conn = connect(router)
    cur = conn.cursor()
    cur.execute(SQL_CREATE)
    cur.execute("CREATE TABLE countries (code TEXT PRIMARY KEY, name TEXT)")
    for i in range(1, 61):
        cur.execute("INSERT INTO users (id, name, score) VALUES (?, ?, ?)",
                    (i, f"user{i}", (i * 37) % 100))  # fmt: skip
    cur.execute("INSERT INTO countries (code, name) VALUES ('fr', 'France')")
    conn.close()
    oracle = sqlite3.connect(":memory:")
    oracle.execute(SQL_CREATE)
    oracle.executemany("INSERT INTO users VALUES (?, ?, ?)",
                       [(i, f"user{i}", (i * 37) % 100) for i in range(1, 61)])  # fmt: skip
    return router, stores, oracle


def test_ddl_reaches_every_group_and_rows_spread_over_them(loaded):
    router, stores, _ = loaded
    counts = [store_rows(s, "SELECT count(*) FROM users")[0][0] for s in stores]
    assert sum(counts) == 60
    assert all(c > 0 for c in counts), counts


def test_unsharded_table_lives_on_the_home_group_only(loaded):
    router, stores, _ = loaded
    assert store_rows(stores[0], "SELECT name FROM countries") == [["France"]]
    assert store_rows(stores[1], "SELECT count(*) FROM sqlite_master WHERE name='countries'") \
        == [[0]]  # fmt: skip


def test_point_query_goes_to_the_owning_group(loaded):
    router, stores, _ = loaded
    conn = connect(router)
    cur = conn.cursor()
    for i in (1, 17, 42):
        cur.execute("SELECT name, score FROM users WHERE id = ?", (i,))
        assert cur.fetchall()[0]["name"] == f"user{i}"
    owners = [s for s in stores if store_rows(s, "SELECT id FROM users WHERE id = 17")]
    assert len(owners) == 1


@pytest.mark.parametrize("sql", [
    "SELECT id, name FROM users ORDER BY id",
    "SELECT id, score FROM users ORDER BY score DESC, id LIMIT 7",
    "SELECT count(*), sum(score), min(score), max(name) FROM users",
    "SELECT count(*) FROM users WHERE score > 50",
    "SELECT id FROM users WHERE id IN (3, 9, 27, 55) ORDER BY id",
    "SELECT score, count(*), min(name) FROM users GROUP BY score ORDER BY 2 DESC, score",
    "SELECT avg(score), avg(id) AS a, count(*) FROM users",
    "SELECT avg(score) FROM users WHERE score > 1000",
    "SELECT name, avg(score) FROM users WHERE id < 20 GROUP BY name ORDER BY 2 DESC, name",
])  # fmt: skip
def test_fan_out_reads_equal_a_single_database(loaded, sql):
    router, _, oracle = loaded
    cur = connect(router).cursor()
    cur.execute(sql)
    got = [tuple(row) for row in cur.fetchall()]
    assert got == [tuple(r) for r in oracle.execute(sql).fetchall()]


def test_unmergeable_query_is_refused_not_answered(loaded):
    router, _, _ = loaded
    cur = connect(router).cursor()
    with pytest.raises(dbapi2.Error, match="HAVING"):
        cur.execute("SELECT score, count(*) FROM users GROUP BY score HAVING count(*) > 1")
    with pytest.raises(dbapi2.Error, match="aggregate"):
        cur.execute("SELECT group_concat(name) FROM users")


def test_cross_shard_transaction_is_refused_and_nothing_runs(loaded):
    router, stores, _ = loaded
    body = json.dumps([
        "INSERT INTO users (id, name) VALUES (1001, 'a')",
        "INSERT INTO users (id, name) VALUES (1002, 'b')",
        "INSERT INTO users (id, name) VALUES (1003, 'c')",
    ]).encode()  # fmt: skip
    status, _, reply = harness.http("POST", router.url() + "/db/execute?transaction", body,
                                    {"Content-Type": "application/json"})  # fmt: skip
    results = json.loads(reply)["results"]
    assert status == 200 and "cross-shard transaction" in results[0]["error"]
    assert all(not store_rows(s, "SELECT id FROM users WHERE id > 1000") for s in stores)


def test_insert_without_key_gets_a_global_id(loaded):
    router, stores, _ = loaded
    conn = connect(router)
    cur = conn.cursor()
    cur.execute("INSERT INTO users (name, score) VALUES ('gen', 1)")
    new_id = cur.lastrowid
    assert new_id > 10**15  # a Snowflake id, not a shard's autoincrement
    cur.execute("SELECT name FROM users WHERE id = ?", (new_id,))
    assert cur.fetchone()[0] == "gen"
    cur.execute("DELETE FROM users WHERE id = ?", (new_id,))
    assert cur.rowcount == 1


def test_keyless_update_fans_out_and_sums_rows_affected(loaded):
    router, _, _ = loaded
    cur = connect(router).cursor()
    cur.execute("UPDATE users SET name = name WHERE score >= 0")
    assert cur.rowcount == 60


def test_status_and_metrics_show_the_map_and_per_group_counts(loaded):
    router, _, _ = loaded
    status, _, body = harness.http("GET", router.url() + "/status")
    doc = json.loads(body)["scalelab"]
    assert doc["map"]["version"] == 1 and doc["map"]["strategy"] == "consistent"
    assert set(doc["groups"]) == {"g1", "g2", "g3"}
    hot = doc["hot_keys"]["users"]
    assert hot and all(h["count"] >= h["at_least"] >= 0 and h["group"] in doc["groups"]
                       for h in hot)  # fmt: skip
    _, _, metrics = harness.http("GET", router.url("admin") + "/metrics")
    text = metrics.decode()
    assert 'scalelab_shard_queries_total{group="g2"}' in text
    assert "scalelab_shard_fanout_queries_total" in text
    assert "scalelab_shard_map_version 1" in text


def test_group_failover_is_followed(spawn, tmp_path):
    """A group's primary is replaced by a promoted replica: the router finds it."""
    primary = spawn("store", "--data-dir", str(tmp_path / "p"), name="p")
    replica = spawn("store", "--data-dir", str(tmp_path / "r"), "--join",
                    primary.listen["main"], name="r")  # fmt: skip
    cfg = tmp_path / "s.toml"
    cfg.write_text(f'[[groups]]\nname = "g1"\nnodes = ["{primary.listen["main"]}", '
                   f'"{replica.listen["main"]}"]\n[tables]\nusers = "id"\n')  # fmt: skip
    router = spawn("shard", "--shards", str(cfg))
    cur = connect(router).cursor()
    cur.execute(SQL_CREATE)
    cur.execute("INSERT INTO users (id, name) VALUES (1, 'before')")
    harness.wait_until_sync(lambda: store_rows(replica, "SELECT id FROM users"),
                            what="replica caught up")  # fmt: skip
    primary.kill()
    status, _, body = harness.http("POST", replica.url("admin") + "/admin/promote", b"{}")
    assert status == 200, body
    cur.execute("INSERT INTO users (id, name) VALUES (2, 'after')")
    cur.execute("SELECT name FROM users ORDER BY id")
    assert [r[0] for r in cur.fetchall()] == ["before", "after"]


def _post(proc, path, statements):
    status, _, body = harness.http("POST", proc.url() + path, json.dumps(statements).encode(),
                                   {"Content-Type": "application/json"})  # fmt: skip
    return status, body


def test_bad_requests_get_the_stores_own_errors(loaded):
    router, _, _ = loaded
    status, _, body = harness.http("POST", router.url() + "/db/execute", b"{not json",
                                   {"Content-Type": "application/json"})  # fmt: skip
    assert status == 400 and b"invalid JSON" in body
    assert _post(router, "/db/execute", [])[0] == 400
    assert _post(router, "/db/query", [["SELECT 1", {"a": [1]}]])[0] == 400
    status, body = _post(router, "/db/query", ["SELECT 'open FROM users"])
    assert status == 200 and "cannot route" in json.loads(body)["results"][0]["error"]


def test_fan_out_answers_honour_associative_and_timings(loaded):
    router, _, oracle = loaded
    status, body = _post(router, "/db/query?associative&timings",
                         ["SELECT id, name FROM users ORDER BY id DESC LIMIT 2"])  # fmt: skip
    doc = json.loads(body)
    assert status == 200 and "time" in doc and "time" in doc["results"][0]
    assert [r["id"] for r in doc["results"][0]["rows"]] == [60, 59]


def test_request_endpoint_mixes_reads_and_writes_of_one_group(loaded):
    router, _, _ = loaded
    status, body = _post(router, "/db/request", [
        "UPDATE users SET score = score WHERE id = 5", "SELECT name FROM users WHERE id = 5",
    ])  # fmt: skip
    results = json.loads(body)["results"]
    assert status == 200 and results[0]["rows_affected"] == 1
    assert results[1]["values"] == [["user5"]]


def test_a_dead_group_is_a_clear_error_not_a_hang(spawn, tmp_path):
    store = spawn("store", "--data-dir", str(tmp_path / "s"), name="alive")
    cfg = tmp_path / "s.toml"
    cfg.write_text(f'[[groups]]\nname = "g1"\nnodes = ["{store.listen["main"]}"]\n'
                   '[[groups]]\nname = "dead"\nnodes = ["127.0.0.1:9"]\n'
                   '[tables]\nusers = "id"\n')  # fmt: skip
    router = spawn("shard", "--shards", str(cfg))
    status, body = _post(router, "/db/query", ["SELECT * FROM users"])
    assert status == 200 and "dead" in json.loads(body)["results"][0]["error"]
    assert harness.http("GET", router.url() + "/readyz")[0] == 503
    status, _, nodes = harness.http("GET", router.url() + "/nodes")
    assert status == 200 and len(json.loads(nodes)) == 2


def test_queued_write_passes_to_its_group(loaded):
    router, stores, _ = loaded
    status, body = _post(router, "/db/execute?queue&wait",
                         [["INSERT INTO users (id, name) VALUES (?, ?)", 777, "queued"]])  # fmt: skip
    assert status == 200, body
    cur = connect(router).cursor()
    cur.execute("SELECT name FROM users WHERE id = 777")
    assert cur.fetchone()[0] == "queued"
    cur.execute("DELETE FROM users WHERE id = 777")
    status, body = _post(router, "/db/execute?queue", ["DELETE FROM users WHERE id > 5000"])
    assert "queued writes" in json.loads(body)["results"][0]["error"]


def test_request_endpoint_answers_bad_input_and_passes_the_lsn(loaded):
    """/db/request is served by aiohttp (the fast front hands it over): same answers."""
    router, _, _ = loaded
    status, _, body = harness.http("POST", router.url() + "/db/request", b"{not json",
                                   {"Content-Type": "application/json"})  # fmt: skip
    assert status == 400 and b"invalid JSON" in body
    status, headers, body = harness.http(
        "POST", router.url() + "/db/request", json.dumps([["UPDATE users SET score = score "
                                                           "WHERE id = ?", 5]]).encode(),
        {"Content-Type": "application/json"})  # fmt: skip
    assert status == 200 and json.loads(body)["results"][0]["rows_affected"] == 1
    assert int(headers["X-Scalelab-Lsn"]) > 0
    status, headers, _ = harness.http("POST", router.url() + "/db/execute", json.dumps(
        [["UPDATE users SET score = score WHERE id = ?", 5]]).encode(),
        {"Content-Type": "application/json"})  # fmt: skip
    assert status == 200 and int(headers["X-Scalelab-Lsn"]) > 0


async def test_the_web_tiers_store_client_uses_the_router_as_one_store(loaded):
    # The web tier talks to the store tier with ``StoreClient``: it looks for a writable
    # primary in /status, creates its tables with several statements and no
    # ?transaction, and reads its own writes with the position a write gave it.
    from components.store.client import StoreClient

    router, stores, _ = loaded
    address = router.listen["main"]
    async with StoreClient([address]) as client:
        assert await client.discover() == address
        rows = [["INSERT INTO users (id, name, score) VALUES (?, 'w', 1)", i]
                for i in range(2001, 2041)]  # fmt: skip
        answer = await client.execute(rows)  # one by one, each on its own group
        assert [r.get("rows_affected") for r in answer.results] == [1] * 40
        held = [[row[0] for row in store_rows(s, "SELECT id FROM users WHERE id > 2000")]
                for s in stores]  # fmt: skip
        assert sorted(sum(held, [])) == list(range(2001, 2041))
        assert sum(1 for ids in held if ids) >= 2  # the statements went to several groups
        # The same statements as one transaction span groups: refused, and nothing runs.
        refused = await client.execute([[sql, i + 100] for sql, i in rows], transaction=True)
        assert "cross-shard transaction" in refused.results[0]["error"]
        assert all(not store_rows(s, "SELECT id FROM users WHERE id > 2100") for s in stores)
        # A position from one group's log, far beyond any: read at the primaries, at once.
        answer = await client.query(["SELECT count(*) FROM users WHERE id > 2000"],
                                    min_lsn=10**9)  # fmt: skip
        assert answer.rows()[0]["count(*)"] == 40
        await client.execute(["DELETE FROM users WHERE id > 2000"])  # as the others found it
