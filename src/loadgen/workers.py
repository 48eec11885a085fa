"""``--procs N``: several worker processes, one engine each, results merged by the parent.

CPython runs Python code on one core per process, and an aiohttp client saturates its
core long before a fast server does. The way past that is more processes: each worker
runs its own event loop and ``Engine`` with its share of the users (or of the rate), and
ships back its counts and histograms, which add up exactly (``loadgen.histogram``).

A worker is a plain subprocess running ``worker_main(FD)``, talking to the parent
over one end of a ``socketpair`` wrapped as a ``multiprocessing.connection.Connection``
(length-prefixed pickles). A fresh interpreter rather than ``multiprocessing.Process``
because *spawn* re-imports the caller's ``__main__`` (a script without an
``if __name__ == "__main__"`` guard would start itself again), and *fork* would copy
the caller's threads and event loop state.

The conversation, parent to worker: ``("init", target, profile, index, procs, seed)``,
``("start", start_at)``, ``("stop",)``; worker to parent: ``("ready",)``, ``("tick",
interval)`` once a second, ``("done", results)`` or ``("error", text)``.

Blocking pipes: uvloop's ``add_reader`` switches the descriptor to non-blocking mode,
but ``Connection`` is written for blocking ones: a message over 16 KiB (the results of
a long run, with its per-second timeline) goes out as a header then a payload, and a
non-blocking ``recv`` that finds only the header raises ``BlockingIOError``, which
looked like a worker gone; a non-blocking ``send`` into a full socket buffer would cut a
message in half. So each side puts its end back in blocking mode after ``add_reader``:
the loop still learns when a message starts, and reading it whole takes only as long as
the peer needs to write it.

Lifetime: workers ignore SIGINT (a Ctrl-C reaches the whole process group; the parent
decides, and sends ``stop``), and a worker whose parent disappears sees end-of-file on
its socket and stops, so none outlives a killed parent by more than its in-flight
requests' timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

from .histogram import Histogram
from .profile import Profile
from .results import Results

__all__ = ["WorkerPool", "LoadError"]

#: How long worker processes may take to start (import aiohttp) and report ready.
WORKER_START_TIMEOUT_S = 30.0
#: Grace after the run's own end (duration + request timeout) before giving up on one.
WORKER_EXTRA_S = 30.0
_WORKER_COMMAND = (
    "import sys; from loadgen.workers import worker_main; sys.exit(worker_main(int(sys.argv[1])))"
)


def watch(loop: asyncio.AbstractEventLoop, conn: Connection, callback, *args) -> None:
    """Call ``callback(*args)`` when a message starts arriving on ``conn``, which stays
    blocking so that ``conn.recv()`` there reads the message whole (module essay)."""
    loop.add_reader(conn.fileno(), callback, *args)
    os.set_blocking(conn.fileno(), True)


class LoadError(RuntimeError):
    """The run could not be made (bad target, a worker died); the message says why."""


class WorkerPool:
    """``procs`` worker processes, each running an Engine on its share of the load."""

    def __init__(self, target: str, profile: Profile, procs: int, seed: int | None) -> None:
        self.target = target
        self.profile = profile
        self.procs = procs
        self.seed = seed
        self.conns: list[Connection] = []
        self.processes: list[subprocess.Popen] = []
        self.interval = Histogram()
        self.interval_errors = 0
        self.results: list[Results | None] = [None] * procs
        self.failure: str | None = None
        self.ready = 0
        self._changed: asyncio.Event | None = None

    async def prepare(self) -> None:
        """Start every worker and wait until all have reported ready."""
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        env = dict(os.environ)
        # The workers must import this very loadgen, installed or not.
        src = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        for index in range(self.procs):
            parent_end, child_end = socket.socketpair()
            process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_COMMAND, str(child_end.fileno())],
                pass_fds=[child_end.fileno()],
                stdin=subprocess.DEVNULL,
                env=env,
            )
            child_end.close()
            conn = Connection(parent_end.detach())
            self.conns.append(conn)
            self.processes.append(process)
            seed = None if self.seed is None else self.seed * 1000 + index
            conn.send(("init", self.target, self.profile, index, self.procs, seed))
            watch(loop, conn, self._receive, index)
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while self.ready < self.procs:
            self._check_failure()
            if time.monotonic() > deadline:
                raise LoadError(f"workers not ready within {WORKER_START_TIMEOUT_S:g} s")
            await self._wait_change(deadline)

    async def run(self, start_at: float) -> Results:
        """Start every worker at ``start_at``; return their merged results."""
        for conn in self.conns:
            conn.send(("start", start_at))
        p = self.profile
        deadline = start_at + p.duration_s + p.timeout_s + WORKER_EXTRA_S
        while any(r is None for r in self.results):
            self._check_failure()
            if time.monotonic() > deadline:
                raise LoadError("workers did not report their results in time")
            await self._wait_change(deadline)
        merged = Results()
        for results in self.results:
            assert results is not None
            merged.merge(results)
        return merged

    def take_interval(self) -> tuple[Histogram, int]:
        """The last second's merged answers and errors (from the workers' ticks)."""
        interval, errors = self.interval, self.interval_errors
        self.interval = Histogram()
        self.interval_errors = 0
        return interval, errors

    def stop(self) -> None:
        """Ask every worker to end its run early."""
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("stop",))

    async def close(self) -> None:
        """Close the pipes and reap every worker (killing any that will not exit)."""
        loop = asyncio.get_running_loop()
        for conn in self.conns:
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(conn.fileno())
            conn.close()  # a worker still running sees end-of-file and stops
        deadline = time.monotonic() + 5.0
        for process in self.processes:
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5.0)

    # -- messages --------------------------------------------------------------------
    async def _wait_change(self, deadline: float) -> None:
        assert self._changed is not None
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max(0.01, deadline - time.monotonic()))

    def _receive(self, index: int) -> None:
        conn = self.conns[index]
        assert self._changed is not None
        self._changed.set()
        try:
            message = conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(conn.fileno())
            if self.results[index] is None and self.failure is None:
                process = self.processes[index]
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=1.0)
                self.failure = (
                    f"worker {index} exited before reporting (exit code {process.returncode})"
                )
            return
        kind = message[0]
        if kind == "ready":
            self.ready += 1
        elif kind == "tick":
            self.interval.merge(Histogram.from_dict(message[1]["histogram"]))
            self.interval_errors += message[1]["errors"]
        elif kind == "done":
            self.results[index] = Results.from_dict(message[1])
        elif kind == "error":
            self.failure = f"worker {index} failed: {message[1]}"

    def _check_failure(self) -> None:
        if self.failure is not None:
            raise LoadError(self.failure)


# -- the worker side -------------------------------------------------------------------


def worker_main(fd: int) -> int:
    """Entry point of a worker process: serve one run over the connection on ``fd``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    conn = Connection(fd)
    try:
        import uvloop

        message = conn.recv()
        if message[0] != "init":
            raise LoadError(f"expected init, got {message[0]!r}")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(conn, *message[1:]))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return 1  # the parent is gone: nobody to report to
    except BaseException as error:  # report anything, then exit non-zero
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(error).__name__}: {error}"))
        return 1
    return 0


async def _serve(conn: Connection, target, profile, index: int, procs: int, seed) -> None:
    from .engine import Engine

    engine = Engine(target, profile, seed=seed, worker=index, workers=procs)
    conn.send(("ready",))
    message = conn.recv()  # nothing else runs yet: a blocking wait is fine here
    if message[0] != "start":
        return
    start_at = message[1]
    loop = asyncio.get_running_loop()

    def on_message() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = ("stop",)  # the parent is gone: finish up and exit
            loop.remove_reader(conn.fileno())
        if message[0] == "stop":
            engine.stop()

    async def ticks() -> None:
        second = 0
        while True:
            second += 1
            await asyncio.sleep(max(0.0, start_at + second - time.monotonic()))
            with contextlib.suppress(OSError):
                conn.send(("tick", engine.results.take_interval()))

    watch(loop, conn, on_message)
    ticker = asyncio.ensure_future(ticks())
    try:
        results = await engine.run(start_at)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        with contextlib.suppress(OSError, ValueError):
            loop.remove_reader(conn.fileno())
    conn.send(("tick", results.take_interval()))
    conn.send(("done", results.to_dict()))
