"""Web tier vs a bare aiohttp "hello" app: ``GET /users/{id}`` (cache hit) req/s under wrk.

What it measures: the price of everything our web tier does on its hottest path (route
match, admission, metrics middleware, cache lookup, JSON response) relative to the
cheapest response aiohttp can give. Goal (issue 3): ratio >= 0.6.

How: both servers run at once, each pinned to CPU 0 with ``taskset -c 0``; wrk runs on
CPU 1 (``taskset -c 1``) with one thread and one connection by default, so it measures
per-request cost (latency-bound), not parallelism. The web server is seeded with 1000
users and the URL's user is fetched once before measuring, so every measured request
is a cache hit (checked afterwards on ``/metrics``: exactly one miss). Rounds alternate
hello / web so that drift in machine load hits both; the report gives medians, the
median of per-round ratios, and each server's CPU time per request (user+system from
``/proc/<pid>/stat``), the steadiest figure on a shared machine.

Run::

    .venv/bin/python bench/web/compare_hello.py [--duration 5] [--rounds 3] [--connections 1]

Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from topologies import process  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--user-id", type=int, default=42)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    benchlib.require("wrk", "taskset")

    workdir = Path(tempfile.mkdtemp(prefix="scalelab-bench-web-"))
    web_argv = [sys.executable, "-m", "components.web", "--port", "0", "--admin-port", "0",
                "--db", f"sqlite:{workdir / 'app.db'}", "--seed-users", "1000",
                "--cache", "local:64", "--loop", args.loop, "--log-level", "warning"]  # fmt: skip
    hello_argv = [sys.executable, str(HERE / "hello_app.py")]
    servers = []
    try:
        for argv, log in ((web_argv, "web.log"), (hello_argv, "hello.log")):
            servers.append(process.launch(benchlib.pinned(argv), log_path=workdir / log,
                                          cwd=benchlib.REPO))  # fmt: skip
        web, hello = servers
        web_url = f"{web.url()}/users/{args.user_id}"
        hello_url = f"{hello.url()}/"
        urllib.request.urlopen(web_url, timeout=5).read()  # fill the cache: one miss
        urllib.request.urlopen(hello_url, timeout=5).read()
        runs: dict[str, list[benchlib.WrkResult]] = {"hello": [], "web": []}
        for round_number in range(1, args.rounds + 1):
            for label, url, server in (("hello", hello_url, hello), ("web", web_url, web)):
                result = benchlib.run_wrk(url, connections=args.connections,
                                          duration_s=args.duration, threads=args.threads,
                                          pids=[server.pid])  # fmt: skip
                runs[label].append(result)
                print(f"round {round_number}  {label:5}  {result.rps:10.0f} req/s  "
                      f"{result.cpu_us_per_request:6.1f} µs CPU/req", flush=True)  # fmt: skip
        misses = benchlib.scrape_metric(web.listen["admin"], "scalelab_web_cache_misses_total")
        hits = benchlib.scrape_metric(web.listen["admin"], "scalelab_web_cache_hits_total")
    finally:
        benchlib.stop_all(servers)
        shutil.rmtree(workdir, ignore_errors=True)

    keys = ("rps", "p50_ms", "p99_ms", "cpu_us_per_request")
    hello_m, web_m = (benchlib.medians(runs[label], keys) for label in ("hello", "web"))
    errors = sum(r.errors for rs in runs.values() for r in rs)
    print()
    print(f"servers: taskset -c 0 ({args.loop}); load: {runs['web'][0].command}")
    print(f"medians of {args.rounds} round(s); {benchlib.machine_note()}")
    print(benchlib.table(
        ["target", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "req/s each round"],
        [[name, m["rps"], m["p50_ms"], m["p99_ms"], m["cpu_us_per_request"],
          " ".join(f"{r.rps:.0f}" for r in runs[label])]
         for name, label, m in (("hello (bare aiohttp)", "hello", hello_m),
                                ("web GET /users/{id} (hit)", "web", web_m))],
        ["", ".0f", ".2f", ".2f", ".1f", ""],
    ))  # fmt: skip
    rates = benchlib.paired_ratio([r.rps for r in runs["web"]], [r.rps for r in runs["hello"]])
    cpu = web_m["cpu_us_per_request"] / hello_m["cpu_us_per_request"]
    print(f"  ratio web/hello = {web_m['rps'] / hello_m['rps']:.2f} req/s (goal >= 0.6); "
          f"median of per-round ratios {rates:.2f}; CPU per request web/hello {cpu:.2f}x")  # fmt: skip
    print(f"  cache: {hits:.0f} hits, {misses:.0f} miss(es); errors (non-2xx, socket): {errors}")
    if misses != 1 or errors:
        raise SystemExit("the measured requests were not all cache hits with 200 answers")


if __name__ == "__main__":
    main()
