"""Stage 8 (figures 17-19): slow work leaves the request: a durable queue and workers.

Making a thumbnail is too slow to do while a user waits, so the web servers behind the
balancer only record the photo and publish a job to a durable queue (``components.queue``,
beanstalkd's protocol; ``-f 0``: the job is fsynced before the queue says ``INSERTED``),
and answer ``202 Accepted`` with the photo's address. A pool of workers
(``components.worker``) reserves the jobs, makes the thumbnails and stores them back
through the balancer (``PUT /photos/{id}/thumbnail``), which makes the photo *done*.
The pool is sized by the queue's depth (``autoscale.py``, its policy in
``autoscale_policy.py``): ``--workers`` to start with, more at once while a backlog
builds, one fewer per ``--cooldown-s`` once it has drained, within ``--min-workers``
and ``--max-workers``.

Trade-offs. The request returns before the work is done: the user polls
``GET /photos/{id}`` (pending, then done), and the web tier's latency no longer depends
on the work. Delivery is at least once: a worker killed after storing but before
``delete`` leaves the job to run again, which is harmless only because storing is
idempotent. The backlog absorbs a burst that the workers could not serve as it arrives:
it is work deferred, not refused, and the autoscaler turns its depth into capacity,
with a delay (a worker's start-up) up and a deliberate one (the cool-down) down.
The queue itself is now a single box every upload depends on. Photos live in the
store, shared by every web server, so any of them can answer for any photo.

Capacity emulation: ``--worker-service-time-ms`` is each job's emulated work and
``--worker-concurrency`` the jobs one worker holds at once, so one worker handles
``concurrency / service time`` jobs per second whatever the machine, and a laptop shows
a real backlog (``--load photos``).
"""

from __future__ import annotations

import argparse

from .autoscale_policy import MAX_WORKERS
from .tiers import add_arguments as _add_arguments
from .tiers import balancer, count, local_cache, positive, store, store_access, web_tier
from .topology import Component, Topology, TopologyError


def add_arguments(parser) -> None:
    _add_arguments(parser, web=2)
    parser.add_argument("--workers", type=count, default=None,
                        help="workers to start with (default: --min-workers)")  # fmt: skip
    parser.add_argument("--min-workers", type=count, default=1, help="never fewer workers")
    parser.add_argument("--max-workers", type=positive, default=4,
                        help=f"never more workers (at most {MAX_WORKERS})")  # fmt: skip
    parser.add_argument("--worker-concurrency", type=positive, default=2,
                        help="jobs one worker processes at once")  # fmt: skip
    parser.add_argument("--worker-service-time-ms", type=float, default=200.0,
                        help="emulated work per photo job")  # fmt: skip
    parser.add_argument("--jobs-per-worker", type=float, default=4.0,
                        help="ready + reserved jobs one worker is sized for (the autoscaler's "
                             "target; a little above --worker-concurrency keeps slots fed)")  # fmt: skip
    parser.add_argument("--cooldown-s", type=float, default=10.0,
                        help="a smaller pool must do this long before a worker is stopped")  # fmt: skip
    parser.add_argument("--scale-interval-s", type=float, default=0.5,
                        help="seconds between the autoscaler's looks at the queue")  # fmt: skip


def worker_args(options: argparse.Namespace) -> str:
    """Each worker's flags: results go through the balancer, like any client's request."""
    return (f"--web http://{{lb}} --concurrency {options.worker_concurrency} "
            f"--service-time-ms {options.worker_service_time_ms:g}")  # fmt: skip


def autoscaler(options: argparse.Namespace) -> Component:
    initial = options.min_workers if options.workers is None else options.workers
    if not options.min_workers <= initial <= options.max_workers <= MAX_WORKERS:
        raise TopologyError(f"need --min-workers ({options.min_workers}) <= --workers "
                            f"({initial}) <= --max-workers ({options.max_workers}) "
                            f"<= {MAX_WORKERS}")  # fmt: skip
    if not (
        options.jobs_per_worker > 0
        and options.cooldown_s >= 0
        and options.scale_interval_s > 0
        and options.worker_service_time_ms >= 0
    ):
        raise TopologyError("--jobs-per-worker and --scale-interval-s must be > 0, "
                            "--cooldown-s and --worker-service-time-ms >= 0")  # fmt: skip
    flags = ["--queue", "{queue}", "--tube", "photos", "--log-dir", "{run}",
             "--min-workers", str(options.min_workers), "--max-workers", str(options.max_workers),
             "--initial-workers", str(initial), "--jobs-per-worker", f"{options.jobs_per_worker:g}",
             "--cooldown-s", f"{options.cooldown_s:g}",
             "--interval-s", f"{options.scale_interval_s:g}",
             "--worker-args", worker_args(options)]  # fmt: skip
    return Component("autoscaler", "autoscaler", flags, module="topologies.autoscale")


def topology(options) -> Topology:
    db = store(options)
    between, spec = store_access(options, db)
    queue = Component("queue", "queue", "--binlog-dir {data} --fsync-ms 0")
    webs = web_tier(options, options.web, spec, local_cache(options), extra="--queue {queue}")
    return Topology("queued", [*db, *between, queue, *webs, balancer(webs), autoscaler(options)],
                    entry="lb")  # fmt: skip
