"""The asyncio client against a real queue: pipelining, errors, a dying server."""

import asyncio

import pytest

from components.queue.client import CommandError, DeadlineSoon, QueueClient


@pytest.fixture
def queue(spawn):
    return spawn("queue")


async def test_put_reserve_delete_and_stats(queue):
    client = await QueueClient.connect(*queue.address())
    await client.use("photos")
    assert await client.watch("photos") == 2
    assert await client.ignore("default") == 1
    job_id = await client.put(b"body\r\nwith crlf", pri=3, ttr=30)
    assert await client.reserve(0) == (job_id, b"body\r\nwith crlf")
    stats = await client.stats_job(job_id)
    assert stats["state"] == "reserved" and stats["pri"] == "3" and stats["tube"] == "photos"
    await client.delete(job_id)
    assert await client.reserve(0) is None
    assert (await client.stats_tube("photos"))["cmd-delete"] == "1"
    client.close()


async def test_pipelined_calls_get_their_own_replies(queue):
    client = await QueueClient.connect(*queue.address())
    ids = await asyncio.gather(*(client.put(b"%d" % i) for i in range(50)))
    assert ids == sorted(ids) and len(set(ids)) == 50
    bodies = await asyncio.gather(*(client.reserve(0) for _ in range(50)))
    assert [body for _, body in bodies] == [b"%d" % i for i in range(50)]
    client.close()


async def test_errors_carry_the_beanstalkd_word(queue):
    client = await QueueClient.connect(*queue.address())
    with pytest.raises(CommandError) as error:
        await client.delete(12345)
    assert error.value.word == "NOT_FOUND"
    with pytest.raises(CommandError) as error:
        await client.put(b"x" * 70_000)
    assert error.value.word == "JOB_TOO_BIG"
    client.close()


async def test_deadline_soon_is_its_own_error(queue):
    client = await QueueClient.connect(*queue.address())
    await client.put(b"x", ttr=1)  # a TTR of 1 s is all safety margin
    await client.reserve(0)
    with pytest.raises(DeadlineSoon):
        await client.reserve(5)
    client.close()


async def test_a_dying_server_fails_every_waiting_call(queue):
    client = await QueueClient.connect(*queue.address())
    waiting = asyncio.ensure_future(client.reserve())
    await asyncio.sleep(0)  # the request is written
    queue.kill()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(waiting, 10)
    assert not client.connected
    with pytest.raises(ConnectionError):
        await client.put(b"x")
