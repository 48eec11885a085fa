"""The photo routes over real HTTP: aiohttp against a real web server and a real queue.

The workers' side is played by the test here (greenstalk reserves the job, the test PUTs
the thumbnail), so each route's answers are pinned down; ``tests/components/worker/
test_pipeline.py`` runs real workers end to end.
"""

import signal
import time

import aiohttp
import greenstalk
import orjson
import pytest

import harness
from components.worker import photo
from loadgen.exposition import Exposition, parse_exposition

JOB = {"image": "u1/beach.jpg", "width": 64, "height": 48, "thumb": 8}


@pytest.fixture(scope="module")
def queue():
    proc = harness.start("queue")
    yield proc
    proc.stop(timeout_s=5)


@pytest.fixture(scope="module")
def web(queue):
    host, port = queue.address()
    proc = harness.start("web", "--queue", f"{host}:{port}", "--seed-users", "5",
                         "--max-body-bytes", "1024")  # fmt: skip
    yield proc
    proc.stop(timeout_s=5)


@pytest.fixture
async def client():
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=harness.DEADLINE_S)
    ) as session:
        yield session


def scrape(proc) -> Exposition:
    return parse_exposition(harness.http("GET", proc.url("admin") + "/metrics")[2].decode())


def reserve_job(queue, photo_id: int) -> tuple[int, dict]:
    """Play the worker: take this photo's job off the ``photos`` tube."""
    with greenstalk.Client(queue.address(), watch="photos") as beanstalk:
        while True:
            job = beanstalk.reserve(timeout=5)
            body = orjson.loads(job.body)
            beanstalk.delete(job)
            if body.get("photo") == photo_id:
                return job.id, body


async def post_photo(client, web, doc=JOB) -> dict:
    async with client.post(web.url() + "/photos", json=doc) as response:
        assert response.status == 202, await response.text()
        created = await response.json()
        assert response.headers["Location"] == f"/photos/{created['id']}"
        return created


async def test_post_publishes_the_job_and_answers_202_pending(web, queue, client):
    created = await post_photo(client, web)
    assert created["state"] == "pending"
    job_id, body = reserve_job(queue, created["id"])
    assert job_id == created["job"]
    assert body == {**JOB, "photo": created["id"]}
    async with client.get(web.url() + created["location"]) as response:
        assert response.status == 200
        assert (await response.json())["state"] == "pending"
    async with client.get(web.url() + created["location"] + "/thumbnail") as response:
        assert response.status == 404


async def test_storing_the_thumbnail_makes_the_photo_done(web, queue, client):
    created = await post_photo(client, web)
    _, body = reserve_job(queue, created["id"])
    result = photo.process(orjson.dumps(body))
    url = web.url() + created["location"]
    async with client.put(url + "/thumbnail", data=result.thumbnail) as response:
        assert response.status == 200
        assert await response.json() == {"id": created["id"], "state": "done",
                                         "digest": result.digest, "outcome": "stored"}  # fmt: skip
    async with client.get(url) as response:
        doc = await response.json()
    assert doc["state"] == "done" and doc["digest"] == result.digest
    async with client.get(url + "/thumbnail") as response:
        assert response.status == 200
        assert response.content_type == "application/octet-stream"
        assert await response.read() == result.thumbnail
        assert response.headers["ETag"] == f'"{result.digest}"'
        assert "immutable" in response.headers["Cache-Control"]
    revalidate = {"If-None-Match": f'"{result.digest}"'}
    async with client.get(url + "/thumbnail", headers=revalidate) as response:
        assert response.status == 304


async def test_a_redelivered_result_is_stored_once(web, queue, client):
    created = await post_photo(client, web)
    _, body = reserve_job(queue, created["id"])
    result = photo.process(orjson.dumps(body))
    url = web.url() + created["location"] + "/thumbnail"
    before = scrape(web).value("scalelab_web_thumbnails_stored_total", outcome="stored")
    outcomes = []
    for _ in range(3):  # at-least-once delivery: the same job processed three times
        async with client.put(url, data=result.thumbnail) as response:
            assert response.status == 200
            outcomes.append((await response.json())["outcome"])
    assert outcomes == ["stored", "unchanged", "unchanged"]
    assert scrape(web).value("scalelab_web_thumbnails_stored_total", outcome="stored") == before + 1
    other = bytes(len(result.thumbnail))
    async with client.put(url, data=other) as response:
        assert response.status == 409
    async with client.get(url) as response:
        assert await response.read() == result.thumbnail


async def test_a_thumbnail_past_the_json_body_bound_is_accepted(web, queue, client):
    # --max-body-bytes is 1024 here; a 64x64 thumbnail is 12,288 bytes.
    doc = {"image": "big.jpg", "width": 100, "height": 100, "thumb": 64}
    created = await post_photo(client, web, doc)
    result = photo.process(orjson.dumps({**doc, "photo": created["id"]}))
    url = web.url() + created["location"] + "/thumbnail"
    async with client.put(url, data=result.thumbnail) as response:
        assert response.status == 200


@pytest.mark.parametrize(("body", "status"), [(b"x" * 10, 400),
                                              (b"x" * (photo.MAX_THUMBNAIL_BYTES + 1), 413)])  # fmt: skip
async def test_thumbnails_of_the_wrong_size_are_refused(web, client, body, status):
    created = await post_photo(client, web)
    url = web.url() + created["location"] + "/thumbnail"
    async with client.put(url, data=body) as response:
        assert response.status == status
        assert "error" in await response.json()
    async with client.get(web.url() + created["location"]) as response:
        assert (await response.json())["state"] == "pending"


async def test_a_chunked_thumbnail_without_length_is_411(web, client):
    created = await post_photo(client, web)

    async def chunks():
        yield b"abc"

    async with client.put(web.url() + created["location"] + "/thumbnail",
                          data=chunks()) as response:  # fmt: skip
        assert response.status == 411


@pytest.mark.parametrize("path", ["/photos/999999999", "/photos/0", "/photos/x",
                                  "/photos/999999999/thumbnail"])  # fmt: skip
async def test_unknown_photos_are_404(web, client, path):
    async with client.get(web.url() + path) as response:
        assert response.status == 404
        assert "error" in await response.json()
    async with client.put(web.url() + "/photos/999999999/thumbnail", data=b"x") as response:
        assert response.status == 404


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1]", b'{"width": 10}', b'{"image": "../etc/passwd"}',
     b'{"image": "a.jpg", "thumb": 0}', b'{"image": "a.jpg", "width": 99999}',
     b'{"image": "a.jpg", "photo": 3}', b'{"image": "' + b"a" * 5000 + b'"}'],
)  # fmt: skip
async def test_bad_jobs_are_400_and_publish_nothing(web, client, body):
    before = scrape(web).total("scalelab_web_photos_published_total")
    headers = {"Content-Type": "application/json"}
    async with client.post(web.url() + "/photos", data=body, headers=headers) as response:
        assert response.status in (400, 413)
        assert len((await response.json())["error"]) < 500
    assert scrape(web).total("scalelab_web_photos_published_total") == before


async def test_a_worker_reports_a_buried_job_as_failed(web, client):
    created = await post_photo(client, web)
    url = web.url() + created["location"]
    async with client.post(url + "/failure", json={"error": "buried after 3 attempts"}) as response:
        assert response.status == 200
        assert (await response.json())["state"] == "failed"
    async with client.get(url) as response:
        assert (await response.json())["error"] == "buried after 3 attempts"
    async with client.post(url + "/failure", json={}) as response:
        assert response.status == 400


async def test_with_a_worker_token_only_workers_store_results(spawn, queue, client):
    host, port = queue.address()
    web = spawn("web", "--queue", f"{host}:{port}", "--seed-users", "2",
                "--worker-token", "s3cret")  # fmt: skip
    created = await post_photo(client, web)  # users need no token
    url = web.url() + created["location"]
    result = photo.process(photo.encode_job(photo.PhotoJob(**JOB, photo=created["id"])))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        async with client.put(url + "/thumbnail", data=result.thumbnail,
                              headers=headers) as response:  # fmt: skip
            assert response.status == 401
        async with client.post(url + "/failure", json={"error": "x"}, headers=headers) as response:
            assert response.status == 401
    async with client.get(url) as response:
        assert (await response.json())["state"] == "pending"
    worker = {"Authorization": "Bearer s3cret"}
    async with client.put(url + "/thumbnail", data=result.thumbnail, headers=worker) as response:
        assert response.status == 200


async def test_without_a_queue_the_photo_routes_are_503(spawn, client):
    web = spawn("web", "--seed-users", "2")
    for method, path in [("POST", "/photos"), ("GET", "/photos/1"),
                         ("GET", "/photos/1/thumbnail"), ("PUT", "/photos/1/thumbnail")]:  # fmt: skip
        async with client.request(method, web.url() + path, json=JOB) as response:
            assert response.status == 503
            assert "--queue" in (await response.json())["error"]
    async with client.get(web.url() + "/users/1") as response:
        assert response.status == 200  # the rest of the tier is unaffected


async def test_a_killed_queue_gives_a_fast_503_then_publishing_resumes(spawn, client, tmp_path):
    queue = spawn("queue", "-b", str(tmp_path / "q"), "-f", "0")
    host, port = queue.address()
    web = spawn("web", "--queue", f"{host}:{port}", "--seed-users", "2")
    await post_photo(client, web)
    assert scrape(web).value("scalelab_web_queue_connected") == 1
    queue.kill()
    for _ in range(3):  # the first finds the connection lost; the next wait out a backoff
        async with client.post(web.url() + "/photos", json=JOB) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            created = orjson.loads(await response.read())
    assert "error" in created
    assert scrape(web).total("scalelab_web_photo_publish_errors_total") == 3
    assert scrape(web).value("scalelab_web_queue_connected") == 0
    queue = spawn("queue", "-b", str(tmp_path / "q"), "-f", "0", "--port", str(port))

    async def published() -> bool:
        async with client.post(web.url() + "/photos", json=JOB) as response:
            return response.status == 202

    await harness.wait_until(published, what="publishing after the queue came back")
    async with client.get(web.url() + "/photos/2") as response:
        doc = await response.json()
    assert doc["state"] == "failed" and doc["error"].startswith("not queued")


async def test_a_silent_queue_gives_503_after_the_bounded_wait(spawn, client):
    queue = spawn("queue")
    host, port = queue.address()
    web = spawn("web", "--queue", f"{host}:{port}", "--queue-timeout-s", "0.5",
                "--seed-users", "2")  # fmt: skip
    await post_photo(client, web)
    queue.signal(signal.SIGSTOP)  # a hung queue: the connection stays open, nothing answers
    try:
        started = time.monotonic()
        async with client.post(web.url() + "/photos", json=JOB) as response:
            assert response.status == 503
        # Bounded by --queue-timeout-s, not by the client's patience (no exact timing).
        assert time.monotonic() - started < harness.DEADLINE_S
    finally:
        queue.signal(signal.SIGCONT)
