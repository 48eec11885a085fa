"""The store's asyncio shell: rqlite's HTTP API over aiohttp.web, the log, SQLite, replication.

Why aiohttp.web: the store needs chunked streaming responses (replication, backups), an
HTTP *client* (forwarding to the primary, following it as a replica) and request-body
limits, all of which aiohttp provides in one well-tested package. But per request its
machinery costs more CPU than a durable single-row write itself, so the public port's
connections start in ``front.py``, which serves the common ``/db/execute`` and
``/db/query`` requests on the shared HTTP/1.1 codec (``serve_fast`` below decides which:
only those it can answer without waiting for anything but the commit) and hands the
connection to aiohttp for everything else.

Threads: the event loop never waits on the disk. One commit thread owns the redo log and
SQLite's write handle (appends, fsyncs, applying groups in LSN order, reads for
replication, checkpoints: serialised without locks; ``commit.py`` says why one thread and
not two), SQLite's read handle has another (queries, backups). Small reads (a point
SELECT) run on the loop itself under an instruction budget, because the hop to a thread
costs more than the query; a read that exceeds the budget is abandoned and rerun on the
reader thread.

Routes (public port): ``/db/execute``, ``/db/query``, ``/db/request``, ``/db/load``,
``/db/backup``, ``/status``, ``/readyz``, ``/nodes``, and the replication pair
``/_replication/stream`` (a replica's long-lived GET: the primary's log records from the
replica's position, heartbeats when idle) and ``/_replication/ack``. Admin port:
``POST /admin/promote``, ``/admin/repoint``, ``/admin/checkpoint``, ``GET /admin/status``,
and ``GET /admin/changes?since=LSN&limit=N``, the change feed for online resharding: the
durable redo records after ``since`` as JSON (``{"lsn", "first_lsn", "changes": [{"lsn",
"epoch", "transaction", "statements"}]}``, statements as logged, i.e. after the rewrite
of ``random()`` and the clock), bounded by ``limit`` and ``CHANGES_MAX_BYTES``; 410 when
the log no longer holds the record after ``since`` (compacted: copy again). Together
with the ``"lsn"`` of a query answer (the snapshot it read) a caller copies a table and
then tails exactly the writes it has not seen.

What a failover controller needs: ``/status`` (``scalelab.role``, ``epoch``, ``lsn``,
``applied_lsn``, per-replica ``acked_lsn`` and lag) to choose the most advanced replica,
``/admin/promote`` to make it primary at a higher epoch, and ``/admin/repoint`` (or
``--peers``, which makes nodes follow the newest primary on their own) for the rest.

Capacity emulation (``--service-time-ms``, ``--max-concurrency``, ``--max-queue``, the web
tier's flags from ``common/admission.py``) applies to the queries a node serves itself:
each holds one of ``max_concurrency`` workers for the service time, and one beyond the
queue is answered 503 with ``Retry-After`` (the client then tries another node). A node
can then serve ``max_concurrency / service_time`` queries a second whatever this machine
is, so what a read replica adds is measurable. The write side has its own set, the same
flags prefixed ``--write-`` (``--write-service-time-ms``, ``--write-max-concurrency``,
``--write-max-queue``, ``--write-service-mode``, ``--write-retry-after-s``): an execute
batch on the primary takes one of the write workers, spends the service time in it,
then commits and answers while still holding it, so a store whose write capacity is
the bottleneck (what sharding relieves) can be modelled. Queued (``?queue``) writes,
``/db/load`` and records a replica applies are not gated (they were already accepted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import hmac
import os
import secrets
import sqlite3
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from components.common import Service, admission
from components.common.admin import json_response, read_json
from components.common.cli import format_address, non_negative_float

from . import protocol
from .commit import CommitFailed, GroupCommitter, Overloaded
from .database import META_TABLE, Changes, Database
from .follower import Follower
from .front import JSON, TEXT, Answer, ApiProtocol, Deferred
from .protocol import BadRequest, Options
from .replication import LogView, NeedSnapshot, Node, Refuse, Role, Stream
from .rewrite import Rewriter
from .wal import (
    Batch,
    LogCorrupt,
    RedoLog,
    decode_batch,
    encode_record,
    scan,
)

#: How long a replica's stream may stay silent before the primary sends a heartbeat.
HEARTBEAT_S = 0.25
#: A replica that heard from its primary within this long is ready (``/readyz``) and
#: reports it reachable (``/nodes``): a few missed heartbeats.
PRIMARY_CONTACT_S = 1.0
#: Bytes of log per stream write.
STREAM_CHUNK_BYTES = 256 * 1024
#: Longest wait for ``min_lsn`` when the request names no ``timeout``.
MIN_LSN_WAIT_S = 5.0
#: A query's ``timeout`` is capped: one reader thread serves every slow query.
READ_TIMEOUT_S = 5.0
MAX_READ_TIMEOUT_S = 60.0
#: Queries waiting for the reader thread at most; more are refused with 503.
MAX_QUEUED_READS = 1000
#: Queued (``?queue``) writes waiting at most before new ones are refused.
MAX_QUEUED_WRITES = 5000
FORWARD_TIMEOUT_S = 30.0
FORWARDED_HEADER = "X-Scalelab-Forwarded"
LSN_HEADER = "X-Scalelab-Lsn"
LSN_HEADER_BYTES = LSN_HEADER.encode()
#: Distinct query strings whose parsed flags the fast front remembers.
OPTIONS_CACHE_SIZE = 256
CLUSTER_TOKEN_HEADER = "X-Scalelab-Cluster-Token"
READY_TEXT = "[+]node ok\n[+]leader ok\n[+]store ok\n"

#: The change feed (``GET /admin/changes``): records per answer by default and at most,
#: and the bytes of log one answer covers (plus at most one record beyond).
CHANGES_DEFAULT_LIMIT = 1000
CHANGES_MAX_LIMIT = 10_000
CHANGES_MAX_BYTES = 1 << 20

#: Reads of at most this many statements try the event loop's own handle first.
FAST_READ_STATEMENTS = 4
#: Records replayed per SQLite transaction during recovery.
REPLAY_GROUP = 512
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class StoreService(Service):
    component = "store"
    default_port = 4001
    description = "SQLite behind rqlite's HTTP API, with a redo log, replicas and failover"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("store")
        group.add_argument("--join", default=None, metavar="HOST:PORT",
                           help="start as a replica of the primary at this API address")  # fmt: skip
        group.add_argument("--sync-replicas", type=int, default=0, metavar="K",
                           help="acknowledge a write only after K replicas hold it durably")  # fmt: skip
        group.add_argument("--sync-timeout", type=non_negative_float, default=5.0,
                           help="seconds to wait for K replicas; after a timeout semi-sync is "
                                "off until they catch up (MySQL's fallback)")  # fmt: skip
        group.add_argument("--peers", default="", metavar="HOST:PORT,...",
                           help="other store nodes: follow whichever is primary at a higher epoch")  # fmt: skip
        group.add_argument("--cluster-token", default=None,
                           help="shared secret the replication endpoints require (and send)")  # fmt: skip
        group.add_argument("--log-max-bytes", type=int, default=64 << 20,
                           help="checkpoint SQLite and compact the redo log beyond this size")  # fmt: skip
        group.add_argument("--advertise", default=None, metavar="HOST:PORT",
                           help="API address other nodes and redirects use (unset: the bound one)")  # fmt: skip
        # Query capacity, modelled as the web tier models requests (common/admission.py):
        # a node serves --max-concurrency queries at once, each for --service-time-ms, so
        # a replica adds a known amount of read capacity whatever this machine is.
        admission.add_arguments(parser, unit="queries")
        # Write capacity, the same model with its own flags: --write-service-time-ms etc.
        admission.add_arguments(parser, unit="writes", prefix="write-")

    @classmethod
    def check_arguments(cls, parser, args) -> None:
        if args.sync_replicas < 0:
            parser.error("--sync-replicas must be >= 0")
        if args.log_max_bytes < 4096:
            parser.error("--log-max-bytes must be >= 4096")

    # -- start and stop -----------------------------------------------------------------

    async def start(self) -> dict[str, str]:
        args = self.args
        if args.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="scalelab-store-")
            data_dir = self._tmp.name
            self.log.warning("no_data_dir", using=data_dir, note="state is lost on exit")
        else:
            data_dir = args.data_dir
            os.makedirs(data_dir, exist_ok=True)
        self.data_dir = data_dir
        self.state_path = os.path.join(data_dir, "state.json")
        self.state = _load_state(self.state_path)

        # One thread owns the redo log and SQLite's write handle (commit.py says why).
        self._log_pool = ThreadPoolExecutor(1, thread_name_prefix="store-commit")
        self._db_pool = self._log_pool
        self._read_pool = ThreadPoolExecutor(1, thread_name_prefix="store-read")
        loop = asyncio.get_running_loop()
        try:
            self.wal = await loop.run_in_executor(
                self._log_pool, RedoLog, os.path.join(data_dir, "redo.log")
            )
            if self.wal.cut_on_open:
                self.log.warning("log_tail_cut", reason=self.wal.cut_on_open)
            self.db = await loop.run_in_executor(
                self._db_pool, Database, os.path.join(data_dir, "store.sqlite")
            )
            replayed = await loop.run_in_executor(self._db_pool, self._recover)
            if self.db.applied_lsn > self.wal.last_lsn and self.wal.last_lsn:
                # The log lost records SQLite has (a damaged disk: the log is fsynced
                # before anything is applied). SQLite is the better copy: restart the log
                # after it, so that replicas behind it resync from a snapshot.
                self.log.warning("log_behind_database", log_last_lsn=self.wal.last_lsn,
                                 applied_lsn=self.db.applied_lsn)  # fmt: skip
                await loop.run_in_executor(self._log_pool, self.wal.reset)
            if self.wal.last_lsn == 0:
                self.state["base_lsn"] = self.db.applied_lsn
                self.state["base_epoch"] = self.db.applied_epoch
        except (sqlite3.DatabaseError, LogCorrupt) as exc:
            # The runner reports OSError as a clean start failure (exit 1, one log line).
            raise OSError(errno.EIO, f"cannot recover {data_dir}: {exc}") from None
        self.log.info("recovered", replayed=replayed, applied_lsn=self.db.applied_lsn,
                      log_last_lsn=self.wal.last_lsn, epoch=self.state["epoch"])  # fmt: skip

        self._setup_metrics()
        self.rewriter = Rewriter(time.time, secrets.randbits)
        self.durable_lsn = max(self.wal.last_lsn, self.db.applied_lsn)
        self._durable_changed = asyncio.Event()
        self._applied_changed = asyncio.Event()
        self._acked_changed = asyncio.Event()
        self.committer = GroupCommitter(
            self.wal, self.db, self._log_pool,
            on_group=self._on_group, on_applied=self._on_applied,
        )  # fmt: skip
        self.committer.start()
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)
        )
        self._streams: set[asyncio.Task] = set()
        self._checkpoint_task: asyncio.Task | None = None
        self._queue_seq = 0
        self._queued: set[asyncio.Task] = set()
        self._semisync_off = False
        self._reads_waiting = 0
        self.reads_admission = admission.Admission.from_args(args)
        self.writes_admission = admission.Admission.from_args(args, prefix="write-")

        if args.join:
            role, primary = Role.REPLICA, args.join
        else:
            role = Role(self.state.get("role", "primary"))
            primary = self.state.get("primary")
        advertised = args.advertise or f"{args.host}:{args.port}"
        self.node = Node(args.name, advertised, role, self.state["epoch"], primary)
        self.serving = False
        self.follower = Follower(self, [p.strip() for p in args.peers.split(",") if p.strip()])
        if self.follower.peers:
            # Before taking a single write: was this node replaced while it was away?
            await self.follower.check_peers()

        app = web.Application(client_max_size=protocol.MAX_BODY_BYTES)
        app.router.add_post("/db/execute", self.handle_execute)
        app.router.add_route("GET", "/db/query", self.handle_query)
        app.router.add_route("POST", "/db/query", self.handle_query)
        app.router.add_post("/db/request", self.handle_request)
        app.router.add_get("/db/backup", self.handle_backup)
        app.router.add_post("/db/load", self.handle_load)
        app.router.add_get("/status", self.handle_status)
        app.router.add_get("/readyz", self.handle_readyz)
        app.router.add_get("/nodes", self.handle_nodes)
        app.router.add_get("/_replication/stream", self.handle_stream)
        app.router.add_post("/_replication/ack", self.handle_ack)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=args.drain_timeout
        )
        await self._runner.setup()
        # The listener is front.py's: each connection starts there and is handed to
        # aiohttp's request handler (the runner's protocol factory) when needed.
        self._front_connections: set[ApiProtocol] = set()
        self._options_cache: dict[bytes, Options] = {}
        aiohttp_protocol = self._runner.server
        assert aiohttp_protocol is not None
        self._front_open = True
        self._listener = await loop.create_server(
            lambda: ApiProtocol(self.serve_fast, aiohttp_protocol, self._front_connections,
                                accepting=self._front_open),
            args.host, args.port, reuse_address=True,
        )  # fmt: skip
        bound = format_address(self._listener.sockets[0].getsockname())
        self.api_addr = args.advertise or bound
        self.node.api_addr = self.api_addr
        await self.save_state()
        self.serving = True
        if self.node.role is Role.REPLICA:
            self.follower.start()
        self.follower.watch_peers()
        self.runtime.admin.register("promote", self.admin_promote)
        self.runtime.admin.register("repoint", self.admin_repoint)
        self.runtime.admin.register("status", self.admin_status, method="GET")
        self.runtime.admin.register("checkpoint", self.admin_checkpoint)
        self.runtime.admin.register("changes", self.admin_changes, method="GET")
        return {"main": bound}

    def _recover(self) -> int:
        """Replay log records SQLite does not have yet (runs on the SQLite thread)."""
        if self.wal.first_lsn > self.db.applied_lsn + 1:
            raise LogCorrupt(
                f"SQLite is at lsn {self.db.applied_lsn} but the log starts at "
                f"{self.wal.first_lsn}: records in between are gone"
            )
        records = self.wal.records_after(self.db.applied_lsn)
        for start in range(0, len(records), REPLAY_GROUP):
            chunk = records[start : start + REPLAY_GROUP]
            self.db.apply_group([(r.lsn, r.epoch, decode_batch(r.payload)) for r in chunk])
        return len(records)

    async def drain(self) -> None:
        """Stop accepting, finish in-flight requests and queued writes, flush the log."""
        self._close_front()
        await self.follower.close()
        for task in list(self._streams):  # replicas reconnect to whoever is primary next
            task.cancel()
        await self._runner.cleanup()  # closes the listener, waits for in-flight handlers
        if self._queued:
            await asyncio.gather(*list(self._queued), return_exceptions=True)
        await self.committer.close()
        while any(c.busy for c in self._front_connections):  # answers from done-callbacks
            await asyncio.sleep(0.005)

    def _close_front(self) -> None:
        self._front_open = False  # a connection accepted from the backlog now is closed
        self._listener.close()
        for connection in list(self._front_connections):
            connection.close_when_idle()

    async def stop(self) -> None:
        self._close_front()
        await self.follower.close()
        for task in list(self._streams):
            task.cancel()
        if self._checkpoint_task is not None:
            with contextlib.suppress(BaseException):
                await self._checkpoint_task
        await self._runner.cleanup()
        await self.committer.close()
        await self.session.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._log_pool, self._sync_close_log)
        await loop.run_in_executor(self._db_pool, self.db.close)
        for pool in (self._log_pool, self._read_pool):
            pool.shutdown(wait=True)

    def _sync_close_log(self) -> None:
        self.wal.sync()
        self.wal.close()

    def health(self) -> tuple[bool, str]:
        if self.committer.broken:
            return False, self.committer.broken
        return True, "ok"

    # -- metrics ------------------------------------------------------------------------

    def _setup_metrics(self) -> None:
        m = self.metrics
        self.m_executes = m.counter("scalelab_store_executes_total", "Write batches committed")
        self.m_statements = m.counter(
            "scalelab_store_statements_total", "Statements run, by kind", ["kind"]
        )
        self.m_stmt_write = self.m_statements.labels("write")
        self.m_stmt_read = self.m_statements.labels("read")
        self.m_queries = m.counter("scalelab_store_queries_total", "Read requests served")
        self.m_errors = m.counter(
            "scalelab_store_statement_errors_total", "Statements answered with an error"
        )
        self.m_fsyncs = m.counter("scalelab_store_fsyncs_total", "fsyncs of the redo log")
        self.m_group = m.histogram(
            "scalelab_store_group_commit_batches", "Batches made durable per fsync",
            buckets=GROUP_BUCKETS,
        )  # fmt: skip
        self.m_write_s = m.histogram(
            "scalelab_store_execute_duration_seconds", "Execute request latency"
        )
        self.m_query_s = m.histogram("scalelab_store_query_duration_seconds", "Query latency")
        self.m_rejected = m.counter(
            "scalelab_store_queries_rejected_total",
            "Queries refused with 503: --max-concurrency busy and --max-queue full",
        )
        m.gauge("scalelab_store_queries_in_service", "Queries holding a worker").set_function(
            lambda: self.reads_admission.gate.active
        )
        self.m_writes_rejected = m.counter(
            "scalelab_store_writes_rejected_total",
            "Writes refused with 503: --write-max-concurrency busy and --write-max-queue full",
        )
        m.gauge("scalelab_store_writes_in_service", "Writes holding a write worker").set_function(
            lambda: self.writes_admission.gate.active
        )
        self.m_forwarded = m.counter(
            "scalelab_store_forwarded_total", "Requests forwarded to the primary"
        )
        self.m_redirects = m.counter(
            "scalelab_store_redirects_total", "Requests answered 301 to the primary"
        )
        self.m_semisync_timeouts = m.counter(
            "scalelab_store_semisync_timeouts_total",
            "Writes answered before --sync-replicas replicas acknowledged them",
        )
        self.m_semisync_async = m.counter(
            "scalelab_store_semisync_async_writes_total",
            "Writes acknowledged asynchronously while semi-sync was off after a timeout",
        )
        self.m_checkpoints = m.counter(
            "scalelab_store_checkpoints_total", "Checkpoints that compacted the redo log"
        )
        self.m_snapshots = m.counter(
            "scalelab_store_snapshots_installed_total", "Snapshots installed by this replica"
        )
        m.gauge("scalelab_store_applied_lsn", "Last LSN applied to SQLite").set_function(
            lambda: self.db.applied_lsn
        )
        m.gauge("scalelab_store_log_bytes", "Size of the redo log").set_function(
            lambda: self.wal.size
        )
        m.gauge("scalelab_store_epoch", "Current epoch").set_function(lambda: self.node.epoch)
        m.gauge("scalelab_store_is_primary", "1 on the primary, 0 on a replica").set_function(
            lambda: 1 if self.node.writable else 0
        )
        m.gauge(
            "scalelab_store_replica_lag_records",
            "On a replica: records the primary has that this node has not applied",
        ).set_function(self._own_lag)
        self.m_follower_lag = m.gauge(
            "scalelab_store_replication_lag_records",
            "On the primary: records each replica has not acknowledged",
            ["replica"],
        )

    def _own_lag(self) -> int:
        if self.node.role is Role.PRIMARY:
            return 0
        return max(0, self.node.primary_last_lsn - self.db.applied_lsn)

    def _on_group(self, size: int, last_lsn: int) -> None:
        self.m_fsyncs.inc()
        self.m_group.observe(size)
        self.durable_lsn = last_lsn
        self._pulse("_durable_changed")

    def _on_applied(self, lsn: int) -> None:
        self._pulse("_applied_changed")
        if self.wal.size > self.args.log_max_bytes and (
            self._checkpoint_task is None or self._checkpoint_task.done()
        ):
            self._checkpoint_task = asyncio.ensure_future(self.checkpoint())

    async def checkpoint(self) -> dict[str, Any]:
        """Make SQLite durable on its own, then drop the log records it covers.

        Records a connected replica has not acknowledged yet are kept, so streaming
        replicas never fall off the log because of a checkpoint; a replica that is away
        and behind the new start of the log installs a snapshot when it returns.
        """
        loop = asyncio.get_running_loop()
        point = await loop.run_in_executor(self._db_pool, self.db.checkpoint)
        if point is None:
            self.log.warning("checkpoint_busy")
            return {"compacted": 0}
        upto, _ = point
        if self.node.role is Role.PRIMARY:
            for follower in self.node.followers.values():
                if follower.connected:
                    upto = min(upto, follower.acked_lsn)
        upto = min(upto, self.wal.last_lsn - 1)  # keep the last record: its epoch is asked for
        if upto < self.wal.first_lsn:
            return {"compacted": 0}
        epoch = await loop.run_in_executor(self._log_pool, self.wal.epoch_of, upto)
        # The new start of the log is recorded before the log is cut: a crash between the
        # two leaves a longer log than the state says, which is safe; the reverse is not.
        self.state["base_lsn"], self.state["base_epoch"] = upto, epoch or 0
        await self.save_state()
        dropped = await loop.run_in_executor(self._log_pool, self.wal.compact, upto)
        self.m_checkpoints.inc()
        self.log.info("checkpoint", compacted_records=dropped, log_starts_after=upto,
                      log_bytes=self.wal.size)  # fmt: skip
        return {"compacted": dropped, "log_starts_after": upto, "log_bytes": self.wal.size}

    async def admin_checkpoint(self, request: web.Request):
        """``POST /admin/checkpoint``: checkpoint and compact now."""
        return await self.checkpoint()

    def _pulse(self, name: str) -> None:
        """Wake every waiter on an event and arm a fresh one for the next change."""
        event = getattr(self, name)
        setattr(self, name, asyncio.Event())
        event.set()

    # -- the data API -------------------------------------------------------------------

    async def handle_execute(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            options = protocol.parse_options(request.query)
            statements = protocol.parse_statements(await request.read())
        except BadRequest as exc:
            return _text(str(exc), 400)
        if not self.node.writable:
            return await self._to_primary(request, options)
        if options.queue and not options.wait:
            return self._enqueue(statements, options)
        response = await self._admitted_write(statements, options, started)
        self.m_write_s.observe(time.perf_counter() - started)
        return response

    async def _admitted_write(self, statements, options: Options, started: float):
        """A client's write under the write capacity emulation: a write worker is held
        for the service time and through the commit; none free and the queue full: 503."""
        gate = self.writes_admission
        if not gate.enabled:
            return await self._write(statements, options, started)
        if not await gate.admit():
            self.m_writes_rejected.inc()
            return _json({"error": "over write capacity, retry later"}, 503, gate.retry_after)
        try:
            return await self._write(statements, options, started)
        finally:
            gate.release()

    def _enqueue(self, statements, options: Options) -> web.Response:
        """rqlite's queued write: answer now with a sequence number, commit in the
        background. Not durable when answered: the client traded that for latency."""
        if len(self._queued) >= MAX_QUEUED_WRITES:
            return _json({"error": "write queue full"}, 503)
        self._queue_seq += 1
        task = asyncio.ensure_future(self._write(statements, options, time.perf_counter()))
        self._queued.add(task)
        task.add_done_callback(self._queued.discard)
        body = {"results": [], "sequence_number": self._queue_seq}
        return _json_bytes(protocol.dumps(body, options.pretty))

    async def _write(self, statements, options: Options, started: float) -> web.Response:
        try:
            lsn, results = await self.committer.submit(self._batch(statements, options),
                                                       self.node.epoch)  # fmt: skip
        except Overloaded as exc:
            return _json({"error": str(exc)}, 503)
        except CommitFailed as exc:
            return _json({"error": str(exc)}, 500)
        await self._wait_replicas(lsn)
        body = self._write_body(lsn, results, options, started)
        return _json_bytes(body, headers={LSN_HEADER: str(lsn)})

    def _batch(self, statements, options: Options) -> Batch:
        rewrite = self.rewriter.rewrite
        return Batch(tuple((rewrite(sql), params) for sql, params in statements),
                     options.transaction)  # fmt: skip

    def _write_body(self, lsn: int, results, options: Options, started: float) -> bytes:
        """A committed write's answer (both fronts), counted in the metrics."""
        self.m_executes.inc()
        self.m_stmt_write.inc(len(results))
        self._count_errors(results)
        return protocol.results_body(results, options, time.perf_counter() - started, lsn)

    # -- the fast front (front.py): answers computed without awaiting -----------------

    def serve_fast(self, route: str, request, body: bytes) -> Answer | Deferred | None:
        """Serve ``route`` ("execute" or "query") on the fast front if the answer needs
        nothing but the commit; None hands the request to aiohttp (the handlers above),
        which then serves everything this declines, with the same answers."""
        started = time.perf_counter()
        options = self._fast_options(request.target)
        if options is None:
            return None
        try:
            if route == "execute":
                if (options.queue or not self.node.writable or self.args.sync_replicas
                        or self.writes_admission.enabled):  # fmt: skip
                    return None
                statements = protocol.parse_statements(body)
            elif request.method == b"GET" or options.q is not None:
                statements = protocol.single_statement(options.q or "")
            else:
                statements = protocol.parse_statements(body)
        except BadRequest as exc:
            return 400, TEXT, b"", str(exc).encode()
        if route == "execute":
            try:
                future = self.committer.enqueue(self._batch(statements, options), self.node.epoch)
            except Overloaded as exc:
                return 503, JSON, b"", orjson.dumps({"error": str(exc)})
            except CommitFailed as exc:
                return 500, JSON, b"", orjson.dumps({"error": str(exc)})
            return Deferred(future, lambda f: self._fast_write_answer(f, options, started))
        return self._fast_query(statements, options, started)

    def _fast_options(self, target: bytes) -> Options | None:
        """The flags of a request target, parsed once per distinct query string (clients
        repeat theirs); None for a target whose query string is malformed (aiohttp's
        handler answers it)."""
        _, _, query = target.partition(b"?")
        options = self._options_cache.get(query)
        if options is None:
            try:
                options = protocol.parse_options(query.decode())  # parse_qsl unquotes
            except (BadRequest, UnicodeDecodeError):
                return None
            if len(self._options_cache) >= OPTIONS_CACHE_SIZE:
                self._options_cache.clear()
            self._options_cache[query] = options
        return options

    def _fast_write_answer(self, future: asyncio.Future, options: Options, started: float):
        try:
            lsn, results = future.result()
        except CommitFailed as exc:
            return 500, JSON, b"", orjson.dumps({"error": str(exc)})
        except BaseException as exc:  # noqa: BLE001 - cancelled by a closing committer
            return 503, JSON, b"", orjson.dumps({"error": f"write not committed: {exc!r}"})
        body = self._write_body(lsn, results, options, started)
        self.m_write_s.observe(time.perf_counter() - started)
        return 200, JSON, b"%s: %d\r\n" % (LSN_HEADER_BYTES, lsn), body

    def _fast_query(self, statements, options: Options, started: float) -> Answer | None:
        node = self.node
        if options.level != "none" and not node.writable:
            return None  # forwarded to the primary
        if options.level == "strong" and self.follower.peers:
            return None  # asks the peers first
        stale = options.level == "none" and options.freshness_s is not None
        if stale and not node.fresh(time.monotonic(), options.freshness_s):
            return 200, JSON, b"", orjson.dumps({"error": "stale read"})
        if options.min_lsn is not None and self.db.applied_lsn < options.min_lsn:
            return None  # waits for the write
        if self.reads_admission.enabled or len(statements) > FAST_READ_STATEMENTS:
            return None
        read = self.db.query_fast(statements)
        if read is None:
            return None  # not small: the reader thread
        return 200, JSON, b"", self._query_body(read, options, started)

    async def _wait_replicas(self, lsn: int) -> None:
        """Semi-synchronous commit: wait (bounded) for K replicas to hold ``lsn``.

        As MySQL's semi-sync does, a primary whose replicas stop acknowledging falls back
        to asynchronous commit after one ``--sync-timeout`` (rather than making every
        write wait that long) and switches back as soon as K replicas have caught up.
        """
        want = self.args.sync_replicas
        if want <= 0:
            return
        if self._semisync_off:
            if self.node.acked_by(lsn - 1) < want:
                self.m_semisync_async.inc()
                return
            self._semisync_off = False
            self.log.info("semisync_on", lsn=lsn)
        deadline = time.monotonic() + self.args.sync_timeout
        while self.node.acked_by(lsn) < want:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.m_semisync_timeouts.inc()
                self._semisync_off = True
                self.log.warning("semisync_off", lsn=lsn, wanted=want,
                                 acked_by=self.node.acked_by(lsn))  # fmt: skip
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked_changed.wait(), remaining)

    def _count_errors(self, results) -> None:
        errors = sum(1 for r in results if protocol.is_failure(r))
        if errors:
            self.m_errors.inc(errors)

    async def handle_query(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            options = protocol.parse_options(request.query)
            if request.method == "GET" or options.q is not None:
                statements = protocol.single_statement(options.q or "")
            else:
                statements = protocol.parse_statements(await request.read())
        except BadRequest as exc:
            return _text(str(exc), 400)
        return await self._read(request, statements, options, started)

    async def _read(self, request, statements, options: Options, started: float):
        """rqlite's levels: ``none`` reads the local copy; ``weak`` is served by a node that
        believes it is the primary (others forward); ``strong`` also makes the primary
        confirm it is still the newest one by asking its ``--peers`` first (rqlite runs
        the read through Raft for the same purpose). Without peers, strong is weak."""
        if options.level == "strong" and self.node.writable and self.follower.peers:
            await self.follower.check_peers()  # steps down if a newer primary exists
        if options.level != "none" and not self.node.writable:
            return await self._to_primary(request, options)
        stale = options.level == "none" and options.freshness_s is not None
        if stale and not self.node.fresh(time.monotonic(), options.freshness_s):
            return _json({"error": "stale read"}, 200)
        if options.min_lsn is not None and not await self._wait_applied(options):
            return _json({"error": f"timed out waiting for lsn {options.min_lsn}"}, 503)
        gate = self.reads_admission
        if not gate.enabled:
            return await self._run_query(statements, options, started)
        if not await gate.admit():
            self.m_rejected.inc()
            return _json({"error": "over capacity, retry later"}, 503, gate.retry_after)
        try:
            return await self._run_query(statements, options, started)
        finally:
            gate.release()

    async def _run_query(self, statements, options: Options, started: float):
        read = self.db.query_fast(statements) if len(statements) <= FAST_READ_STATEMENTS else None
        if read is None:  # not small: on the reader thread, with the full timeout
            if self._reads_waiting >= MAX_QUEUED_READS:
                return _json({"error": f"{MAX_QUEUED_READS} queries already waiting"}, 503)
            timeout = min(options.timeout_s or READ_TIMEOUT_S, MAX_READ_TIMEOUT_S)
            loop = asyncio.get_running_loop()
            self._reads_waiting += 1
            try:
                read = await loop.run_in_executor(
                    self._read_pool, self.db.query, statements, timeout
                )
            finally:
                self._reads_waiting -= 1
        return _json_bytes(self._query_body(read, options, started))

    def _query_body(self, read, options: Options, started: float) -> bytes:
        """A query's answer (both fronts), counted in the metrics."""
        lsn, results = read
        self.m_queries.inc()
        self.m_stmt_read.inc(len(results))
        self._count_errors(results)
        self.m_query_s.observe(time.perf_counter() - started)
        return protocol.results_body(results, options, time.perf_counter() - started, lsn)

    async def _wait_applied(self, options: Options) -> bool:
        deadline = time.monotonic() + (options.timeout_s or MIN_LSN_WAIT_S)
        while self.db.applied_lsn < (options.min_lsn or 0):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._applied_changed.wait(), remaining)
        return True

    async def handle_request(self, request: web.Request) -> web.StreamResponse:
        """rqlite's unified endpoint: all reads go the read path, anything else is a write."""
        started = time.perf_counter()
        try:
            options = protocol.parse_options(request.query)
            statements = protocol.parse_statements(await request.read())
        except BadRequest as exc:
            return _text(str(exc), 400)
        loop = asyncio.get_running_loop()
        all_reads = await loop.run_in_executor(
            self._read_pool, lambda: all(self.db.is_read(s, p) for s, p in statements)
        )
        if all_reads:
            return await self._read(request, statements, options, started)
        if not self.node.writable:
            return await self._to_primary(request, options)
        return await self._admitted_write(statements, options, started)

    async def _to_primary(self, request: web.Request, options: Options) -> web.StreamResponse:
        """A request only the primary may serve, on another node: redirect or forward.

        rqlite (since 7.x) forwards transparently and answers 301 with ``?redirect``;
        a request that was already forwarded once is never forwarded again.
        """
        primary = self.node.primary
        if primary is None or request.headers.get(FORWARDED_HEADER):
            return _json({"error": "leader not found"}, 503)
        url = f"http://{primary}{request.path_qs}"
        if options.redirect:
            self.m_redirects.inc()
            return web.Response(status=301, headers={"Location": url})
        self.m_forwarded.inc()
        headers = {FORWARDED_HEADER: self.node.name}
        if "Content-Type" in request.headers:
            headers["Content-Type"] = request.headers["Content-Type"]
        try:
            async with self.session.request(
                request.method, url, data=await request.read(), headers=headers,
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
            ) as upstream:  # fmt: skip
                body = await upstream.read()
                out_headers = {}
                if LSN_HEADER in upstream.headers:
                    out_headers[LSN_HEADER] = upstream.headers[LSN_HEADER]
                return web.Response(
                    body=body, status=upstream.status, headers=out_headers,
                    content_type=upstream.content_type,
                )  # fmt: skip
        except aiohttp.ClientConnectorError as exc:  # never reached it: safe to retry
            return _json({"error": f"leader not reachable: {exc}"}, 503)
        except (aiohttp.ClientError, TimeoutError) as exc:  # sent: the outcome is unknown
            return _json({"error": f"leader's answer lost: {exc}"}, 502)

    async def handle_load(self, request: web.Request) -> web.StreamResponse:
        """``POST /db/load``: a SQL dump, or a SQLite file, loaded as one logged
        transaction, so replicas receive it like any other write."""
        started = time.perf_counter()
        try:
            options = protocol.parse_options(request.query)
        except BadRequest as exc:
            return _text(str(exc), 400)
        if not self.node.writable:
            return await self._to_primary(request, options)
        body = await request.read()
        loop = asyncio.get_running_loop()
        if body.startswith(b"SQLite format 3\x00"):
            fd, path = tempfile.mkstemp(prefix="load-", suffix=".sqlite", dir=self.data_dir)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(body)
                text = await loop.run_in_executor(self._read_pool, Database.file_to_sql, path)
            except sqlite3.DatabaseError as exc:
                return _text(f"not a loadable SQLite file: {exc}", 400)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        else:
            try:
                text = body.decode()
            except UnicodeDecodeError:
                return _text("a SQL dump must be UTF-8 text", 400)
        try:
            statements = protocol.split_sql(text, META_TABLE)
        except BadRequest as exc:
            return _text(str(exc), 400)
        if not statements:
            return _text("nothing to load", 400)
        load_options = dataclasses.replace(options, transaction=True)
        try:
            batch = Batch(tuple((self.rewriter.rewrite(q), p) for q, p in statements), True)
            lsn, results = await self.committer.submit(batch, self.node.epoch)
        except Overloaded as exc:
            return _json({"error": str(exc)}, 503)
        except CommitFailed as exc:
            return _json({"error": str(exc)}, 500)
        except ValueError as exc:  # the batch is over the log's record limit
            return _text(str(exc), 413)
        await self._wait_replicas(lsn)
        self._count_errors(results)
        failure = next((r for r in results if protocol.is_failure(r)), None)
        summary = failure or Changes(
            next((r.last_insert_id for r in reversed(results) if isinstance(r, Changes)), 0),
            sum(r.rows_affected for r in results if isinstance(r, Changes)),
            time.perf_counter() - started,
        )
        body = protocol.results_body([summary], load_options, time.perf_counter() - started, lsn)
        return _json_bytes(body, headers={LSN_HEADER: str(lsn)})

    async def handle_backup(self, request: web.Request) -> web.StreamResponse:
        """``GET /db/backup``: a consistent SQLite file (also a replica's snapshot);
        ``?fmt=sql`` gives a SQL script instead, as rqlite does."""
        if request.query.get("fmt") == "sql":
            loop = asyncio.get_running_loop()
            text = await loop.run_in_executor(self._read_pool, self.db.dump_sql)
            return web.Response(text=text, content_type="text/plain")
        fd, path = tempfile.mkstemp(prefix="backup-", suffix=".sqlite", dir=self.data_dir)
        os.close(fd)
        try:
            loop = asyncio.get_running_loop()
            lsn, epoch = await loop.run_in_executor(self._read_pool, self.db.backup, path)
            response = web.StreamResponse(
                headers={
                    "Content-Type": "application/octet-stream",
                    LSN_HEADER: str(lsn),
                    "X-Scalelab-Epoch": str(epoch),
                }  # fmt: skip
            )
            await response.prepare(request)
            with open(path, "rb") as fh:
                while chunk := fh.read(256 * 1024):
                    await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        node = self.node
        is_primary = node.role is Role.PRIMARY
        return {
            "role": node.role.value,
            "writable": node.writable,
            "fenced_by": node.fenced_by,
            "epoch": node.epoch,
            "lsn": self.committer.next_lsn - 1,
            "durable_lsn": self.durable_lsn,
            "applied_lsn": self.db.applied_lsn,
            "primary": self.api_addr if is_primary else node.primary,
            "name": node.name,
            "api_addr": self.api_addr,
            "last_contact_s_ago": None
            if is_primary
            else round(time.monotonic() - node.last_contact, 3),
            "lag_records": self._own_lag(),
            "sync_replicas": self.args.sync_replicas,
            "replicas": [
                {
                    "name": f.name,
                    "api_addr": f.api_addr,
                    "acked_lsn": f.acked_lsn,
                    "lag_records": max(0, self.durable_lsn - f.acked_lsn),
                    "connected": f.connected,
                }  # fmt: skip
                for f in node.followers.values()
            ],
            "pending_writes": self.committer.depth,
        }

    async def handle_status(self, request: web.Request) -> web.Response:
        """rqlite's ``/status`` keys where they have a meaning here, plus ``scalelab``."""
        mine = self.status()
        doc = {
            "store": {
                "node_id": self.node.name,
                "dir": self.data_dir,
                "leader": {"node_id": "", "addr": mine["primary"] or ""},
                "raft": {
                    "state": "Leader" if mine["role"] == "primary" else "Follower",
                    "term": mine["epoch"],
                    "applied_index": mine["applied_lsn"],
                    "commit_index": mine["durable_lsn"],
                    "last_log_index": mine["lsn"],
                },
                "sqlite3": {"path": self.db.path, "version": _sqlite_version()},
            },
            "http": {"bind_addr": self.api_addr},
            "scalelab": mine,
        }
        options = protocol.parse_options(request.query)
        return _json_bytes(protocol.dumps(doc, options.pretty))

    async def handle_readyz(self, request: web.Request) -> web.Response:
        """rqlite's readiness probe; ``?noleader`` skips the check for a reachable primary."""
        if self.committer.broken:
            return _text("[+]node ok\n[-]store broken\n", 503)
        if "noleader" in request.query:
            return _text("[+]node ok\n[+]store ok\n", 200)
        if self.node.writable:
            return _text(READY_TEXT, 200)
        if self.node.role is Role.REPLICA and self.node.fresh(time.monotonic(), PRIMARY_CONTACT_S):
            return _text(READY_TEXT, 200)
        return _text("[+]node ok\n[-]leader not contactable\n", 503)

    async def handle_nodes(self, request: web.Request) -> web.Response:
        """rqlite's ``/nodes`` map: id -> api_addr, addr, reachable, leader; with
        ``?ver=2`` the newer ``{"nodes": [{"id": ..., ...}]}`` list."""
        node = self.node
        nodes: dict[str, Any] = {
            node.name: {
                "api_addr": f"http://{self.api_addr}",
                "addr": self.api_addr,
                "reachable": True,
                "leader": node.writable,
            }  # fmt: skip
        }
        if node.role is Role.PRIMARY:
            for f in node.followers.values():
                nodes[f.name] = {"api_addr": f"http://{f.api_addr}", "addr": f.api_addr,
                                 "reachable": f.connected, "leader": False}  # fmt: skip
        elif node.primary:
            nodes["primary"] = {
                "api_addr": f"http://{node.primary}", "addr": node.primary,
                "reachable": node.fresh(time.monotonic(), PRIMARY_CONTACT_S),
                "leader": True,
            }  # fmt: skip
        if request.query.get("ver") == "2":
            return _json({"nodes": [{"id": name, **info} for name, info in nodes.items()]})
        return _json(nodes)

    # -- replication: the primary's side ------------------------------------------------

    def cluster_headers(self) -> dict[str, str]:
        """What a node sends on replication requests (the token, when one is set)."""
        token = self.args.cluster_token
        return {CLUSTER_TOKEN_HEADER: token} if token else {}

    def _from_cluster(self, request: web.Request) -> bool:
        token = self.args.cluster_token
        if token is None:
            return True
        offered = request.headers.get(CLUSTER_TOKEN_HEADER, "")
        return hmac.compare_digest(offered.encode(), token.encode())

    async def handle_stream(self, request: web.Request) -> web.StreamResponse:
        if not self._from_cluster(request):
            return _json({"error": "cluster token required"}, 401)
        q = request.query
        try:
            name, api = q["name"], q["api"]
            epoch, last_lsn, last_epoch = int(q["epoch"]), int(q["last_lsn"]), int(q["last_epoch"])
        except (KeyError, ValueError):
            return _json({"error": "need name, api, epoch, last_lsn, last_epoch"}, 400)
        loop = asyncio.get_running_loop()
        theirs = await loop.run_in_executor(self._log_pool, self.wal.epoch_of, last_lsn)
        view = LogView(
            self.state["base_lsn"], self.state["base_epoch"], self.durable_lsn,
            lambda lsn: theirs if lsn == last_lsn else None,
        )  # fmt: skip
        decision = self.node.do_subscribe(
            name, api, epoch, last_lsn, last_epoch, view, time.monotonic()
        )
        if isinstance(decision, Refuse):
            if self.node.fenced_by is not None:
                self.log.warning("fenced", by_epoch=self.node.fenced_by, subscriber=name)
            return _json({"error": decision.reason, "epoch": decision.epoch,
                          "primary": decision.primary}, 409)  # fmt: skip
        if isinstance(decision, NeedSnapshot):
            self.log.info("replica_needs_snapshot", replica=name, reason=decision.reason)
            return _json({"error": "snapshot required", "reason": decision.reason}, 410)
        assert isinstance(decision, Stream)
        if self.wal.first_lsn and decision.from_lsn < self.wal.first_lsn:
            self.node.do_disconnect(name)
            return _json({"error": "snapshot required", "reason": "log compacted"}, 410)
        self.log.info("replica_subscribed", replica=name, from_lsn=decision.from_lsn)
        child = self.m_follower_lag.labels(name)
        follower = self.node.followers[name]
        stream_id = follower.stream
        child.set_function(lambda: max(0, self.durable_lsn - follower.acked_lsn))
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream",
                                               "X-Scalelab-Epoch": str(self.node.epoch)})  # fmt: skip
        await response.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        epoch_now = self.node.epoch
        try:
            await self._send_log(response, decision.from_lsn, epoch_now)
        except (ConnectionError, asyncio.CancelledError, aiohttp.ClientError):
            pass
        finally:
            self._streams.discard(task)
            self.node.do_disconnect(name, stream_id)
        return response

    async def _send_log(self, response: web.StreamResponse, next_lsn: int, epoch: int) -> None:
        loop = asyncio.get_running_loop()
        await response.write(self._heartbeat(epoch))
        while self.node.writable and self.node.epoch == epoch:
            if next_lsn <= self.durable_lsn:
                data, last = await loop.run_in_executor(
                    self._log_pool, self.wal.read_from, next_lsn, STREAM_CHUNK_BYTES
                )
                if not data:  # not in the log (cut underneath us): let the replica resync
                    return
                await response.write(data)
                next_lsn = last + 1
                continue
            changed = self._durable_changed
            try:
                await asyncio.wait_for(changed.wait(), HEARTBEAT_S)
            except TimeoutError:
                await response.write(self._heartbeat(epoch))

    def _heartbeat(self, epoch: int) -> bytes:
        """LSN 0 marks a heartbeat; its payload is the primary's durable LSN."""
        return encode_record(epoch, 0, orjson.dumps({"last_lsn": self.durable_lsn}))

    async def handle_ack(self, request: web.Request) -> web.Response:
        # Without a token anyone could claim to hold a write and defeat --sync-replicas.
        if not self._from_cluster(request):
            return _json({"error": "cluster token required"}, 401)
        try:
            doc = orjson.loads(await request.read())
            name, epoch, lsn = str(doc["name"]), int(doc["epoch"]), int(doc["lsn"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return _json({"error": "need name, epoch, lsn"}, 400)
        accepted = self.node.do_ack(name, epoch, lsn, time.monotonic())
        if accepted:
            self._pulse("_acked_changed")
        return _json({"accepted": accepted, "epoch": self.node.epoch})

    # -- replication: the replica's side (the network part is in follower.py) -----------

    async def position(self) -> tuple[int, int]:
        """``(last_lsn, last_epoch)`` this node holds durably: where its stream resumes."""
        last_lsn = self.committer.next_lsn - 1
        loop = asyncio.get_running_loop()
        last_epoch = await loop.run_in_executor(self._log_pool, self.wal.epoch_of, last_lsn)
        if last_epoch is None:  # not in the log: the database's own, or the snapshot's
            last_epoch = (
                self.db.applied_epoch if last_lsn == self.db.applied_lsn
                else self.state["base_epoch"]
            )  # fmt: skip
        return last_lsn, last_epoch

    async def install_snapshot(self, path: str, epoch: int) -> None:
        """Replace the local database by a downloaded snapshot and empty the local log,
        which now starts after the snapshot's LSN."""
        loop = asyncio.get_running_loop()
        await self.committer.close()
        lsn = await loop.run_in_executor(self._db_pool, self.db.install, path)
        await loop.run_in_executor(self._log_pool, self.wal.reset)
        self.state["base_lsn"], self.state["base_epoch"] = lsn, self.db.applied_epoch or epoch
        await self.save_state()
        self.committer = GroupCommitter(
            self.wal, self.db, self._log_pool,
            on_group=self._on_group, on_applied=self._on_applied,
        )  # fmt: skip
        self.committer.start()
        self.durable_lsn = lsn
        self.m_snapshots.inc()
        self.log.info("snapshot_installed", lsn=lsn)

    # -- admin: promotion and repointing ------------------------------------------------

    async def admin_promote(self, request: web.Request):
        """``POST /admin/promote {"epoch": N?}``: become the primary at a higher epoch."""
        body = await read_json(request)
        epoch = body.get("epoch") if isinstance(body, dict) else None
        if epoch is not None and not isinstance(epoch, int):
            return json_response({"error": "epoch must be an integer"}, 400)
        await self.follower.stop()
        await self.committer.flush()  # records already received are applied before writes
        try:
            new_epoch = self.node.promote(epoch)
        except ValueError as exc:
            return json_response({"error": str(exc)}, 409)
        await self.save_state()
        self.durable_lsn = self.committer.next_lsn - 1
        self.log.warning("promoted", epoch=new_epoch, lsn=self.durable_lsn)
        return self.status()

    async def admin_repoint(self, request: web.Request):
        """``POST /admin/repoint {"primary": "host:port", "epoch": N?}``: follow a primary."""
        body = await read_json(request)
        primary = body.get("primary") if isinstance(body, dict) else None
        epoch = body.get("epoch") if isinstance(body, dict) else None
        if not isinstance(primary, str) or ":" not in primary:
            return json_response({"error": "primary must be 'host:port'"}, 400)
        if epoch is not None and not isinstance(epoch, int):
            return json_response({"error": "epoch must be an integer"}, 400)
        await self.follower.stop()
        try:
            self.node.repoint(primary, epoch)
        except ValueError as exc:
            return json_response({"error": str(exc)}, 409)
        await self.save_state()
        self.log.warning("repointed", primary=primary, epoch=self.node.epoch)
        self.follower.start()
        return self.status()

    async def admin_status(self, request: web.Request):
        return self.status()

    async def admin_changes(self, request: web.Request):
        """``GET /admin/changes?since=LSN&limit=N``: the durable records after ``since``,
        in LSN order; 410 when the log was compacted past ``since``."""
        try:
            since = int(request.query["since"])
            limit = int(request.query.get("limit", CHANGES_DEFAULT_LIMIT))
        except (KeyError, ValueError):
            return json_response({"error": "need since=LSN and optionally limit=N (integers)"}, 400)
        if since < 0 or not 1 <= limit <= CHANGES_MAX_LIMIT:
            return json_response(
                {"error": f"since must be >= 0 and limit in 1..{CHANGES_MAX_LIMIT}"}, 400
            )
        durable = self.durable_lsn
        loop = asyncio.get_running_loop()
        first_lsn, data = await loop.run_in_executor(
            self._log_pool, self._read_changes, since, durable, limit
        )
        if since < first_lsn - 1:
            return json_response({
                "error": f"log compacted: it starts at lsn {first_lsn}, the records after "
                         f"{since} are gone; copy the data again (a query answer's lsn says "
                         "from where to tail)",
                "first_lsn": first_lsn, "lsn": durable,
            }, 410)  # fmt: skip
        # Decoding is CPU work: on the reader thread, not the log's (fsyncs) or the loop.
        changes = await loop.run_in_executor(self._read_pool, _decode_changes, data)
        return {"lsn": durable, "first_lsn": first_lsn, "changes": changes}

    def _read_changes(self, since: int, upto: int, limit: int) -> tuple[int, bytes]:
        """On the log thread (so no compaction runs meanwhile): the log's first LSN and
        the frames of at most ``limit`` records after ``since``, none beyond ``upto``."""
        wal = self.wal
        first_lsn = wal.first_lsn or upto + 1  # an empty log holds nothing older
        if since < first_lsn - 1 or since >= upto:
            return first_lsn, b""
        data, _ = wal.read_from(since + 1, CHANGES_MAX_BYTES, min(limit, upto - since))
        return first_lsn, data

    async def save_state(self) -> None:
        self.state.update(epoch=self.node.epoch, role=self.node.role.value,
                          primary=self.node.primary)  # fmt: skip
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._log_pool, _write_state, self.state_path, dict(self.state))


# -- small helpers ---------------------------------------------------------------------


def _json(doc: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return _json_bytes(orjson.dumps(doc), status, headers)


def _json_bytes(body: bytes, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json",
                        headers=headers)  # fmt: skip


def _text(text: str, status: int) -> web.Response:
    return web.Response(text=text, status=status)


def _decode_changes(data: bytes) -> list[dict[str, Any]]:
    return [
        protocol.change_json(r.lsn, r.epoch, decode_batch(r.payload)) for _, r in scan(data).records
    ]


def _sqlite_version() -> str:
    return sqlite3.sqlite_version


def _load_state(path: str) -> dict[str, Any]:
    state: dict[str, Any] = {"epoch": 1, "base_lsn": 0, "base_epoch": 0}
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as fh:
        state.update(orjson.loads(fh.read()))
    return state


def _write_state(path: str, state: dict[str, Any]) -> None:
    """Atomically replace the state file (write, fsync, rename, fsync the directory):
    a promotion's epoch must survive a crash before the first write of that epoch."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(orjson.dumps(state))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["StoreService"]
