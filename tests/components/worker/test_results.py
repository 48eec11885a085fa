"""Result sinks: the web tier's PUT with its retries, against a scripted aiohttp server.

A real HTTP server in the test's own loop answers each PUT as the test scripts it, so
the retry rules (5xx and connection errors again, 4xx never) are pinned down exactly.
"""

import contextlib
import hashlib

import orjson
import pytest
from aiohttp import web

from components.common.runner import parse_args
from components.worker import photo
from components.worker.results import (
    DirectoryResults,
    StoreRejected,
    StoreUnavailable,
    WebResults,
)
from components.worker.server import WorkerService

RESULT = photo.process(photo.encode_job(photo.PhotoJob("a.jpg", 20, 10, 4, photo=5)))


@pytest.fixture
async def scripted():
    """``(url, answers, seen)``: the server pops one status per request from ``answers``
    (299: a 200 whose digest is not the one of the bytes received)."""
    answers: list[int] = []
    seen: list[tuple[str, str, bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, await request.read()))
        status = answers.pop(0)
        digest = hashlib.sha256(seen[-1][2]).hexdigest() if status != 299 else "0" * 64
        status = 200 if status == 299 else status
        return web.Response(status=status, body=orjson.dumps({"digest": digest}),
                            content_type="application/json")  # fmt: skip

    app = web.Application(client_max_size=photo.MAX_THUMBNAIL_BYTES)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", answers, seen
    await runner.cleanup()


@contextlib.asynccontextmanager
async def sink(url: str, attempts: int = 3):
    results = WebResults(url, timeout_s=2, attempts=attempts, connections=2)
    try:
        yield results
    finally:
        await results.close()


async def test_the_thumbnail_is_put_at_the_photos_location(scripted):
    url, answers, seen = scripted
    answers.append(200)
    async with sink(url + "/") as results:
        await results.store(RESULT)
    assert seen == [("PUT", "/photos/5/thumbnail", RESULT.thumbnail)]


async def test_5xx_answers_are_retried_until_one_succeeds(scripted):
    url, answers, seen = scripted
    answers.extend([503, 500, 200])
    async with sink(url) as results:
        await results.store(RESULT)
    assert len(seen) == 3


async def test_5xx_on_every_attempt_makes_the_job_fail_for_a_retry(scripted):
    url, answers, seen = scripted
    answers.extend([503, 503])
    async with sink(url, attempts=2) as results:
        with pytest.raises(StoreUnavailable, match="503"):
            await results.store(RESULT)
    assert len(seen) == 2


@pytest.mark.parametrize("status", [400, 404, 409])
async def test_a_4xx_is_not_retried(scripted, status):
    url, answers, seen = scripted
    answers.extend([status, 200])
    async with sink(url) as results:
        with pytest.raises(StoreRejected, match=str(status)):
            await results.store(RESULT)
    assert len(seen) == 1


async def test_a_stored_digest_that_differs_fails_the_job(scripted):
    url, answers, _ = scripted
    answers.append(299)
    async with sink(url) as results:
        with pytest.raises(StoreRejected, match="digest"):
            await results.store(RESULT)


async def test_connection_errors_are_retried_then_fail():
    async with sink("http://127.0.0.1:9", attempts=2) as results:  # discard: nobody listens
        with pytest.raises(StoreUnavailable, match="2 attempts"):
            await results.store(RESULT)


async def test_a_job_without_a_photo_id_has_nowhere_to_go():
    async with sink("http://127.0.0.1:9") as results:
        with pytest.raises(StoreRejected, match="no photo id"):
            await results.store(photo.process(b'{"image": "a.jpg"}'))


async def test_a_buried_job_is_reported_as_a_failure(scripted):
    url, answers, seen = scripted
    answers.append(200)
    async with sink(url) as results:
        await results.failed(5, "buried")
        await results.failed(None, "no photo: nothing to report")
    assert [(m, p, orjson.loads(b)) for m, p, b in seen] == [
        ("POST", "/photos/5/failure", {"error": "buried"})
    ]


async def test_directory_results_are_written_whole(tmp_path):
    results = DirectoryResults(str(tmp_path / "out"))
    await results.store(RESULT)
    await results.store(RESULT)  # a redelivered job rewrites the same bytes
    assert (tmp_path / "out" / "a.jpg.rgb").read_bytes() == RESULT.thumbnail
    meta = orjson.loads((tmp_path / "out" / "a.jpg.json").read_bytes())
    assert meta == {"image": "a.jpg", "digest": RESULT.digest, "bytes": len(RESULT.thumbnail)}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg.json", "a.jpg.rgb"]


@pytest.mark.parametrize(
    "flags",
    [("--web", "http://127.0.0.1:1", "--result-dir", "/tmp/x"), ("--web", "ftp://127.0.0.1:1"),
     ("--web", "http://127.0.0.1:1", "--store-attempts", "0"),
     ("--web", "http://127.0.0.1:1", "--web-timeout-s", "0")],
)  # fmt: skip
def test_bad_sink_flags_are_refused(flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(WorkerService, ["--queue", "127.0.0.1:1", *flags])
    assert exit_info.value.code == 2
    assert "--" in capsys.readouterr().err
