"""CPU per durable write inside one store process, per thread, without sockets or wrk.

Why: wrk runs share the machine with everything else on it, and their writes/s move by
more than one optimisation saves. This script starts a real ``StoreService`` in-process
(real redo log, real fsyncs, real SQLite) and drives its HTTP front (``front.py``) with
``CONNECTIONS`` fake connections, each sending the wrk benchmark's single-row INSERT
again as soon as its answer is written, like wrk with that many connections. It reports
CPU microseconds per write for the event loop's thread (``time.thread_time``) and for
the whole process (``time.process_time``: the loop plus the log and SQLite threads), the
best of several batches (the batch the machine disturbed least), and the writes per
fsync.

Run::

    .venv/bin/python bench/store/write_cost.py [--writes 5000] [--batches 5] [--connections 64]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402, F401  (puts src/ on sys.path)
from components.common.cli import component_parser, resolve_shared  # noqa: E402
from components.common.runner import Runtime  # noqa: E402
from components.store.front import ApiProtocol  # noqa: E402
from components.store.server import StoreService  # noqa: E402

BODY = b'[["INSERT INTO bench(v) VALUES(?)", "0123456789abcdef"]]'
REQUEST = (b"POST /db/execute HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))  # fmt: skip


class FakeTransport:
    """Collects what the front writes; each answer makes the client send again."""

    def __init__(self, on_answer) -> None:
        self.on_answer = on_answer

    def write(self, data: bytes) -> None:
        if not data.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"unexpected answer: {data[:200]!r}")
        self.on_answer()

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def measure(args) -> None:
    parser = component_parser("store", StoreService.default_port)
    StoreService.add_arguments(parser)
    data_dir = tempfile.mkdtemp(prefix="scalelab-write-cost-")
    service_args = resolve_shared(parser.parse_args(
        ["--data-dir", data_dir, "--port", "0", "--log-level", "warning"]), "store")  # fmt: skip
    runtime = Runtime(service_args, "store")
    service = StoreService(service_args, runtime)
    runtime.service = service
    await service.start()
    loop = asyncio.get_running_loop()
    await service.committer.submit(
        service._batch([("CREATE TABLE bench (id INTEGER PRIMARY KEY, v TEXT)", None)],
                       service._fast_options(b"")), 1)  # fmt: skip
    state = {"left": 0, "done": None}

    def connection():
        protocol: ApiProtocol

        def answered() -> None:
            state["left"] -= 1
            if state["left"] > 0:
                loop.call_soon(protocol.data_received, REQUEST)  # the client's next write
            elif state["left"] == 0:
                state["done"].set_result(None)

        protocol = ApiProtocol(service.serve_fast, lambda: None, set())
        protocol.connection_made(FakeTransport(answered))
        return protocol

    connections = [connection() for _ in range(args.connections)]
    results = []
    for batch in range(args.batches + 1):  # the first batch warms up
        fsyncs = service.m_fsyncs.get()
        state["left"] = args.writes + args.connections
        state["done"] = loop.create_future()
        thread0, process0 = time.thread_time(), time.process_time()
        for c in connections:
            c.data_received(REQUEST)
        await state["done"]
        loop_us = (time.thread_time() - thread0) / args.writes * 1e6
        all_us = (time.process_time() - process0) / args.writes * 1e6
        per_fsync = args.writes / max(service.m_fsyncs.get() - fsyncs, 1)
        if batch:
            results.append((loop_us, all_us, per_fsync))
            print(f"batch {batch}: loop {loop_us:5.1f} us/write, process {all_us:5.1f} "
                  f"us/write, {per_fsync:4.1f} writes/fsync", flush=True)  # fmt: skip
        await service.committer.flush()
        await asyncio.sleep(0.05)  # let the last answers out before the next batch
    await service.drain()
    await service.stop()
    best_loop = min(r[0] for r in results)
    best_all = min(r[1] for r in results)
    print(f"best of {args.batches}: loop thread {best_loop:.1f} CPU us/write, whole process "
          f"{best_all:.1f} CPU us/write; {benchlib.machine_note()}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=5000, help="writes per batch")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
