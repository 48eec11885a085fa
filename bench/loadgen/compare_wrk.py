"""The load generator's ceiling: req/s of ``scalelab load`` vs wrk on a fixed-response server.

What it measures: how many requests per second the load generator can drive when the
server is not the bottleneck, relative to wrk (C, epoll, hand-written HTTP parser) in the
same run. Every figure scalelab reports is only meaningful while the tier under test is
slower than this ceiling; the report says how far that is.

How: the fixed-response server is nginx (``return 200``) when installed, else
``fixed_server.py`` (uvloop, asyncio.Protocol); it is pinned to CPU 0 with
``taskset -c 0``. With ``--procs 1`` the load generator and wrk (one thread) run on CPU 1
(``taskset -c 1``). With ``--procs 2`` both tools get CPUs 0 and 1 (``taskset -c 0,1``,
wrk with two threads): on this 2-core machine that second process shares CPU 0 with
the server, so it is a "both cores" figure, not a clean one. The same number of
connections for both tools (``--connections``, default 32; the load generator runs a
closed loop with that many users). Rounds alternate wrk / loadgen so drift in machine
load hits both; the report gives medians and the ratio loadgen / wrk.

Run::

    .venv/bin/python bench/loadgen/compare_wrk.py [--duration 5] [--rounds 3] [--server nginx|python]

Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from topologies import process  # noqa: E402

HERE = Path(__file__).resolve().parent


def start_nginx(tmp: Path) -> tuple[process.ComponentProcess, str]:
    port = benchlib.free_port()
    # No master: the one process that serves is the one we started.
    server = benchlib.start_nginx(tmp, "fixed", f"""
    server {{ listen 127.0.0.1:{port} backlog=1024;
        location / {{ return 200 "ok\\n"; }} }}""", port=port, master=False)  # fmt: skip
    return server, f"http://127.0.0.1:{port}/"


def start_python_server(tmp: Path) -> tuple[process.ComponentProcess, str]:
    argv = benchlib.pinned([sys.executable, str(HERE / "fixed_server.py")])
    server = process.launch(argv, log_path=tmp / "fixed_server.log", name="fixed_server")
    return server, f"{server.url()}/"


def run_wrk(url: str, cores: str, threads: int, connections: int, duration_s: int):
    result = benchlib.run_wrk(url, connections=connections, duration_s=duration_s,
                              threads=threads, latency=False, cpus=cores)  # fmt: skip
    if result.errors:
        raise SystemExit(f"wrk saw errors: {result}")
    return result.rps, result.command


def run_loadgen(url: str, cores: str, procs: int, connections: int, duration_s: int, tmp: Path):
    report_path = tmp / "loadgen.json"
    # One extra second of warm-up so the measured window equals wrk's duration.
    command = benchlib.pinned(
        [
            sys.executable,
            "-m",
            "loadgen",
            url,
            "--profile",
            str(HERE / "fixed.toml"),
            "--users",
            str(connections),
            "--duration",
            str(duration_s + 1),
            "--warmup",
            "1",
            "--procs",
            str(procs),
            "--no-progress",
            "--json",
            str(report_path),
        ],
        cores,
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60,
                          env=process.child_env())  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"loadgen failed:\n{done.stderr[-2000:]}")
    report = json.loads(report_path.read_text())
    if report["errors"]["total"]:
        raise SystemExit(f"loadgen saw errors: {report['errors']}")
    shown = " ".join(c if c != str(report_path) else "FILE" for c in command)
    return report["throughput_rps"], shown, report["latency_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--server", choices=["nginx", "python"],
                        default="nginx" if shutil.which("nginx") else "python")  # fmt: skip
    args = parser.parse_args()
    benchlib.require("wrk", "taskset", *(["nginx"] if args.server == "nginx" else []))
    with tempfile.TemporaryDirectory(prefix="loadgen-bench-") as tmp_name:
        tmp = Path(tmp_name)
        start = start_nginx if args.server == "nginx" else start_python_server
        server, url = start(tmp)
        print(f"server: {' '.join(server.argv)}  ({url}); {benchlib.machine_note()}")
        try:
            # procs -> (cores, wrk threads)
            setups = {1: ("1", 1), 2: ("0,1", 2)}
            figures: dict[int, list[dict[str, float]]] = {p: [] for p in setups}
            commands: dict[int, tuple[str, str]] = {}
            for round_no in range(1, args.rounds + 1):
                for procs, (cores, threads) in setups.items():
                    w, wrk_command = run_wrk(url, cores, threads, args.connections, args.duration)
                    g, gen_command, latency = run_loadgen(
                        url, cores, procs, args.connections, args.duration, tmp
                    )
                    figures[procs].append({"wrk": w, "loadgen": g})
                    commands[procs] = (wrk_command, gen_command)
                    print(
                        f"round {round_no} procs {procs}: wrk {w:9.0f} req/s  loadgen {g:8.0f} "
                        f"req/s (p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms)  "
                        f"ratio {g / w:.3f}",
                        flush=True,
                    )
        finally:
            server.stop()
    print(f"\nmedians of {args.rounds} round(s)")
    rows = []
    for procs, (cores, threads) in setups.items():
        m = benchlib.medians(figures[procs], ("wrk", "loadgen"))
        paired = benchlib.paired_ratio([f["loadgen"] for f in figures[procs]],
                                       [f["wrk"] for f in figures[procs]])  # fmt: skip
        rows.append([f"--procs {procs} / wrk -t{threads} on CPU {cores}", m["wrk"], m["loadgen"],
                     m["loadgen"] / m["wrk"], paired])  # fmt: skip
    print(benchlib.table(["setup", "wrk req/s", "loadgen req/s", "ratio", "paired ratio"], rows,
                         ["", ".0f", ".0f", ".3f", ".3f"]))  # fmt: skip
    for procs, (wrk_command, gen_command) in commands.items():
        print(f"\nprocs {procs}:\n  {wrk_command}\n  {gen_command}")
    print("\nnote: with --procs 2 both tools also use CPU 0, where the server runs.")


if __name__ == "__main__":
    main()
