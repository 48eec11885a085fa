"""The store vs plain SQLite: durable writes/s at 1, 16 and 64 clients; point reads vs hello.

What it measures (issue 6):

1. **Durable writes/s.** Our store, one single-row ``INSERT`` per HTTP request, answered
   only after the redo log is fsynced, driven by wrk with 1, 16 and 64 connections;
   against plain ``sqlite3`` in WAL mode with ``synchronous=FULL`` committing each row
   (every commit fsynced: SQLite's own durable write) in a tight Python loop, in the
   same run. The store pays HTTP, JSON and Python on every write, but shares one fsync
   among every write that arrived meanwhile (group commit); SQLite has no group commit,
   so more clients do not help it (its writers serialise on the database lock). Goal:
   store >= 3x sqlite3 at 64 clients.
2. **Point reads/s.** ``GET /db/query?q=SELECT ... WHERE id = 42`` through the API vs the
   bare aiohttp hello app (``bench/web/hello_app.py``), the ceiling for any aiohttp
   server on this machine.

rqlite itself (the Go server whose API we speak) is not installable here (no package in
the distribution, and we do not download binaries), so it is not in the comparison.

How: servers and the SQLite loop run pinned to CPU 0 (``taskset -c 0``), wrk to CPU 1
(``taskset -c 1``). Rounds alternate the contenders; the report gives medians. Every
write's answer is checked (wrk counts non-2xx; the row count is checked at the end).

Run::

    .venv/bin/python bench/store/compare_sqlite.py [--duration 5] [--rounds 3]

Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from topologies import process

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SRC = REPO / "src"
HELLO_APP = REPO / "bench" / "web" / "hello_app.py"

INSERT_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '[["INSERT INTO bench(v) VALUES(?)", "0123456789abcdef"]]'
"""

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


def start(argv: list[str], log_path: Path) -> tuple[subprocess.Popen, dict]:
    proc = process.launch(argv, log_path=log_path, cwd=REPO)
    return proc.popen, proc.ready


def wrk(url: str, duration_s: int, connections: int, script: Path | None = None):
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration_s}s"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise SystemExit(f"wrk gave no rate:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return float(match.group(1)), " ".join(command), int(errors.group(1)) if errors else 0


def loop_rate(code: str, path: Path, duration_s: int) -> float:
    command = ["taskset", "-c", "0", sys.executable, "-c", code, str(path), str(duration_s)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60)
    return float(out.stdout.strip())


def post(url: str, statements) -> dict:
    request = urllib.request.Request(url, data=json.dumps(statements).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    return json.loads(urllib.request.urlopen(request, timeout=10).read())


def scrape(admin: str, name: str) -> float:
    body = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="1,16,64")
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found on PATH")
    clients = [int(c) for c in args.clients.split(",")]

    # /tmp here is the same ext4 disk as the repository (check with df -T: a tmpfs would
    # make every fsync free and the comparison meaningless).
    workdir = Path(tempfile.mkdtemp(prefix="scalelab-bench-store-"))
    script = workdir / "insert.lua"
    script.write_text(INSERT_LUA)
    store_argv = ["taskset", "-c", "0", sys.executable, "-m", "components.store", "--port", "0",
                  "--admin-port", "0", "--data-dir", str(workdir / "store"),
                  "--log-level", "warning"]  # fmt: skip
    hello_argv = ["taskset", "-c", "0", sys.executable, str(HELLO_APP)]
    store, store_ready = start(store_argv, workdir / "store.log")
    hello, hello_ready = start(hello_argv, workdir / "hello.log")
    api = f"http://{store_ready['listen']['main']}"
    admin = store_ready["listen"]["admin"]
    errors = 0
    try:
        post(f"{api}/db/execute", ["CREATE TABLE bench (id INTEGER PRIMARY KEY, v TEXT)",
                                   "INSERT INTO bench(id, v) VALUES(42, 'answer')"])  # fmt: skip
        writes: dict[str, list[float]] = {}
        commands: dict[str, str] = {}
        for round_number in range(1, args.rounds + 1):
            rate = loop_rate(SQLITE_LOOP, workdir / f"plain{round_number}.db", args.duration)
            commands["sqlite3"] = "taskset -c 0 python -c <sqlite3 WAL synchronous=FULL loop>"
            writes.setdefault("sqlite3", []).append(rate)
            print(f"round {round_number}  sqlite3 FULL    {rate:9.0f} writes/s", flush=True)
            rate = loop_rate(FSYNC_LOOP, workdir / f"raw{round_number}.log", args.duration)
            commands["raw fsync"] = "taskset -c 0 python -c <os.write + os.fsync loop>"
            writes.setdefault("raw fsync", []).append(rate)
            print(f"round {round_number}  raw fsync       {rate:9.0f} appends/s", flush=True)
            for c in clients:
                fsyncs_before = scrape(admin, "scalelab_store_fsyncs_total")
                executes_before = scrape(admin, "scalelab_store_executes_total")
                rate, command, non2xx = wrk(f"{api}/db/execute", args.duration, c, script)
                errors += non2xx
                commands[f"store c={c}"] = command
                writes.setdefault(f"store c={c}", []).append(rate)
                fsyncs = scrape(admin, "scalelab_store_fsyncs_total") - fsyncs_before
                executes = scrape(admin, "scalelab_store_executes_total") - executes_before
                print(f"round {round_number}  store c={c:<3}     {rate:9.0f} writes/s  "
                      f"({executes / max(fsyncs, 1):.1f} writes per fsync)", flush=True)  # fmt: skip
        reads: dict[str, list[float]] = {}
        query_url = f"{api}/db/query?q=SELECT%20v%20FROM%20bench%20WHERE%20id%3D42&level=none"
        hello_url = f"http://{hello_ready['listen']['main']}/"
        for round_number in range(1, args.rounds + 1):
            for label, url in (("hello", hello_url), ("store point SELECT", query_url)):
                rate, commands[label], non2xx = wrk(url, args.duration, 16)
                errors += non2xx
                reads.setdefault(label, []).append(rate)
                print(f"round {round_number}  {label:18} {rate:9.0f} req/s", flush=True)
        rows = post(f"{api}/db/query", ["SELECT count(*) FROM bench"])["results"][0]["values"]
    finally:
        for proc in (store, hello):
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print("servers pinned with taskset -c 0, wrk with taskset -c 1; medians of", args.rounds)
    base = statistics.median(writes["sqlite3"])
    print(f"  sqlite3 (WAL, synchronous=FULL, one commit per row)  {base:9.0f} writes/s")
    raw = statistics.median(writes["raw fsync"])
    print(f"  raw append + fsync loop (the disk's ceiling, 1 writer) {raw:9.0f} appends/s")
    for c in clients:
        median = statistics.median(writes[f"store c={c}"])
        print(f"  store, {c:2} clients, 1 INSERT per request          {median:9.0f} writes/s"
              f"  ratio {median / base:5.2f}x")  # fmt: skip
    hello_median = statistics.median(reads["hello"])
    read_median = statistics.median(reads["store point SELECT"])
    print(f"  aiohttp hello (16 conns)                              {hello_median:9.0f} req/s")
    print(f"  store point SELECT level=none (16 conns)              {read_median:9.0f} req/s"
          f"  ratio {read_median / hello_median:.2f}")  # fmt: skip
    print(f"  rows in the store's table: {rows[0][0]}; non-2xx answers: {errors}")
    print("  commands:")
    for label, command in commands.items():
        print(f"    {label}: {command}")
    print("  rqlite: not installable here, not measured")
    if errors:
        raise SystemExit("some requests were not answered 200")


if __name__ == "__main__":
    main()
