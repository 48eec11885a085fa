"""The disk thread: batches written in order off the loop, one fsync per group, reports
on the loop, and nothing more after a failure."""

import asyncio
import threading

from components.queue.binlog import Batch, Binlog, Recovered, replay
from components.queue.broker import Broker
from components.queue.diskthread import DiskThread


class Recorder:
    """A binlog stand-in that records what the thread asks of it, and in which thread."""

    def __init__(self, dsync: bool = False) -> None:
        self.dsync = dsync
        self.calls: list[tuple] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on: str | None = None

    def write_batch(self, batch: Batch, fsync: bool) -> None:
        self.gate.wait(10)
        if self.fail_on == "write":
            raise OSError(5, "Input/output error")
        self.calls.append(("write", batch.data, batch.seq, threading.get_ident()))

    def sync(self) -> None:
        if self.fail_on == "sync":
            raise OSError(5, "Input/output error")
        self.calls.append(("sync",))


def batch(seq: int) -> Batch:
    return Batch(b"r%d;" % seq, seq, 1)


def start(log) -> tuple[DiskThread, list]:
    """A disk thread over ``log`` whose reports land in the returned list."""
    reports: list = []
    return DiskThread(asyncio.get_running_loop(), log, lambda *r: reports.append(r), 0), reports


async def reports_until(reports, predicate, timeout=10.0):
    async with asyncio.timeout(timeout):
        while not predicate(reports):
            await asyncio.sleep(0.001)


async def test_batches_are_written_off_the_loop_in_order_and_reported_on_it():
    loop = asyncio.get_running_loop()
    log = Recorder()
    reports = []
    disk = DiskThread(loop, log, lambda *r: reports.append((*r, threading.get_ident())), 0)
    for seq in range(1, 21):
        disk.write(batch(seq), sync=True)
    await reports_until(reports, lambda r: r and r[-1][0] == 20)
    written = b"".join(call[1] for call in log.calls if call[0] == "write")
    assert written == b"".join(b"r%d;" % seq for seq in range(1, 21))
    assert {call[3] for call in log.calls if call[0] == "write"} != {threading.get_ident()}
    assert all(r[2] is None and r[3] == threading.get_ident() for r in reports)
    assert [r[0] for r in reports] == sorted(r[0] for r in reports)  # durable only grows
    disk.close()


async def test_what_is_handed_over_during_a_write_shares_one_write_and_one_fsync():
    log = Recorder()
    disk, reports = start(log)
    log.gate.clear()  # the first write blocks, as a slow disk does
    disk.write(batch(1), sync=True)
    for seq in range(2, 9):  # arrive while it is blocked
        disk.write(batch(seq), sync=True)
    log.gate.set()
    await reports_until(reports, lambda r: r and r[-1][0] == 8)
    writes = [call[1] for call in log.calls if call[0] == "write"]
    assert len(writes) <= 2 and writes[-1].endswith(b"r8;")  # the seven went as one write
    assert len(reports) == len(log.calls) // 2 == len(writes)  # one fsync each
    disk.close()


async def test_with_o_dsync_the_write_is_the_fsync():
    log = Recorder(dsync=True)
    disk, reports = start(log)
    disk.write(batch(1), sync=True)
    await reports_until(reports, lambda r: r)
    assert [call[0] for call in log.calls] == ["write"] and reports[0][0] == 1
    disk.close()


async def test_a_failure_is_reported_once_and_nothing_is_written_after_it():
    log = Recorder()
    disk, reports = start(log)
    log.fail_on = "sync"
    disk.write(batch(1), sync=True)
    await reports_until(reports, lambda r: r)
    log.fail_on = None
    disk.write(batch(2), sync=True)  # the thread has stopped: never written, never acked
    disk.close()
    await asyncio.sleep(0.01)
    ((seq, _, error),) = reports
    assert seq == 0 and isinstance(error, OSError)
    assert [call[2] for call in log.calls if call[0] == "write"] == [1]


async def test_close_finishes_what_was_handed_over(tmp_path):
    loop = asyncio.get_running_loop()
    broker = Broker()
    log = Binlog(str(tmp_path), dsync=True)
    log.open(broker)
    disk = DiskThread(loop, log, lambda *r: None, log.written_seq)
    session = broker.connect()
    for i in range(5):
        broker.put(session, session.use, 0, 0, 60, b"job%d" % i, 0.0)
        taken = log.take_batch()
        log.complete(taken)
        disk.write(taken, sync=True)
    disk.close()
    (name,) = log.segment_files()
    recovered = Recovered()
    replay((tmp_path / name).read_bytes(), recovered)
    assert [job[4] for job in recovered.jobs.values()] == [b"job%d" % i for i in range(5)]
    log.close()
