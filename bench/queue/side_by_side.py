"""Our queue against beanstalkd, side by side in one run, on the same machine.

    .venv/bin/python bench/queue/side_by_side.py [--duration 5] [--runs 3]

Both servers are pinned to CPU 0 (``taskset``), the load tools to CPU 1. Three workloads,
each run against both servers in alternation, ``--runs`` times, medians reported:

1. *durable puts*: ``-b DIR -f 0`` on both (beanstalkd then fsyncs after each put; we
   group-commit), ``--producers`` connections (default 64) each with one put in flight;
   the figure is acknowledged puts per second. Goal: >= 10x beanstalkd. The producers
   are ``putload.c`` (one C epoll loop, compiled on the fly with ``cc -O2``; see its
   header for why), or this script's Python ones with ``--producer-tool python``. A
   third row runs ours *without* a binlog under the same load: what a put costs with
   no write and no fsync, the ceiling the durable figure can approach but not pass.
   ``--base REV`` (repeatable) adds our server as of git revision REV to every
   workload: a before/after measured in the same rounds. Two copies of the same code
   differed by up to 20% in puts/s here; their CPU per put by under 5%.
2. *pipelined cycles*: no binlog; ``--connections`` connections (default 4) each send
   batches of ``--batch`` puts+reserves in one write, then the matching deletes;
   the figure is jobs per second through put, reserve and delete. Goal: >= 50% of
   beanstalkd. (beanstalkd reads at most one 224-byte command line per read(2), so deep
   pipelining is its weak spot; the next workload is the fairer one.)
3. *round-trip cycles*: no binlog; ``--producers / 4`` connections (default 16), each
   doing put, reserve, delete one command at a time: per-command cost, no batching.

Besides rates, every row has the server's CPU per operation (user + system time of all
its threads, from /proc/<pid>/stat, around the run): on this shared machine the
steadiest figure, and the one that says whether a server was CPU-bound (rate x CPU per
op near 1 s/s) or waiting on its disk. The load tool's own CPU per operation is printed
too (putload's, or this Python process's): if rate x that nears 1 s/s, the load tool,
not the server, set the figure. Only loopback is targeted.

What bounds the durable figure (measured in issue 9's second session; see
``ab_put_cost.py`` for the per-put cost without sockets):

- beanstalkd is bound by its disk: one fsync per put, so ~6,500 puts/s when this VM's
  fsync takes ~150 µs, and 300-1,200/s while a neighbour keeps the shared disk busy.
- Ours, given a core to itself, is bound by CPU: ~23 µs of CPU per durable put (all threads, from /proc) against
  ~18 µs for the same put with no binlog (the ``ours, no binlog`` row). At 100% of one
  core that is ~43,000 durable puts/s, and ~55,000/s is the ceiling without a disk at
  all (the kernel's recv, send and epoll are ~7 µs of it). So ">= 10x beanstalkd" holds
  whenever beanstalkd's fsync takes more than ~10 x 23 µs: true at the issue's
  ~2,800/s and on a busy day here, not against a quiet disk.
- A durable put's extra ~5 µs: per group commit one ``fdatasync`` (~70 µs of kernel
  CPU, a virtio flush and two sleeps) and one disk-thread round trip (~23 µs), shared
  by a batch of ~30 (64 closed-loop producers settle into two groups that take turns:
  one group's records are written while the other's fsync runs); per put, the record's
  encoding and its held reply (~1 µs).
- Cut this session (``--base 3805301``): CPU per durable put from 28-33 µs to 22-26 µs
  (``ab_put_cost.py``, no sockets: 19.5 to 11.7), by one commit decision per poll
  instead of per read, fdatasync of preallocated segments, a dedicated disk thread and
  a leaner put path. Puts/s follow when the server has CPU 0 to itself (load average
  ~1.5: 37,000-44,000 against 30,000-32,000, 7.3-8.5x beanstalkd against 5.9x); with
  busy neighbours on CPU 0 (rate x CPU per put of 0.5-0.7) they moved within the noise.
- Tried and dropped, figures from paired runs: delaying a commit until the producers
  just acknowledged are back (batches grew from ~31 to ~47, puts/s did not, latency
  did); fsync inline on the event loop (fewer thread switches, but every commit stalls
  the loop for the disk: worse as soon as the disk is slow).

Issue 9's third session (``--base f9c554e``, 3 x 5 s, load average ~1.7-2.4, a
quiet moment): ours 53,254 durable puts/s at 17.8 CPU µs per put against 40,467 at
23.6 for the session's start, 10.5x beanstalkd (5,093/s) against 7.7x; per run
50.2k/48.9k, 53.3k/39.0k, 56.3k/40.5k, rate x CPU per put ~0.95 s/s (CPU-bound). The
CPU went to: one frame (length + CRC) per group commit instead of one per record; a
read that is exactly one plain put parsed straight from the read (no buffer, state
machine or event object); put headers memoised. (``ab_put_cost.py``, no sockets: loop
CPU per durable put ~7.4 to ~4.4 µs.) On a busier machine (CPU 0 shared with other
tenants, the disk busy) the ratio swings between 5x and 90x with beanstalkd's fsync.

- Tried and dropped in the third session, figures from alternating runs: the disk
  thread owning the file and writing each group with one O_DSYNC ``pwrite`` (one GIL
  release per group instead of a loop write plus a thread fdatasync): ~1.5 µs less CPU
  per put, but its rounds took 0.62-0.73 ms against 0.38-0.40 and puts/s fell (33-41k
  against 45-50k). The fsync as a Linux AIO request (``io_submit`` of IOCB_CMD_FDSYNC
  with an eventfd, no thread at all): the kernel runs it on CPU 0's shared workqueue,
  where it took 2.6-5.8 ms against ~130 µs for a thread's fdatasync (118 µs from CPU
  1), so puts/s halved. The disk thread under ``SCHED_BATCH`` (no wakeup preemption of
  the loop): ~2 µs less CPU per put and batches of ~53 instead of ~34, but a lone
  producer's put took ~10 ms instead of ~2 whenever another tenant kept CPU 0 busy
  (the batch thread waits for a scheduler tick).

- Tried and dropped in the fourth session: the group commit's ``fdatasync`` in a helper
  *process* (a "syncer": own GIL, fd passed with SCM_RIGHTS, one 8-byte request and
  12-byte reply per commit over a SOCK_SEQPACKET socketpair; commits c5f5808 and
  972a6d7, reverted, with tests of its failure modes). Three ``--base`` runs (3, 5, 5
  x 5 s, 13 pairs): medians 47.4k/56.4k/57.6k puts/s at 17.0/16.7/16.5 CPU µs per put
  (server + helper) against 37.0k/54.1k/57.8k at 17.5/16.4/16.5 for the thread: the
  same once the machine was quiet. Per-task /proc figures (putload 64, 5 s, server on
  CPU 0) say why: the fsync worker costs ~80 ticks per ~9,000 commits either way, ~90%
  of it system time (the ``fdatasync`` itself, ~80 µs of kernel CPU a commit, ~3 µs a
  put at ~27 puts a commit); its user time (the GIL part) is ~0.3 µs a put. The loop's
  involuntary switches halved (~47k to ~23k per 5 s) and its CPU per put did not move
  (~13.5-14.5 µs, ~60% of it system time: recv, send, epoll). The lever left is fewer
  or cheaper ``fdatasync`` calls, not the hand-off to whoever runs them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from components.queue.protocol import ReplyParser  # noqa: E402
from topologies import process  # noqa: E402

HERE = Path(__file__).resolve().parent

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


async def durable_puts(port: int, producers: int, duration: float) -> tuple[int, float]:
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
    return count, elapsed


async def pipelined_cycles(
    port: int, connections: int, batch: int, duration: float
) -> tuple[int, float]:
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
    return count, elapsed


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
    return count, elapsed


def start_beanstalkd(durable: bool, workdir: Path) -> tuple[process.ComponentProcess, int]:
    port = benchlib.free_port()
    argv = [shutil.which("beanstalkd") or "beanstalkd", "-l", benchlib.LOOPBACK, "-p", str(port)]
    if durable:
        directory = workdir / "beanstalkd"
        directory.mkdir()
        argv += ["-b", str(directory), "-f", "0"]
    server = benchlib.start_reference(argv, name="beanstalkd", port=port,
                                      log_path=workdir / "beanstalkd.log")  # fmt: skip
    return server, port


def start_ours(durable: bool, workdir: Path) -> tuple[process.ComponentProcess, int]:
    flags = ["--log-level", "warning"]
    if durable:
        flags += ["-b", str(workdir / "ours"), "-f", "0"]
    server = process.start("queue", *flags, log_path=workdir / "queue.log")
    # Every thread (the disk thread created later included) and the syncer process.
    for pid in benchlib.process_tree(server.pid):
        benchlib.pin(pid)
    return server, server.address()[1]


def start_ours_memory(durable: bool, workdir: Path) -> tuple[process.ComponentProcess, int]:
    """Ours without a binlog under the same workload: the ceiling durability costs from."""
    return start_ours(False, workdir)


def base_starter(src: Path):
    """A starter for our server as of another revision, its ``src`` extracted to ``src``.

    Started like a reference server (``python -m components.queue`` with that tree on
    PYTHONPATH, pinned, polled until its port accepts): ``process.start`` would run
    this checkout's code.
    """

    def start_base(durable: bool, workdir: Path) -> tuple[process.ComponentProcess, int]:
        port = benchlib.free_port()
        argv = [sys.executable, "-m", "components.queue", "--port", str(port),
                "--admin-port", "0", "--log-level", "warning"]  # fmt: skip
        if durable:
            argv += ["-b", str(workdir / "base"), "-f", "0"]
        server = benchlib.start_reference(argv, name="queue-base", port=port,
                                          log_path=workdir / "queue-base.log",
                                          env={"PYTHONPATH": str(src)})  # fmt: skip
        return server, port

    return start_base


#: Contenders per workload. The durable workload also runs our server without a binlog:
#: the rate a put costs without its disk write and fsync, which bounds the durable one.
CONTENDERS = {
    "durable": (("beanstalkd", start_beanstalkd), ("ours", start_ours),
                ("ours, no binlog", start_ours_memory)),
    "pipelined": (("beanstalkd", start_beanstalkd), ("ours", start_ours)),
    "roundtrip": (("beanstalkd", start_beanstalkd), ("ours", start_ours)),
}  # fmt: skip


@dataclass
class Result:
    rate: float  # operations (puts, or put+reserve+delete jobs) per second
    server_us: float  # the server's CPU (all threads) per operation, microseconds
    load_us: float  # this load tool's CPU per operation, microseconds


def build_putload(workdir: Path) -> Path:
    """Compile putload.c (the C producers of the durable workload) into ``workdir``."""
    binary = workdir / "putload"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(HERE / "putload.c")], check=True)
    return binary


def c_durable_puts(putload: Path, port: int, producers: int, duration: float):
    """Run putload on the load CPU; (puts, seconds, its CPU seconds)."""
    argv = benchlib.pinned([str(putload), benchlib.LOOPBACK, str(port), str(producers),
                            str(duration)], benchlib.LOAD_CPUS)  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    fields = dict(part.split("=") for part in out.split())
    if int(fields["errors"]):
        raise benchlib.BenchError(f"putload saw errors: {out.strip()}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return int(fields["puts"]), float(fields["seconds"]), cpu


def measure(start, workload: str, args) -> Result:
    with tempfile.TemporaryDirectory(prefix="qbench-") as tmp:
        server, port = start(workload == "durable", Path(tmp))
        try:
            # The server's process tree: a durable server's syncer helper is part of its cost.
            pids = benchlib.process_tree(server.pid)
            server_cpu = benchlib.cpu_seconds(pids)
            if workload == "durable" and args.putload is not None:
                count, elapsed, load_cpu = c_durable_puts(args.putload, port, args.producers,
                                                          args.duration)  # fmt: skip
            else:
                if workload == "durable":
                    coro = durable_puts(port, args.producers, args.duration)
                elif workload == "pipelined":
                    coro = pipelined_cycles(port, args.connections, args.batch, args.duration)
                else:
                    coro = roundtrip_cycles(port, args.producers // 4, args.duration)
                load_cpu = time.process_time()
                count, elapsed = asyncio.run(coro)
                load_cpu = time.process_time() - load_cpu
            server_cpu = benchlib.cpu_seconds(pids) - server_cpu
        finally:
            server.stop()
    os.sync()  # the binlog just deleted: its writeback and discards land now, not in the next run
    return Result(count / elapsed, benchlib.us_per_op(server_cpu, count),
                  benchlib.us_per_op(load_cpu, count))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--producers", type=int, default=64)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--only", choices=tuple(CONTENDERS), default=None)
    parser.add_argument("--producer-tool", choices=("c", "python"), default="c",
                        help="durable workload: putload.c (default) or the Python producers")  # fmt: skip
    parser.add_argument("--base", metavar="REV", action="append", default=[],
                        help="also run our server as of git revision REV (before/after); "
                             "may be repeated")  # fmt: skip
    args = parser.parse_args()
    benchlib.require("beanstalkd", "taskset")
    args.putload = None
    if args.producer_tool == "c":
        benchlib.require("cc")
        tools = tempfile.TemporaryDirectory(prefix="putload-")  # removed at exit
        args.putload = build_putload(Path(tools.name))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    # The load tool on CPU 1; servers are put on CPU 0 explicitly with taskset.
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {int(benchlib.LOAD_CPUS)})
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  {benchlib.machine_note()}", flush=True)
    rows = []
    base_tree = tempfile.TemporaryDirectory(prefix="queue-base-")  # removed at exit
    bases = []
    for rev in args.base:
        tree = benchlib.export_source(rev, Path(base_tree.name) / rev.replace("/", "_"))
        bases.append((f"ours@{rev}", base_starter(tree)))
    for name, contenders in CONTENDERS.items():
        if args.only and args.only != name:
            continue
        contenders = (*contenders, *bases)
        results: dict[str, list[Result]] = {label: [] for label, _ in contenders}
        for run in range(args.runs):
            # Vary who follows whom: a durable run leaves work behind on the shared disk
            # (measured: whoever ran right after beanstalkd lost up to a third of its
            # rate), so rotate the order each run and reverse every other one.
            shift = run % len(contenders)
            order = (*contenders[shift:], *contenders[:shift])
            for label, start in order[::-1] if run % 2 else order:
                r = measure(start, name, args)
                results[label].append(r)
                print(f"  {name:9s} {label:16s} {r.rate:10.0f} /s  server {r.server_us:6.1f} "
                      f"CPU us/op, load tool {r.load_us:6.1f} CPU us/op", flush=True)  # fmt: skip
        theirs = [r.rate for r in results["beanstalkd"]]
        for label, runs in results.items():
            m = benchlib.medians(runs, ("rate", "server_us", "load_us"))
            ratio = benchlib.paired_ratio([r.rate for r in runs], theirs)
            rows.append((name, label, m["rate"], ratio, m["server_us"], m["load_us"]))
    print(f"# medians of {args.runs} runs; ratio: median of per-run ratios to beanstalkd; "
          f"{benchlib.machine_note()}")  # fmt: skip
    print(benchlib.table(["workload", "server", "ops/s", "x beanstalkd", "server CPU us/op",
                          "load tool CPU us/op"], rows,
                         ["", "", ",.0f", ".2f", ".1f", ".1f"], left=2))  # fmt: skip


if __name__ == "__main__":
    main()
