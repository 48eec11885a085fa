"""The disk thread: jobs run off the loop, in order, and report back on the loop."""

import asyncio
import threading

from components.queue.diskthread import DiskThread


async def test_jobs_run_in_order_off_the_loop_and_report_on_it():
    loop = asyncio.get_running_loop()
    disk = DiskThread(loop)
    loop_thread = threading.get_ident()
    ran: list[tuple[int, int]] = []
    reported: list[tuple[int, object, object, int]] = []

    def job(i):
        ran.append((i, threading.get_ident()))
        return i * 10

    def done(i, result, error):
        reported.append((i, result, error, threading.get_ident()))

    futures = [disk.submit(job, (i,), lambda r, e, i=i: done(i, r, e)) for i in range(20)]
    await asyncio.wait_for(futures[-1], 10)  # the last one done means all are
    assert all(f.done() for f in futures)
    assert [i for i, _ in ran] == list(range(20))
    assert {tid for _, tid in ran} != {loop_thread}
    assert reported == [(i, i * 10, None, loop_thread) for i in range(20)]
    disk.close()


async def test_an_error_goes_to_done_and_the_thread_carries_on():
    loop = asyncio.get_running_loop()
    disk = DiskThread(loop)
    seen = []

    def fail():
        raise OSError(5, "Input/output error")

    first = disk.submit(fail, (), lambda r, e: seen.append(e))
    second = disk.submit(lambda: "ok", (), lambda r, e: seen.append(r))
    await asyncio.wait_for(second, 10)
    assert first.result() is None  # the future never carries the error: done has it
    assert isinstance(seen[0], OSError) and seen[1] == "ok"
    disk.close()
