"""Group commit inside one server process: what one poll's worth of puts costs the disk.

The server runs in this process with fake transports, so a test can hand it the reads
of one event-loop iteration and then count file writes and fsyncs exactly.
"""

import asyncio

import pytest

from components.common.runner import Runtime, parse_args
from components.queue.server import QueueConnection, QueueService

PUT = b"put 0 0 60 3\r\nabc\r\n"


class FakeTransport:
    def __init__(self) -> None:
        self.sent = b""
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.sent += data

    def get_extra_info(self, name, default=None):
        return default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None:
        self.aborted = True


@pytest.fixture
async def service(tmp_path):
    args = parse_args(QueueService, ["--port", "0", "--admin-port", "0", "--log-level", "warning",
                                     "-b", str(tmp_path), "-f", "0"])  # fmt: skip
    service = QueueService(args, Runtime(args, "queue"))
    await service.start()
    yield service
    await service.stop()


def connect(service, n):
    conns = []
    for _ in range(n):
        conn = QueueConnection(service)
        conn.connection_made(FakeTransport())
        conns.append(conn)
    return conns


async def wait_for_replies(conns, count, timeout=10.0):
    async with asyncio.timeout(timeout):
        while any(c.transport.sent.count(b"\r\n") < count for c in conns):
            await asyncio.sleep(0.001)


async def test_the_puts_read_in_one_poll_share_one_write_and_one_fsync(service, monkeypatch):
    binlog = service.binlog
    writes = []
    real_write = binlog.write_batch
    monkeypatch.setattr(binlog, "write_batch", lambda batch, fsync: (
        writes.append(batch.records), real_write(batch, fsync))[1])  # fmt: skip
    conns = connect(service, 64)
    for conn in conns:  # as the loop delivers 64 readable sockets from one epoll_wait
        conn.data_received(PUT)
    assert not writes, "nothing is written before the poll's reads are all in"
    assert all(c.transport.sent == b"" for c in conns), "no INSERTED before the fsync"
    await wait_for_replies(conns, 1)
    assert writes == [64]
    assert service.fsyncs.get() == 1
    assert [c.transport.sent for c in conns] == [b"INSERTED %d\r\n" % (i + 1) for i in range(64)]


async def test_puts_that_arrive_during_an_fsync_share_the_next_one(service):
    conns = connect(service, 8)
    conns[0].data_received(PUT)
    await asyncio.sleep(0)  # the first commit starts: its fsync is now in flight
    assert service._fsyncs_in_flight == 1
    for conn in conns[1:]:
        conn.data_received(PUT)
    await wait_for_replies(conns, 1)
    assert service.fsyncs.get() == 2  # one for the first put, one for the seven behind it


async def test_a_failed_fsync_acknowledges_nothing_and_cuts_the_waiting_clients(
    service, monkeypatch
):
    def disk_gone():
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(service.binlog, "sync", disk_gone)
    conns = connect(service, 4)
    for conn in conns:
        conn.data_received(PUT)
    async with asyncio.timeout(10):
        while not all(c.transport.aborted for c in conns):
            await asyncio.sleep(0.001)
    assert all(c.transport.sent == b"" for c in conns), "INSERTED for a job not on disk"
    assert service.health() == (False, "binlog write failed")
    late = connect(service, 1)[0]
    late.data_received(PUT)  # after the failure: refused at once, not left hanging
    assert late.transport.sent == b"INTERNAL_ERROR\r\n"
    late.data_received(b"delete 1\r\n")  # a change that could never be made durable
    assert late.transport.aborted
