"""The photo pipeline's pure parts: states and store outcomes, the job format, the
publisher's reconnect policy and its bounded waits (a fake queue client, no sockets)."""

import asyncio

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.queue.client import CommandError
from components.web.photos import (
    MAX_ERROR_CHARS,
    Photo,
    State,
    StoreOutcome,
    bounded_error,
    classify_store,
    photo_document,
    photo_from_row,
)
from components.web.publisher import JobPublisher, QueueUnavailable, Reconnect
from components.worker import photo

PENDING = Photo(7, "a.jpg", 100, 50, 10, State.PENDING)
DONE = Photo(7, "a.jpg", 100, 50, 10, State.DONE, digest="d" * 64)


# -- states and outcomes ----------------------------------------------------------------


def test_thumbnail_size_follows_the_job_and_never_upscales():
    assert PENDING.thumbnail_bytes == 10 * 10 * 3
    assert Photo(1, "b", 4, 3, 64, State.PENDING).thumbnail_bytes == 4 * 3 * 3


def test_classify_a_store_that_changed_no_row():
    size = PENDING.thumbnail_bytes
    assert classify_store(None, "x", size) is StoreOutcome.MISSING
    assert classify_store(DONE, "d" * 64, size) is StoreOutcome.UNCHANGED
    assert classify_store(DONE, "e" * 64, size) is StoreOutcome.CONFLICT
    assert classify_store(DONE, "d" * 64, size - 1) is StoreOutcome.WRONG_SIZE
    assert classify_store(PENDING, "d" * 64, size + 3) is StoreOutcome.WRONG_SIZE


def test_document_shows_the_result_only_once_done():
    assert photo_document(PENDING) == {"id": 7, "image": "a.jpg", "width": 100, "height": 50,
                                       "thumb": 10, "state": "pending"}  # fmt: skip
    done = photo_document(DONE)
    assert done["digest"] == "d" * 64 and done["thumbnail"] == "/photos/7/thumbnail"
    assert done["thumbnailBytes"] == 300
    failed = photo_document(Photo(7, "a.jpg", 100, 50, 10, State.FAILED, error="buried"))
    assert failed["state"] == "failed" and failed["error"] == "buried"
    assert orjson.dumps(photo_document(DONE)) == orjson.dumps(done)  # stable field order


def test_rows_become_photos_and_unknown_states_are_refused():
    assert photo_from_row((7, "a.jpg", 100, 50, 10, "pending", None, None)) == PENDING
    with pytest.raises(ValueError):
        photo_from_row((7, "a.jpg", 100, 50, 10, "lost", None, None))


def test_errors_are_bounded():
    assert len(bounded_error("x" * 10_000)) == MAX_ERROR_CHARS


# -- the job format the web tier publishes ----------------------------------------------


def test_published_job_round_trips_through_the_worker_parser():
    job = photo.PhotoJob("u/p.jpg", 300, 200, 16, photo=41)
    body = photo.encode_job(job)
    assert body == b'{"image":"u/p.jpg","width":300,"height":200,"thumb":16,"photo":41}'
    assert photo.parse_job(body) == job
    assert photo.process(body).photo == 41


def test_a_failing_job_is_a_valid_document_that_fails_when_processed():
    job = photo.job_from_doc({"image": "p.jpg", "fail": True})
    assert job.fail and photo.photo_id_of(photo.encode_job(job)) is None
    with pytest.raises(photo.BadJob):
        photo.parse_job(photo.encode_job(job))


@pytest.mark.parametrize("doc", [{"image": "p", "photo": 0}, {"image": "p", "photo": "3"},
                                 {"image": "p", "photo": True}, {"image": "p", "photo": 2**63}])  # fmt: skip
def test_bad_photo_ids_are_refused(doc):
    with pytest.raises(photo.BadJob):
        photo.job_from_doc(doc)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=300),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=6), max_leaves=20))  # fmt: skip
def test_any_document_is_a_valid_job_or_bad_job(doc):
    try:
        job = photo.job_from_doc(doc)
    except photo.BadJob as exc:
        assert len(str(exc)) <= 300  # an echoed bad name is bounded
        return
    assert job.thumbnail_bytes <= photo.MAX_THUMBNAIL_BYTES
    assert photo.job_from_doc(orjson.loads(photo.encode_job(job))) == job


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_fail_cleanly(body):
    try:
        job = photo.parse_job(body)
    except photo.BadJob:
        assert photo.photo_id_of(body) is None or photo.photo_id_of(body) >= 1
        return
    assert photo.photo_id_of(body) == job.photo


# -- the publisher ----------------------------------------------------------------------


def test_reconnect_backs_off_exponentially_up_to_a_cap():
    policy = Reconnect(min_s=0.1, max_s=0.5, rng=None)  # no jitter: exact pauses
    assert policy.may_try(0.0)
    waits = []
    for _ in range(5):
        policy.failed(10.0)
        waits.append(round(policy.not_before - 10.0, 3))
    assert waits == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert not policy.may_try(10.4) and policy.may_try(10.5)
    policy.succeeded()
    assert policy.may_try(0.0) and policy.delay_s == 0


class FakeClient:
    """A queue connection whose puts answer as the test says."""

    def __init__(self, answer):
        self.answer = answer
        self.connected = True
        self.puts = []
        self.used = []

    async def use(self, tube):
        self.used.append(tube)

    async def put(self, body, pri, delay, ttr):
        self.puts.append((body, pri, delay, ttr))
        if isinstance(self.answer, BaseException):
            raise self.answer
        if self.answer == "hang":
            await asyncio.Event().wait()
        return self.answer

    def close(self):
        self.connected = False


class FakeConnector:
    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self, host, port, timeout_s):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


async def test_publish_uses_one_connection_and_the_tube():
    client = FakeClient(5)
    connect = FakeConnector(client)
    publisher = JobPublisher("h", 1, "photos", ttr_s=30, connect=connect)
    assert await publisher.publish(b"a") == 5
    assert await publisher.publish(b"b") == 5
    assert connect.calls == 1 and client.used == ["photos"]
    assert client.puts == [(b"a", 1024, 0, 30), (b"b", 1024, 0, 30)]


async def test_a_queue_down_fails_fast_until_the_backoff_has_passed():
    clock = Clock()
    client = FakeClient(9)
    connect = FakeConnector(ConnectionRefusedError(), client)
    publisher = JobPublisher("h", 1, "photos", clock=clock, connect=connect)
    with pytest.raises(QueueUnavailable):
        await publisher.publish(b"a")
    with pytest.raises(QueueUnavailable, match="waiting to reconnect"):
        await publisher.publish(b"a")  # no second connection attempt yet
    assert connect.calls == 1
    clock.now += 1
    assert await publisher.publish(b"a") == 9
    assert connect.calls == 2 and publisher.reconnect.delay_s == 0


async def test_a_silent_queue_costs_one_timeout_then_a_new_connection():
    clock = Clock()
    hung, fresh = FakeClient("hang"), FakeClient(3)
    publisher = JobPublisher("h", 1, "photos", timeout_s=0.05, clock=clock,
                             connect=FakeConnector(hung, fresh))  # fmt: skip
    with pytest.raises(QueueUnavailable, match="did not acknowledge"):
        await publisher.publish(b"a")
    assert not hung.connected and not publisher.connected
    clock.now += 1
    assert await publisher.publish(b"a") == 3


async def test_a_connection_lost_mid_put_is_unavailable_and_reconnects_later():
    clock = Clock()
    lost, fresh = FakeClient(ConnectionError("queue connection lost")), FakeClient(4)
    publisher = JobPublisher("h", 1, "photos", clock=clock, connect=FakeConnector(lost, fresh))
    with pytest.raises(QueueUnavailable, match="did not acknowledge"):
        await publisher.publish(b"a")
    assert not publisher.connected
    with pytest.raises(QueueUnavailable, match="waiting to reconnect"):
        await publisher.publish(b"a")
    clock.now += 1
    assert await publisher.publish(b"a") == 4


async def test_a_refusal_keeps_the_connection():
    client = FakeClient(CommandError("DRAINING"))
    publisher = JobPublisher("h", 1, "photos", connect=FakeConnector(client))
    with pytest.raises(QueueUnavailable, match="DRAINING"):
        await publisher.publish(b"a")
    assert client.connected and publisher.connected


async def test_concurrent_publishers_share_one_connection_attempt():
    gate = asyncio.Event()
    client = FakeClient(1)

    async def slow_connect(host, port, timeout_s):
        slow_connect.calls += 1
        await gate.wait()
        return client

    slow_connect.calls = 0
    publisher = JobPublisher("h", 1, "photos", connect=slow_connect)
    tasks = [asyncio.ensure_future(publisher.publish(b"%d" % i)) for i in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == [1] * 5
    assert slow_connect.calls == 1
