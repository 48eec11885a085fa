"""Where the proxy's time goes under real load: cProfile (or nothing) around a wrk run.

``test_bench_proxy.py`` fakes the sockets, so it shows the Python logic only. This script
runs the real thing in one process: two nginx backends (one worker, CPU 1), our
``LoadBalancer`` on uvloop in *this* process pinned to CPU 0, and wrk on CPU 1. With
``--profile`` the loop runs under cProfile and the report gives Python function calls
per request and the functions with the most own time; without it, only the process's
CPU per request (user and system apart, from ``os.times``), which tells how much of a
request is the interpreter and how much the kernel's loopback TCP and epoll.

With ``--base REV`` it is an A/B of real sockets instead: the ``components`` package of
git revision ``REV`` and this work tree's take turns, each run a fresh child process of
this script, and the medians of CPU per request (user and system apart) are printed for
both. Alternating spreads the machine's drift over both sides; this is how a change's
effect on the *whole* request cost (interpreter, uvloop and kernel) is told apart from
noise, where ``ab_python_cost.py`` sees the Python part only.

Run::

    .venv/bin/python bench/lb/profile_live.py [--profile] [--duration 5] [--top 25]
    .venv/bin/python bench/lb/profile_live.py --base HEAD~3 [--pairs 3] [--duration 5]

``--vary-requests`` gives every request its own target (``compare_haproxy.py``'s wrk
script), so no request head repeats.

Only loopback addresses are used. Figures on a shared machine are noisy; compare runs
taken back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compare_haproxy import VARY_SCRIPT  # noqa: E402

import benchlib  # noqa: E402
from components.common.runner import Runtime, parse_args  # noqa: E402
from components.lb.server import LoadBalancer  # noqa: E402

BODY = "hello from backend\\n"


def start_backends(workdir: Path) -> tuple[benchlib.process.ComponentProcess, list[int]]:
    ports = [benchlib.free_port(), benchlib.free_port()]
    servers = "\n".join(
        f'server {{ listen {benchlib.LOOPBACK}:{p}; location / {{ return 200 "{BODY}"; }} }}'
        for p in ports
    )
    nginx = benchlib.start_nginx(workdir, "backends", servers, port=ports[0],
                                 cpus=benchlib.LOAD_CPUS)  # fmt: skip
    benchlib.wait_port(ports[1])
    return nginx, ports


async def serve_under_wrk(backends: list[int], args) -> tuple[benchlib.WrkResult, float, float]:
    argv = ["--host", benchlib.LOOPBACK, "--port", "0", "--log-level", "warning"]
    for port in backends:
        argv += ["--backend", f"{benchlib.LOOPBACK}:{port}"]
    lb_args = parse_args(LoadBalancer, argv)
    proxy = LoadBalancer(lb_args, Runtime(lb_args, "lb"))
    address = (await proxy.start())["main"]
    script = None
    if args.vary_requests:
        script = Path(args.workdir) / "vary.lua"
        script.write_text(VARY_SCRIPT)
    command = benchlib.wrk_argv(f"http://{address}/", connections=args.connections,
                                duration_s=args.duration, script=script)  # fmt: skip
    profiler = cProfile.Profile() if args.profile else None
    before = os.times()
    if profiler is not None:
        profiler.enable()
    wrk = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    out, _ = await wrk.communicate()
    if profiler is not None:
        profiler.disable()
    after = os.times()
    await proxy.stop()
    result = benchlib.parse_wrk(out.decode())
    if profiler is not None:
        stats = pstats.Stats(profiler)
        print(f"Python function calls per request: {stats.total_calls / result.requests:.0f}")
        stats.sort_stats("tottime").print_stats(args.top)
    return result, after.user - before.user, after.system - before.system


def compare_with(args) -> None:
    """Alternate fresh runs of REV's ``components`` and the work tree's; print medians."""
    runs: dict[str, list[dict]] = {args.base: [], "work tree": []}
    with tempfile.TemporaryDirectory(prefix="scalelab-lb-ab-") as tmp:
        # Only ``components`` comes from REV; benchlib and topologies stay this tree's.
        base_src = benchlib.export_source(args.base, tmp, paths=["src/components"])
        paths = {args.base: str(base_src), "work tree": str(benchlib.SRC)}
        command = [sys.executable, __file__, "--json", "--duration", str(args.duration),
                   "--connections", str(args.connections)]  # fmt: skip
        if args.vary_requests:
            command.append("--vary-requests")
        for _ in range(args.pairs):
            for side, path in paths.items():
                env = dict(os.environ, PYTHONPATH=path)
                done = subprocess.run(command, env=env, capture_output=True, text=True,
                                      check=True, timeout=args.duration + 120)  # fmt: skip
                run = json.loads(done.stdout.strip().splitlines()[-1])
                runs[side].append(run)
                print(f"{side:>12}: {run['cpu_us']:5.1f} us/request (user {run['user_us']:.1f}, "
                      f"system {run['system_us']:.1f}), {run['rps']:.0f} req/s", flush=True)  # fmt: skip
    print(f"\nmedians of {args.pairs} alternating runs; {benchlib.machine_note()}")
    for side, rs in runs.items():
        m = {k: statistics.median(r[k] for r in rs) for k in ("cpu_us", "user_us", "system_us")}
        print(f"{side:>12}: CPU {m['cpu_us']:.1f} us/request "
              f"(user {m['user_us']:.1f}, system {m['system_us']:.1f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", action="store_true", help="run the loop under cProfile")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--top", type=int, default=25, help="functions to list")
    parser.add_argument("--base", help="A/B: git revision whose components to compare with")
    parser.add_argument("--pairs", type=int, default=3, help="A/B: runs per side")
    parser.add_argument("--vary-requests", action="store_true",
                        help="a different target on every request (no request head repeats)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # A/B child
    args = parser.parse_args()
    benchlib.require("nginx", "wrk", "taskset")
    if args.base:
        compare_with(args)
        return
    os.sched_setaffinity(0, {int(benchlib.SERVER_CPUS)})
    import uvloop

    with tempfile.TemporaryDirectory(prefix="scalelab-lb-profile-") as tmp:
        args.workdir = tmp
        nginx, ports = start_backends(Path(tmp))
        try:
            result, user_s, system_s = uvloop.run(serve_under_wrk(ports, args))
        finally:
            benchlib.stop_all([nginx])
    per = 1e6 / result.requests
    if args.json:
        print(json.dumps({"rps": result.rps, "cpu_us": (user_s + system_s) * per,
                          "user_us": user_s * per, "system_us": system_s * per}))  # fmt: skip
        return
    print(f"{result.requests} requests, {result.rps:.0f} req/s, p99 {result.p99_ms:.2f} ms"
          f"{' (under cProfile)' if args.profile else ''}")  # fmt: skip
    print(f"proxy CPU per request: {(user_s + system_s) * per:.1f} us "
          f"(user {user_s * per:.1f}, system {system_s * per:.1f})")  # fmt: skip
    print(benchlib.machine_note())


if __name__ == "__main__":
    main()
