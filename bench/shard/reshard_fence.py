"""How long a resharding's write fence lasts: caught up from the change feed, or re-read.

While a move holds its fence, writes to the groups involved wait; that wait is what
users see of an "online" resharding. Before the change feed, the router caught its copy
up by reading every moving row again under the fence, so the fence grew with the range;
following the sources' change feeds (``catchup.py``) leaves only the last few changes
for the fence. This script measures both, side by side, under the same write load.

Two clusters, alike but for ``--reshard-catchup`` (``changes`` or ``reread``): each two
stores (groups g0 and g1, range placement) and a router; ``--rows`` rows in the moving
range. Each round, in each cluster: wrk sends single-key UPDATEs to random keys of the
range (Lua) for a few seconds, and a second in, the range is moved to the other group
(and back the next round). Reported per path: the fence (``fence_s`` of the move's
``/status`` report; median and max of rounds), how the copy was caught up, and the
writers' p99 and max latency during the move, where the fence shows.

Servers on CPU 0, wrk on CPU 1 (``benchlib``). Run::

    .venv/bin/python bench/shard/reshard_fence.py [--rows 20000] [--rounds 3]

Only loopback addresses are used. The figures are noisy (a shared 2-core machine); the
ratio between the paths in one run is what to quote.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for benchlib

from shardbench import Servers, post  # noqa: E402

import benchlib  # noqa: E402

SCHEMA = "CREATE TABLE users (id INTEGER PRIMARY KEY, n INTEGER, name TEXT)"
LOAD_BATCH = 500
FAR = 10**12  # g1's range starts here: the moving rows all begin on g0
UPDATE_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local body = '[["UPDATE users SET n = n + 1 WHERE id = ?", ' .. math.random(0, %d) .. ']]'
  return wrk.format(nil, "/db/execute", nil, body)
end
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows in the moving range")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4, help="wrk's writers")
    parser.add_argument("--duration", type=float, default=6, help="seconds of writes a round")
    args = parser.parse_args()
    benchlib.require("wrk", "taskset")
    work = Path(tempfile.mkdtemp(prefix="bench-shard-fence-"))
    servers = Servers(work)
    start = servers.start

    try:
        routers = {}
        for mode in ("changes", "reread"):
            stores = [start("store", f"{mode}-s{i}", "--data-dir", str(work / f"{mode}-s{i}"))
                      for i in range(2)]  # fmt: skip
            cfg = work / f"{mode}.toml"
            cfg.write_text(f'strategy = "range"\n[[ranges]]\nlow = 0\ngroup = "g0"\n'
                           f'[[ranges]]\nlow = {FAR}\ngroup = "g1"\n[tables]\nusers = "id"\n'
                           + "".join(f'[[groups]]\nname = "g{i}"\nnodes = ["{s.listen["main"]}"]'
                                     f'\nadmin = ["{s.listen["admin"]}"]\n'
                                     for i, s in enumerate(stores)))  # fmt: skip
            router = start("shard", f"router-{mode}", "--shards", str(cfg),
                           "--data-dir", str(work / f"router-{mode}"),
                           "--reshard-catchup", mode)  # fmt: skip
            api = f"http://{router.listen['main']}"
            post(api + "/db/execute", [SCHEMA])
            for start_id in range(0, args.rows, LOAD_BATCH):  # all on g0: one group per request
                post(api + "/db/execute", [["INSERT INTO users (id, n, name) VALUES (?, 0, ?)",
                                            i, "x" * 40]
                                           for i in range(start_id,
                                                          min(start_id + LOAD_BATCH, args.rows))])  # fmt: skip
            routers[mode] = router
        lua = work / "update.lua"
        lua.write_text(UPDATE_LUA % (args.rows - 1))
        reports: dict[str, list[dict]] = {mode: [] for mode in routers}
        loads: dict[str, list[benchlib.WrkResult]] = {mode: [] for mode in routers}
        for round_no in range(args.rounds):
            to = "g1" if round_no % 2 == 0 else "g0"
            for mode, router in routers.items():
                command = benchlib.wrk_argv(f"http://{router.listen['main']}/db/execute",
                                            connections=args.connections,
                                            duration_s=args.duration, script=lua)  # fmt: skip
                wrk = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
                time.sleep(1.0)  # writes under way before the move starts
                report = post(f"http://{router.listen['admin']}/admin/reshard",
                              {"low": 0, "high": args.rows, "to": to})  # fmt: skip
                out, _ = wrk.communicate(timeout=args.duration + 60)
                if report.get("state") != "done":
                    raise benchlib.BenchError(f"{mode}: the move failed: {report}")
                reports[mode].append(report)
                loads[mode].append(benchlib.parse_wrk(out))
        print(f"\nfence of a {args.rows:,}-row range move under {args.connections} writers; "
              f"{args.rounds} rounds; servers on CPU 0, wrk on CPU 1; "
              f"{benchlib.machine_note()} (noisy)")  # fmt: skip
        rows = []
        for mode in routers:
            fences = [r["fence_s"] * 1000 for r in reports[mode]]
            last = reports[mode][-1]
            rows.append([mode, statistics.median(fences), max(fences),
                         statistics.median(r["changes_seen"] for r in reports[mode]),
                         statistics.median(r["keys_refetched"] + r["rows_caught_up"]
                                           for r in reports[mode]),
                         statistics.median(w.p99_ms for w in loads[mode]),
                         statistics.median(w.rps for w in loads[mode]),
                         last["catchup_note"] or "-"])  # fmt: skip
        print(benchlib.table(["catch-up", "fence ms (median)", "fence ms (max)",
                              "changes seen", "rows/keys redone", "write p99 ms",
                              "writes/s", "note"], rows,
                             ["", ",.1f", ",.1f", ",.0f", ",.0f", ",.1f", ",.0f", ""]))  # fmt: skip
        ratio = statistics.median(r["fence_s"] for r in reports["reread"]) / max(
            statistics.median(r["fence_s"] for r in reports["changes"]), 1e-9
        )
        print(f"fence, reread / changes: {ratio:.1f}x")
        for mode in routers:  # where a fence's time went (the last round's move)
            print(f"{mode} fence phases (ms): {reports[mode][-1]['fence_phases_ms']}")
        print(f"writers: {' '.join(command)}")
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
