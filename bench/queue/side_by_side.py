"""Our queue against beanstalkd, side by side in one run, on the same machine.

    .venv/bin/python bench/queue/side_by_side.py [--duration 5] [--runs 3]

Both servers are pinned to CPU 0 (``taskset``), this load tool to CPU 1. Two workloads,
each run against both servers in alternation, ``--runs`` times, medians reported:

1. *durable puts*: ``-b DIR -f 0`` on both (beanstalkd then fsyncs after each put; we
   group-commit), ``--producers`` connections (default 64) each with one put in flight;
   the figure is acknowledged puts per second. Goal: >= 10x beanstalkd.
2. *pipelined cycles*: no binlog; ``--connections`` connections (default 4) each send
   batches of ``--batch`` puts+reserves in one write, then the matching deletes;
   the figure is jobs per second through put, reserve and delete. Goal: >= 50% of
   beanstalkd. (beanstalkd reads at most one 224-byte command line per read(2), so deep
   pipelining is its weak spot; the next workload is the fairer one.)
3. *round-trip cycles*: no binlog; ``--producers / 4`` connections (default 16), each
   doing put, reserve, delete one command at a time: per-command cost, no batching.

The load tool is Python (uvloop, one process): on the pipelined workload it can be the
bottleneck for beanstalkd, which makes the ratio look better than it is; the script
prints the load tool's own CPU use so a reader can judge. Only loopback is targeted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src")]

from components.queue.protocol import ReplyParser  # noqa: E402
from topologies import process  # noqa: E402

BODY = b"x" * 64


class Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = ReplyParser()
        self.want = 0
        self.got: list = []
        self.done: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.receive_data(data)
        while (reply := self.parser.next_reply()) is not None:
            self.got.append(reply)
            if len(self.got) >= self.want and self.done and not self.done.done():
                self.done.set_result(None)

    def connection_lost(self, exc) -> None:
        if self.done and not self.done.done():
            self.done.set_exception(ConnectionError("lost"))

    async def roundtrip(self, data: bytes, replies: int) -> list:
        self.got = []
        self.want = replies
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        await self.done
        return self.got


async def connect(port: int, n: int) -> list[Conn]:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(n):
        _, conn = await loop.create_connection(Conn, "127.0.0.1", port)
        conns.append(conn)
    return conns


async def durable_puts(port: int, producers: int, duration: float) -> float:
    conns = await connect(port, producers)
    put = b"put 1024 0 60 %d\r\n%s\r\n" % (len(BODY), BODY)
    count = 0
    deadline = time.monotonic() + duration

    async def producer(conn: Conn) -> None:
        nonlocal count
        while time.monotonic() < deadline:
            (reply,) = await conn.roundtrip(put, 1)
            assert reply.word == "INSERTED", reply
            count += 1

    started = time.monotonic()
    await asyncio.gather(*(producer(c) for c in conns))
    elapsed = time.monotonic() - started
    for c in conns:
        c.transport.close()
    return count / elapsed


async def pipelined_cycles(port: int, connections: int, batch: int, duration: float) -> float:
    conns = await connect(port, connections)
    tube = b"bench%d" % os.getpid()
    for i, c in enumerate(conns):  # a tube per connection: each reserves its own puts
        name = tube + b"-%d" % i
        await c.roundtrip(b"use %s\r\nwatch %s\r\nignore default\r\n" % (name, name), 3)
    put = b"put 1024 0 60 %d\r\n%s\r\n" % (len(BODY), BODY)
    first = (put + b"reserve-with-timeout 0\r\n") * batch
    count = 0
    deadline = time.monotonic() + duration

    async def worker(conn: Conn) -> None:
        nonlocal count
        while time.monotonic() < deadline:
            replies = await conn.roundtrip(first, 2 * batch)
            ids = [r.args[0] for r in replies if r.word == "RESERVED"]
            assert len(ids) == batch, replies[:4]
            deletes = b"".join(b"delete %d\r\n" % i for i in ids)
            replies = await conn.roundtrip(deletes, batch)
            assert all(r.word == "DELETED" for r in replies)
            count += batch

    started = time.monotonic()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.monotonic() - started
    for c in conns:
        c.transport.close()
    return count / elapsed


async def roundtrip_cycles(port: int, connections: int, duration: float) -> float:
    """put, reserve, delete: one command at a time per connection (no pipelining)."""
    conns = await connect(port, connections)
    tube = b"rt%d" % os.getpid()
    for i, c in enumerate(conns):
        name = tube + b"-%d" % i
        await c.roundtrip(b"use %s\r\nwatch %s\r\nignore default\r\n" % (name, name), 3)
    put = b"put 1024 0 60 %d\r\n%s\r\n" % (len(BODY), BODY)
    count = 0
    deadline = time.monotonic() + duration

    async def worker(conn: Conn) -> None:
        nonlocal count
        while time.monotonic() < deadline:
            await conn.roundtrip(put, 1)
            (reply,) = await conn.roundtrip(b"reserve-with-timeout 0\r\n", 1)
            assert reply.word == "RESERVED", reply
            (reply,) = await conn.roundtrip(b"delete %d\r\n" % reply.args[0], 1)
            assert reply.word == "DELETED", reply
            count += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.monotonic() - started
    for c in conns:
        c.transport.close()
    return count / elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


class Beanstalkd:
    def __init__(self, durable: bool, workdir: Path) -> None:
        self.port = free_port()
        argv = ["taskset", "-c", "0", shutil.which("beanstalkd") or "beanstalkd",
                "-l", "127.0.0.1", "-p", str(self.port)]  # fmt: skip
        if durable:
            directory = workdir / "beanstalkd"
            directory.mkdir()
            argv += ["-b", str(directory), "-f", "0"]
        self.popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)


class Ours:
    def __init__(self, durable: bool, workdir: Path) -> None:
        flags = ["--log-level", "warning"]
        if durable:
            flags += ["-b", str(workdir / "ours"), "-f", "0"]
        self.proc = process.start("queue", *flags, log_path=workdir / "queue.log")
        # -a: every thread, including the fsync worker thread created later by inheritance.
        subprocess.run(["taskset", "-a", "-p", "-c", "0", str(self.proc.pid)],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        self.port = self.proc.address()[1]

    def stop(self) -> None:
        self.proc.stop()


def measure(server_cls, workload: str, args) -> float:
    durable = workload == "durable"
    with tempfile.TemporaryDirectory(prefix="qbench-") as tmp:
        server = server_cls(durable, Path(tmp))
        try:
            if durable:
                coro = durable_puts(server.port, args.producers, args.duration)
            elif workload == "pipelined":
                coro = pipelined_cycles(server.port, args.connections, args.batch, args.duration)
            else:
                coro = roundtrip_cycles(server.port, args.producers // 4, args.duration)
            return asyncio.run(coro)
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--producers", type=int, default=64)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--only", choices=("durable", "pipelined", "roundtrip"), default=None)
    args = parser.parse_args()
    if not shutil.which("beanstalkd") or not shutil.which("taskset"):
        sys.exit("needs beanstalkd and taskset on PATH")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    # The load tool on CPU 1; servers are put on CPU 0 explicitly with taskset.
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    for name in ("durable", "pipelined", "roundtrip"):
        if args.only and args.only != name:
            continue
        results: dict[str, list[float]] = {"ours": [], "beanstalkd": []}
        for _ in range(args.runs):
            for label, cls in (("beanstalkd", Beanstalkd), ("ours", Ours)):
                cpu_run = time.process_time()
                rate = measure(cls, name, args)
                load_cpu = (time.process_time() - cpu_run) / args.duration
                results[label].append(rate)
                print(f"  {name:9s} {label:10s} {rate:10.0f} /s  (load tool CPU "
                      f"{load_cpu:.0%})", flush=True)  # fmt: skip
        ours = statistics.median(results["ours"])
        theirs = statistics.median(results["beanstalkd"])
        unit = "acknowledged durable puts/s" if name == "durable" else "put+reserve+delete jobs/s"
        # Each run measures both servers back to back, so a pair shares the machine's
        # mood of the moment; the median of paired ratios is the steadier figure.
        pairs = zip(results["ours"], results["beanstalkd"], strict=True)
        paired = statistics.median(o / t for o, t in pairs)
        print(f"{name}: ours {ours:.0f}, beanstalkd {theirs:.0f} {unit} (medians of "
              f"{args.runs}); ratio of medians {ours / theirs:.2f}, median of paired "
              f"ratios {paired:.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
