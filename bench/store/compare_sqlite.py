"""The store vs plain SQLite: durable writes/s at 1, 16 and 64 clients; point reads vs hello.

What it measures (issue 6):

1. **Durable writes/s.** Our store, one single-row ``INSERT`` per HTTP request, answered
   only after the redo log is fsynced, driven by wrk with 1, 16 and 64 connections;
   against plain ``sqlite3`` in WAL mode with ``synchronous=FULL`` committing each row
   (every commit fsynced: SQLite's own durable write) in a tight Python loop, in the
   same run. The store pays HTTP, JSON and Python on every write, but shares one fsync
   among every write that arrived meanwhile (group commit); SQLite has no group commit,
   so more clients do not help it (its writers serialise on the database lock). Goal:
   store >= 3x sqlite3 at 64 clients. Next to each rate: the store's CPU time per write
   (user+system of all its threads, ``/proc/<pid>/stat``), the steadiest figure on a
   shared machine, and the writes per fsync.
2. **Point reads/s.** ``GET /db/query?q=SELECT ... WHERE id = 42`` through the API vs the
   bare aiohttp hello app (``bench/web/hello_app.py``), the ceiling for any aiohttp
   server on this machine, with the CPU per request of both.
3. **Before/after** (``--base REV``): the store of git revision REV (``git archive``
   into a temporary directory) runs next to this work tree's, alternating, at the
   largest client count, so an optimisation is judged by a ratio measured in one run.

rqlite itself (the Go server whose API we speak) is not installable here (no package in
the distribution, and we do not download binaries), so it is not in the comparison.

How: servers and the SQLite loop run pinned to CPU 0 (``taskset -c 0``), wrk to CPU 1
(``taskset -c 1``). Rounds alternate the contenders; the report gives medians. Every
write's answer is checked (wrk counts non-2xx; the row count is checked at the end).

Run::

    .venv/bin/python bench/store/compare_sqlite.py [--duration 5] [--rounds 3] [--base REV]

Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from topologies import process  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = benchlib.REPO
HELLO_APP = REPO / "bench" / "web" / "hello_app.py"

INSERT_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '[["INSERT INTO bench(v) VALUES(?)", "0123456789abcdef"]]'
"""

#: Runs ``components.store`` from another source tree (``--base``), ahead of this one.
RUN_FROM = "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); " \
           "runpy.run_module('components.store', run_name='__main__')"  # fmt: skip

SQLITE_LOOP = r"""
import sqlite3, sys, time
path, duration = sys.argv[1], float(sys.argv[2])
conn = sqlite3.connect(path, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=FULL")
conn.execute("CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, v TEXT)")
done, deadline = 0, time.monotonic() + duration
started = time.monotonic()
while time.monotonic() < deadline:
    conn.execute("BEGIN")
    conn.execute("INSERT INTO bench(v) VALUES(?)", ("0123456789abcdef",))
    conn.execute("COMMIT")
    done += 1
print(done / (time.monotonic() - started))
"""


FSYNC_LOOP = r"""
import os, sys, time
path, duration = sys.argv[1], float(sys.argv[2])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
record = b"x" * 80
done, deadline = 0, time.monotonic() + duration
started = time.monotonic()
while time.monotonic() < deadline:
    os.write(fd, record)
    os.fsync(fd)
    done += 1
print(done / (time.monotonic() - started))
"""


def store_argv(data_dir: Path, src: Path | None = None) -> list[str]:
    flags = ["--port", "0", "--admin-port", "0", "--data-dir", str(data_dir),
             "--log-level", "warning"]  # fmt: skip
    if src is None:
        return benchlib.pinned([sys.executable, "-m", "components.store", *flags])
    return benchlib.pinned([sys.executable, "-c", RUN_FROM, str(src), *flags])


def loop_rate(code: str, path: Path, duration_s: int) -> float:
    command = benchlib.pinned([sys.executable, "-c", code, str(path), str(duration_s)])
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60)
    return float(out.stdout.strip())


def post(url: str, statements) -> dict:
    request = urllib.request.Request(url, data=json.dumps(statements).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    return json.loads(urllib.request.urlopen(request, timeout=10).read())


def write_run(store: process.ComponentProcess, script: Path, clients: int, duration: int):
    """One wrk run of single-row INSERTs: (writes/s, CPU µs/write, writes per fsync)."""
    api, admin = store.listen["main"], store.listen["admin"]
    fsyncs = benchlib.scrape_metric(admin, "scalelab_store_fsyncs_total")
    executes = benchlib.scrape_metric(admin, "scalelab_store_executes_total")
    result = benchlib.run_wrk(f"http://{api}/db/execute", pids=[store.pid], connections=clients,
                              duration_s=duration, script=script, latency=False)  # fmt: skip
    fsyncs = benchlib.scrape_metric(admin, "scalelab_store_fsyncs_total") - fsyncs
    executes = benchlib.scrape_metric(admin, "scalelab_store_executes_total") - executes
    return result, executes / max(fsyncs, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--base", default=None, metavar="REV",
                        help="also run the store of this git revision (before/after)")  # fmt: skip
    parser.add_argument("--no-reads", action="store_true", help="skip the read comparison")
    args = parser.parse_args()
    benchlib.require("wrk", "taskset")
    clients = [int(c) for c in args.clients.split(",")]
    top = max(clients)

    # /tmp here is the same ext4 disk as the repository (check with df -T: a tmpfs would
    # make every fsync free and the comparison meaningless).
    workdir = Path(tempfile.mkdtemp(prefix="scalelab-bench-store-"))
    script = workdir / "insert.lua"
    script.write_text(INSERT_LUA)
    servers: list[process.ComponentProcess] = []
    errors = 0
    try:
        stores = {"store": process.launch(store_argv(workdir / "store"),
                                          log_path=workdir / "store.log", cwd=REPO)}  # fmt: skip
        servers.append(stores["store"])
        if args.base:
            base_src = benchlib.export_source(args.base, workdir / "base")
            stores[f"store@{args.base}"] = process.launch(
                store_argv(workdir / "store-base", base_src), log_path=workdir / "base.log",
                cwd=REPO,
            )  # fmt: skip
            servers.append(stores[f"store@{args.base}"])
        hello = process.launch(benchlib.pinned([sys.executable, str(HELLO_APP)]),
                               log_path=workdir / "hello.log", cwd=REPO)  # fmt: skip
        servers.append(hello)
        for store in stores.values():
            post(f"http://{store.listen['main']}/db/execute",
                 ["CREATE TABLE bench (id INTEGER PRIMARY KEY, v TEXT)",
                  "INSERT INTO bench(id, v) VALUES(42, 'answer')"])  # fmt: skip
        rates: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        per_fsync: dict[str, list[float]] = {}
        commands: dict[str, str] = {}
        for round_number in range(1, args.rounds + 1):
            rate = loop_rate(SQLITE_LOOP, workdir / f"plain{round_number}.db", args.duration)
            commands["sqlite3"] = "taskset -c 0 python -c <sqlite3 WAL synchronous=FULL loop>"
            rates.setdefault("sqlite3", []).append(rate)
            print(f"round {round_number}  sqlite3 FULL        {rate:9.0f} writes/s", flush=True)
            rate = loop_rate(FSYNC_LOOP, workdir / f"raw{round_number}.log", args.duration)
            commands["raw fsync"] = "taskset -c 0 python -c <os.write + os.fsync loop>"
            rates.setdefault("raw fsync", []).append(rate)
            print(f"round {round_number}  raw fsync           {rate:9.0f} appends/s", flush=True)
            for label, store in stores.items():
                for c in clients if label == "store" else [top]:
                    key = f"{label} c={c}"
                    result, grouped = write_run(store, script, c, args.duration)
                    errors += result.errors
                    commands[key] = result.command
                    rates.setdefault(key, []).append(result.rps)
                    cpu.setdefault(key, []).append(result.cpu_us_per_request)
                    per_fsync.setdefault(key, []).append(grouped)
                    print(f"round {round_number}  {key:<19} {result.rps:9.0f} writes/s  "
                          f"{result.cpu_us_per_request:6.1f} CPU us/write  "
                          f"{grouped:5.1f} writes/fsync", flush=True)  # fmt: skip
        reads: dict[str, list[benchlib.WrkResult]] = {}
        if not args.no_reads:
            api = stores["store"].listen["main"]
            query_url = (
                f"http://{api}/db/query?q=SELECT%20v%20FROM%20bench%20WHERE%20id%3D42&level=none"
            )
            hello_url = f"http://{hello.listen['main']}/"
            for round_number in range(1, args.rounds + 1):
                for label, url, pid in (("hello", hello_url, hello.pid),
                                        ("store point SELECT", query_url, stores["store"].pid)):  # fmt: skip
                    result = benchlib.run_wrk(url, pids=[pid], connections=16,
                                              duration_s=args.duration, latency=False)  # fmt: skip
                    errors += result.errors
                    commands[label] = result.command
                    reads.setdefault(label, []).append(result)
                    print(f"round {round_number}  {label:18} {result.rps:9.0f} req/s  "
                          f"{result.cpu_us_per_request:6.1f} CPU us/req", flush=True)  # fmt: skip
        rows = post(f"http://{stores['store'].listen['main']}/db/query",
                    ["SELECT count(*) FROM bench"])["results"][0]["values"]  # fmt: skip
    finally:
        benchlib.stop_all(servers)
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"servers pinned with taskset -c 0, wrk with taskset -c 1; medians of {args.rounds}; "
          f"{benchlib.machine_note()}")  # fmt: skip
    base = statistics.median(rates["sqlite3"])
    table = [("sqlite3 (WAL, synchronous=FULL, commit per row)", base, 1.0, float("nan"),
              float("nan")),
             ("raw append + fsync loop (1 writer)", statistics.median(rates["raw fsync"]),
              benchlib.paired_ratio(rates["raw fsync"], rates["sqlite3"]), float("nan"),
              float("nan"))]  # fmt: skip
    for key in rates:
        if key.startswith("store"):
            table.append((f"{key}, 1 INSERT per request", statistics.median(rates[key]),
                          benchlib.paired_ratio(rates[key], rates["sqlite3"]),
                          statistics.median(cpu[key]), statistics.median(per_fsync[key])))  # fmt: skip
    print(benchlib.table(("durable writes", "writes/s", "x sqlite3", "CPU us/write",
                          "writes/fsync"), table, ("", ",.0f", ".2f", ".1f", ".1f")))  # fmt: skip
    if args.base:
        ours, theirs = f"store c={top}", f"store@{args.base} c={top}"
        print(f"  work tree vs {args.base} at {top} clients: writes/s x"
              f"{benchlib.paired_ratio(rates[ours], rates[theirs]):.2f}, CPU us/write x"
              f"{benchlib.paired_ratio(cpu[ours], cpu[theirs]):.2f}")  # fmt: skip
    if reads:
        hello_m, read_m = (benchlib.medians(reads[k], ("rps", "cpu_us_per_request"))
                           for k in ("hello", "store point SELECT"))  # fmt: skip
        print(benchlib.table(
            ("reads (16 connections)", "req/s", "CPU us/req"),
            [("aiohttp hello", hello_m["rps"], hello_m["cpu_us_per_request"]),
             ("store point SELECT level=none", read_m["rps"], read_m["cpu_us_per_request"])],
            ("", ",.0f", ".1f")))  # fmt: skip
        ratio = benchlib.paired_ratio([r.rps for r in reads["store point SELECT"]],
                                      [r.rps for r in reads["hello"]])  # fmt: skip
        print(f"  point SELECT / hello: {ratio:.2f} (median of per-round ratios)")
    print(f"  rows in the store's table: {rows[0][0]}; non-2xx answers and socket errors: {errors}")
    print("  commands:")
    for label, command in commands.items():
        print(f"    {label}: {command}")
    print("  rqlite: not installable here, not measured")
    if errors:
        raise SystemExit("some requests were not answered 200")


if __name__ == "__main__":
    main()
