"""Consumers scale independently: job throughput against the number of worker slots.

    .venv/bin/python bench/queue/worker_scaling.py [--jobs 400] [--service-time-ms 20]

Starts one queue, fills tube ``photos`` with ``--jobs`` photo jobs, then for each
concurrency in ``--concurrency`` (default 1 2 4 8 16) starts one worker process with that
many slots and ``--service-time-ms`` of emulated work per job, and times how long it
takes to drain the tube. With emulated service time S and N slots the ideal is N/S jobs
per second; the table shows how close the pipeline (reserve, process, store, delete)
gets, and where the machine, not the model, becomes the limit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src")]

import greenstalk  # noqa: E402

from topologies import process  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--service-time-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wscale-") as tmp:
        queue = process.start("queue", "--log-level", "warning", log_path=Path(tmp) / "q.log")
        host, port = queue.address()
        try:
            print(f"{'slots':>5} {'jobs/s':>8} {'ideal':>8} {'of ideal':>8}")
            for slots in args.concurrency:
                with greenstalk.Client((host, port), use="photos") as c:
                    for i in range(args.jobs):
                        c.put(json.dumps({"image": f"u{i}/p.jpg", "width": 320,
                                          "height": 240, "thumb": 32}))  # fmt: skip
                    base = c.stats_tube("photos")["cmd-delete"]
                    worker = process.start(
                        "worker", "--queue", f"{host}:{port}", "--tube", "photos",
                        "--concurrency", str(slots), "--service-time-ms",
                        str(args.service_time_ms), "--log-level", "warning",
                        log_path=Path(tmp) / f"w{slots}.log",
                    )  # fmt: skip
                    # Steady state only: from 10% to 90% of the jobs deleted, so the
                    # worker's start-up and the last stragglers are not in the figure.
                    marks = {}
                    while len(marks) < 2:
                        done = c.stats_tube("photos")["cmd-delete"] - base
                        for fraction in (0.1, 0.9):
                            if fraction not in marks and done >= fraction * args.jobs:
                                marks[fraction] = (time.monotonic(), done)
                        time.sleep(0.005)
                    worker.stop()
                (t0, d0), (t1, d1) = marks[0.1], marks[0.9]
                rate = (d1 - d0) / (t1 - t0)
                ideal = slots * 1000 / args.service_time_ms
                print(f"{slots:>5} {rate:>8.0f} {ideal:>8.0f} {rate / ideal:>8.0%}", flush=True)
        finally:
            queue.stop()


if __name__ == "__main__":
    main()
