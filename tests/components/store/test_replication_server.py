"""Real primary and replica processes: streaming, reads, forwarding, catch-up, failover."""

import asyncio
import http.client
import json
import signal
from urllib.parse import quote

import aiohttp
import pyrqlite.dbapi2 as dbapi2

import harness


def execute(proc, statements, qs=""):
    status, headers, body = harness.http(
        "POST", f"{proc.url()}/db/execute{qs}", json.dumps(statements).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    return status, headers, json.loads(body)


def count(proc, table="t", qs="&level=none"):
    status, _, body = harness.http(
        "GET", f"{proc.url()}/db/query?q={quote(f'SELECT count(*) FROM {table}')}{qs}"
    )
    assert status == 200, body
    return json.loads(body)["results"][0]["values"][0][0]


def status(proc):
    return json.loads(harness.http("GET", proc.url() + "/status")[2])["scalelab"]


def admin(proc, op, body=None):
    code, _, reply = harness.http("POST", f"{proc.url('admin')}/admin/{op}",
                                  json.dumps(body or {}).encode())  # fmt: skip
    assert code == 200, reply
    return json.loads(reply)


def caught_up(replica, lsn):
    return lambda: status(replica)["applied_lsn"] >= lsn


def test_replica_streams_serves_reads_forwards_writes_and_fails_over_within_its_lag(store):
    primary = store("p")
    replica = store("r", "--join", primary.listen["main"])
    _, headers, _ = execute(
        primary, ["CREATE TABLE t (a)"] + [["INSERT INTO t VALUES(?)", i] for i in range(10)]
    )
    lsn = int(headers["X-Scalelab-Lsn"])
    harness.wait_until_sync(caught_up(replica, lsn), what="replica caught up")
    assert count(replica) == 10

    # nondeterministic SQL was rewritten to values on the primary: the copies are identical
    _, headers, _ = execute(primary, ["CREATE TABLE nd (r, b, at, d)",
                                      "INSERT INTO nd VALUES(random(), randomblob(8), "
                                      "datetime('now'), CURRENT_TIMESTAMP)"])  # fmt: skip
    harness.wait_until_sync(caught_up(replica, int(headers["X-Scalelab-Lsn"])))
    select_nd = "/db/query?q=SELECT+*+FROM+nd&level=none"
    assert (
        harness.http("GET", primary.url() + select_nd)[2]
        == harness.http("GET", replica.url() + select_nd)[2]
    )

    # read-your-writes on a replica: min_lsn waits until the replica has applied the write
    _, headers, _ = execute(primary, [["INSERT INTO t VALUES(?)", 10]])
    assert count(replica, qs=f"&level=none&min_lsn={headers['X-Scalelab-Lsn']}") == 11

    # a write sent to the replica is forwarded (rqlite >= 7), or 301 with ?redirect
    code, headers, body = execute(replica, [["INSERT INTO t VALUES(?)", 11]])
    assert code == 200 and body["results"][0]["rows_affected"] == 1
    host, port = replica.address()
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("POST", "/db/execute?redirect", b'["INSERT INTO t VALUES(12)"]')
    response = conn.getresponse()
    assert response.status == 301
    assert response.getheader("Location") == f"http://{primary.listen['main']}/db/execute?redirect"
    conn.close()

    # pyrqlite against the replica works unchanged (its writes and weak reads go to the primary)
    cursor = dbapi2.connect(host=host, port=port).cursor()
    cursor.execute("INSERT INTO t VALUES(?)", (13,))
    cursor.execute("SELECT count(*) FROM t")
    assert cursor.fetchone()[0] == 13

    # the primary reports the replica and its lag; the replica reports its primary
    mine = status(primary)
    assert [r["name"] for r in mine["replicas"]] == ["r"]
    theirs = status(replica)
    assert (theirs["role"], theirs["primary"]) == ("replica", primary.listen["main"])
    metrics = harness.http("GET", primary.url("admin") + "/metrics")[2].decode()
    assert 'scalelab_store_replication_lag_records{replica="r"}' in metrics
    nodes = json.loads(harness.http("GET", replica.url() + "/nodes")[2])
    assert nodes["primary"]["leader"] is True

    # a replica that was stopped catches up from its own LSN when it comes back
    replica.stop()
    _, headers, _ = execute(primary, [["INSERT INTO t VALUES(?)", i] for i in range(100, 150)])
    replica = store("r", "--join", primary.listen["main"])
    harness.wait_until_sync(caught_up(replica, int(headers["X-Scalelab-Lsn"])), what="catch-up")
    assert count(replica) == 63
    assert "installing_snapshot" not in replica.log_tail(200)

    # The replica falls behind (a GC pause, a slow disk: here SIGSTOP); the primary keeps
    # acknowledging writes (asynchronous replication) and reports the lag; then it dies.
    replica.signal(signal.SIGSTOP)
    try:
        acked = []
        for k in range(1000, 1030):
            code, _, _ = execute(primary, [["INSERT INTO t VALUES(?)", k]])
            assert code == 200  # the primary does not wait for the replica
            acked.append(k)
        reported_lag = status(primary)["replicas"][0]["lag_records"]
        primary.kill()
    finally:
        replica.signal(signal.SIGCONT)
    assert reported_lag > 0

    # without a primary: local reads go on, bounded staleness is refused, writes say why
    fresh_qs = "&level=none&freshness=200ms"
    harness.wait_until_sync(
        lambda: (
            harness.http("GET", f"{replica.url()}/db/query?q=SELECT+1{fresh_qs}")[2]
            == b'{"error":"stale read"}'
        ),
        what="stale read refused",
    )
    assert count(replica) >= 63
    code, _, body = execute(replica, [["INSERT INTO t VALUES(?)", 1]])
    assert code == 503 and "leader not reachable" in body["error"]
    harness.wait_until_sync(lambda: harness.http("GET", replica.url() + "/readyz")[0] == 503,
                            what="replica not ready without a primary")  # fmt: skip
    assert harness.http("GET", replica.url() + "/readyz?noleader")[0] == 200

    # promoted, it has lost at most the lag the primary reported
    admin(replica, "promote")
    _, _, body = harness.http("GET", f"{replica.url()}/db/query?q=SELECT+a+FROM+t+WHERE+a>=1000")
    present = {row[0] for row in json.loads(body)["results"][0].get("values", [])}
    assert len([k for k in acked if k not in present]) <= reported_lag


def test_promotion_fences_the_old_primary_which_resyncs_by_snapshot(store):
    primary = store("p")
    replica = store("r", "--join", primary.listen["main"])
    _, headers, _ = execute(primary, ["CREATE TABLE t (a)", "INSERT INTO t VALUES(1)"])
    harness.wait_until_sync(caught_up(replica, int(headers["X-Scalelab-Lsn"])))
    replica.stop()
    # Writes only the old primary will ever have: its divergent suffix.
    execute(primary, [["INSERT INTO t VALUES(?)", i] for i in range(2, 6)])
    execute(primary, ["INSERT INTO t VALUES(6)"])
    primary.kill()

    replica = store("r", "--join", primary.listen["main"])
    promoted = admin(replica, "promote")
    assert (promoted["role"], promoted["epoch"]) == ("primary", 2)
    assert execute(replica, ["INSERT INTO t VALUES(100)"])[0] == 200

    old = store("p", "--join", replica.listen["main"])
    harness.wait_until_sync(lambda: status(old)["applied_lsn"] >= status(replica)["lsn"]
                            and status(old)["epoch"] == 2, what="old primary resynced")  # fmt: skip
    assert count(old) == 2  # rows 1 and 100: the divergent 2..6 are gone
    assert "installing_snapshot" in old.log_tail(200)
    assert status(old)["role"] == "replica"


async def test_semi_sync_writes_survive_promotion_under_load(store):
    primary = store("p", "--sync-replicas", "1")
    replica = store("r", "--join", primary.listen["main"])
    harness.wait_until_sync(lambda: status(primary)["replicas"], what="replica subscribed")
    execute(primary, ["CREATE TABLE t (k INTEGER PRIMARY KEY)"])
    acked: set[int] = set()
    stop = asyncio.Event()

    async def writer(session, client):
        seq = 0
        while not stop.is_set():
            seq += 1
            key = client * 1_000_000 + seq
            try:
                async with session.post(f"{primary.url()}/db/execute",
                                        json=[["INSERT INTO t VALUES(?)", key]]) as resp:  # fmt: skip
                    if resp.status == 200:
                        acked.add(key)
            except (TimeoutError, aiohttp.ClientError):
                return

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        tasks = [asyncio.ensure_future(writer(session, c)) for c in range(8)]
        await harness.wait_until(lambda: len(acked) >= 200, what="acknowledged writes")
        primary.kill()
        stop.set()
        await asyncio.gather(*tasks)
    admin(replica, "promote")
    status_code, _, body = harness.http("GET", f"{replica.url()}/db/query?q=SELECT+k+FROM+t")
    present = {row[0] for row in json.loads(body)["results"][0].get("values", [])}
    assert acked <= present, f"{len(acked - present)} acknowledged writes lost"
    assert "semisync_off" not in primary.log_tail(200)  # every ack really waited


def test_checkpoints_bound_the_log_a_replica_left_behind_installs_a_snapshot_and_tokens_guard_replication(
    store,
):
    token = ("--cluster-token", "s3cret")
    primary = store("p", "--log-max-bytes", "4096", *token)
    replica = store("r", "--join", primary.listen["main"], *token)
    _, headers, _ = execute(primary, ["CREATE TABLE t (a, pad)"])
    harness.wait_until_sync(caught_up(replica, int(headers["X-Scalelab-Lsn"])))
    # the replication endpoints want the cluster token: nobody else can fake an ack
    fake = json.dumps({"name": "r", "epoch": 1, "lsn": 10**9}).encode()
    assert harness.http("POST", primary.url() + "/_replication/ack", fake)[0] == 401
    assert harness.http("GET", primary.url() + "/_replication/stream?name=x")[0] == 401
    replica.stop()
    for i in range(40):
        _, headers, _ = execute(primary, [["INSERT INTO t VALUES(?, ?)", i, "x" * 200]])
    admin(primary, "checkpoint")
    metrics = harness.http("GET", primary.url("admin") + "/metrics")[2].decode()
    log_bytes = next(int(float(line.split()[1])) for line in metrics.splitlines()
                     if line.startswith("scalelab_store_log_bytes "))  # fmt: skip
    assert log_bytes < 4096 + 1024
    assert "scalelab_store_checkpoints_total 0" not in metrics

    replica = store("r", "--join", primary.listen["main"], *token)
    harness.wait_until_sync(caught_up(replica, int(headers["X-Scalelab-Lsn"])), what="resync")
    assert "installing_snapshot" in replica.log_tail(200)
    assert count(replica) == 40
    _, headers, _ = execute(primary, ["INSERT INTO t VALUES(99, '')"])
    harness.wait_until_sync(caught_up(replica, int(headers["X-Scalelab-Lsn"])), what="streaming")

    # the compacted primary still recovers everything after a restart
    primary.stop()
    primary = store("p", "--log-max-bytes", "4096", *token)
    assert count(primary) == 41


def test_peers_follow_a_promoted_replica_and_a_returning_primary_steps_down(store):
    primary = store("p")
    p_addr = primary.listen["main"]
    r1 = store("r1", "--join", p_addr, "--peers", p_addr)
    r2 = store("r2", "--join", p_addr, "--peers", f"{p_addr},{r1.listen['main']}")
    _, headers, _ = execute(primary, ["CREATE TABLE t (a)", "INSERT INTO t VALUES(1)"])
    for r in (r1, r2):
        harness.wait_until_sync(caught_up(r, int(headers["X-Scalelab-Lsn"])))
    primary.kill()
    admin(r1, "promote")
    harness.wait_until_sync(lambda: status(r2)["primary"] == r1.listen["main"],
                            what="r2 follows the promoted r1")  # fmt: skip
    _, headers, _ = execute(r1, ["INSERT INTO t VALUES(2)"])
    harness.wait_until_sync(caught_up(r2, int(headers["X-Scalelab-Lsn"])), what="r2 streams")

    # a strong read on r1 asks the peers; r1 is the newest primary, so it answers itself
    assert count(r1, qs="&level=strong") == 2

    back = store("p", "--peers", f"{r1.listen['main']},{r2.listen['main']}")
    mine = status(back)
    assert (mine["role"], mine["epoch"], mine["primary"]) == ("replica", 2, r1.listen["main"])
    harness.wait_until_sync(
        caught_up(back, int(headers["X-Scalelab-Lsn"])), what="old primary caught up"
    )
    assert count(back) == 2


def test_deposed_primaries_learn_the_new_epoch_from_peers_or_from_a_subscriber(store):
    newer = store("b")
    execute(newer, ["CREATE TABLE t (who)", "INSERT INTO t VALUES('b')"])
    old = store("a", "--peers", newer.listen["main"])  # both primaries at epoch 1
    execute(old, ["CREATE TABLE t (who)", "INSERT INTO t VALUES('a')"])
    admin(newer, "promote")  # b now leads at epoch 2; a has not asked anyone yet
    # A strong read makes a check with its peers: it steps down and b answers.
    code, _, body = harness.http("GET", f"{old.url()}/db/query?q=SELECT+who+FROM+t&level=strong")
    assert code == 200 and json.loads(body)["results"][0]["values"] == [["b"]]
    assert status(old)["role"] == "replica"

    # A primary without peers learns it when a node of a higher epoch subscribes to it:
    # it is fenced and refuses writes until it is repointed.
    lone = store("c")
    admin(newer, "repoint", {"primary": lone.listen["main"]})
    harness.wait_until_sync(lambda: status(lone)["fenced_by"] == 2, what="fenced")
    code, _, body = execute(lone, ["CREATE TABLE t (a)"])
    assert code == 503 and body == {"error": "leader not found"}
