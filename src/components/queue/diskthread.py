"""The binlog's disk thread: one long-lived thread that runs fsyncs and snapshots in order.

A group commit's ``fdatasync`` blocks for as long as the disk takes (100 µs to several
ms here), so it cannot run on the event loop; the loop keeps parsing and inserting the
next puts meanwhile. asyncio's ``run_in_executor`` would do, but every call goes through
``concurrent.futures``: a work item, a concurrent future chained to an asyncio future,
a thread-count check, and two loop hops back (the copied state, then the done
callbacks). Measured on this machine with the loop and thread on one CPU, a round trip
costs about 30-55 µs of CPU that way and about 23 µs with this class, which posts the
job on a ``SimpleQueue`` and calls the caller's ``done`` straight from the one
``call_soon_threadsafe`` that wakes the loop. At one fsync per few dozen puts that is a
few percent of a durable put's cost.

One thread, not a pool, on purpose: the server runs one fsync at a time (an fsync
covers every byte written before it began, so records that arrive during one share the
next), and a snapshot must run alone (it swaps the file under the fsyncs). A single
thread makes that order structural instead of something to keep track of.

A thread, not a helper process, measured: a "syncer" process running the group
commit's ``fdatasync`` (own GIL, the segment's fd passed over a socketpair; commits
c5f5808 and 972a6d7, reverted) halved the loop's involuntary context switches but left
durable puts/s and CPU per put (server + helper) where they were: this thread's CPU is
~90% the ``fdatasync``'s own kernel time, and its GIL-holding part ~0.3 µs a put. See
the notes in bench/queue/side_by_side.py.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

Done = Callable[[Any, BaseException | None], None]


class DiskThread:
    """Run blocking calls one at a time off the loop; report each back on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str = "binlog-disk") -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], args: tuple, done: Done) -> asyncio.Future:
        """Run ``fn(*args)`` on the thread, then ``done(result, error)`` on the loop.

        The returned future resolves (to None) once ``done`` has run: something to
        ``await`` for whoever must wait for the disk (drain, stop); it never carries
        the error, which is ``done``'s to handle.
        """
        future = self._loop.create_future()
        self._jobs.put((fn, args, done, future))
        return future

    def close(self) -> None:
        """Let queued jobs finish, then end the thread (callbacks of late jobs are dropped)."""
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, done, future = job
            result = error = None
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the loop: the disk failed
                error = exc
            try:
                self._loop.call_soon_threadsafe(_finish, done, future, result, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return


def _finish(done: Done, future: asyncio.Future, result: Any, error: BaseException | None):
    try:
        done(result, error)
    finally:
        if not future.done():
            future.set_result(None)
