"""Photos in both storage backends: embedded SQLite and the store tier (a real store).

The same tests run against each backend: the photo pipeline must not care which one the
topology chose. Each test creates photos of its own, so the store process is shared.
"""

import hashlib

import pytest

import harness
from components.web.photos import State, StoreOutcome
from components.web.storage import SqliteUserStore, open_store
from components.worker import photo

JOB = photo.PhotoJob("u1/beach.jpg", 64, 48, 8)


@pytest.fixture(scope="module")
def store_process(tmp_path_factory):
    proc = harness.start("store", "--data-dir", str(tmp_path_factory.mktemp("photo-store")))
    yield proc
    proc.stop(timeout_s=5)


@pytest.fixture(params=["sqlite", "store"])
async def store(request, tmp_path):
    if request.param == "sqlite":
        spec = f"sqlite:{tmp_path / 'photos.db'}"
    else:
        spec = f"store:{request.getfixturevalue('store_process').listen['main']}"
    backend = await open_store(spec)
    yield backend
    await backend.close()


def result_of(job: photo.PhotoJob) -> photo.Result:
    return photo.process(photo.encode_job(job))


async def test_a_new_photo_is_pending_with_its_job(store):
    photo_id = await store.create_photo(JOB)
    found = await store.get_photo(photo_id)
    assert found.id == photo_id and found.state is State.PENDING
    assert (found.image, found.width, found.height, found.thumb) == ("u1/beach.jpg", 64, 48, 8)
    assert found.digest is None and found.thumbnail_bytes == 8 * 8 * 3
    assert await store.get_thumbnail(photo_id) is None


async def test_storing_the_thumbnail_makes_it_done(store):
    photo_id = await store.create_photo(JOB)
    result = result_of(JOB)
    assert await store.store_thumbnail(photo_id, result.thumbnail, result.digest) == "stored"
    found = await store.get_photo(photo_id)
    assert found.state is State.DONE and found.digest == result.digest
    assert await store.get_thumbnail(photo_id) == (result.thumbnail, result.digest)


async def test_storing_the_same_bytes_again_is_unchanged(store):
    photo_id = await store.create_photo(JOB)
    result = result_of(JOB)
    await store.store_thumbnail(photo_id, result.thumbnail, result.digest)
    again = await store.store_thumbnail(photo_id, result.thumbnail, result.digest)
    assert again is StoreOutcome.UNCHANGED
    assert await store.get_thumbnail(photo_id) == (result.thumbnail, result.digest)


async def test_other_bytes_after_done_are_a_conflict_and_change_nothing(store):
    photo_id = await store.create_photo(JOB)
    result = result_of(JOB)
    await store.store_thumbnail(photo_id, result.thumbnail, result.digest)
    other = bytes(len(result.thumbnail))
    outcome = await store.store_thumbnail(photo_id, other, hashlib.sha256(other).hexdigest())
    assert outcome is StoreOutcome.CONFLICT
    assert await store.get_thumbnail(photo_id) == (result.thumbnail, result.digest)


async def test_a_thumbnail_of_the_wrong_size_is_refused(store):
    photo_id = await store.create_photo(JOB)
    short = b"\x00" * 10
    outcome = await store.store_thumbnail(photo_id, short, hashlib.sha256(short).hexdigest())
    assert outcome is StoreOutcome.WRONG_SIZE
    assert (await store.get_photo(photo_id)).state is State.PENDING


async def test_unknown_photos(store):
    assert await store.get_photo(10**12) is None
    assert await store.get_thumbnail(10**12) is None
    assert await store.store_thumbnail(10**12, b"x", "d") is StoreOutcome.MISSING
    assert await store.fail_photo(10**12, "gone") is None


async def test_failing_a_pending_photo_and_a_later_store_still_wins(store):
    photo_id = await store.create_photo(JOB)
    failed = await store.fail_photo(photo_id, "buried after 3 attempts")
    assert failed.state is State.FAILED and failed.error == "buried after 3 attempts"
    result = result_of(JOB)  # an operator kicked the buried job and it succeeded
    assert await store.store_thumbnail(photo_id, result.thumbnail, result.digest) == "stored"
    assert (await store.get_photo(photo_id)).state is State.DONE


async def test_a_done_photo_cannot_be_failed(store):
    photo_id = await store.create_photo(JOB)
    result = result_of(JOB)
    await store.store_thumbnail(photo_id, result.thumbnail, result.digest)
    assert (await store.fail_photo(photo_id, "late failure")).state is State.DONE


async def test_the_largest_thumbnail_round_trips(store):
    big = photo.PhotoJob("big.jpg", photo.MAX_THUMB_PIXELS, photo.MAX_THUMB_PIXELS,
                         photo.MAX_THUMB_PIXELS)  # fmt: skip
    assert big.thumbnail_bytes == photo.MAX_THUMBNAIL_BYTES
    photo_id = await store.create_photo(big)
    thumbnail = bytes(range(256)) * (photo.MAX_THUMBNAIL_BYTES // 256)
    digest = hashlib.sha256(thumbnail).hexdigest()
    assert await store.store_thumbnail(photo_id, thumbnail, digest) == "stored"
    assert await store.get_thumbnail(photo_id) == (thumbnail, digest)


async def test_stuck_pending_photos_are_listed_oldest_first_and_bounded(store):
    # Creation times far in the past: photos of other tests (created now) are not listed.
    ids = [await store.create_photo(JOB, created_at=100.0 + i) for i in range(4)]
    result = result_of(JOB)
    await store.store_thumbnail(ids[1], result.thumbnail, result.digest)  # done: not stuck
    await store.fail_photo(ids[2], "buried")  # failed: not stuck either
    stuck = await store.pending_photos(created_before=103.0, limit=10)
    assert [p.id for p in stuck] == [ids[0], ids[3]]
    assert stuck[0].job == photo.PhotoJob("u1/beach.jpg", 64, 48, 8, photo=ids[0])
    assert [p.id for p in await store.pending_photos(102.5, 10)] == [ids[0]]
    assert [p.id for p in await store.pending_photos(103.0, 1)] == [ids[0]]


async def test_photos_survive_reopening_sqlite(tmp_path):
    path = str(tmp_path / "again.db")
    first = await SqliteUserStore.open(path)
    photo_id = await first.create_photo(JOB)
    result = result_of(JOB)
    await first.store_thumbnail(photo_id, result.thumbnail, result.digest)
    await first.close()
    second = await SqliteUserStore.open(path)
    try:
        assert (await second.get_photo(photo_id)).digest == result.digest
        assert await second.get_thumbnail(photo_id) == (result.thumbnail, result.digest)
    finally:
        await second.close()
