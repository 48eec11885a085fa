"""The syncer helper process: a real fdatasync per request, and every way it can fail.

The unit tests drive ``Syncer`` on this test's own loop with a real helper process; the
server tests kill a real server's helper (or the server) and check what clients see.
"""

import asyncio
import errno
import os
import signal
import socket
import threading

import greenstalk
import pytest

import harness
from components.queue import syncer
from components.queue.syncer import Syncer, SyncerLost


class Lost:
    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def __call__(self, error: BaseException) -> None:
        self.errors.append(error)


async def sync(s: Syncer, fd: int, key: object, token: int, timeout: float = 10.0):
    """One sync, awaited; returns the error done() got (None: durable)."""
    loop = asyncio.get_running_loop()
    result = loop.create_future()
    s.sync(fd, key, token, lambda _r, error: result.set_result(error))
    async with asyncio.timeout(timeout):
        return await result


def helper_fds(pid: int) -> set[str]:
    """The files the helper holds open (targets of /proc/<pid>/fd)."""
    found = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.add(os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:
            continue
    return found


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


@pytest.fixture
async def helper():
    lost = Lost()
    s = Syncer(asyncio.get_running_loop(), lost)
    yield s, lost
    s.close()


async def test_syncs_and_follows_the_segment_when_its_key_changes(helper, tmp_path):
    s, lost = helper
    first, second = tmp_path / "binlog.1", tmp_path / "binlog.2"
    fd1 = os.open(first, os.O_RDWR | os.O_CREAT, 0o644)
    fd2 = os.open(second, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd1, b"record")
        assert await sync(s, fd1, (1, fd1), 1) is None
        assert await sync(s, fd1, (1, fd1), 2) is None
        assert str(first) in helper_fds(s.process.pid)
        assert await sync(s, fd2, (2, fd2), 3) is None
        held = helper_fds(s.process.pid)
        assert str(second) in held and str(first) not in held, "old segment not closed"
    finally:
        os.close(fd1)
        os.close(fd2)
    assert lost.errors == []


async def test_a_failed_fdatasync_fails_that_sync_and_every_later_one(helper):
    s, _lost = helper
    read_end, write_end = os.pipe()  # fdatasync on a pipe: EINVAL, a real failure
    try:
        error = await sync(s, write_end, "pipe", 7)
        assert isinstance(error, OSError) and error.errno == errno.EINVAL
        later = await sync(s, write_end, "pipe", 8)
        assert later is error, "a syncer that failed once must not report success again"
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_a_helper_killed_mid_sync_fails_the_waiting_sync(helper, tmp_path):
    s, lost = helper
    fd = os.open(tmp_path / "segment", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.kill(s.process.pid, signal.SIGSTOP)  # the request waits in its socket
        loop = asyncio.get_running_loop()
        result = loop.create_future()
        s.sync(fd, 1, 1, lambda _r, error: result.set_result(error))
        os.kill(s.process.pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            error = await result
    finally:
        os.close(fd)
    assert isinstance(error, SyncerLost)
    assert lost.errors == [], "the waiting sync carried the error; nothing else to tell"


async def test_an_idle_helper_that_dies_is_reported_at_once(helper):
    s, lost = helper
    os.kill(s.process.pid, signal.SIGKILL)
    await harness.wait_until(lambda: lost.errors)
    assert isinstance(lost.errors[0], SyncerLost)
    assert isinstance(await sync(s, 0, 1, 1), SyncerLost)


async def test_close_ends_the_helper(helper):
    s, lost = helper
    s.close()
    assert s.process.returncode == 0, "the helper exits on EOF, it is not killed"
    assert lost.errors == []


def test_the_helper_loop_exits_on_eof_and_on_a_malformed_request():
    for message in (None, b"short"):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        worker = threading.Thread(target=syncer.serve, args=(theirs,))
        worker.start()
        if message is None:
            ours.close()
        else:
            ours.send(message)
        worker.join(10)
        assert not worker.is_alive()
        theirs.close()
        if message is not None:
            ours.close()


# -- against a real server --------------------------------------------------------------


def test_a_dead_helper_means_internal_error_not_a_hang(spawn, tmp_path):
    queue = spawn("queue", "-b", str(tmp_path), "-f", "0")
    with greenstalk.Client(queue.address()) as c:
        c.put("before")
        (helper_pid,) = children(queue.pid)
        os.kill(helper_pid, signal.SIGKILL)
        harness.wait_until_sync(lambda: harness.http("GET", queue.url("admin") + "/health")[0]
                                == 503)  # fmt: skip
    with greenstalk.Client(queue.address()) as c, pytest.raises(greenstalk.InternalError):
        c.put("after")


def test_kill_9_of_the_server_kills_its_helper(spawn, tmp_path):
    queue = spawn("queue", "-b", str(tmp_path), "-f", "0")
    (helper_pid,) = children(queue.pid)
    os.kill(queue.pid, signal.SIGKILL)
    harness.wait_until_sync(lambda: gone(helper_pid))


def test_the_helper_outlives_a_sigterm_so_a_draining_server_can_still_commit(spawn, tmp_path):
    # A SIGTERM (or Ctrl-C) sent to the whole process group reaches the helper too; the
    # server drains on it and still needs its group commits, so the helper ignores it.
    queue = spawn("queue", "-b", str(tmp_path), "-f", "0")
    (helper_pid,) = children(queue.pid)
    os.kill(helper_pid, signal.SIGTERM)
    os.kill(helper_pid, signal.SIGINT)
    with greenstalk.Client(queue.address()) as c:
        assert c.put("still durable") == 1
    assert not gone(helper_pid)
