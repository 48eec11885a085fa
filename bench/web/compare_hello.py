"""Web tier vs a bare aiohttp "hello" app: ``GET /users/{id}`` (cache hit) req/s under wrk.

What it measures: the price of everything our web tier does on its hottest path (route
match, admission, metrics middleware, cache lookup, JSON response) relative to the
cheapest response aiohttp can give. Goal (issue 3): ratio >= 0.6.

How: both servers run at once, each pinned to CPU 0 with ``taskset -c 0``; wrk runs on
CPU 1 (``taskset -c 1``) with one thread and one connection by default, so it measures
per-request cost (latency-bound), not parallelism. The web server is seeded with 1000
users and the URL's user is fetched once before measuring, so every measured request
is a cache hit (checked afterwards on ``/metrics``: exactly one miss). Rounds alternate
hello / web so that drift in machine load hits both; the report gives medians.

Run::

    .venv/bin/python bench/web/compare_hello.py [--duration 5] [--rounds 3] [--connections 1]

Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
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


def start(argv: list[str], log_path: Path) -> tuple[subprocess.Popen, dict]:
    proc = process.launch(argv, log_path=log_path, cwd=REPO)
    return proc.popen, proc.ready


def wrk(url: str, duration_s: int, connections: int, threads: int) -> tuple[float, str, int]:
    command = ["taskset", "-c", "1", "wrk", f"-t{threads}", f"-c{connections}",
               f"-d{duration_s}s", url]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 30).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise SystemExit(f"wrk gave no rate:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return float(match.group(1)), " ".join(command), int(errors.group(1)) if errors else 0


def scrape(admin: str, name: str) -> float:
    body = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--user-id", type=int, default=42)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found on PATH")

    workdir = Path(tempfile.mkdtemp(prefix="scalelab-bench-web-"))
    web_argv = ["taskset", "-c", "0", sys.executable, "-m", "components.web", "--port", "0",
                "--admin-port", "0", "--db", f"sqlite:{workdir / 'app.db'}", "--seed-users",
                "1000", "--cache", "local:64", "--loop", args.loop, "--log-level", "warning"]  # fmt: skip
    hello_argv = ["taskset", "-c", "0", sys.executable, str(HERE / "hello_app.py")]
    web, web_ready = start(web_argv, workdir / "web.log")
    hello, hello_ready = start(hello_argv, workdir / "hello.log")
    try:
        web_url = f"http://{web_ready['listen']['main']}/users/{args.user_id}"
        hello_url = f"http://{hello_ready['listen']['main']}/"
        urllib.request.urlopen(web_url, timeout=5).read()  # fill the cache: one miss
        urllib.request.urlopen(hello_url, timeout=5).read()
        rates: dict[str, list[float]] = {"hello": [], "web": []}
        commands = {}
        errors = 0
        for round_number in range(1, args.rounds + 1):
            for label, url in (("hello", hello_url), ("web", web_url)):
                rate, command, non2xx = wrk(url, args.duration, args.connections, args.threads)
                rates[label].append(rate)
                commands[label] = command
                errors += non2xx
                print(f"round {round_number}  {label:5}  {rate:10.0f} req/s", flush=True)
        misses = scrape(web_ready["listen"]["admin"], "scalelab_web_cache_misses_total")
        hits = scrape(web_ready["listen"]["admin"], "scalelab_web_cache_hits_total")
    finally:
        for proc in (web, hello):
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)

    hello_median = statistics.median(rates["hello"])
    web_median = statistics.median(rates["web"])
    ratio = web_median / hello_median
    print()
    print(f"servers: taskset -c 0 ({args.loop}); load: {commands['web']}")
    print(f"  hello (bare aiohttp)       median {hello_median:10.0f} req/s  {rates['hello']}")
    print(f"  web GET /users/{{id}} (hit)  median {web_median:10.0f} req/s  {rates['web']}")
    print(f"  ratio web/hello = {ratio:.2f}  (goal >= 0.6)")
    print(f"  cache: {hits:.0f} hits, {misses:.0f} miss(es); non-2xx responses: {errors}")
    if misses != 1 or errors:
        raise SystemExit("the measured requests were not all cache hits with 200 answers")


if __name__ == "__main__":
    main()
