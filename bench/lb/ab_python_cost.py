"""A/B the proxy's Python cost per request between a git revision and the work tree.

Why: on a shared machine, wall-clock benchmarks run minutes apart differ by more than
any single optimisation saves (pytest-benchmark medians moved 20-45 µs/request between
runs of the same code). This script runs the fake-socket proxy loop of
``test_bench_proxy.py`` against two source trees *alternately*, in fresh processes,
and reports for each the best (minimum) process CPU time per request over many short
batches: the minimum is the run the machine disturbed least, and alternating spreads
drift over both sides alike.

Run::

    .venv/bin/python bench/lb/ab_python_cost.py --base HEAD~3 [--pairs 5] [--vary-requests]

The base revision is extracted with ``git archive`` into a temporary directory; the
other side is this checkout's ``src``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import benchlib  # noqa: E402

# One measurement, run in a child with the chosen src first on sys.path.
CHILD = r"""
import asyncio, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import components.common.log  # noqa: F401  (import before silencing)
from test_bench_proxy import REQUEST, make_clients, make_proxy, proxy_requests
loop = asyncio.new_event_loop()
proxy = make_proxy(loop)
clients = make_clients(proxy)
# --vary-requests: two targets in turn, so no client repeats its last request line.
requests = [REQUEST.replace(b"/users/42", b"/users/%d" % i)
            for i in range(2 if sys.argv[4] == "vary" else 1)]
def run(n):
    proxy_requests(proxy, clients, n, requests)
run(2000)
best = min(_batch for _batch in (
    (lambda t0: (run(2000), (time.process_time() - t0) / 2000 * 1e6)[1])(time.process_time())
    for _ in range(int(sys.argv[3]))))
print(f"{best:.3f}")
"""


def measure(src: Path, batches: int, vary: bool) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(ROOT / "bench" / "lb"), str(batches),
         "vary" if vary else "same"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--pairs", type=int, default=5, help="alternating runs per side")
    parser.add_argument("--batches", type=int, default=15, help="2000-request batches per run")
    parser.add_argument("--vary-requests", action="store_true",
                        help="request targets alternate (no client repeats its request line)")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sides = {args.base: benchlib.export_source(args.base, tmp), "work tree": ROOT / "src"}
        results: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.pairs):
            for name, src in sides.items():
                results[name].append(measure(src, args.batches, args.vary_requests))
    print("best CPU µs per proxied request (fake sockets), per run; median of runs")
    for name, values in results.items():
        shown = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:>12}: median {statistics.median(values):.2f}   [{shown}]")
    base, new = (statistics.median(v) for v in results.values())
    print(f"work tree / base: {new / base:.3f}")


if __name__ == "__main__":
    main()
