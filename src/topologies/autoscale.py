"""The autoscaler: sizes a pool of workers by their queue's depth (or web servers by load).

The queued stage's workers are not a fixed number: this process watches the tube they
consume (beanstalkd's ``stats-tube``, protocol.txt, read with the project's own
``queue.client.QueueClient``) every ``--interval-s`` and runs as many workers as the
backlog asks for, between ``--min-workers`` and ``--max-workers``. The decision is
``autoscale_policy.ScalingPolicy`` (pure: the proportion, up at once, down one step per
cool-down); this module is its thin asyncio shell:

1. **Watch.** One queue connection, every call bounded by ``--poll-timeout-s``; a
   failed poll drops the connection, is counted, and changes nothing (no figures, no
   decision: a queue that cannot be read is not an empty queue).
2. **Decide.** The policy gets ready + reserved jobs and the workers seen *alive*: a
   worker that died is reaped first, so it is replaced at once if the pool falls below
   what the queue needs or below the minimum.
3. **Act.** Workers are OS processes started and stopped with ``process.Pool``, the
   launcher's own way (``process.start``: ready line, log file, parent-death signal).
   Scaling up starts them one after another, each awaited up to its ready line;
   scaling down stops the newest with SIGTERM, so it finishes the job it holds (or, if
   it was idle in ``reserve``, holds none) and exits: nothing is lost, and a job cut
   short by ``--worker-stop-timeout-s`` goes back to ready when its connection drops.
   Every decision that changes the pool is logged (``scaled``: from, to, desired, ready,
   reserved, reason) and kept in ``GET /status``.

The same loop sizes a web tier (``--lb ADMIN_HOST:PORT``, the stateless stage's
promise: web servers that hold no sessions can come and go). The demand is then the
requests in flight over the balancer's backends (``GET /admin/backends``, each one's
``active``), ``--inflight-per-server`` the target per server, and the pool runs web
servers (``--component web``, flags in ``--worker-args``). Membership goes through the
balancer's admin API (``BalancerMembership``): a started server joins
(``POST /admin/backends``) once it is ready; a server to stop is first drained there
(``POST /admin/backends/{addr}/drain``: no new requests), waited for until nothing is in
flight (at most ``--worker-stop-timeout-s``), removed (``DELETE``), then stopped with
SIGTERM; a server that died is removed. Every poll repairs the membership: a server the
balancer does not list (a join that failed, a restarted balancer) is added again.

Where it runs: a process of its own, declared in the stage like the failover
controller. The launcher starts it after the queue and the web tier; it starts its
initial workers before its ready line, so a stage that is "ready" has workers; and the
launcher stops it first (reverse order), so its workers drain while the web tier they
store results through is still up. The workers are its children, not the launcher's:
they appear in its ``/status`` and in ``RUN/worker-N.log``, not in the endpoint table,
and ``kill -9`` of the autoscaler takes them with it (the kernel's parent-death signal).
Forking happens on one long-lived thread, as in the launcher (see its essay).

Bounds: at most ``MAX_WORKERS`` workers (policy), ``MAX_SAMPLES`` timeline samples and
``MAX_EVENTS`` scaling events kept; a worker that fails to start holds further starts
back for ``START_RETRY_S``.

Metrics: ``scalelab_autoscaler_workers`` (running), ``..._desired_workers``,
``..._queue_jobs{state}`` (ready, reserved at the last poll),
``..._scale_events_total{direction}``, ``..._worker_seconds_total`` (workers x seconds:
its increase over a run divided by the run's length is the mean pool size, what a cloud
bill counts), ``..._worker_exits_total`` (died on their own),
``..._start_failures_total``, ``..._poll_errors_total``; and, observed at every poll,
the histograms ``..._pool_workers`` and ``..._backlog_jobs`` (ready + reserved): two
scrapes then give the pool size and the queue's depth *over* a run (mean, p50, p99),
not only at its ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web

from components.common import Service, main
from components.common.admin import serve_app
from components.common.cli import format_address, host_port, non_negative_float
from components.queue.client import CommandError, QueueClient

from .autoscale_policy import HOLD, MAX_WORKERS, RulesError, ScalingPolicy, ScalingRules
from .process import Pool, StartError

MAX_SAMPLES = 3600
MAX_EVENTS = 200
START_RETRY_S = 2.0
#: How often a retiring web server's in-flight count is read at the balancer.
DRAIN_POLL_S = 0.05
DEFAULT_INTERVAL_S = 0.5
#: Pool sizes are whole numbers: bounds half-way between them put each size in a bucket
#: of its own (up to 8), so a quantile read from the buckets rounds back to a size.
POOL_BUCKETS = (*(k + 0.5 for k in range(9)), 12.5, 16.5, 24.5, 32.5, 48.5, MAX_WORKERS + 0.5)
BACKLOG_BUCKETS = (0, 1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 100_000)


class BalancerMembership:
    """The web tier's membership at a balancer, through its admin API (``components.lb``).

    ``backends()`` is ``GET /admin/backends`` (each backend's ``active``: requests in
    flight, the demand the web tier is sized by); ``join`` adds a server
    (``POST /admin/backends``); ``retire`` takes one out without cutting a request:
    ``POST .../drain`` (no new requests), wait until its in-flight count is zero (at
    most ``drain_s``), then ``DELETE``. Every call is bounded by ``timeout_s``; errors are
    ``aiohttp.ClientError`` or ``TimeoutError`` for the caller to log and retry.
    """

    def __init__(self, host: str, port: int, *, timeout_s: float) -> None:
        self.base = f"http://{host}:{port}/admin/backends"
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s),
                                             raise_for_status=True)  # fmt: skip

    async def backends(self) -> list[dict]:
        async with self.session.get(self.base) as response:
            listing = (await response.json()).get("backends")
        if not isinstance(listing, list):
            raise ValueError("GET /admin/backends: no backends list")
        return listing

    async def join(self, address: str) -> None:
        async with self.session.post(self.base, json={"address": address}):
            pass

    async def retire(self, address: str, drain_s: float) -> None:
        quoted = quote(address, safe="")
        async with self.session.post(f"{self.base}/{quoted}/drain"):
            pass
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline:
            active = [b.get("active", 0) for b in await self.backends()
                      if b.get("address") == address]  # fmt: skip
            if not active or not active[0]:
                break
            await asyncio.sleep(DRAIN_POLL_S)
        async with self.session.delete(f"{self.base}/{quoted}"):
            pass

    async def close(self) -> None:
        await self.session.close()


class AutoscalerService(Service):
    component = "autoscaler"
    default_port = 0
    description = "Runs between --min-workers and --max-workers workers, by the queue's depth"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("autoscaler")
        group.add_argument("--queue", type=host_port, default=None,
                           help="size workers by this queue's depth (HOST:PORT)")  # fmt: skip
        group.add_argument("--lb", type=host_port, default=None, metavar="ADMIN_HOST:PORT",
                           help="instead: size a web tier by the requests in flight at this "
                                "balancer (its admin address), registering each server "
                                "with it and draining it there before it is stopped")  # fmt: skip
        group.add_argument("--component", default=None,
                           help="what the pool runs (default: worker, or web with --lb)")  # fmt: skip
        group.add_argument("--tube", default="photos", help="the tube the workers consume")
        group.add_argument("--min-workers", type=int, default=1, help="never fewer workers")
        group.add_argument("--max-workers", type=int, default=4,
                           help=f"never more workers (at most {MAX_WORKERS})")  # fmt: skip
        group.add_argument("--initial-workers", type=int, default=None,
                           help="workers started before the ready line (default: min)")  # fmt: skip
        group.add_argument("--jobs-per-worker", "--inflight-per-server", type=float,
                           default=8.0, dest="jobs_per_worker",
                           help="ready + reserved jobs one worker is sized for (with --lb: "
                                "requests in flight one web server is sized for)")  # fmt: skip
        group.add_argument("--cooldown-s", type=non_negative_float, default=10.0,
                           help="a smaller pool must do this long before a worker is stopped")  # fmt: skip
        group.add_argument("--interval-s", type=non_negative_float, default=DEFAULT_INTERVAL_S,
                           help="seconds between looks at the queue")  # fmt: skip
        group.add_argument("--poll-timeout-s", type=non_negative_float, default=2.0,
                           help="deadline of one stats-tube call")  # fmt: skip
        group.add_argument("--worker-args", default="",
                           help="each worker's own flags, as one string (--queue and --tube "
                                "are added): e.g. '--web http://H:P --service-time-ms 50'")  # fmt: skip
        group.add_argument("--worker-stop-timeout-s", type=non_negative_float, default=5.0,
                           help="how long a stopped worker may drain before SIGKILL")  # fmt: skip
        group.add_argument("--log-dir", default=None,
                           help="where worker-N.log files go (default: --data-dir, else .)")  # fmt: skip

    @classmethod
    def check_arguments(cls, parser, args) -> None:
        if (args.queue is None) == (args.lb is None):
            parser.error("give one of --queue (workers by queue depth) or --lb (web servers "
                         "by requests in flight)")  # fmt: skip
        if args.component is None:
            args.component = "worker" if args.queue else "web"
        if args.initial_workers is None:
            args.initial_workers = args.min_workers
        try:
            args.rules = ScalingRules(args.min_workers, args.max_workers, args.jobs_per_worker,
                                      args.cooldown_s)  # fmt: skip
        except RulesError as exc:
            parser.error(str(exc))
        if not args.min_workers <= args.initial_workers <= args.max_workers:
            parser.error("--initial-workers must be within --min-workers..--max-workers")
        if not args.interval_s > 0 or not args.poll_timeout_s > 0:
            parser.error("--interval-s and --poll-timeout-s must be > 0")
        try:
            args.worker_argv = shlex.split(args.worker_args)
        except ValueError as exc:
            parser.error(f"--worker-args: {exc}")

    async def start(self) -> dict[str, str]:
        args = self.args
        self.policy = ScalingPolicy(args.rules, time.monotonic())
        if args.queue is not None:
            host, port = args.queue
            flags = ["--queue", f"{host}:{port}", "--tube", args.tube, *args.worker_argv]
            self.balancer = None
        else:
            flags = list(args.worker_argv)
            self.balancer = BalancerMembership(*args.lb, timeout_s=args.poll_timeout_s)
        self.pool = Pool(args.component, flags, prefix=args.component,
                         log_dir=Path(args.log_dir or args.data_dir or "."),
                         stop_timeout_s=args.worker_stop_timeout_s)  # fmt: skip
        # The one thread that forks workers, for the process's whole life (module essay).
        self.spawner = ThreadPoolExecutor(1, thread_name_prefix="autoscaler-spawner")
        self.client: QueueClient | None = None
        self.last: dict | None = None  # the last poll's figures
        self.desired = args.initial_workers
        self.samples: deque[dict] = deque(maxlen=MAX_SAMPLES)
        self.events: deque[dict] = deque(maxlen=MAX_EVENTS)
        self.starts_held_until = 0.0
        self.poll_failing = False
        self.counted_at = time.monotonic()
        m = self.metrics
        m.gauge("scalelab_autoscaler_workers", "Worker processes running").set_function(
            lambda: len(self.pool)
        )
        m.gauge("scalelab_autoscaler_desired_workers", "Workers the queue asks for"
                ).set_function(lambda: self.desired)  # fmt: skip
        jobs = m.gauge("scalelab_autoscaler_queue_jobs", "Jobs in the tube at the last poll",
                       ["state"])  # fmt: skip
        self.m_jobs = {state: jobs.labels(state) for state in ("ready", "reserved")}
        events = m.counter("scalelab_autoscaler_scale_events_total", "Pool size changes",
                           ["direction"])  # fmt: skip
        self.m_events = {d: events.labels(d) for d in ("up", "down")}
        self.m_worker_seconds = m.counter("scalelab_autoscaler_worker_seconds_total",
                                          "Workers running x seconds (mean pool = rate)")  # fmt: skip
        self.m_exits = m.counter("scalelab_autoscaler_worker_exits_total",
                                 "Workers that exited on their own")  # fmt: skip
        self.m_start_failures = m.counter("scalelab_autoscaler_start_failures_total",
                                          "Workers that failed to start")  # fmt: skip
        self.m_poll_errors = m.counter("scalelab_autoscaler_poll_errors_total",
                                       "Polls of the queue that failed")  # fmt: skip
        self.m_pool = m.histogram("scalelab_autoscaler_pool_workers",
                                  "Workers running, at each poll", buckets=POOL_BUCKETS)  # fmt: skip
        self.m_backlog = m.histogram("scalelab_autoscaler_backlog_jobs",
                                     "Ready + reserved jobs, at each poll",
                                     buckets=BACKLOG_BUCKETS)  # fmt: skip
        for _ in range(args.initial_workers):
            proc = await self._spawn(self.pool.grow)
            self.log.info("worker_started", worker=proc.name, pid=proc.pid, workers=len(self.pool))
            if self.balancer is not None:
                await self._membership("join", proc.listen["main"])
        app = web.Application()
        app.router.add_get("/status", self.handle_status)
        self.runner, address = await serve_app(app, args.host, args.port)
        self.task = asyncio.create_task(self.watch())
        return {"main": format_address(address)}

    def _spawn(self, fn):
        return asyncio.get_running_loop().run_in_executor(self.spawner, fn)

    async def watch(self) -> None:
        """``step`` on a fixed schedule: a slow step (a worker starting) delays the next
        look, and the missed ticks are skipped, not made up in a rush."""
        due = time.monotonic()
        while True:
            try:
                await self.step()
            except Exception as exc:  # one bad round must not end the watch
                self.log.error("step_failed", error=repr(exc))
            due = max(due + self.args.interval_s, time.monotonic())
            await asyncio.sleep(due - time.monotonic())

    async def step(self) -> None:
        now = time.monotonic()
        self.m_worker_seconds.inc(len(self.pool) * (now - self.counted_at))
        self.counted_at = now
        for proc in await self._spawn(self.pool.reap):
            self.m_exits.inc()
            if self.balancer is not None:
                await self._membership("retire", proc.listen["main"], 0)
            self._event("worker_exited", worker=proc.name, pid=proc.pid,
                        code=proc.popen.returncode, workers=len(self.pool))  # fmt: skip
        if self.balancer is None:
            figures = await self.poll()
            if figures is None:
                return
            ready, reserved = figures
            demand, fields = ready + reserved, {"ready": ready, "reserved": reserved}
            what = f"{ready} ready + {reserved} reserved jobs"
        else:
            demand = await self.poll_balancer()
            if demand is None:
                return
            fields, what = {"in_flight": demand}, f"{demand} requests in flight"
        workers = len(self.pool)
        self.m_pool.observe(workers)
        self.m_backlog.observe(demand)
        decision = self.policy.decide_demand(demand, workers, time.monotonic(), what)
        self.desired = decision.desired
        self.samples.append({"ts": round(time.time(), 3), **fields, "workers": workers,
                             "desired": decision.desired})  # fmt: skip
        if decision.action == HOLD:
            # Every poll decides; holding is logged at debug (POST /admin/log-level).
            self.log.debug("held", workers=workers, desired=decision.desired, **fields,
                           reason=decision.reason)  # fmt: skip
            return
        if decision.target > workers and time.monotonic() < self.starts_held_until:
            return
        await self.resize(decision.target)
        self.m_events[decision.action].inc()
        self._event("scaled", direction=decision.action, previous=workers, workers=len(self.pool),
                    desired=decision.desired, **fields, reason=decision.reason)  # fmt: skip

    async def poll(self) -> tuple[int, int] | None:
        """``(ready, reserved)`` jobs in the tube, or None if the queue could not say."""
        args = self.args
        try:
            if self.client is None or not self.client.connected:
                self.client = await QueueClient.connect(*args.queue, timeout_s=args.poll_timeout_s)
            stats = await asyncio.wait_for(self.client.stats_tube(args.tube), args.poll_timeout_s)
            ready = int(stats.get("current-jobs-ready", 0))
            reserved = int(stats.get("current-jobs-reserved", 0))
        except CommandError as exc:
            if exc.word != "NOT_FOUND":
                return self._poll_failed(exc)
            ready = reserved = 0  # no producer or consumer has named the tube yet
        except (TimeoutError, ConnectionError, OSError, ValueError) as exc:
            if self.client is not None:
                self.client.close()
                self.client = None
            return self._poll_failed(exc)
        self.m_jobs["ready"].set(ready)
        self.m_jobs["reserved"].set(reserved)
        self.last = {"ready": ready, "reserved": reserved, "ts": round(time.time(), 3)}
        self.poll_failing = False
        return ready, reserved

    async def poll_balancer(self) -> int | None:
        """Requests in flight over the balancer's backends, or None if it could not say.

        Also the membership's repair: a server of the pool the balancer does not list
        (its ``join`` failed, or the balancer restarted) is added again here.
        """
        try:
            listing = await self.balancer.backends()
            demand = sum(max(0, int(b.get("active", 0))) for b in listing)
        except (aiohttp.ClientError, TimeoutError, ValueError, TypeError, AttributeError) as exc:
            return self._poll_failed(exc)
        listed = {b.get("address") for b in listing}
        for proc in self.pool.members:
            if proc.listen["main"] not in listed:
                await self._membership("join", proc.listen["main"])
        self.last = {"in_flight": demand, "backends": len(listing), "ts": round(time.time(), 3)}
        self.poll_failing = False
        return demand

    async def _membership(self, op: str, address: str, *args) -> bool:
        """``join`` or ``retire`` one server at the balancer; a failure is logged, not
        raised (the next poll repairs a missed join; a missed retire leaves a backend
        the balancer's health checks eject)."""
        try:
            await getattr(self.balancer, op)(address, *args)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.log.warning("membership_failed", op=op, backend=address, error=repr(exc))
            return False
        self.log.info("membership", op=op, backend=address)
        return True

    def _poll_failed(self, exc: Exception) -> None:
        self.m_poll_errors.inc()
        self.poll_failing = True
        source = self.args.queue or self.args.lb
        self.log.warning("poll_failed", source="{}:{}".format(*source), error=repr(exc))
        return None

    async def resize(self, target: int) -> None:
        while len(self.pool) < target:
            try:
                proc = await self._spawn(self.pool.grow)
            except StartError as exc:
                self.m_start_failures.inc()
                self.starts_held_until = time.monotonic() + START_RETRY_S
                self.log.error("worker_start_failed", error=str(exc).splitlines()[0])
                return
            self.log.info("worker_started", worker=proc.name, pid=proc.pid, workers=len(self.pool))
            if self.balancer is not None:
                await self._membership("join", proc.listen["main"])
        while len(self.pool) > target:
            if self.balancer is not None:  # no new requests, the ones in flight finish
                await self._membership("retire", self.pool.members[-1].listen["main"],
                                       self.args.worker_stop_timeout_s)  # fmt: skip
            stopped = await self._spawn(self.pool.shrink)
            if stopped is None:
                return
            proc, code = stopped
            self.log.info("worker_stopped", worker=proc.name, pid=proc.pid, exit_code=code,
                          workers=len(self.pool))  # fmt: skip

    def _event(self, event: str, **fields) -> None:
        self.log.info(event, **fields)
        self.events.append({"ts": round(time.time(), 3), "event": event, **fields})

    async def handle_status(self, request: web.Request) -> web.Response:
        rules = self.args.rules
        doc = {
            "tube": self.args.tube if self.args.queue else None,
            "lb": "{}:{}".format(*self.args.lb) if self.args.lb else None,
            "rules": {"min_workers": rules.min_workers, "max_workers": rules.max_workers,
                      "jobs_per_worker": rules.jobs_per_worker, "cooldown_s": rules.cooldown_s},
            "workers": [{"name": p.name, "pid": p.pid, "listen": p.listen}
                        for p in self.pool.members],
            "desired": self.desired,
            "queue": self.last,
            "events": list(self.events),
            "samples": list(self.samples),
        }  # fmt: skip
        return web.json_response(doc, dumps=lambda d: orjson.dumps(d).decode())

    async def drain(self) -> None:
        # No new decisions; the workers drain (each finishes the job it holds) in parallel.
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if self.balancer is not None:  # stop routing to them before they stop
            await asyncio.gather(*(self._membership("retire", p.listen["main"], 0)
                                   for p in self.pool.members))  # fmt: skip
        await self._spawn(self.pool.close)

    async def stop(self) -> None:
        self.task.cancel()
        if self.client is not None:
            self.client.close()
        if self.balancer is not None:
            await self.balancer.close()
        await self.runner.cleanup()
        self.spawner.shutdown(wait=False)

    def health(self) -> tuple[bool, str]:
        source = "queue" if self.balancer is None else "balancer"
        return (False, f"{source} unreachable") if self.poll_failing else (True, "ok")


if __name__ == "__main__":
    main(AutoscalerService)
