"""Group commit: many concurrent write batches, one fsync, then applied in LSN order.

A durable write costs one fsync, and an fsync costs the same whether it covers one batch
or a hundred. So writes are not committed one by one: they queue here, and a two-stage
pipeline drains the queue:

1. **log stage** (on the log thread): take *every* batch that is waiting (up to
   ``MAX_GROUP``), give each the next LSN, append them to the redo log with one
   ``write`` and make them durable with one ``fsync``. While that fsync runs, new batches
   pile up for the next group: the busier the store, the bigger the groups, the fewer
   fsyncs per write. This is the classic group commit of database logs (Gray & Reuter;
   PostgreSQL's ``commit_delay`` is a cruder cousin; we never sleep to wait for company).
2. **apply stage** (on the SQLite thread): apply the durable group to SQLite in LSN
   order, in one SQLite transaction (``apply_group``: one commit for the whole group),
   and only then answer each client with its results (``enqueue`` gives the future, so
   the HTTP front answers from a done-callback, without a task per write). Applying
   group N overlaps the fsync of group N+1.

What a group costs beyond its writes: two hops to a thread and back (about 40 µs of the
event loop's CPU each on one core), which is why one client at a time is slow and 64
are fast. ``flush`` waits until every submitted write has been *answered*, not only
applied, so ``close`` never stops the stages with a client still waiting.

Replicas use the same pipeline for records that arrive from the primary
(``submit_records``): they already have LSNs and epochs, but a replica also logs and
fsyncs before applying, so its acknowledgement to the primary means "durable here".

If the log cannot be written (disk full, I/O error) the store cannot promise anything any
more: pending writes fail and ``broken`` is set, which turns ``/health`` red.
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
        log_executor: Executor,
        db_executor: Executor,
        on_group: Callable[[int, int], None] | None = None,
        on_applied: Callable[[int], None] | None = None,
    ) -> None:
        self.log = log
        self.db = db
        self._log_executor = log_executor
        self._db_executor = db_executor
        self._pending: deque[_Entry] = deque()
        self._wake = asyncio.Event()
        self._apply_queue: asyncio.Queue[list[_Entry] | None] = asyncio.Queue(maxsize=4)
        #: called with (group size, last durable lsn) after each fsync
        self._on_group = on_group or (lambda size, lsn: None)
        #: called with the last applied lsn after each applied group
        self._on_applied = on_applied or (lambda lsn: None)
        self.next_lsn = max(log.last_lsn, db.applied_lsn) + 1
        #: The last LSN whose submitter has been given its result (after it was applied).
        self.answered_lsn = self.next_lsn - 1
        self.broken: str | None = None
        self._tasks: list[asyncio.Task] = []
        self._closed = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.ensure_future(self._log_stage()),
            asyncio.ensure_future(self._apply_stage()),
        ]

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
        if not self._wake.is_set():
            self._wake.set()
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
        self._wake.set()
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
        """Finish what is queued, then stop the stages (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self.flush()
        await self._apply_queue.put(None)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _log_stage(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                group: list[_Entry] = []
                while self._pending and len(group) < MAX_GROUP:
                    entry = self._pending.popleft()
                    if not entry.frame:  # a primary write: number and frame it now
                        entry.lsn = self.next_lsn
                        self.next_lsn += 1
                        entry.frame = encode_record(
                            entry.epoch, entry.lsn, encode_batch(entry.batch)
                        )
                    group.append(entry)
                frames = [(e.epoch, e.lsn, e.frame) for e in group]
                try:
                    await loop.run_in_executor(self._log_executor, self._append_sync, frames)
                except Exception as exc:  # noqa: BLE001 - any failure here breaks the node
                    self._break(f"redo log write failed: {exc}", group)
                    return
                self._on_group(len(group), group[-1].lsn)
                await self._apply_queue.put(group)

    def _append_sync(self, frames) -> None:
        self.log.append(frames)
        self.log.sync()

    async def _apply_stage(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            group = await self._apply_queue.get()
            if group is None:
                return
            try:
                outcomes = await loop.run_in_executor(self._db_executor, self._apply, group)
            except Exception as exc:  # noqa: BLE001
                self._break(f"applying to SQLite failed: {exc}", group)
                return
            self._on_applied(group[-1].lsn)
            for entry, results in zip(group, outcomes, strict=True):
                if not entry.future.done():
                    entry.future.set_result((entry.lsn, results))
            self.answered_lsn = group[-1].lsn

    def _apply(self, group: list[_Entry]) -> list[list[Result]]:
        return self.db.apply_group([(e.lsn, e.epoch, e.batch) for e in group])

    def _break(self, reason: str, group: list[_Entry]) -> None:
        self.broken = reason
        error = CommitFailed(reason)
        for entry in [*group, *self._pending]:
            if not entry.future.done():
                entry.future.set_exception(error)
        self._pending.clear()
