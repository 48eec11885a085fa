"""The binlog's disk thread: it writes the batches the loop hands it and fsyncs them.

A group commit's ``fdatasync`` blocks for as long as the disk takes (100 µs to several
ms here), so it cannot run on the event loop; the loop keeps parsing and inserting the
next puts meanwhile. The loop hands each poll's records over as one ``Batch`` (and asks
for an fsync with it under ``-f 0``); this thread takes *everything* handed over since
its last round, writes it to the file, runs one fsync for all of it, and reports back
the highest record that fsync covers. Records that arrive during an fsync wait in the
queue and share the next one, so 64 concurrent producers share an fsync instead of
queueing for 64: group commit falls out of the queue, with no flag on the loop saying
whether an fsync is in flight.

Why the thread writes the records too, and pulls the next group itself: a Python thread
is cheap to write and expensive to run, because it needs the GIL, which the loop holds
nearly all the time under load. Pinned to one CPU with the loop (as in the benchmark),
each time the thread wakes it preempts the loop, finds the GIL taken, sleeps, and is
woken again when the loop lets go; every system call it makes releases the GIL and is
one more chance to lose it. So the thread makes one call per group: under ``-f 0`` the
segment is opened ``O_DSYNC`` (binlog.py) and the whole group goes out in a single
``pwrite`` that returns once the data is on disk, where the loop used to ``pwrite`` and
the thread then ``fdatasync``. Measured with 64 producers (putload, server on CPU 0),
CPU per durable put went from ~19.3 to ~18.9 µs. It is still about 5 voluntary context
switches of the thread and 4 preemptions of the loop per group, most of them GIL
hand-offs: the price of a second Python thread, paid once per ~30 puts.

One thread, on purpose: it owns the file from the moment the server starts serving, so
writes, fsyncs and snapshots (which swap the file, see binlog.py) happen in the order
they were handed over, and nothing else ever touches the file meanwhile. After the
first failed write or fsync it reports the error and stops: a later fsync that
succeeds says nothing about the data whose write-back failed before it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable

from .binlog import Batch, Binlog

#: ``on_synced(seq, seconds, error)``, called on the loop after every round that was
#: asked to fsync (or wrote a snapshot): every record up to ``seq`` is on disk, unless
#: ``error``; ``seconds`` is the round's write + fsync time.
OnSynced = Callable[[int, float, BaseException | None], None]
_SYNC = object()  # queue item: fsync what was written (no batch to write with it)
_END = object()  # (marks the end of a group while the thread walks it)


class DiskThread:
    """Write handed-over batches in order; fsync each group; report on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, binlog: Binlog, on_synced: OnSynced,
                 durable_seq: int, name: str = "binlog-disk") -> None:  # fmt: skip
        """Start the thread; the file must be durable up to record ``durable_seq``."""
        self._loop = loop
        self._binlog = binlog
        self._on_synced = on_synced
        self._durable_seq = durable_seq
        self._items: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def write(self, batch: Batch, sync: bool) -> None:
        """Hand a batch over; ``sync``: fsync it (and everything before it) soon."""
        self._items.put(batch)
        if sync:
            self._items.put(_SYNC)

    def sync(self) -> None:
        """Ask for an fsync of everything handed over so far (``-f MS``, shutdown)."""
        self._items.put(_SYNC)

    def close(self) -> None:
        """Finish what was handed over, then end the thread (later reports are dropped)."""
        self._items.put(None)
        self._thread.join()

    def _run(self) -> None:
        items = self._items
        binlog = self._binlog
        written_seq = durable_seq = self._durable_seq
        while True:
            group = [items.get()]  # sleeps only when nothing is queued
            while not items.empty():  # everything handed over meanwhile: one group
                group.append(items.get_nowait())
            started = time.monotonic()
            sync_wanted = snapshot = closing = False
            run: list[Batch] = []  # consecutive batches: one write for all of them
            error = None
            try:
                for item in (*group, _END):
                    if item is _SYNC:  # (fsyncs come last: runs go on past them)
                        sync_wanted = True
                        continue
                    if type(item) is Batch and not item.snapshot_index:
                        run.append(item)
                        continue
                    if run:
                        _write(binlog, run)
                        written_seq = run[-1].seq
                        if binlog.dsync:  # O_DSYNC: the write returned once it was on disk
                            durable_seq = written_seq
                        run = []
                    if item is None:
                        closing = True
                    elif item is not _END:  # a snapshot: written, fsynced and renamed in
                        binlog.write_batch(item, fsync=True)
                        written_seq = durable_seq = item.seq
                        snapshot = True
                if sync_wanted and written_seq > durable_seq:
                    binlog.sync()
                    durable_seq = written_seq
            except BaseException as exc:  # handed to the loop: the disk failed
                error = exc
            if sync_wanted or snapshot or error is not None:
                report = (durable_seq, time.monotonic() - started, error)
                try:
                    self._loop.call_soon_threadsafe(self._on_synced, *report)
                except RuntimeError:  # the loop is closed: nobody is waiting any more
                    return
            if error is not None or closing:
                return


def _write(binlog: Binlog, run: list[Batch]) -> None:
    """Write batches that follow each other in the file as one (one system call)."""
    if len(run) > 1:
        records = sum(batch.records for batch in run)
        run = [Batch(b"".join(batch.data for batch in run), run[-1].seq, records)]
    binlog.write_batch(run[0], fsync=False)
