"""kill -9 during concurrent writes loses no acknowledged write and shows no half batch.

Each round: start the store on the same data directory, have 16 concurrent clients write
three-row transactions as fast as they can, ``kill -9`` the process while writes are in
flight, restart it, and read everything back. Every batch that was answered 200 must be
there, and every batch that is there must be whole (the three rows of a batch share a
batch id), acknowledged or not.
"""

import asyncio
import json

import aiohttp

import harness

ROUNDS = 3
CLIENTS = 16
ROWS_PER_BATCH = 3


async def writer(session, url, client, acked, stop, base):
    seq = 0
    while not stop.is_set():
        seq += 1
        batch = base + client * 1_000_000 + seq
        statements = [["INSERT INTO t(batch, part) VALUES(?, ?)", batch, part]
                      for part in range(ROWS_PER_BATCH)]  # fmt: skip
        try:
            async with session.post(f"{url}/db/execute?transaction", json=statements) as resp:
                body = await resp.json()
        except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError):
            return  # the node died under us: this batch is unacknowledged
        if resp.status == 503 and "shutting down" in body.get("error", ""):
            return  # a draining node refused it: unacknowledged
        assert resp.status == 200 and all("error" not in r for r in body["results"]), body
        acked.add(batch)


def create_table(url):
    """The table ``writer`` fills: a batch's rows share ``batch``, numbered by ``part``."""
    harness.http("POST", url + "/db/execute",
                 b'["CREATE TABLE t (id INTEGER PRIMARY KEY, batch INTEGER, part INTEGER)"]')  # fmt: skip


def writers(session, url, clients, acked, stop, base=0):
    return [asyncio.ensure_future(writer(session, url, c, acked, stop, base))
            for c in range(clients)]  # fmt: skip


async def load_then_kill(proc, acked, after_acks, base):
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        tasks = writers(session, proc.url(), CLIENTS, acked, stop, base)
        target = len(acked) + after_acks
        await harness.wait_until(lambda: len(acked) >= target, what="acknowledged writes")
        proc.kill()  # SIGKILL with writes in flight
        stop.set()
        await asyncio.gather(*tasks)


async def test_kill_9_during_concurrent_writes_loses_no_acknowledged_write(tmp_path, spawn):
    data = str(tmp_path / "data")
    acked: set[int] = set()
    proc = spawn("store", "--data-dir", data, name="dur")
    create_table(proc.url())
    for round_number in range(ROUNDS):
        await load_then_kill(proc, acked, after_acks=150, base=round_number * 100_000_000)
        proc = spawn("store", "--data-dir", data, name="dur")
        status, _, body = harness.http(
            "GET", proc.url() + "/db/query?q=SELECT+batch,+count(*)+FROM+t+GROUP+BY+batch"
        )
        assert status == 200
        counts = dict(json.loads(body)["results"][0].get("values", []))
        missing = acked - counts.keys()
        assert not missing, f"{len(missing)} acknowledged batches lost, e.g. {sorted(missing)[:5]}"
        torn = {b: n for b, n in counts.items() if n != ROWS_PER_BATCH}
        assert not torn, f"half-applied batches visible: {torn}"
    assert len(acked) >= 150 * ROUNDS


async def test_a_replica_killed_while_streaming_recovers_to_the_primarys_exact_state(
    spawn, tmp_path
):
    primary = spawn("store", "--data-dir", str(tmp_path / "p"), name="p")
    join = ("--join", primary.listen["main"])
    replica = spawn("store", "--data-dir", str(tmp_path / "r"), *join, name="r")
    create_table(primary.url())
    acked: set[int] = set()
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        tasks = writers(session, primary.url(), 8, acked, stop)
        for _ in range(2):
            target = len(acked) + 100
            await harness.wait_until(lambda t=target: len(acked) >= t, what="writes")
            replica.kill()  # kill -9 the replica mid-stream, while the primary keeps writing
            replica = spawn("store", "--data-dir", str(tmp_path / "r"), *join, name="r")
        stop.set()
        await asyncio.gather(*tasks)

    def status(proc):
        return json.loads(harness.http("GET", proc.url() + "/status")[2])["scalelab"]

    last = status(primary)["lsn"]
    harness.wait_until_sync(lambda: status(replica)["applied_lsn"] == last, what="caught up")
    dump = "/db/query?q=SELECT+*+FROM+t+ORDER+BY+id&level=none"
    assert (
        harness.http("GET", primary.url() + dump)[2] == harness.http("GET", replica.url() + dump)[2]
    )


async def test_sigterm_during_concurrent_writes_drains_every_answer_and_loses_nothing(
    tmp_path, spawn
):
    """The drain answers every write already taken (none is left waiting on a stopped
    committer), exits 0 well within --drain-timeout, and every acknowledged batch is
    there after a restart."""
    data = str(tmp_path / "data")
    proc = spawn("store", "--data-dir", data, "--drain-timeout", "20", name="term")
    create_table(proc.url())
    acked: set[int] = set()
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        tasks = writers(session, proc.url(), 64, acked, stop)
        await harness.wait_until(lambda: len(acked) >= 100, what="acknowledged writes")
        code = await asyncio.to_thread(proc.stop, 15)  # SIGTERM with writes in flight
        stop.set()
        await asyncio.gather(*tasks)
    assert code == 0
    log = proc.log_tail(200)
    assert '"drained"' in log and "drain_cut_short" not in log
    proc = spawn("store", "--data-dir", data, name="term")
    _, _, body = harness.http("GET", proc.url() + "/db/query?q=SELECT+DISTINCT+batch+FROM+t")
    present = {row[0] for row in json.loads(body)["results"][0].get("values", [])}
    assert acked <= present
