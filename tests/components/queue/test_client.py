"""The asyncio client against a real queue: pipelining, errors, a dying server."""

import asyncio
import itertools

import pytest

import harness
from components.queue.client import CommandError, DeadlineSoon, QueueClient

_tubes = itertools.count()


@pytest.fixture(scope="module")
def queue():
    """One server for the module; each test works in a tube of its own."""
    proc = harness.start("queue")
    yield proc
    proc.stop(timeout_s=5)


async def connect(queue) -> QueueClient:
    client = await QueueClient.connect(*queue.address())
    tube = f"c{next(_tubes)}"
    await client.use(tube)
    await client.watch(tube)
    await client.ignore("default")
    return client


async def test_put_reserve_delete_and_stats(queue):
    client = await QueueClient.connect(*queue.address())
    await client.use("photos")
    assert await client.watch("photos") == 2
    assert await client.ignore("default") == 1
    assert (await client.stats_tube("photos"))["cmd-delete"] == "0"
    job_id = await client.put(b"body\r\nwith crlf", pri=3, ttr=30)
    assert await client.reserve(0) == (job_id, b"body\r\nwith crlf")
    stats = await client.stats_job(job_id)
    assert stats["state"] == "reserved" and stats["pri"] == "3" and stats["tube"] == "photos"
    await client.delete(job_id)
    assert await client.reserve(0) is None
    assert (await client.stats_tube("photos"))["cmd-delete"] == "1"
    client.close()


async def test_pipelined_calls_get_their_own_replies(queue):
    client = await connect(queue)
    ids = await asyncio.gather(*(client.put(b"%d" % i) for i in range(50)))
    assert ids == sorted(ids) and len(set(ids)) == 50
    bodies = await asyncio.gather(*(client.reserve(0) for _ in range(50)))
    assert [body for _, body in bodies] == [b"%d" % i for i in range(50)]
    client.close()


async def test_errors_carry_the_beanstalkd_word(queue):
    client = await connect(queue)
    with pytest.raises(CommandError) as error:
        await client.delete(12345)
    assert error.value.word == "NOT_FOUND"
    with pytest.raises(CommandError) as error:
        await client.put(b"x" * 70_000)
    assert error.value.word == "JOB_TOO_BIG"
    client.close()


async def test_deadline_soon_is_its_own_error(queue):
    client = await connect(queue)
    await client.put(b"x", ttr=1)  # a TTR of 1 s is all safety margin
    await client.reserve(0)
    with pytest.raises(DeadlineSoon):
        await client.reserve(5)
    client.close()


async def test_a_dying_server_fails_every_waiting_call(spawn):
    queue = spawn("queue")
    client = await QueueClient.connect(*queue.address())
    waiting = asyncio.ensure_future(client.reserve())
    await asyncio.sleep(0)  # the request is written
    queue.kill()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(waiting, 10)
    assert not client.connected
    with pytest.raises(ConnectionError):
        await client.put(b"x")
