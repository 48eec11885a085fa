"""The worker process: ``--concurrency`` slots, each a reserve → process → delete loop.

Each slot owns one queue connection, because a blocking ``reserve`` holds its
connection's reply stream (protocol.txt: commands are answered in order). A slot:

1. ``reserve-with-timeout`` (short, so a drain never waits long on an idle queue);
2. processes the job (``photo.process`` plus ``--service-time-ms`` of emulated work,
   so capacity is ``concurrency / service time`` whatever the machine);
3. stores the result (``results.py``: ``--web URL`` PUTs it to the web tier, retried
   on connection errors and 5xx; ``--result-dir`` writes files) and ``delete``s the job
   only after the store was acknowledged, which is what makes processing at-least-once;
4. on failure asks the queue how often the job was already released (``stats-job``)
   and, per ``retry.decide``, releases it with exponential backoff or buries it (and,
   with ``--web``, tells the web tier the photo failed); a web tier that is down or
   answers 5xx is not the job's fault, so such a job is released, never buried.

A job that may outlive its TTR is kept alive with ``touch`` every
``--touch-interval-s`` while it is processed. A lost queue connection is retried with
capped backoff; ``/health`` is 503 while no slot is connected. SIGTERM: slots stop
reserving, finish the job they hold, delete it, and exit; a slot waiting in ``reserve``
is cancelled at once and its connection closed (a job the queue handed it in that
instant goes back to ready when the connection drops), so an idle worker exits without
waiting out its reserve timeout; a job reserved after the signal is released at once. A worker killed mid-job holds nothing: the queue returns
the job when the connection drops, or when its TTR runs out if the worker hangs.

Metrics: ``scalelab_worker_jobs_done_total``, ``..._jobs_failed_total{action}``,
``..._processing_seconds``, ``..._busy_slots``, ``..._queue_errors_total``.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from components.common import Service
from components.common.backoff import Backoff
from components.common.cli import host_port, non_negative_float
from components.queue.client import QueueClient

from . import photo, retry
from .results import DirectoryResults, StoreRejected, StoreUnavailable, WebResults

RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 2.0
#: Failures of the job itself (logged as such); anything else is a bug, logged loudly.
EXPECTED_FAILURES = (photo.BadJob, OSError, StoreRejected, StoreUnavailable)


class WorkerService(Service):
    component = "worker"
    default_port = 0
    description = "Consumes photo jobs from the queue: reserve, process, store, delete."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("worker")
        group.add_argument("--queue", type=host_port, required=True, help="queue HOST:PORT")
        group.add_argument("--tube", default="photos", help="tube to watch")
        group.add_argument("--concurrency", type=int, default=4, help="jobs in parallel")
        group.add_argument("--service-time-ms", type=float, default=0.0,
                           help="emulated processing time per job")  # fmt: skip
        group.add_argument("--max-failures", type=int, default=3,
                           help="bury a job after this many failed attempts")  # fmt: skip
        group.add_argument("--retry-delay-s", type=int, default=1,
                           help="first retry delay; doubles per failure")  # fmt: skip
        group.add_argument("--retry-max-delay-s", type=int, default=60,
                           help="cap on the retry delay")  # fmt: skip
        group.add_argument("--reserve-timeout-s", type=int, default=1,
                           help="reserve-with-timeout per wait (bounds how long a drain waits)")  # fmt: skip
        group.add_argument("--touch-interval-s", type=float, default=0.0,
                           help="touch the job this often while processing, so a long job "
                                "outlives its TTR (0: never)")  # fmt: skip
        group.add_argument("--result-dir", default=None, help="store results here")
        group.add_argument("--web", default=None,
                           help="store results through the web tier at this URL "
                                "(PUT /photos/{id}/thumbnail), e.g. http://127.0.0.1:8000")  # fmt: skip
        group.add_argument("--web-token", default=None,
                           help="sent as 'Authorization: Bearer T' (the web tier's --worker-token)")  # fmt: skip
        group.add_argument("--web-timeout-s", type=non_negative_float, default=5.0,
                           help="deadline of one call to the web tier")  # fmt: skip
        group.add_argument("--store-attempts", type=int, default=3,
                           help="PUTs of one result before the job fails (errors, 5xx)")  # fmt: skip

    @classmethod
    def check_arguments(cls, parser, args) -> None:
        if not 1 <= args.concurrency <= 1024:
            parser.error("--concurrency must be in 1..1024")
        if args.max_failures < 1 or args.service_time_ms < 0 or args.reserve_timeout_s < 0:
            parser.error("--max-failures >= 1, --service-time-ms and --reserve-timeout-s >= 0")
        if args.web is not None and args.result_dir is not None:
            parser.error("--web and --result-dir are alternatives: give one")
        if args.web is not None and not args.web.startswith(("http://", "https://")):
            parser.error(f"--web must be an http:// URL, got {args.web!r}")
        if not 1 <= args.store_attempts <= 100 or args.web_timeout_s <= 0:
            parser.error("--store-attempts must be in 1..100 and --web-timeout-s > 0")

    async def start(self) -> dict[str, str]:
        self.stopping = False
        self.connected = 0
        self.clients: set[QueueClient] = set()
        self.reserving: set[asyncio.Task] = set()  # slots idle in reserve: a drain cancels them
        m = self.metrics
        self.done = m.counter("scalelab_worker_jobs_done_total", "Jobs processed and deleted")
        failed = m.counter("scalelab_worker_jobs_failed_total", "Failed attempts", ["action"])
        self.failed = {action: failed.labels(action) for action in ("release", "bury")}
        self.seconds = m.histogram("scalelab_worker_processing_seconds", "Time per job")
        self.busy = m.gauge("scalelab_worker_busy_slots", "Slots processing a job")
        self.errors = m.counter("scalelab_worker_queue_errors_total", "Queue connection errors")
        m.gauge("scalelab_worker_connected_slots", "Slots connected to the queue").set_function(
            lambda: self.connected
        )
        self.results: DirectoryResults | WebResults | None = None
        if self.args.result_dir:
            self.results = DirectoryResults(self.args.result_dir)
        elif self.args.web:
            self.results = WebResults(self.args.web, timeout_s=self.args.web_timeout_s,
                                      attempts=self.args.store_attempts,
                                      token=self.args.web_token,
                                      connections=self.args.concurrency)  # fmt: skip
        # Connect before the ready line, so /health is truthful from the start; a queue
        # that is down is not fatal (the slots keep retrying, /health says 503).
        first = await asyncio.gather(
            *(self._connect() for _ in range(self.args.concurrency)), return_exceptions=True
        )
        clients = [c if isinstance(c, QueueClient) else None for c in first]
        if not any(clients):
            self.log.warning("queue_unreachable", queue=self.args.queue, error=str(first[0]))
        for client in clients:
            if client is not None:
                self.clients.add(client)
                self.connected += 1
        self.slots = [asyncio.ensure_future(self._slot(n, c)) for n, c in enumerate(clients)]
        # The worker serves nobody: its only listener is the admin one the runner adds.
        return {}

    def health(self) -> tuple[bool, str]:
        return (True, "ok") if self.connected else (False, "queue unreachable")

    async def drain(self) -> None:
        self.stopping = True
        for task in list(self.reserving):  # idle: nothing to finish, nothing held
            task.cancel()
        await asyncio.gather(*self.slots, return_exceptions=True)

    async def stop(self) -> None:
        self.stopping = True
        for task in self.slots:
            task.cancel()
        await asyncio.gather(*self.slots, return_exceptions=True)
        for client in list(self.clients):
            client.close()
        if self.results is not None:
            await self.results.close()

    # -- one slot ---------------------------------------------------------------------------

    async def _connect(self) -> QueueClient:
        host, port = self.args.queue
        client = await QueueClient.connect(host, port, timeout_s=2.0)
        tube = self.args.tube
        await client.watch(tube)
        if tube != "default":
            await client.ignore("default")
        await client.use(tube)
        return client

    async def _slot(self, n: int, client: QueueClient | None) -> None:
        backoff = Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S)
        try:
            while not self.stopping:
                try:
                    if client is None or not client.connected:
                        client = await self._connect()
                        self.clients.add(client)
                        self.connected += 1
                        backoff.reset()
                    task = asyncio.current_task()
                    self.reserving.add(task)
                    try:
                        reserved = await client.reserve(self.args.reserve_timeout_s)
                    finally:
                        self.reserving.discard(task)
                    if reserved is None:
                        continue
                    job_id, body = reserved
                    if self.stopping:  # reserved as the signal came: give it back at once
                        await client.release(job_id)
                        break
                    await self._run(client, job_id, body)
                except Exception as exc:  # noqa: BLE001 - see below
                    # A queue error, or a bug: either way this slot starts over on a new
                    # connection (closing the old one returns anything it held).
                    self.errors.inc()
                    self.log.warning("queue_error", slot=n, error=repr(exc))
                    if client is not None:
                        if client in self.clients:
                            self.clients.discard(client)
                            self.connected -= 1
                        client.close()
                        client = None
                    await asyncio.sleep(backoff.next())
        finally:
            if client is not None:
                if client in self.clients:
                    self.clients.discard(client)
                    self.connected -= 1
                client.close()

    async def _run(self, client: QueueClient, job_id: int, body: bytes) -> None:
        started = time.monotonic()
        self.busy.inc()
        toucher = None
        if self.args.touch_interval_s > 0:
            toucher = asyncio.ensure_future(self._keep_alive(client, job_id))
        try:
            try:
                result = photo.process(body)
                if self.args.service_time_ms:
                    await asyncio.sleep(self.args.service_time_ms / 1000)
                if self.results is not None:
                    await self.results.store(result)
            except Exception as exc:  # noqa: BLE001 - any failure of the job itself is retried
                if not isinstance(exc, EXPECTED_FAILURES):
                    self.log.error("job_crashed", job=job_id, error=repr(exc))
                await self._stop_touching(toucher)
                await self._failed(client, job_id, body, exc)
                return
            await self._stop_touching(toucher)
            await client.delete(job_id)
            self.done.inc()
        finally:
            if toucher is not None:
                toucher.cancel()
            self.busy.dec()
            self.seconds.observe(time.monotonic() - started)

    async def _keep_alive(self, client: QueueClient, job_id: int) -> None:
        """protocol.txt touch: restart the job's TTR while we are still working on it."""
        while True:
            await asyncio.sleep(self.args.touch_interval_s)
            await client.touch(job_id)

    @staticmethod
    async def _stop_touching(toucher: asyncio.Future | None) -> None:
        if toucher is None:
            return
        toucher.cancel()
        # A touch already written still gets its reply first; the connection keeps order.
        await asyncio.gather(toucher, return_exceptions=True)

    async def _failed(self, client: QueueClient, job_id: int, body: bytes,
                      error: Exception) -> None:  # fmt: skip
        stats = await client.stats_job(job_id)
        failures = int(stats.get("releases", "0")) + 1
        args = self.args
        decision = retry.decide(failures, args.max_failures, args.retry_delay_s,
                                args.retry_max_delay_s, isinstance(error, StoreUnavailable))  # fmt: skip
        pri = int(stats.get("pri", "1024"))
        if decision.action == "bury":
            await client.bury(job_id, pri)
            await self._report_buried(job_id, body, error)
        else:
            await client.release(job_id, pri, decision.delay_s)
        self.failed[decision.action].inc()
        self.log.info("job_failed", job=job_id, error=str(error), failures=failures,
                      action=decision.action, delay_s=decision.delay_s)  # fmt: skip

    async def _report_buried(self, job_id: int, body: bytes, error: Exception) -> None:
        if self.results is None:
            return
        try:
            await self.results.failed(photo.photo_id_of(body), f"job {job_id} buried: {error}")
        except Exception as exc:  # noqa: BLE001 - best effort: the job is buried either way
            self.log.warning("failure_not_reported", job=job_id, error=repr(exc))
