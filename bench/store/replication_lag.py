"""Replication lag under a sustained write load, asynchronous and semi-synchronous.

A primary and one replica (both pinned to CPU 0) take single-row INSERTs from 16
concurrent clients (this script, pinned to CPU 1) for ``--duration`` seconds. Meanwhile
the script polls the replica's ``/status`` every ``--poll-ms`` and records when it had
applied which LSN. Two figures per mode:

- **visibility lag**: for every acknowledged write, the time from the primary's answer
  to the answer of the first poll that saw the replica holding that LSN. Polling puts a
  floor under it (the wait for the next poll plus the poll's own latency): with
  ``--sync-replicas 1`` the replica holds every write *before* it is acknowledged, so
  the semi-sync line measures that floor, and the async line's excess over it is the
  replication lag proper;
- **record lag**: the primary's last acknowledged LSN minus the replica's applied LSN,
  sampled at each poll (exact, no floor): always 0 for semi-sync.

The machine is shared: figures are noisy, compare the two modes within one run.

Run::

    taskset -c 1 .venv/bin/python bench/store/replication_lag.py [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from topologies import process  # noqa: E402


def start(argv: list[str], log_path: Path) -> process.ComponentProcess:
    """A store pinned to the servers' CPU, once it printed its ready line."""
    return process.launch(benchlib.pinned(argv), log_path=log_path, cwd=benchlib.REPO)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_mode(workdir: Path, sync: int, duration_s: float, poll_s: float, clients: int):
    common = ["--port", "0", "--admin-port", "0", "--log-level", "warning"]
    primary = start([sys.executable, "-m", "components.store", *common,
                     "--data-dir", str(workdir / f"p{sync}"), "--name", "p",
                     "--sync-replicas", str(sync)], workdir / f"p{sync}.log")  # fmt: skip
    p_api = primary.listen["main"]
    replica = start([sys.executable, "-m", "components.store", *common,
                     "--data-dir", str(workdir / f"r{sync}"), "--name", "r",
                     "--join", p_api], workdir / f"r{sync}.log")  # fmt: skip
    r_api = replica.listen["main"]
    acks: list[tuple[int, float]] = []
    polls: list[tuple[float, int, int]] = []  # (time, replica applied, primary lsn)
    stop = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as session:
            await session.post(f"http://{p_api}/db/execute",
                               json=["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"])  # fmt: skip
            while True:  # wait for the replica to be subscribed
                async with session.get(f"http://{p_api}/status") as r:
                    if (await r.json())["scalelab"]["replicas"]:
                        break
                await asyncio.sleep(0.05)

            async def writer() -> None:
                while not stop.is_set():
                    async with session.post(f"http://{p_api}/db/execute",
                                            json=[["INSERT INTO t(v) VALUES(?)", "x" * 16]]) as r:  # fmt: skip
                        await r.read()
                        if r.status == 200:
                            acks.append((int(r.headers["X-Scalelab-Lsn"]), time.monotonic()))

            async def poller() -> None:
                while not stop.is_set():
                    async with session.get(f"http://{r_api}/status") as r:
                        mine = (await r.json())["scalelab"]
                    last = acks[-1][0] if acks else 0
                    polls.append((time.monotonic(), mine["applied_lsn"], last))
                    await asyncio.sleep(poll_s)

            tasks = [asyncio.ensure_future(writer()) for _ in range(clients)]
            tasks.append(asyncio.ensure_future(poller()))
            await asyncio.sleep(duration_s)
            stop.set()
            await asyncio.gather(*tasks)
            timeouts = 0
            async with session.get(f"http://{primary.listen['admin']}/metrics") as r:
                for line in (await r.text()).splitlines():
                    if line.startswith("scalelab_store_semisync_timeouts_total "):
                        timeouts = int(float(line.split()[1]))
    finally:
        benchlib.stop_all([primary, replica])
    poll_times = [t for t, _, _ in polls]
    visibility: list[float] = []
    for lsn, acked_at in acks:
        i = bisect.bisect_left(poll_times, acked_at)
        # the replica may have had it before the ack: look one poll back too
        if i > 0 and polls[i - 1][1] >= lsn:
            visibility.append(0.0)
            continue
        while i < len(polls) and polls[i][1] < lsn:
            i += 1
        if i < len(polls):
            visibility.append(polls[i][0] - acked_at)
    record_lag = [max(0, last - applied) for _, applied, last in polls]
    return {
        "writes_per_s": len(acks) / duration_s,
        "visibility_ms": [percentile(visibility, q) * 1000 for q in (0.5, 0.99)],
        "record_lag": [percentile(record_lag, q) for q in (0.5, 0.99)],
        "samples": len(polls),
        "semisync_timeouts": timeouts,
        "mean_visibility_ms": statistics.fmean(visibility) * 1000 if visibility else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--poll-ms", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="scalelab-bench-repl-"))
    try:
        results = {}
        for sync in (0, 1):
            results[sync] = asyncio.run(
                run_mode(workdir, sync, args.duration, args.poll_ms / 1000, args.clients)
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"primary + replica pinned to CPU 0; {args.clients} writers; poll {args.poll_ms} ms")
    for sync, label in ((0, "async"), (1, "semi-sync (--sync-replicas 1)")):
        r = results[sync]
        print(f"  {label:30} {r['writes_per_s']:7.0f} writes/s  visibility lag p50/p99 "
              f"{r['visibility_ms'][0]:6.1f}/{r['visibility_ms'][1]:6.1f} ms  record lag p50/p99 "
              f"{r['record_lag'][0]:.0f}/{r['record_lag'][1]:.0f}  ({r['samples']} polls, "
              f"{r['semisync_timeouts']} semi-sync timeouts)")  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
