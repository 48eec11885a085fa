"""Capacity emulation: a bounded number of requests in service, a bounded wait queue.

On a 2-core laptop every Python server is bottlenecked by the same CPU, so "add a
second web server" (or "add a read replica") would show nothing. The journey therefore *models* a server's
capacity, the way queueing theory does: a server has ``max_concurrency`` workers (think
threads or database connections), each request holds one for ``service_time_ms``, and
at most ``max_queue`` requests may wait for a worker. A request beyond that is refused at
once with 503 and ``Retry-After`` (RFC 9110 §15.6.4, §10.2.3) instead of joining an
unbounded queue where it would time out anyway: load shedding, which keeps latency
bounded for the requests that are accepted.

Shared by the web tier (requests) and the store (queries, and writes with the flags
prefixed ``--write-``), so all model capacity with the same flags and the same semantics.
``Admission`` bundles one side's gate, service time and ``Retry-After``.

Service time comes in two kinds (``--service-mode``):

- ``sleep``: ``asyncio.sleep``, like waiting on I/O. Concurrency is limited only by
  ``max_concurrency``, so N workers give N / service_time throughput (Little's law).
- ``spin``: a busy loop, like CPU work. It blocks the event loop, so one process serves
  one request at a time however many workers it has: the reason CPU-bound Python scales
  by processes, not coroutines.

``Gate`` is FIFO: a released slot is handed directly to the oldest waiter, so a newcomer
cannot overtake the queue. Waiters that give up (client gone, task cancelled) leave the
queue, and a waiter cancelled after being handed a slot passes the slot on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from .cli import non_negative_float, non_negative_int


class Gate:
    """At most ``limit`` holders (0: unlimited) and at most ``max_queue`` waiters."""

    def __init__(self, limit: int, max_queue: int) -> None:
        if limit < 0 or max_queue < 0:
            raise ValueError("limit and max_queue must be >= 0")
        self.limit = limit
        self.max_queue = max_queue
        self.active = 0
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> bool:
        """Take a slot, waiting in the queue if needed; False when the queue is full."""
        if self.limit == 0 or (self.active < self.limit and not self._waiters):
            self.active += 1
            return True
        if len(self._waiters) >= self.max_queue:
            return False
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was ours already: pass it on
            else:
                with contextlib.suppress(ValueError):  # already popped by release
                    self._waiters.remove(waiter)
            raise
        return True  # ``release`` handed its slot over; ``active`` already counts us

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1


def spin(seconds: float) -> None:
    """Burn CPU for ``seconds`` (wall clock), holding the event loop like real CPU work."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


async def serve_time(seconds: float, mode: str) -> None:
    if mode == "spin":
        spin(seconds)
    else:
        await asyncio.sleep(seconds)


class Admission:
    """One side's capacity (a server's requests, a store's queries or its writes): the
    gate, the service time spent holding a worker, and the ``Retry-After`` of a refusal."""

    def __init__(self, max_concurrency: int = 0, max_queue: int = 0,
                 service_time_ms: float = 0.0, service_mode: str = "sleep",
                 retry_after_s: int = 1) -> None:  # fmt: skip
        self.gate = Gate(max_concurrency, max_queue)
        self.service_time_s = service_time_ms / 1000.0
        self.service_mode = service_mode
        self.retry_after = {"Retry-After": str(retry_after_s)}
        #: False when neither a limit nor a service time is set: callers skip ``admit``.
        self.enabled = max_concurrency > 0 or service_time_ms > 0

    @classmethod
    def from_args(cls, args, prefix: str = "") -> Admission:
        """From the flags ``add_arguments(parser, prefix=prefix)`` defined."""
        p = prefix.replace("-", "_")
        return cls(getattr(args, f"{p}max_concurrency"), getattr(args, f"{p}max_queue"),
                   getattr(args, f"{p}service_time_ms"), getattr(args, f"{p}service_mode"),
                   getattr(args, f"{p}retry_after_s"))  # fmt: skip

    async def admit(self) -> bool:
        """Take a worker (waiting in the queue if needed) and spend the service time in
        it; False when the queue is full (answer 503 with ``retry_after``). After True the
        caller does its work and then calls ``release``."""
        if not await self.gate.acquire():
            return False
        if self.service_time_s:
            try:
                await serve_time(self.service_time_s, self.service_mode)
            except BaseException:
                self.gate.release()
                raise
        return True

    def release(self) -> None:
        self.gate.release()


def add_arguments(parser, unit: str = "requests", prefix: str = "") -> None:
    """The capacity flags, with the web tier's names and meanings, for ``unit``; a
    ``prefix`` (``"write-"``) gives a second side its own set (``--write-max-queue``)."""
    group = parser.add_argument_group(f"capacity emulation ({unit})")
    f = f"--{prefix}"
    group.add_argument(f"{f}service-time-ms", type=non_negative_float, default=0.0,
                       help=f"time each of the {unit} holds a worker")  # fmt: skip
    group.add_argument(f"{f}service-mode", choices=("sleep", "spin"), default="sleep",
                       help="sleep: like waiting on I/O; spin: like CPU work")  # fmt: skip
    group.add_argument(f"{f}max-concurrency", type=non_negative_int, default=0,
                       help=f"{unit} served at once (0: unlimited)")  # fmt: skip
    group.add_argument(f"{f}max-queue", type=non_negative_int, default=128,
                       help=f"{unit} waiting for a worker before 503")  # fmt: skip
    group.add_argument(f"{f}retry-after-s", type=non_negative_int, default=1,
                       help="Retry-After sent with a 503 over capacity")  # fmt: skip
