"""The photo pipeline end to end: queue, web tier and workers as real processes.

A user POSTs a photo to the web tier, which records it and publishes the job; a worker
reserves it, makes the thumbnail and PUTs it back through the web tier, then deletes the
job. The thumbnail each test reads back is checked against ``photo.process`` run here.
"""

import aiohttp
import greenstalk
import orjson
import pytest

import harness
from components.worker import photo
from loadgen.exposition import Exposition, parse_exposition


def scrape(proc) -> Exposition:
    return parse_exposition(harness.http("GET", proc.url("admin") + "/metrics")[2].decode())


def job_doc(image: str, **extra) -> dict:
    return {"image": image, "width": 96, "height": 64, "thumb": 12, **extra}


def expected(doc: dict, photo_id: int) -> photo.Result:
    return photo.process(orjson.dumps({**doc, "photo": photo_id}))


def start_pipeline(spawn, *web_flags, queue=None):
    queue = queue or spawn("queue")
    host, port = queue.address()
    web = spawn("web", "--queue", f"{host}:{port}", "--seed-users", "2", *web_flags)
    return queue, web


def start_worker(spawn, queue, web, *flags):
    host, port = queue.address()
    return spawn("worker", "--queue", f"{host}:{port}", "--tube", "photos",
                 "--web", web.url("main"), *flags)  # fmt: skip


@pytest.fixture
async def client():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=harness.DEADLINE_S)) as s:
        yield s


async def post(client, web, doc: dict) -> int:
    async with client.post(web.url() + "/photos", json=doc) as response:
        assert response.status == 202, await response.text()
        return (await response.json())["id"]


async def wait_state(client, web, photo_id: int, state: str) -> dict:
    async def reached():
        async with client.get(f"{web.url()}/photos/{photo_id}") as response:
            doc = await response.json()
        return doc if doc["state"] == state else None

    return await harness.wait_until(reached, what=f"photo {photo_id} {state}")


async def check_done(client, web, photo_id: int, doc: dict) -> None:
    want = expected(doc, photo_id)
    shown = await wait_state(client, web, photo_id, "done")
    assert shown["digest"] == want.digest
    async with client.get(f"{web.url()}/photos/{photo_id}/thumbnail") as response:
        assert response.status == 200
        assert await response.read() == want.thumbnail


async def test_posted_photos_are_processed_and_stored_through_the_web_tier(spawn, client):
    queue, web = start_pipeline(spawn, "--worker-token", "s3cret")
    worker = start_worker(spawn, queue, web, "--concurrency", "3", "--web-token", "s3cret")
    docs = [job_doc(f"user-{i}/p.jpg", thumb=8 + i) for i in range(6)]
    ids = [await post(client, web, doc) for doc in docs]
    for photo_id, doc in zip(ids, docs, strict=True):
        await check_done(client, web, photo_id, doc)
    with greenstalk.Client(queue.address()) as beanstalk:
        stats = beanstalk.stats()
        assert stats["cmd-delete"] == 6 and stats["current-jobs-ready"] == 0
    assert scrape(worker).total("scalelab_worker_jobs_done_total") == 6
    assert scrape(web).total("scalelab_web_photos_published_total") == 6


async def test_every_accepted_photo_survives_a_queue_killed_right_after(spawn, client, tmp_path):
    # 202 is sent only after the queue's INSERTED, which with -f 0 follows the fsync.
    queue = spawn("queue", "-b", str(tmp_path / "q"), "-f", "0")
    _, web = start_pipeline(spawn, queue=queue)
    docs = [job_doc(f"durable-{i}.jpg") for i in range(5)]
    ids = [await post(client, web, doc) for doc in docs]
    queue.kill()
    queue = spawn("queue", "-b", str(tmp_path / "q"), "-f", "0", "--port",
                  str(queue.address()[1]), "--admin-port", "0")  # fmt: skip
    start_worker(spawn, queue, web, "--concurrency", "2")
    for photo_id, doc in zip(ids, docs, strict=True):
        await check_done(client, web, photo_id, doc)


async def test_jobs_lost_by_a_memory_queue_are_republished(spawn, client):
    queue, web = start_pipeline(spawn)  # no -b: the queue keeps jobs in memory only
    docs = [job_doc(f"lost-{i}.jpg") for i in range(3)]
    ids = [await post(client, web, doc) for doc in docs]
    port = queue.address()[1]
    queue.kill()
    queue = spawn("queue", "--port", str(port), "--admin-port", "0")  # empty
    start_worker(spawn, queue, web)
    republish = web.url("admin") + "/admin/photos-republish"
    code, _, body = harness.http("POST", republish, b'{"older_than_s": 0}')
    assert code == 200 and orjson.loads(body) == {"republished": 3, "pending": 3}
    for photo_id, doc in zip(ids, docs, strict=True):
        await check_done(client, web, photo_id, doc)
    assert scrape(web).total("scalelab_web_photos_republished_total") == 3
    code, _, body = harness.http("POST", republish, b'{"older_than_s": 0}')
    assert orjson.loads(body) == {"republished": 0, "pending": 0}  # nothing stuck now
    assert harness.http("POST", republish, b'{"limit": 0}')[0] == 400


async def test_the_pipeline_on_a_replicated_store_tier(spawn, tmp_path):
    primary = spawn("store", "--data-dir", str(tmp_path / "p"), name="store-1")
    replica = spawn("store", "--data-dir", str(tmp_path / "r"), "--join",
                    primary.listen["main"], name="store-2")  # fmt: skip
    db = f"store:{primary.listen['main']},{replica.listen['main']}"
    queue, web = start_pipeline(spawn, "--db", db)
    start_worker(spawn, queue, web, "--concurrency", "2")
    # The read-your-writes cookie of POST /photos (unsafe: cookies from an IP address).
    jar = aiohttp.CookieJar(unsafe=True)
    timeout = aiohttp.ClientTimeout(total=harness.DEADLINE_S)
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=timeout) as client:
        docs = [job_doc(f"s{i}.jpg") for i in range(4)]
        ids = []
        for doc in docs:
            photo_id = await post(client, web, doc)
            # Reads are spread over both nodes; the cookie makes even the replica show it.
            async with client.get(f"{web.url()}/photos/{photo_id}") as response:
                assert response.status == 200
            ids.append(photo_id)
        for photo_id, doc in zip(ids, docs, strict=True):
            await check_done(client, web, photo_id, doc)


async def test_a_job_whose_worker_is_killed_is_finished_by_another_and_stored_once(spawn, client):
    queue, web = start_pipeline(spawn)
    slow = start_worker(spawn, queue, web, "--concurrency", "1", "--service-time-ms", "60000")
    doc = job_doc("survivor.jpg")
    photo_id = await post(client, web, doc)
    with greenstalk.Client(queue.address()) as beanstalk:
        harness.wait_until_sync(lambda: beanstalk.stats()["current-jobs-reserved"] == 1,
                                what="the slow worker holds the job")  # fmt: skip
        slow.kill()  # kill -9 mid-job: the dropped connection returns the job
        harness.wait_until_sync(lambda: beanstalk.stats()["current-jobs-ready"] == 1)
        start_worker(spawn, queue, web)
        await check_done(client, web, photo_id, doc)
        harness.wait_until_sync(lambda: beanstalk.stats()["cmd-delete"] == 1)
    stored = scrape(web)
    assert stored.value("scalelab_web_thumbnails_stored_total", outcome="stored") == 1
    assert stored.value("scalelab_web_thumbnails_stored_total", outcome="unchanged") == 0


async def test_a_redelivered_job_stores_the_same_result_once(spawn, client):
    queue, web = start_pipeline(spawn)
    doc = job_doc("twice.jpg")
    photo_id = await post(client, web, doc)
    with greenstalk.Client(queue.address(), use="photos") as beanstalk:
        # The same job body a second time: what the queue hands out when a worker dies
        # after storing the result but before its delete reached the queue.
        beanstalk.put(orjson.dumps({**doc, "photo": photo_id}))
        worker = start_worker(spawn, queue, web)
        harness.wait_until_sync(lambda: beanstalk.stats()["cmd-delete"] == 2)
    await check_done(client, web, photo_id, doc)
    stored = scrape(web)
    assert stored.value("scalelab_web_thumbnails_stored_total", outcome="stored") == 1
    assert stored.value("scalelab_web_thumbnails_stored_total", outcome="unchanged") == 1
    assert scrape(worker).total("scalelab_worker_jobs_done_total") == 2


async def test_poison_and_rejected_jobs_are_buried_and_the_photo_fails(spawn, client):
    queue, web = start_pipeline(spawn)
    start_worker(spawn, queue, web, "--max-failures", "1")
    poison = await post(client, web, job_doc("poison.jpg", fail=True))
    failed = await wait_state(client, web, poison, "failed")
    assert "asks to fail" in failed["error"]
    with greenstalk.Client(queue.address(), use="photos") as beanstalk:
        # A job for a photo the web tier does not have: its PUT is a 404, not retried.
        job_id = beanstalk.put(orjson.dumps(job_doc("orphan.jpg", photo=10**9)))
        harness.wait_until_sync(lambda: beanstalk.stats_job(job_id)["state"] == "buried")
        assert beanstalk.stats_job(job_id)["releases"] == 0


async def test_a_web_tier_down_releases_the_job_until_the_store_succeeds(spawn, client, tmp_path):
    db = f"sqlite:{tmp_path / 'web.db'}"
    queue, web = start_pipeline(spawn, "--db", db)
    port = web.address()[1]
    doc = job_doc("patient.jpg")
    photo_id = await post(client, web, doc)
    web.kill()  # the job is queued; the web tier that should take its result is gone
    # --max-failures 1: a job failing on its own would be buried at once; an outage must not.
    start_worker(spawn, queue, web, "--store-attempts", "2", "--retry-delay-s", "100",
                 "--retry-max-delay-s", "1000", "--max-failures", "1")  # fmt: skip
    with greenstalk.Client(queue.address(), use="photos") as beanstalk:
        harness.wait_until_sync(lambda: beanstalk.stats()["current-jobs-delayed"] == 1,
                                what="job released")  # fmt: skip
        job_id = beanstalk.peek_delayed().id
        stats = beanstalk.stats_job(job_id)
        assert stats["releases"] == 1 and stats["delay"] == 100  # retry.py's backoff
        assert stats["buries"] == 0
        assert beanstalk.stats()["cmd-delete"] == 0  # not stored, so not deleted
        web = spawn("web", "--db", db, "--queue", "{}:{}".format(*queue.address()),
                    "--seed-users", "2", "--port", str(port), "--admin-port", "0")  # fmt: skip
        beanstalk.kick_job(job_id)  # skip the 100 s delay instead of sleeping
        await check_done(client, web, photo_id, doc)
        harness.wait_until_sync(lambda: beanstalk.stats()["current-jobs-delayed"] == 0)
        assert beanstalk.stats()["cmd-delete"] == 1
