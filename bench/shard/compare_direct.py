"""The router vs talking to the store directly: point reads/s and inserts/s, side by side.

What it measures (issue 11): the cost the router adds per request (one more HTTP hop,
the SQL scan, the placement) for the two statements a sharded application sends most:
a point ``SELECT ... WHERE id = ?`` and a single-row ``INSERT`` (through the router its
id is a generated Snowflake id). Contenders, in one run, alternating rounds:

- ``store``: one store process, wrk straight at it;
- ``router/N``: the router in front of N store groups (one store each).

On this 2-core machine every server shares CPU 0 (``taskset -c 0``) and wrk has CPU 1,
so N groups cannot show write scaling here (they compete for the same core); what the
figures show is the router's overhead at full speed, no capacity emulation applied.
Inserts even get slower with more groups on one machine: each store fsyncs its own
log, so the 16 concurrent writers that shared one group commit on a single store now
share N of them (N times the fsyncs on the same disk). Write scaling under the store's
capacity emulation is ``write_scaling.py``'s subject.

Run::

    .venv/bin/python bench/shard/compare_direct.py [--duration 5] [--rounds 2] [--groups 1,2]

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
ROWS = 1000
SCHEMA = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)"
INSERT_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '[["INSERT INTO users(name) VALUES(?)", "fiona"]]'
"""
READ_PATH = "/db/query?q=SELECT%20id%2C%20name%20FROM%20users%20WHERE%20id%20%3D%2042"


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


def post(url: str, statements) -> dict:
    request = urllib.request.Request(url, data=json.dumps(statements).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    doc = json.loads(urllib.request.urlopen(request, timeout=30).read())
    for result in doc["results"]:
        if "error" in result:
            raise SystemExit(f"setup failed: {result['error']}")
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--groups", default="1,2", help="router contenders: groups each")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found on PATH")
    work = Path(tempfile.mkdtemp(prefix="bench-shard-"))
    procs: list[subprocess.Popen] = []
    py = [sys.executable]

    def store(name: str) -> str:
        proc, ready = start(["taskset", "-c", "0", *py, "-m", "components.store", "--port", "0",
                             "--admin-port", "0", "--data-dir", str(work / name), "--name",
                             name], work / f"{name}.log")  # fmt: skip
        procs.append(proc)
        return ready["listen"]["main"]

    try:
        targets: dict[str, str] = {}
        direct = store("direct")
        post(f"http://{direct}/db/execute", [SCHEMA])
        post(f"http://{direct}/db/execute", [["INSERT INTO users(id, name) VALUES(?, ?)", i,
                                              "x"] for i in range(1, ROWS + 1)])  # fmt: skip
        targets["store"] = direct
        for n in [int(g) for g in args.groups.split(",")]:
            nodes = [store(f"g{n}-{i}") for i in range(n)]
            cfg = work / f"router{n}.toml"
            cfg.write_text("".join(f'[[groups]]\nname = "g{i}"\nnodes = ["{a}"]\n'
                                   for i, a in enumerate(nodes))
                           + '[tables]\nusers = "id"\n[ids]\nusers = "id"\n')  # fmt: skip
            proc, ready = start(["taskset", "-c", "0", *py, "-m", "components.shard",
                                 "--port", "0", "--admin-port", "0", "--shards", str(cfg)],
                                work / f"router{n}.log")  # fmt: skip
            procs.append(proc)
            router = ready["listen"]["main"]
            post(f"http://{router}/db/execute", [SCHEMA])
            for i in range(1, ROWS + 1):  # one request per row: rows of a group each
                post(f"http://{router}/db/execute",
                     [["INSERT INTO users(id, name) VALUES(?, ?)", i, "x"]])  # fmt: skip
            targets[f"router/{n}"] = router
        script = work / "insert.lua"
        script.write_text(INSERT_LUA)
        rates: dict[tuple[str, str], list[float]] = {}
        commands = {}
        for _ in range(args.rounds):
            for label, address in targets.items():
                for kind, path, lua in (("point read", READ_PATH, None),
                                        ("insert", "/db/execute", script)):  # fmt: skip
                    rate, command, non2xx = wrk(f"http://{address}{path}", args.duration,
                                                args.connections, lua)  # fmt: skip
                    if non2xx:
                        raise SystemExit(f"{label} {kind}: {non2xx} non-2xx answers")
                    rates.setdefault((label, kind), []).append(rate)
                    commands[kind] = command
        print(f"\nrequests/s, median of {args.rounds} rounds of {args.duration}s, "
              f"{args.connections} connections (servers on CPU 0, wrk on CPU 1; noisy)")  # fmt: skip
        print(f"{'contender':<12}{'point read':>14}{'insert':>14}{'read vs store':>16}")
        base = statistics.median(rates[("store", "point read")])
        for label in targets:
            read = statistics.median(rates[(label, "point read")])
            ins = statistics.median(rates[(label, "insert")])
            print(f"{label:<12}{read:>14.0f}{ins:>14.0f}{read / base:>16.2f}")
        for kind, command in commands.items():
            print(f"{kind}: {command}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
