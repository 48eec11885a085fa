"""A/B the queue's own CPU per durable put between a git revision and the work tree.

    .venv/bin/python bench/queue/ab_put_cost.py --base HEAD [--pairs 5] [--mode durable]

Why: on this shared machine a side-by-side run's puts/s moves by 2x between minutes, and
the server's CPU per put (from /proc) moves with it (a descheduled server batches
differently, a cold cache costs more). This script takes the sockets out: it starts a
real ``QueueService`` (real broker, real binlog, real fsyncs in the real group commit)
in a child process, connects ``--producers`` fake connections, and runs rounds in which
every connection hands the server one ``put`` and the loop runs until every
``INSERTED`` has been released. It reports CPU time per put twice: the event-loop
thread's (user + system: the parse, broker, record encoding, the file write,
group-commit bookkeeping, held replies, metrics) and the whole process's (plus the
disk thread: the fsyncs' kernel time and the thread switches; the child runs on one
CPU, as the server does in the side-by-side). Socket syscalls are not in either. Each
figure is the best batch of a run (the one the machine disturbed least); the two source
trees run alternately in fresh processes so drift hits both alike.

``--mode memory`` runs the same without a binlog: the floor the durable path adds to.
The base revision is extracted with ``git archive`` into a temporary directory.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import benchlib  # noqa: E402

# One measurement, in a child with the chosen src first on sys.path.
CHILD = r"""
import asyncio, sys, tempfile, time
sys.path[:0] = [sys.argv[1]]
import uvloop
from components.common.runner import Runtime, parse_args
from components.queue.server import QueueConnection, QueueService

PRODUCERS, BATCHES, ROUNDS, MODE = int(sys.argv[2]), int(sys.argv[3]), 100, sys.argv[4]
PUT = b"put 1024 0 60 64\r\n" + b"x" * 64 + b"\r\n"


class Replies:
    # Counts reply lines over every fake connection; wakes the round when all are in.
    count = 0
    want = 0
    done = None


class FakeTransport:
    def write(self, data):
        Replies.count += data.count(b"\r\n")
        if Replies.count >= Replies.want and not Replies.done.done():
            Replies.done.set_result(None)
    def get_extra_info(self, name, default=None): return default
    def pause_reading(self): pass
    def resume_reading(self): pass
    def close(self): pass
    def abort(self): pass
    def is_closing(self): return False


async def main(tmp):
    flags = ["--port", "0", "--admin-port", "0", "--log-level", "warning"]
    if MODE == "durable":
        flags += ["-b", tmp, "-f", "0"]
    args = parse_args(QueueService, flags)
    service = QueueService(args, Runtime(args, "queue"))
    await service.start()
    conns = []
    for _ in range(PRODUCERS):
        conn = QueueConnection(service)
        conn.connection_made(FakeTransport())
        conns.append(conn)
    loop = asyncio.get_running_loop()
    async def round_():
        Replies.want += PRODUCERS
        Replies.done = loop.create_future()
        for conn in conns:
            conn.data_received(PUT)
        await Replies.done  # the loop sleeps in its poll while the fsync runs
    for _ in range(ROUNDS):
        await round_()
    best_loop = best_process = float("inf")
    for _ in range(BATCHES):
        t0, p0 = time.thread_time(), time.process_time()
        for _ in range(ROUNDS):
            await round_()
        puts = ROUNDS * PRODUCERS
        best_loop = min(best_loop, (time.thread_time() - t0) / puts * 1e6)
        best_process = min(best_process, (time.process_time() - p0) / puts * 1e6)
    await service.stop()
    print(f"{best_loop:.3f} {best_process:.3f}")


with tempfile.TemporaryDirectory() as tmp:
    uvloop.run(main(tmp))
"""


def measure(src: Path, producers: int, batches: int, mode: str) -> tuple[float, float]:
    """(loop thread, whole process) CPU µs per put, each the best batch of one run."""
    argv = [sys.executable, "-c", CHILD, str(src), str(producers), str(batches), mode]
    # One CPU, as in the side-by-side: the disk thread's switches cost what they cost there.
    out = subprocess.run(["taskset", "-c", "0", *argv], capture_output=True, text=True,
                         check=True, cwd=ROOT)  # fmt: skip
    loop_us, process_us = out.stdout.split()[-2:]
    return float(loop_us), float(process_us)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--pairs", type=int, default=5, help="alternating runs per side")
    parser.add_argument("--batches", type=int, default=10, help="batches of 100 rounds per run")
    parser.add_argument("--producers", type=int, default=64)
    parser.add_argument("--mode", choices=("durable", "memory"), default="durable")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sides = {args.base: benchlib.export_source(args.base, tmp), "work tree": ROOT / "src"}
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        for _ in range(args.pairs):
            for name, src in sides.items():
                results[name].append(measure(src, args.producers, args.batches, args.mode))
    for column, what in enumerate(("event-loop thread", "whole process (disk thread too)")):
        print(f"best CPU µs per {args.mode} put, {what}, fake sockets; per run, median of runs")
        for name, runs in results.items():
            values = [run[column] for run in runs]
            shown = " ".join(f"{v:.2f}" for v in values)
            print(f"{name:>12}: median {statistics.median(values):.2f}   [{shown}]")
        base, new = (statistics.median(run[column] for run in v) for v in results.values())
        print(f"work tree / base: {new / base:.3f}")


if __name__ == "__main__":
    main()
