"""The capacity gate: bounded concurrency, bounded FIFO queue, cancellation-safe."""

import asyncio

import pytest

from components.common.admission import Gate


async def test_unlimited_gate_admits_everyone():
    gate = Gate(0, 0)
    assert all([await gate.acquire() for _ in range(100)])


async def test_beyond_limit_and_queue_requests_are_refused():
    gate = Gate(1, 1)
    assert await gate.acquire()
    waiter = asyncio.ensure_future(gate.acquire())
    await asyncio.sleep(0)
    assert gate.queued == 1
    assert await gate.acquire() is False  # one active, one waiting: full
    gate.release()
    assert await waiter is True
    assert gate.active == 1 and gate.queued == 0
    gate.release()
    assert gate.active == 0


async def test_waiters_are_served_in_arrival_order():
    gate = Gate(1, 10)
    await gate.acquire()
    order = []

    async def worker(n):
        await gate.acquire()
        order.append(n)
        gate.release()

    tasks = [asyncio.ensure_future(worker(n)) for n in range(5)]
    await asyncio.sleep(0)
    gate.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert gate.active == 0


async def test_a_cancelled_waiter_leaves_the_queue():
    gate = Gate(1, 1)
    await gate.acquire()
    waiter = asyncio.ensure_future(gate.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.queued == 0
    gate.release()
    assert gate.active == 0


async def test_a_waiter_cancelled_after_being_handed_the_slot_passes_it_on():
    gate = Gate(1, 2)
    await gate.acquire()
    first = asyncio.ensure_future(gate.acquire())
    second = asyncio.ensure_future(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # hands the slot to `first`, which we cancel before it runs
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second is True
    assert gate.active == 1
    gate.release()
    assert gate.active == 0


def test_capacity_flags_parse_and_refuse_bad_values():
    import argparse

    from components.common.admission import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser, unit="queries")
    args = parser.parse_args(["--service-time-ms", "2.5", "--max-concurrency", "4"])
    assert (args.service_time_ms, args.max_concurrency, args.max_queue) == (2.5, 4, 128)
    assert (args.service_mode, args.retry_after_s) == ("sleep", 1)
    for bad in (["--max-concurrency", "-1"], ["--service-time-ms", "nan"],
                ["--service-time-ms", "inf"], ["--max-queue", "x"]):  # fmt: skip
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
