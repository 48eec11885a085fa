"""Capacity emulation on a real store: the web tier's flags, the web tier's answers.

``--max-concurrency 1 --max-queue 0 --service-time-ms 1500``: one query in service,
none waiting, so a second query sent while the first is served is refused at once with
503 and ``Retry-After``; writes are not gated by the query flags. The write side has the
same flags prefixed ``--write-`` and gates execute batches the same way (queries pass).
"""

import asyncio
import json
from urllib.parse import quote

import aiohttp
import pyrqlite.dbapi2 as dbapi2

import harness


def _metric(proc, name):
    _, _, body = harness.http("GET", proc.url("admin") + "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_query_beyond_capacity_is_refused_with_retry_after(store):
    proc = store("cap", "--max-concurrency", "1", "--max-queue", "0",
                 "--service-time-ms", "1500", "--retry-after-s", "3")  # fmt: skip
    host, port = proc.address()
    conn = dbapi2.connect(host=host, port=port)
    conn.cursor().execute("CREATE TABLE t (v INTEGER)")  # a write: never gated
    conn.close()
    url = f"{proc.url()}/db/query?q={quote('SELECT count(*) FROM t')}"
    async with aiohttp.ClientSession() as session:

        async def get():
            async with session.get(url) as response:
                return response.status, response.headers.get("Retry-After"), await response.read()

        first = asyncio.ensure_future(get())
        await harness.wait_until(lambda: _metric(proc, "scalelab_store_queries_in_service") == 1)
        status, retry_after, body = await get()
        assert (status, retry_after) == (503, "3")
        assert "over capacity" in json.loads(body)["error"]
        status, _, body = await first
        assert status == 200 and json.loads(body)["results"][0]["values"] == [[0]]
    assert _metric(proc, "scalelab_store_queries_rejected_total") == 1


async def test_queued_queries_wait_for_a_worker_instead_of_being_refused(store):
    proc = store("queue", "--max-concurrency", "1", "--max-queue", "4",
                 "--service-time-ms", "200")  # fmt: skip
    url = f"{proc.url()}/db/query?q={quote('SELECT 1')}"
    async with aiohttp.ClientSession() as session:

        async def get():
            async with session.get(url) as response:
                await response.read()
                return response.status

        answers = await asyncio.gather(*(get() for _ in range(3)))
    assert answers == [200, 200, 200]
    assert _metric(proc, "scalelab_store_queries_rejected_total") == 0


async def test_write_beyond_write_capacity_is_refused_and_queries_pass(store):
    proc = store("wcap", "--write-max-concurrency", "1", "--write-max-queue", "0",
                 "--write-service-time-ms", "1000", "--write-retry-after-s", "3")  # fmt: skip
    base = proc.url()
    harness.http("POST", base + "/db/execute", b'["CREATE TABLE w (v INTEGER)"]',
                 {"Content-Type": "application/json"})  # fmt: skip
    insert = json.dumps([["INSERT INTO w VALUES(?)", 1]]).encode()
    async with aiohttp.ClientSession() as session:

        async def execute(path="/db/execute"):
            async with session.post(base + path, data=insert,
                                    headers={"Content-Type": "application/json"}) as response:  # fmt: skip
                return response.status, response.headers.get("Retry-After"), await response.read()

        first = asyncio.ensure_future(execute())
        await harness.wait_until(lambda: _metric(proc, "scalelab_store_writes_in_service") == 1)
        status, retry_after, body = await execute()
        assert (status, retry_after) == (503, "3")
        assert "over write capacity" in json.loads(body)["error"]
        status, retry_after, _ = await execute("/db/request")  # the unified endpoint too
        assert (status, retry_after) == (503, "3")
        async with session.get(f"{base}/db/query?q={quote('SELECT count(*) FROM w')}") as r:
            assert r.status == 200  # reads are not gated by the write side
            assert json.loads(await r.read())["results"][0]["values"] == [[0]]
        status, _, body = await first
        assert status == 200 and json.loads(body)["results"][0]["rows_affected"] == 1
    assert _metric(proc, "scalelab_store_writes_rejected_total") == 2
    assert _metric(proc, "scalelab_store_writes_in_service") == 0


async def test_queued_writes_wait_for_a_write_worker(store):
    proc = store("wqueue", "--write-max-concurrency", "1", "--write-max-queue", "4",
                 "--write-service-time-ms", "100")  # fmt: skip
    host, port = proc.address()
    conn = dbapi2.connect(host=host, port=port)
    conn.cursor().execute("CREATE TABLE w (v INTEGER)")  # through the write gate too
    conn.close()
    insert = json.dumps([["INSERT INTO w VALUES(?)", 1]]).encode()
    async with aiohttp.ClientSession() as session:

        async def execute():
            async with session.post(proc.url() + "/db/execute", data=insert,
                                    headers={"Content-Type": "application/json"}) as response:  # fmt: skip
                await response.read()
                return response.status

        answers = await asyncio.gather(*(execute() for _ in range(3)))
    assert answers == [200, 200, 200]
    assert _metric(proc, "scalelab_store_writes_rejected_total") == 0
