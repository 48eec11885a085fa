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

Reported: requests/s (median of rounds), the median of per-round ratios to the store
straight, and CPU µs per request of the contender's serving process (the router's own
cost per request; the stores behind it are not counted). Run::

    .venv/bin/python bench/shard/compare_direct.py [--duration 5] [--rounds 3] [--groups 1,2]

Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for benchlib

from shardbench import Servers, post  # noqa: E402

import benchlib  # noqa: E402

ROWS = 1000
SCHEMA = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)"
INSERT_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '[["INSERT INTO users(name) VALUES(?)", "fiona"]]'
"""
READ_PATH = "/db/query?q=SELECT%20id%2C%20name%20FROM%20users%20WHERE%20id%20%3D%2042"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--groups", default="1,2", help="router contenders: groups each")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    benchlib.require("wrk", "taskset")
    work = Path(tempfile.mkdtemp(prefix="bench-shard-"))
    servers = Servers(work)
    rows = [["INSERT INTO users(id, name) VALUES(?, ?)", i, "x"] for i in range(1, ROWS + 1)]
    try:
        targets: dict[str, tuple[str, int]] = {}  # label -> (address, serving pid)
        direct = servers.start("store", "direct", "--data-dir", str(work / "direct"))
        post(f"http://{direct.listen['main']}/db/execute", [SCHEMA])
        post(f"http://{direct.listen['main']}/db/execute", rows)
        targets["store"] = (direct.listen["main"], direct.pid)
        for n in [int(g) for g in args.groups.split(",")]:
            nodes = [servers.start("store", f"g{n}-{i}", "--data-dir", str(work / f"g{n}-{i}"))
                     for i in range(n)]  # fmt: skip
            cfg = work / f"router{n}.toml"
            cfg.write_text("".join(f'[[groups]]\nname = "g{i}"\nnodes = ["{s.listen["main"]}"]\n'
                                   for i, s in enumerate(nodes))
                           + '[tables]\nusers = "id"\n[ids]\nusers = "id"\n')  # fmt: skip
            router = servers.start("shard", f"router{n}", "--shards", str(cfg))
            api = f"http://{router.listen['main']}/db/execute"
            post(api, [SCHEMA])
            for row in rows:  # one request per row: each row's own group
                post(api, [row])
            targets[f"router/{n}"] = (router.listen["main"], router.pid)
        script = work / "insert.lua"
        script.write_text(INSERT_LUA)
        runs: dict[tuple[str, str], list[benchlib.WrkResult]] = {}
        for _ in range(args.rounds):
            for label, (address, pid) in targets.items():
                for kind, path, lua in (("read", READ_PATH, None),
                                        ("insert", "/db/execute", script)):  # fmt: skip
                    result = benchlib.run_wrk(f"http://{address}{path}", pids=[pid],
                                              connections=args.connections,
                                              duration_s=args.duration, script=lua)  # fmt: skip
                    if result.errors:
                        raise benchlib.BenchError(f"{label} {kind}: {result.errors} errors")
                    runs.setdefault((label, kind), []).append(result)
        table = []
        for label in targets:
            row: list[object] = [label]
            for kind in ("read", "insert"):
                mine = runs[(label, kind)]
                row += [benchlib.medians(mine, ["rps"])["rps"],
                        benchlib.paired_ratio([r.rps for r in mine],
                                              [r.rps for r in runs[("store", kind)]]),
                        benchlib.medians(mine, ["cpu_us_per_request"])["cpu_us_per_request"]]  # fmt: skip
            table.append(row)
        print(f"\nmedians of {args.rounds} rounds of {args.duration:g}s, {args.connections} "
              f"connections, no capacity emulation; servers on CPU 0, wrk on CPU 1; "
              f"{benchlib.machine_note()} (noisy)")  # fmt: skip
        print(benchlib.table(["contender", "reads/s", "x store", "CPU us/read", "inserts/s",
                              "x store", "CPU us/insert"], table,
                             ["", ",.0f", ".2f", ",.0f", ",.0f", ".2f", ",.0f"]))  # fmt: skip
        print("CPU us: the contender's own process (the router, or the store straight).")
        for kind in ("read", "insert"):
            print(f"{kind}: {runs[('store', kind)][0].command}")
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
