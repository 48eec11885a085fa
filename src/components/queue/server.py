"""The queue server: beanstalkd's protocol over asyncio, with a group-committed binlog.

The shell around two pure pieces: ``protocol.CommandParser`` turns each connection's
bytes into commands, ``broker.Broker`` applies them. What only the shell can do:

- *One connection, one serial command stream* (protocol.txt: "the server processes
  commands serially in the order in which they were received"). A blocked ``reserve``
  stops the connection's parsing; pipelined commands wait in the parser (reading pauses
  when that buffer passes ``PAUSE_READING_BYTES``), and resume when the reserve is
  answered.
- *One timer.* The broker says when its next deadline is (a delayed job, a TTR, a
  reserve timeout, a paused tube); the server keeps a single ``call_later`` for it.
- *Group commit.* With ``-b DIR -f 0`` a state-changing reply (``INSERTED``,
  ``DELETED``, ``RELEASED``, ``BURIED``, ``KICKED``) is held until its record is on disk.
  Records are written to the file on the loop, in order; the fsync (``fdatasync`` of a
  preallocated segment, see binlog.py) runs on the disk thread (diskthread.py), and
  records that arrive meanwhile wait for the next one, so 64 concurrent
  producers share an fsync instead of queueing for 64 (beanstalkd fsyncs each put).
  Replies on a connection stay in order: anything behind a held reply is held too. If
  the disk fails, connections with unacknowledged replies are aborted: a client never
  hears ``INSERTED`` for a job that is not on disk. With ``-f MS`` (MS > 0) replies go
  out at once and fsync runs at most every MS ms, as beanstalkd's ``-f``; without
  ``-b``, memory only.
- *Clock.* The broker runs on wall-clock seconds plus an offset an operator (or a test)
  can advance with ``POST /admin/clock {"advance": seconds}``, so TTR expiry and delays
  are testable without sleeping.

Metrics: ``scalelab_queue_jobs{tube,state}``, ``..._commands_total{command}``,
``..._puts_total``, ``..._reserves_total``, ``..._deletes_total``, ``..._fsyncs_total``,
``..._fsync_batch_records`` and ``..._fsync_duration_seconds``, ``..._binlog_bytes``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import resource
import signal
import socket
import time
from collections import deque
from functools import partial

from components.common import Service
from components.common.admin import json_response, read_json
from components.common.cli import format_address

from . import protocol
from .binlog import DEFAULT_COMPACT_MIN_BYTES, DEFAULT_PREALLOCATE_BYTES, Batch, Binlog
from .broker import Broker, Job, Tube
from .diskthread import DiskThread
from .protocol import Command, CommandParser, Put, Reply

#: Stop reading from a connection whose unparsed input passes this (a blocked reserve
#: with pipelined commands behind it, or a client that does not read its replies).
PAUSE_READING_BYTES = 256 * 1024
VERSION = "1.12-scalelab"
FSYNC_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
#: Python's cyclic GC runs a young collection every 700 net container allocations. A
#: queue's jobs are long-lived containers (a Job and its heap entry per put), so at the
#: default a durable put paid ~1.5 us of collections that find nothing: jobs are freed
#: by reference counting. 20,000 keeps the collector (cycles of closed connections
#: are still found) at a fraction of the cost; measured with putload, 64 producers.
GC_GEN0_THRESHOLD = 20_000


class QueueConnection(asyncio.Protocol):
    """One client: a parser, a broker session, and the replies not yet sent."""

    def __init__(self, service: QueueService) -> None:
        self.service = service
        self.broker = service.broker
        self.parser = CommandParser(service.max_job_bytes)
        self.transport: asyncio.Transport | None = None
        self.session = None
        self.out: list[bytes] = []
        self.held: deque[tuple[int, bytes]] = deque()
        self.closing = False
        self.closed = False
        self.reading_paused = False
        self.writing_paused = False  # the client is not reading its replies

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        service = self.service
        if len(service.connections) >= service.args.max_connections:
            service.log.warning("connection_refused", reason="max_connections")
            transport.abort()
            self.closed = True
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.session = self.broker.connect(self)
        service.connections.add(self)
        service.total_connections += 1

    def data_received(self, data: bytes) -> None:
        session = self.session
        put = None
        if not (self.closing or self.writing_paused or self.reading_paused or session is None
                or session.waiting):  # fmt: skip
            put = self.parser.whole_put(data)  # the common read: one whole put, alone
        if put is not None:
            self.do_put(*put)
        else:
            self.parser.receive_data(data)
            self.process()
        service = self.service
        if not service._burst_pending:  # after_burst, inlined: once per read
            service.after_burst()
        if self.out or self.closing:  # a durable put's reply is held: nothing to write yet
            self.flush()

    def eof_received(self):
        # protocol.txt: a reserve on a half-closed connection is answered TIMED_OUT.
        if self.session is not None and self.broker.cancel_wait(self.session):
            self.emit(Reply.TIMED_OUT)
        # Keep our side open until replies waiting for an fsync have gone out
        # (``printf 'put ...' | nc`` must still read its INSERTED); flush closes it.
        self.closing = True
        self.flush()
        return True

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.session is None:
            return
        service = self.service
        service.connections.discard(self)
        service.holding.discard(self)
        self.broker.disconnect(self.session, service.now())
        self.session = None
        service.after_burst()

    # -- command loop ----------------------------------------------------------------------

    def process(self) -> None:
        """Run buffered commands until one blocks, the buffer runs dry, or we close."""
        parser = self.parser
        session = self.session
        handlers = HANDLERS
        while (
            not self.closing
            and not self.writing_paused
            and session is not None
            and not session.waiting
        ):
            event = parser.next_event()
            if event is None:
                break
            kind = type(event)
            if kind is Put:
                self.do_put(event.pri, event.delay, event.ttr, event.body)
            elif kind is Command:
                self.service.cmd_counts[event.name] += 1
                handlers[event.name](self, *event.args)
            else:
                self.service.protocol_errors.labels(event.reply[:-2].decode()).inc()
                if event.reply is Reply.EXPECTED_CRLF:
                    # beanstalkd creates the job (and spends its id) before it checks
                    # the trailing CRLF; match it so ids agree with the real server.
                    self.broker.next_id += 1
                self.emit(event.reply)
            if len(self.out) > 64:
                self.flush()  # may call pause_writing, which ends the loop
        if self.reading_paused or parser.buffered > PAUSE_READING_BYTES:
            self._update_reading()  # (writing_paused also pauses; pause_writing calls it)

    def _update_reading(self) -> None:
        """Read only while the parser has room and the client reads its replies."""
        transport = self.transport
        if transport is None or self.closed:
            return
        want_paused = self.writing_paused or self.parser.buffered > PAUSE_READING_BYTES
        if want_paused and not self.reading_paused:
            self.reading_paused = True
            transport.pause_reading()
        elif self.reading_paused and not want_paused:
            self.reading_paused = False
            transport.resume_reading()

    def pause_writing(self) -> None:  # the transport's buffer passed its high-water mark
        self.writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.process()
        self.service.after_burst()
        self.flush()

    def wake(self, kind: str, job: Job | None) -> None:
        """The broker answered this connection's blocked reserve."""
        if kind == "reserved":
            assert job is not None
            self.service.reserves.inc()
            self.emit(protocol.reserved(job.id, job.body))
        elif kind == "timed_out":
            self.emit(Reply.TIMED_OUT)
        else:
            self.emit(Reply.DEADLINE_SOON)
        self.process()
        self.flush()

    # -- output ----------------------------------------------------------------------------

    def emit(self, data: bytes, seq: int = 0) -> None:
        """Queue a reply; ``seq`` > 0 holds it until binlog record ``seq`` is durable."""
        if self.held or seq > self.service.durable_seq:
            self.held.append((seq, data))
            self.service.holding.add(self)
        else:
            self.out.append(data)

    def emit_durable(self, data: bytes) -> None:
        service = self.service
        if service.binlog_failed:
            # The change is in memory but can never reach the disk: like the replies
            # that were waiting when the disk failed, it is never acknowledged.
            if self.transport is not None and not self.closed:
                self.transport.abort()
            return
        self.emit(data, service.binlog.appended_seq if service.sync_commit else 0)

    def release_held(self, durable_seq: int) -> None:
        held = self.held
        if len(held) == 1 and held[0][0] <= durable_seq and not self.out:
            # One reply waited (a producer with one put in flight): write it as it is.
            data = held.popleft()[1]
            self.service.holding.discard(self)
            if not self.closed:
                self.transport.write(data)
            if self.closing:
                self.flush()
            return
        while held and held[0][0] <= durable_seq:
            self.out.append(held.popleft()[1])
        if not held:
            self.service.holding.discard(self)
        self.flush()

    def flush(self) -> None:
        if self.out and not self.closed:
            assert self.transport is not None
            self.transport.write(b"".join(self.out) if len(self.out) > 1 else self.out[0])
        self.out.clear()
        if self.closing and not self.held and not self.closed and self.transport is not None:
            self.transport.close()

    # -- commands (protocol.txt, in its order) ---------------------------------------------

    def do_put(self, pri: int, delay: int, ttr: int, body: bytes) -> None:
        service = self.service
        service.cmd_counts["put"] += 1
        if service.draining:
            self.emit(Reply.DRAINING)
            return
        if service.binlog_failed:  # it could never be made durable: refuse, do not hang
            self.emit(Reply.INTERNAL_ERROR)
            return
        if service.max_jobs and len(self.broker.jobs) >= service.max_jobs:
            self.emit(Reply.OUT_OF_MEMORY)  # beanstalkd's answer when it cannot hold a job
            return
        now = time.time() + service.clock_offset  # service.now(), inlined
        session = self.session
        job = self.broker.put(session, session.use, pri, delay, ttr, body, now)
        service.put_count += 1
        if service.sync_commit:  # emit_durable, inlined: the hot path of a durable put
            seq = service.binlog.appended_seq  # always past durable_seq: a new record
            if not self.held:
                service.holding.add(self)
            self.held.append((seq, b"INSERTED %d\r\n" % job.id))  # protocol.inserted
        elif service.binlog is not None:
            self.emit(protocol.inserted(job.id))
        else:
            self.out.append(protocol.inserted(job.id))

    def do_use(self, name: str) -> None:
        if self._too_many_tubes(name):
            return
        self.broker.use(self.session, name)
        self.emit(protocol.using(name))

    def _too_many_tubes(self, name: str) -> bool:
        """Tubes are made on demand by any client: bound them (OUT_OF_MEMORY past it)."""
        broker = self.broker
        if name in broker.tubes or len(broker.tubes) < self.service.args.max_tubes:
            return False
        self.emit(Reply.OUT_OF_MEMORY)
        return True

    def do_reserve(self) -> None:
        self._reserve(None)

    def do_reserve_with_timeout(self, seconds: int) -> None:
        self._reserve(seconds)

    def _reserve(self, timeout: int | None) -> None:
        result = self.broker.reserve(self.session, self.service.now(), timeout)
        if result is None:
            return  # blocked: the broker will answer through wakeups
        kind, job = result
        if kind == "reserved":
            self.service.reserves.inc()
            self.emit(protocol.reserved(job.id, job.body))
        elif kind == "timed_out":
            self.emit(Reply.TIMED_OUT)
        else:
            self.emit(Reply.DEADLINE_SOON)

    def do_reserve_job(self, job_id: int) -> None:
        job = self.broker.reserve_job(self.session, job_id, self.service.now())
        if job is None:
            self.emit(Reply.NOT_FOUND)
            return
        self.service.reserves.inc()
        self.emit(protocol.reserved(job.id, job.body))

    def do_delete(self, job_id: int) -> None:
        if self.broker.delete(self.session, job_id, self.service.now()):
            self.service.deletes.inc()
            self._durable_or_plain(Reply.DELETED)
        else:
            self.emit(Reply.NOT_FOUND)

    def do_release(self, job_id: int, pri: int, delay: int) -> None:
        if self.broker.release(self.session, job_id, pri, delay, self.service.now()):
            self._durable_or_plain(Reply.RELEASED)
        else:
            self.emit(Reply.NOT_FOUND)

    def do_bury(self, job_id: int, pri: int) -> None:
        if self.broker.bury(self.session, job_id, pri, self.service.now()):
            self._durable_or_plain(Reply.BURIED)
        else:
            self.emit(Reply.NOT_FOUND)

    def do_touch(self, job_id: int) -> None:
        ok = self.broker.touch(self.session, job_id, self.service.now())
        self.emit(Reply.TOUCHED if ok else Reply.NOT_FOUND)

    def do_watch(self, name: str) -> None:
        if self._too_many_tubes(name):
            return
        self.emit(protocol.watching(self.broker.watch(self.session, name)))

    def do_ignore(self, name: str) -> None:
        count = self.broker.ignore(self.session, name)
        self.emit(Reply.NOT_IGNORED if count is None else protocol.watching(count))

    def do_peek(self, job_id: int) -> None:
        self._found(self.broker.peek(job_id))

    def do_peek_ready(self) -> None:
        self._found(self.broker.peek_ready(self.session.use))

    def do_peek_delayed(self) -> None:
        self._found(self.broker.peek_delayed(self.session.use))

    def do_peek_buried(self) -> None:
        self._found(self.broker.peek_buried(self.session.use))

    def _found(self, job: Job | None) -> None:
        self.emit(Reply.NOT_FOUND if job is None else protocol.found(job.id, job.body))

    def do_kick(self, bound: int) -> None:
        count = self.broker.kick(self.session.use, bound, self.service.now())
        reply = protocol.kicked(count)
        if count:
            self._durable_or_plain(reply)
        else:
            self.emit(reply)

    def do_kick_job(self, job_id: int) -> None:
        if self.broker.kick_job(job_id, self.service.now()):
            self._durable_or_plain(Reply.KICKED)
        else:
            self.emit(Reply.NOT_FOUND)

    def do_stats_job(self, job_id: int) -> None:
        job = self.broker.peek(job_id)
        if job is None:
            self.emit(Reply.NOT_FOUND)
            return
        file_index = self.service.binlog.index if self.service.binlog is not None else 0
        pairs = self.broker.job_stats(job, self.service.now(), file_index)
        self.emit(protocol.ok(protocol.yaml_dict(pairs)))

    def do_stats_tube(self, name: str) -> None:
        tube = self.broker.tubes.get(name)
        if tube is None:
            self.emit(Reply.NOT_FOUND)
            return
        pairs = self.broker.tube_stats(tube, self.service.now())
        self.emit(protocol.ok(protocol.yaml_dict(pairs)))

    def do_stats(self) -> None:
        self.emit(protocol.ok(protocol.yaml_dict(self.service.stats())))

    def do_list_tubes(self) -> None:
        self.emit(protocol.ok(protocol.yaml_list(list(self.broker.tubes))))

    def do_list_tube_used(self) -> None:
        self.emit(protocol.using(self.session.use.name))

    def do_list_tubes_watched(self) -> None:
        self.emit(protocol.ok(protocol.yaml_list(list(self.session.watch))))

    def do_pause_tube(self, name: str, delay: int) -> None:
        ok = self.broker.pause_tube(name, delay, self.service.now())
        self.emit(Reply.PAUSED if ok else Reply.NOT_FOUND)

    def do_quit(self) -> None:
        self.closing = True

    def _durable_or_plain(self, reply: bytes) -> None:
        if self.service.binlog is not None:
            self.emit_durable(reply)
        else:
            self.emit(reply)


HANDLERS = {
    name: getattr(QueueConnection, "do_" + name.replace("-", "_"))
    for name in protocol._NAMES.values()
    if name != "put"
}


class QueueService(Service):
    component = "queue"
    default_port = 11300
    description = "A beanstalkd-compatible work queue with a group-committed binlog."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("queue (beanstalkd-style)")
        group.add_argument("-b", "--binlog-dir", default=None,
                           help="write a binlog to this directory (default: --data-dir, "
                                "else memory only)")  # fmt: skip
        group.add_argument("-f", "--fsync-ms", type=int, default=50,
                           help="fsync at most every MS ms; 0: fsync before each reply "
                                "that changes state (group commit)")  # fmt: skip
        group.add_argument("-z", "--max-job-size", type=int,
                           default=protocol.DEFAULT_MAX_JOB_BYTES, help="largest job body, bytes")  # fmt: skip
        group.add_argument("--preallocate-bytes", type=int, default=DEFAULT_PREALLOCATE_BYTES,
                           help="zero-fill binlog segments this far ahead, so a group "
                                "commit's fdatasync need not write the file size "
                                "(0: plain appends)")  # fmt: skip
        group.add_argument("--compact-min-bytes", type=int, default=DEFAULT_COMPACT_MIN_BYTES,
                           help="do not compact a binlog smaller than this")  # fmt: skip
        group.add_argument("--max-jobs", type=int, default=0,
                           help="refuse puts with OUT_OF_MEMORY past this many jobs (0: no limit)")  # fmt: skip
        group.add_argument("--max-connections", type=int, default=10_000,
                           help="close connections beyond this many at once")  # fmt: skip
        group.add_argument("--max-tubes", type=int, default=10_000,
                           help="refuse use/watch of a new tube with OUT_OF_MEMORY past this")  # fmt: skip

    @classmethod
    def check_arguments(cls, parser, args) -> None:
        if not 0 < args.max_job_size <= protocol.MAX_JOB_BYTES_LIMIT:
            parser.error(f"-z must be in 1..{protocol.MAX_JOB_BYTES_LIMIT}")
        if args.fsync_ms < 0:
            parser.error("-f must be >= 0")
        if (args.max_jobs < 0 or args.max_connections < 1 or args.compact_min_bytes < 0
                or args.preallocate_bytes < 0):  # fmt: skip
            parser.error("--max-jobs, --compact-min-bytes and --preallocate-bytes must be "
                         ">= 0, --max-connections >= 1")  # fmt: skip
        if args.max_tubes < 1:
            parser.error("--max-tubes must be >= 1")

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> dict[str, str]:
        args = self.args
        self.loop = asyncio.get_running_loop()
        self.started_at = time.monotonic()
        self.clock_offset = 0.0
        self.max_job_bytes = args.max_job_size
        self.max_jobs = args.max_jobs
        self.broker = Broker()
        self.connections: set[QueueConnection] = set()
        self.holding: set[QueueConnection] = set()
        self.total_connections = 0
        self.draining = False
        self.durable_seq = 0
        self.binlog: Binlog | None = None
        self.sync_commit = False
        self._disk: DiskThread | None = None  # runs fsyncs and snapshots, one at a time
        # The disk thread runs jobs in order: when the last one submitted is done, all are.
        self._last_disk_job: asyncio.Future | None = None
        self._fsyncs_in_flight = 0
        self._snapshotting = False
        self._sync_timer: asyncio.TimerHandle | None = None
        self._last_fsync = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._burst_pending = False  # an _end_burst is scheduled for this loop iteration
        self.server_id = os.urandom(8).hex()
        self._gc_threshold = gc.get_threshold()  # process-wide: put back by stop()
        gc.set_threshold(max(GC_GEN0_THRESHOLD, self._gc_threshold[0]), *self._gc_threshold[1:])
        self._metrics()
        directory = args.binlog_dir or args.data_dir
        if directory:
            self.binlog = Binlog(directory, args.compact_min_bytes, args.preallocate_bytes)
            started = time.monotonic()
            recovered = self.binlog.open(self.broker)
            self.durable_seq = self.binlog.written_seq
            self.sync_commit = args.fsync_ms == 0
            self.log.info("binlog_restored", directory=directory, jobs=len(self.broker.jobs),
                          records=recovered.records, torn_bytes_cut=recovered.torn_bytes,
                          next_id=self.broker.next_id,
                          seconds=round(time.monotonic() - started, 3))  # fmt: skip
        self.server = await self.loop.create_server(
            lambda: QueueConnection(self), args.host, args.port, backlog=1024
        )
        self.runtime.admin.register("clock", self._admin_clock)
        self.loop.add_signal_handler(signal.SIGUSR1, self._enter_drain_mode)
        self._reschedule()
        return {"main": format_address(self.server.sockets[0].getsockname())}

    def _enter_drain_mode(self) -> None:
        """beanstalkd's SIGUSR1: refuse new jobs with DRAINING, keep serving the rest."""
        self.draining = True
        self.log.info("drain_mode")

    async def drain(self) -> None:
        self.draining = True
        self.server.close()
        # Acknowledge what is already written: wait for the last group commit.
        while not self.binlog_failed and (
            self.holding or (self.binlog is not None and self.binlog.pending)
        ):
            self._commit_soon()
            if self._last_disk_job is not None and not self._last_disk_job.done():
                await self._last_disk_job
            else:
                await asyncio.sleep(0.001)

    async def stop(self) -> None:
        self.stopped = True  # from here on stop() alone writes the binlog, then closes it
        self.server.close()
        if self._timer is not None:
            self._timer.cancel()
        if self._sync_timer is not None:
            self._sync_timer.cancel()
        for conn in list(self.connections):
            if conn.transport is None:
                continue
            if conn.held:  # replies never acknowledged: make that visible to the client
                conn.transport.abort()
            else:
                conn.transport.close()
        if self.binlog is not None:
            if self._last_disk_job is not None:
                await self._last_disk_job
            batch = self.binlog.take_batch()
            if batch is not None:
                self.binlog.write_batch(batch, fsync=True)
                self.binlog.complete(batch)
            self.binlog.sync()
            self.binlog.close()
        if self._disk is not None:
            self._disk.close()
        gc.set_threshold(*self._gc_threshold)

    def health(self) -> tuple[bool, str]:
        if self.binlog_failed:
            return False, "binlog write failed"
        return True, "ok"

    binlog_failed = False
    stopped = False

    # -- time -----------------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.clock_offset

    def _reschedule(self) -> None:
        when = self.broker.next_wakeup()
        if when == self._timer_when:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = when
        if when is not None:
            # +1 ms: never fire before the deadline and spin on a tick with nothing due.
            delay = max(0.0, when - self.now()) + 0.001
            self._timer = self.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        self.broker.tick(self.now())
        self.after_burst()

    def after_burst(self) -> None:
        """Commands ran: run ``_end_burst`` once, after every read of this loop iteration.

        The event loop hands us every connection that became readable in one poll before
        it runs ``call_soon`` callbacks; so the work that concerns the whole server (a
        group commit, the timer, woken reserves) happens once per poll, not once per
        connection: 64 producers' puts become one file write and one fsync decision.
        """
        if not self._burst_pending:
            self._burst_pending = True
            self.loop.call_soon(self._end_burst)

    def _end_burst(self) -> None:
        """Answer woken reserves, start a group commit, re-arm the timer."""
        self._burst_pending = False
        broker = self.broker
        wakeups = broker.take_wakeups()
        while wakeups:
            for session, kind, job in wakeups:
                conn = session.handle
                if conn is not None and not conn.closed:
                    conn.wake(kind, job)
            wakeups = broker.take_wakeups()
        if self.binlog is not None and self.binlog.pending:
            self._commit_soon()
        self._reschedule()

    async def _admin_clock(self, request):
        """``POST /admin/clock {"advance": S}``: move the queue's clock S seconds forward."""
        body = await read_json(request)
        advance = body.get("advance", 0) if isinstance(body, dict) else None
        if not isinstance(advance, int | float) or advance < 0:
            return json_response({"error": "advance must be a number of seconds >= 0"}, 400)
        self.clock_offset += advance
        self.broker.tick(self.now())
        self.after_burst()
        self.log.info("clock_advanced", seconds=advance, offset=self.clock_offset)
        return {"now": self.now(), "offset": self.clock_offset}

    # -- group commit ---------------------------------------------------------------------
    #
    # Appends are written to the file on the loop thread (a page-cache copy, in record
    # order, no thread can reorder them); fsyncs run on the disk thread, one at a time.
    # An fsync covers every byte written to the file before it started, so when one
    # completes, every record written before it was submitted is durable; records that
    # arrive while it runs are written and share the next one. A snapshot (compaction)
    # swaps files, so it runs alone: it waits for the fsync in flight, and new fsyncs
    # wait for it.

    def _commit_soon(self) -> None:
        """Write what was appended; start an fsync if one is due and a slot is free."""
        binlog = self.binlog
        if binlog is None or self.binlog_failed or self._snapshotting or self.stopped:
            return
        if binlog.pending and binlog.needs_compaction():
            if self._fsyncs_in_flight == 0:
                self._start_snapshot()
            return
        if not self.sync_commit:
            self._write_now()
            due = (time.monotonic() - self._last_fsync) * 1000 >= self.args.fsync_ms
            if due and self._fsyncs_in_flight == 0 and binlog.unsynced:
                self._start_fsync()
            elif self._sync_timer is None and binlog.unsynced:
                self._sync_timer = self.loop.call_later(
                    self.args.fsync_ms / 1000, self._periodic_sync
                )
            return
        if not self._fsyncs_in_flight and binlog.pending and self._write_now():
            self._start_fsync()

    def _write_now(self) -> bool:
        binlog = self.binlog
        assert binlog is not None
        batch = binlog.take_batch()
        if batch is None:
            return False
        try:
            binlog.write_batch(batch, fsync=False)
        except OSError as exc:
            self._binlog_failed(exc)
            return False
        binlog.complete(batch)
        return True

    def _start_fsync(self) -> None:
        binlog = self.binlog
        assert binlog is not None
        seq, records = binlog.written_seq, binlog.unsynced
        binlog.unsynced = 0
        self._fsyncs_in_flight += 1
        done = partial(self._synced, seq, records, time.monotonic())
        self._submit(binlog.sync, (), done)

    def _submit(self, fn, args: tuple, done) -> None:
        if self._disk is None:  # started on first use: a memory-only queue has none
            self._disk = DiskThread(self.loop)
        self._last_disk_job = self._disk.submit(fn, args, done)

    def _synced(self, seq: int, records: int, started: float, _result, error) -> None:
        self._fsyncs_in_flight -= 1
        if error is not None:
            self._binlog_failed(error)
            return
        self._last_fsync = time.monotonic()
        self.fsyncs.inc()
        self.fsync_batch.observe(records)
        self.fsync_seconds.observe(self._last_fsync - started)
        self._make_durable(seq)
        self._commit_soon()

    def _start_snapshot(self) -> None:
        binlog = self.binlog
        assert binlog is not None
        batch = binlog.take_batch()
        assert batch is not None and batch.snapshot_index
        self._snapshotting = True
        done = partial(self._snapshot_written, batch, time.monotonic())
        self._submit(binlog.write_batch, (batch, True), done)

    def _snapshot_written(self, batch: Batch, started: float, _result, error) -> None:
        self._snapshotting = False
        binlog = self.binlog
        assert binlog is not None
        if error is not None:
            self._binlog_failed(error)
            return
        binlog.complete(batch)
        binlog.unsynced = 0
        self.log.info("binlog_compacted", segment=binlog.index, records=batch.records,
                      bytes=binlog.log_bytes)  # fmt: skip
        self._last_fsync = time.monotonic()
        self.fsyncs.inc()
        self.fsync_batch.observe(batch.records)
        self.fsync_seconds.observe(self._last_fsync - started)
        self._make_durable(batch.seq)
        self._commit_soon()

    def _make_durable(self, seq: int) -> None:
        if seq > self.durable_seq:
            self.durable_seq = seq
            for conn in list(self.holding):
                conn.release_held(seq)

    def _binlog_failed(self, error: BaseException) -> None:
        self.binlog_failed = True
        self.log.error("binlog_write_failed", error=str(error))
        # Never acknowledge what is not on disk: cut clients waiting for an ack.
        for conn in list(self.holding):
            if conn.transport is not None:
                conn.transport.abort()
        self.holding.clear()

    def _periodic_sync(self) -> None:
        """``-f MS``: make sure written records are fsynced within MS ms."""
        self._sync_timer = None
        binlog = self.binlog
        if binlog is None or self.binlog_failed or not binlog.unsynced:
            return
        if self._snapshotting or self._fsyncs_in_flight:
            self._sync_timer = self.loop.call_later(self.args.fsync_ms / 1000, self._periodic_sync)
            return
        self._start_fsync()

    # -- stats and metrics ----------------------------------------------------------------

    def stats(self) -> list[tuple[str, object]]:
        """protocol.txt "stats", every key in beanstalkd's order, honest figures."""
        counts = self.broker.counts()
        cmd = self.cmd_counts
        usage = resource.getrusage(resource.RUSAGE_SELF)
        binlog = self.binlog
        uname = platform.uname()
        conns = self.connections
        pairs: list[tuple[str, object]] = [
            ("current-jobs-urgent", counts["urgent"]),
            ("current-jobs-ready", counts["ready"]),
            ("current-jobs-reserved", counts["reserved"]),
            ("current-jobs-delayed", counts["delayed"]),
            ("current-jobs-buried", counts["buried"]),
        ]
        for name in ("put", "peek", "peek-ready", "peek-delayed", "peek-buried", "reserve",
                     "reserve-with-timeout", "delete", "release", "use", "watch", "ignore",
                     "bury", "kick", "touch", "stats", "stats-job", "stats-tube", "list-tubes",
                     "list-tube-used", "list-tubes-watched", "pause-tube"):  # fmt: skip
            pairs.append((f"cmd-{name}", cmd[name]))
        pairs += [
            ("job-timeouts", self.broker.job_timeouts),
            ("total-jobs", self.broker.total_jobs),
            ("max-job-size", self.max_job_bytes),
            ("current-tubes", len(self.broker.tubes)),
            ("current-connections", len(conns)),
            ("current-producers", sum(1 for c in conns if c.session and c.session.producer)),
            ("current-workers", sum(1 for c in conns if c.session and c.session.worker)),
            ("current-waiting", self.broker.waiting_count),
            ("total-connections", self.total_connections),
            ("pid", os.getpid()),
            ("version", protocol.quoted(VERSION)),
            ("rusage-utime", f"{usage.ru_utime:.6f}"),
            ("rusage-stime", f"{usage.ru_stime:.6f}"),
            ("uptime", int(time.monotonic() - self.started_at)),
            ("binlog-oldest-index", binlog.index if binlog else 0),
            ("binlog-current-index", binlog.index if binlog else 0),
            ("binlog-records-migrated", binlog.records_migrated if binlog else 0),
            ("binlog-records-written", binlog.records_written if binlog else 0),
            ("binlog-max-size", self.args.compact_min_bytes),
            ("draining", self.draining),
            ("id", self.server_id),
            # Unquoted, as beanstalkd 1.12 writes them; "os" is uname's version string.
            ("hostname", uname.node),
            ("os", uname.version),
            ("platform", uname.machine),
        ]
        return pairs

    def _metrics(self) -> None:
        m = self.metrics
        # Counted in plain ints on the hot path (a method call per put is measurable),
        # read by the metrics at scrape time.
        commands = m.counter("scalelab_queue_commands_total", "Commands by name", ["command"])
        self.cmd_counts = dict.fromkeys(protocol._NAMES.values(), 0)
        for name in self.cmd_counts:
            commands.labels(name).set_function(partial(self.cmd_counts.__getitem__, name))
        self.protocol_errors = m.counter(
            "scalelab_queue_protocol_errors_total", "Requests refused by the parser", ["error"]
        )
        self.put_count = 0
        m.counter("scalelab_queue_puts_total", "Jobs inserted").set_function(lambda: self.put_count)
        self.reserves = m.counter("scalelab_queue_reserves_total", "Jobs reserved")
        self.deletes = m.counter("scalelab_queue_deletes_total", "Jobs deleted")
        self.fsyncs = m.counter("scalelab_queue_fsyncs_total", "Binlog fsyncs (group commits)")
        self.fsync_batch = m.histogram(
            "scalelab_queue_fsync_batch_records", "Binlog records per fsync",
            buckets=FSYNC_BATCH_BUCKETS,
        )  # fmt: skip
        self.fsync_seconds = m.histogram(
            "scalelab_queue_fsync_duration_seconds", "Binlog write+fsync time per group commit"
        )
        m.gauge("scalelab_queue_connections", "Open client connections").set_function(
            lambda: len(self.connections)
        )
        m.gauge("scalelab_queue_job_timeouts", "Reservations that ran out of TTR").set_function(
            lambda: self.broker.job_timeouts
        )
        m.gauge("scalelab_queue_binlog_bytes", "Bytes in binlog files").set_function(
            lambda: self.binlog.log_bytes if self.binlog else 0
        )
        m.gauge(
            "scalelab_queue_waiting_connections", "Connections blocked in reserve"
        ).set_function(lambda: self.broker.waiting_count)
        self.jobs_gauge = m.gauge(
            "scalelab_queue_jobs", "Jobs by tube and state", ["tube", "state"]
        )
        self.broker.tube_listener = self._tube_changed
        for tube in list(self.broker.tubes.values()):
            self._tube_changed(tube, True)

    def _tube_changed(self, tube: Tube, exists: bool) -> None:
        figures = {
            "ready": lambda t=tube: t.ready_count,
            "reserved": lambda t=tube: t.reserved_count,
            "delayed": lambda t=tube: t.delayed_count,
            "buried": lambda t=tube: len(t.buried),
        }
        for state, read in figures.items():
            if exists:
                self.jobs_gauge.labels(tube.name, state).set_function(read)
            else:
                self.jobs_gauge.remove(tube.name, state)
