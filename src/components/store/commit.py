"""Group commit: many concurrent write batches, one fsync, then applied in LSN order.

A durable write costs one fsync, and an fsync costs the same whether it covers one batch
or a hundred. So writes are not committed one by one: they queue here, and the commit
thread drains the queue, one *group* at a time:

1. take *every* batch that is waiting (up to ``MAX_GROUP``), give each the next LSN,
   append them to the redo log with one ``write`` and make them durable with one
   ``fsync``. While that fsync runs, new batches pile up for the next group: the busier
   the store, the bigger the groups, the fewer fsyncs per write. This is the classic
   group commit of database logs (Gray & Reuter; PostgreSQL's ``commit_delay`` is a
   cruder cousin; we never sleep to wait for company);
2. apply the durable group to SQLite in LSN order, in one SQLite transaction
   (``apply_group``: one commit for the whole group), on the same thread, right after
   the fsync;
3. back on the event loop, answer each client with its results (``enqueue`` gives the
   future, so the HTTP front answers from a done-callback, without a task per write).

Why one thread for both, not a log thread and a SQLite thread overlapping the fsync of
group N+1 with the apply of group N: on this machine the whole store runs on one core,
and each hop to a thread and back costs about 40 µs of the event loop's CPU (waking a
thread, the GIL, waking the loop). Two hops per group made one client at a time pay
~170 µs of loop CPU per write; one hop halves that, and at 64 clients the apply (a few
µs per write) is still far shorter than the loop's own work for the same group, so the
overlap bought nothing. The thread is also the one that reads the log for replication,
compacts it and checkpoints SQLite, so those never race an append or an apply.

``flush`` waits until every submitted write has been *answered*, not only applied, so
``close`` never stops the stage with a client still waiting.

Replicas use the same pipeline for records that arrive from the primary
(``submit_records``): they already have LSNs and epochs, but a replica also logs and
fsyncs before applying, so its acknowledgement to the primary means "durable here".

If the log cannot be written (disk full, I/O error), or SQLite fails to apply a durable
group, the store cannot promise anything any more: pending writes fail and ``broken`` is
set, which turns ``/health`` red.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from .database import Database, Result
from .wal import Batch, Record, RedoLog, decode_batch, encode_batch, encode_record

#: Batches per fsync at most (bounds one group's memory and its apply time).
MAX_GROUP = 512
#: Batches waiting for the log at most; beyond this a write is refused (503), not queued.
MAX_PENDING = 10_000


class Overloaded(Exception):
    """Too many writes waiting: answered 503 so the client backs off."""


class CommitFailed(Exception):
    """The log or the database failed underneath a write; the node is broken."""


class _LogFailed(Exception):
    """The append or the fsync failed (the cause is chained): nothing was applied."""


@dataclass(slots=True)
class _Entry:
    batch: Batch
    future: asyncio.Future
    epoch: int = 0
    lsn: int = 0
    frame: bytes = b""


class GroupCommitter:
    def __init__(
        self,
        log: RedoLog,
        db: Database,
        executor: Executor,
        on_group: Callable[[int, int], None] | None = None,
        on_applied: Callable[[int], None] | None = None,
    ) -> None:
        self.log = log
        self.db = db
        #: The one thread that writes the log and SQLite (see above).
        self._executor = executor
        self._pending: deque[_Entry] = deque()
        self._in_flight = False  # a group is on the commit thread
        self._kick_scheduled = False
        #: called with (group size, last durable lsn) after each group
        self._on_group = on_group or (lambda size, lsn: None)
        #: called with the last applied lsn after each applied group
        self._on_applied = on_applied or (lambda lsn: None)
        self.next_lsn = max(log.last_lsn, db.applied_lsn) + 1
        #: The last LSN whose submitter has been given its result (after it was applied).
        self.answered_lsn = self.next_lsn - 1
        self.broken: str | None = None
        self._closed = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    @property
    def depth(self) -> int:
        return len(self._pending)

    async def submit(self, batch: Batch, epoch: int) -> tuple[int, list[Result]]:
        """Log, fsync and apply one batch as primary; returns (lsn, results)."""
        return await self.enqueue(batch, epoch)

    def enqueue(self, batch: Batch, epoch: int) -> asyncio.Future:
        """``submit`` without the coroutine: the future of ``(lsn, results)``, for a
        caller that answers from a done-callback instead of a task of its own. Raises
        ``CommitFailed``/``Overloaded`` at once, as ``submit`` does."""
        if self.broken:
            raise CommitFailed(self.broken)
        if self._closed:  # the stages are stopping: nothing would ever answer this write
            raise Overloaded("the store is shutting down")
        if len(self._pending) >= MAX_PENDING:
            raise Overloaded(f"{MAX_PENDING} writes already waiting")
        future = self._loop.create_future()
        self._pending.append(_Entry(batch, future, epoch))
        self._schedule_kick()
        return future

    async def submit_records(self, records: list[Record]) -> None:
        """Log, fsync and apply records received from the primary (a replica's path)."""
        if self.broken:
            raise CommitFailed(self.broken)
        futures = []
        for record in records:
            if record.lsn != self.next_lsn:
                raise ValueError(f"record lsn {record.lsn}, expected {self.next_lsn}")
            batch = decode_batch(record.payload)  # raises LogCorrupt before anything queues
            future = asyncio.get_running_loop().create_future()
            entry = _Entry(batch, future, record.epoch, record.lsn)
            entry.frame = encode_record(record.epoch, record.lsn, record.payload)
            self._pending.append(entry)
            self.next_lsn += 1
            futures.append(future)
        self._schedule_kick()
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def flush(self) -> None:
        """Wait until everything submitted so far is durable, applied and answered (its
        future resolved: ``close`` may then stop the stages without orphaning one)."""
        while (self._pending or self.answered_lsn < self.next_lsn - 1) and not self.broken:
            await asyncio.sleep(0.002)

    async def close(self) -> None:
        """Refuse new writes and finish what is queued (idempotent)."""
        self._closed = True
        await self.flush()

    # The stage is two callbacks, not a task: ``_kick`` sends the next group to the commit
    # thread, ``_committed`` runs on the loop when it is back. At one client a task, an
    # Event and ``run_in_executor`` cost several loop iterations per write; these cost one.

    def _schedule_kick(self) -> None:
        """Kick on the next loop iteration, so the writes of one read burst share a group."""
        if not (self._in_flight or self._kick_scheduled):
            self._kick_scheduled = True
            self._loop.call_soon(self._kick)

    def _kick(self) -> None:
        self._kick_scheduled = False
        if self._in_flight or not self._pending or self.broken:
            return
        group: list[_Entry] = []
        while self._pending and len(group) < MAX_GROUP:
            entry = self._pending.popleft()
            if not entry.frame:  # a primary write: number and frame it now
                entry.lsn = self.next_lsn
                self.next_lsn += 1
                entry.frame = encode_record(entry.epoch, entry.lsn, encode_batch(entry.batch))
            group.append(entry)
        self._in_flight = True
        done = self._executor.submit(self._commit, group)
        loop = self._loop
        done.add_done_callback(lambda f: loop.call_soon_threadsafe(self._committed, group, f))

    def _committed(self, group: list[_Entry], done) -> None:
        self._in_flight = False
        error = done.exception()
        if error is not None:
            if isinstance(error, _LogFailed):
                self._break(f"redo log write failed: {error.__cause__}", group)
            else:
                self._break(f"applying to SQLite failed: {error}", group)
            return
        self._kick()  # the writes that queued meanwhile go to the thread before we answer
        last = group[-1].lsn
        self._on_group(len(group), last)
        self._on_applied(last)
        for entry, results in zip(group, done.result(), strict=True):
            if not entry.future.done():
                entry.future.set_result((entry.lsn, results))
        self.answered_lsn = last

    def _commit(self, group: list[_Entry]) -> list[list[Result]]:
        """On the commit thread: append, fsync, apply."""
        try:
            self.log.append([(e.epoch, e.lsn, e.frame) for e in group])
            self.log.sync()
        except Exception as exc:
            raise _LogFailed() from exc
        return self.db.apply_group([(e.lsn, e.epoch, e.batch) for e in group])

    def _break(self, reason: str, group: list[_Entry]) -> None:
        self.broken = reason
        error = CommitFailed(reason)
        for entry in [*group, *self._pending]:
            if not entry.future.done():
                entry.future.set_exception(error)
        self._pending.clear()
