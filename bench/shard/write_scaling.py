"""Write scaling: point reads/s and inserts/s through the router over 1, 2 and 4 groups.

The claim under test (issue 11, the chapter's sharding step): when one primary can no
longer take every write, splitting the data over N groups multiplies write capacity by
about N. On a 2-core machine N real databases cannot show that (they share one core and
one disk), so capacity is *emulated* honestly, by the store's own flags: every store
serves at most ``--write-max-concurrency`` writes at once, each holding its worker for
``--write-service-time-ms`` (and through its commit), and likewise queries with
``--max-concurrency`` / ``--service-time-ms``. One group can then take about
``concurrency / service time`` requests a second whatever this machine does, and what
the router adds on top (a hop, a scan, a placement) shows as the gap to N times that.

Contenders, alternating within each round so the machine's drift hits all alike:

- ``direct``: wrk straight at one store with the same emulation (the baseline the
  router's overhead is measured against);
- ``router/N``: the router (consistent hashing) over N groups of one store each.

Workloads: a point ``SELECT ... WHERE id = ?`` over random ids of the loaded rows (wrk
Lua), and a single-row ``INSERT`` without its key (the router generates Snowflake ids,
so inserts spread over the groups; the store straight gets its autoincrement).
Reported: requests/s (median of rounds), scaling against router/1 (median of per-round
ratios), and the router's CPU µs per request (``/proc``, the steadiest figure here).

Servers are pinned to CPU 0, wrk to CPU 1 (``benchlib``). Run::

    .venv/bin/python bench/shard/write_scaling.py [--duration 5] [--rounds 3] [--groups 1,2,4]

Only loopback addresses are used. Caveats to quote with the figures: hashing does not
split keys exactly evenly (``/status`` shows each group's share of the ring), and a
closed-loop load tool waits on the busiest group, so scaling is a little under N.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for benchlib

from shardbench import Servers, post  # noqa: E402

import benchlib  # noqa: E402
from components.shard import config as shard_config  # noqa: E402

ROWS = 2000
SCHEMA = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)"
LOAD_BATCH = 500
READ_LUA = """
local ids = %d
request = function()
  local q = "SELECT%%20id%%2C%%20name%%20FROM%%20users%%20WHERE%%20id%%20%%3D%%20"
  return wrk.format("GET", "/db/query?q=" .. q .. math.random(1, ids))
end
"""
INSERT_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '[["INSERT INTO users(name) VALUES(?)", "fiona"]]'
"""


def load(address: str, ids: list[int]) -> None:
    """Rows straight into one store, in batches (one write service time each)."""
    for start in range(0, len(ids), LOAD_BATCH):
        post(f"http://{address}/db/execute?transaction",
             [["INSERT INTO users(id, name) VALUES(?, ?)", i, "x"]
              for i in ids[start : start + LOAD_BATCH]])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--groups", default="1,2,4", help="router contenders: groups each")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--service-time-ms", type=float, default=20.0,
                        help="each store's emulated time per query and per write")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=4,
                        help="each store's queries (and writes) served at once")  # fmt: skip
    args = parser.parse_args()
    benchlib.require("wrk", "taskset")
    work = Path(tempfile.mkdtemp(prefix="bench-shard-scaling-"))
    emulation = ["--service-time-ms", f"{args.service_time_ms:g}",
                 "--max-concurrency", str(args.concurrency),
                 "--write-service-time-ms", f"{args.service_time_ms:g}",
                 "--write-max-concurrency", str(args.concurrency),
                 "--max-queue", str(4 * args.connections),
                 "--write-max-queue", str(4 * args.connections)]  # fmt: skip
    servers = Servers(work)
    start = servers.start

    try:
        contenders: dict[str, tuple[str, list[int]]] = {}  # label -> (address, CPU pids)
        direct = start("store", "direct", "--data-dir", str(work / "direct"), *emulation)
        post(f"http://{direct.listen['main']}/db/execute", [SCHEMA])
        load(direct.listen["main"], list(range(1, ROWS + 1)))
        contenders["direct"] = (direct.listen["main"], [direct.pid])
        counts = [int(n) for n in args.groups.split(",")]
        for n in counts:
            stores = [start("store", f"g{n}-{i}", "--data-dir", str(work / f"g{n}-{i}"),
                            *emulation) for i in range(n)]  # fmt: skip
            doc = {"groups": [{"name": f"g{i}", "nodes": [s.listen["main"]]}
                              for i, s in enumerate(stores)],
                   "tables": {"users": "id"}, "ids": {"users": "id"}}  # fmt: skip
            cfg = work / f"router{n}.toml"
            cfg.write_text("".join(f'[[groups]]\nname = "{g["name"]}"\nnodes = ["{g["nodes"][0]}"]\n'
                                   for g in doc["groups"])
                           + '[tables]\nusers = "id"\n[ids]\nusers = "id"\n')  # fmt: skip
            routing = shard_config.parse(doc).routing  # the router's own placement
            for i, store in enumerate(stores):
                post(f"http://{store.listen['main']}/db/execute", [SCHEMA])
                load(
                    store.listen["main"],
                    [k for k in range(1, ROWS + 1) if routing.group_for(k) == f"g{i}"],
                )
            router = start("shard", f"router{n}", "--shards", str(cfg))
            contenders[f"router/{n}"] = (router.listen["main"], [router.pid])
        read_lua = work / "read.lua"
        read_lua.write_text(READ_LUA % ROWS)
        insert_lua = work / "insert.lua"
        insert_lua.write_text(INSERT_LUA)
        runs: dict[tuple[str, str], list[benchlib.WrkResult]] = {}
        for _ in range(args.rounds):
            for label, (address, pids) in contenders.items():
                for kind, path, lua in (("read", "/", read_lua),
                                        ("insert", "/db/execute", insert_lua)):  # fmt: skip
                    result = benchlib.run_wrk(f"http://{address}{path}", pids=pids,
                                              connections=args.connections,
                                              duration_s=args.duration, script=lua)  # fmt: skip
                    if result.errors:
                        raise benchlib.BenchError(f"{label} {kind}: {result.errors} errors "
                                                  f"({result.command})")  # fmt: skip
                    runs.setdefault((label, kind), []).append(result)
        report(runs, contenders, counts, args)
    finally:
        servers.stop()


def report(runs, contenders, counts, args) -> None:
    capacity = args.concurrency / args.service_time_ms * 1000
    rows = []
    base = f"router/{counts[0]}"
    for label in contenders:
        row: list[object] = [label]
        for kind in ("read", "insert"):
            rates = [r.rps for r in runs[(label, kind)]]
            row.append(benchlib.medians(runs[(label, kind)], ["rps"])["rps"])
            row.append(benchlib.paired_ratio(rates, [r.rps for r in runs[(base, kind)]])
                       if label.startswith("router/") else float("nan"))  # fmt: skip
            row.append(benchlib.medians(runs[(label, kind)], ["cpu_us_per_request"])[
                "cpu_us_per_request"])  # fmt: skip
        rows.append(row)
    print(f"\nemulated capacity per store: {capacity:,.0f} queries/s and {capacity:,.0f} "
          f"writes/s ({args.concurrency} at once x {args.service_time_ms:g} ms); "
          f"medians of {args.rounds} rounds of {args.duration:g}s, {args.connections} "
          f"connections; servers on CPU 0, wrk on CPU 1; {benchlib.machine_note()} (noisy)")  # fmt: skip
    print(benchlib.table(
        ["contender", "reads/s", f"x {base}", "CPU us/read", "inserts/s", f"x {base}",
         "CPU us/insert"], rows, ["", ",.0f", ".2f", ",.0f", ",.0f", ".2f", ",.0f"]))  # fmt: skip
    print("CPU us: the contender's process only (the router, or the store for direct).")
    for kind in ("read", "insert"):
        print(f"{kind}: {runs[(base, kind)][0].command}")


if __name__ == "__main__":
    main()
