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
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SRC = REPO / "src"
READY_TIMEOUT_S = 20.0

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"{what} not listening on {port}") from None
            time.sleep(0.05)


def start_nginx(tmp: Path) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port))
    command = ["taskset", "-c", "0", "nginx", "-p", str(tmp), "-e", str(tmp / "error.log"),
               "-c", str(conf)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, proc, "nginx")
    return proc, f"http://127.0.0.1:{port}/", " ".join(command)


def start_python_server() -> tuple[subprocess.Popen, str, str]:
    command = ["taskset", "-c", "0", sys.executable, str(HERE / "fixed_server.py")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE)
    readable, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
    if not readable:
        proc.kill()
        raise SystemExit("fixed_server.py not ready")
    listen = json.loads(proc.stdout.readline())["listen"]
    return proc, f"http://{listen}/", " ".join(command)


def run_wrk(url: str, cores: str, threads: int, connections: int, duration_s: int):
    command = ["taskset", "-c", cores, "wrk", f"-t{threads}", f"-c{connections}",
               f"-d{duration_s}s", url]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 30).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise SystemExit(f"wrk gave no rate:\n{out}")
    return float(match.group(1)), " ".join(command)


def run_loadgen(url: str, cores: str, procs: int, connections: int, duration_s: int, tmp: Path):
    report_path = tmp / "loadgen.json"
    # One extra second of warm-up so the measured window equals wrk's duration.
    command = ["taskset", "-c", cores, sys.executable, "-m", "loadgen", url,
               "--profile", str(HERE / "fixed.toml"), "--users", str(connections),
               "--duration", str(duration_s + 1), "--warmup", "1", "--procs", str(procs),
               "--no-progress", "--json", str(report_path)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(SRC))
    done = subprocess.run(command, capture_output=True, text=True, env=env,
                          timeout=duration_s + 60)  # fmt: skip
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
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed")
    with tempfile.TemporaryDirectory(prefix="loadgen-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.server == "nginx":
            server, url, server_command = start_nginx(tmp)
        else:
            server, url, server_command = start_python_server()
        print(f"server: {server_command}  ({url})")
        try:
            # procs -> (cores, wrk threads)
            setups = {1: ("1", 1), 2: ("0,1", 2)}
            figures: dict[int, dict[str, list[float]]] = {
                p: {"wrk": [], "loadgen": []} for p in setups
            }
            commands: dict[int, tuple[str, str]] = {}
            for round_no in range(1, args.rounds + 1):
                for procs, (cores, threads) in setups.items():
                    w, wrk_command = run_wrk(url, cores, threads, args.connections, args.duration)
                    g, gen_command, latency = run_loadgen(
                        url, cores, procs, args.connections, args.duration, tmp
                    )
                    figures[procs]["wrk"].append(w)
                    figures[procs]["loadgen"].append(g)
                    commands[procs] = (wrk_command, gen_command)
                    print(
                        f"round {round_no} procs {procs}: wrk {w:9.0f} req/s  loadgen {g:8.0f} "
                        f"req/s (p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms)  "
                        f"ratio {g / w:.3f}",
                        flush=True,
                    )
        finally:
            server.terminate()
            server.wait(timeout=10)
    print()
    print(
        f"{'setup':<34}{'wrk req/s':>12}{'loadgen req/s':>15}{'ratio':>8}   (medians of {args.rounds})"
    )
    for procs, (cores, threads) in setups.items():
        w = statistics.median(figures[procs]["wrk"])
        g = statistics.median(figures[procs]["loadgen"])
        label = f"--procs {procs} / wrk -t{threads} on CPU {cores}"
        print(f"{label:<34}{w:>12.0f}{g:>15.0f}{g / w:>8.3f}")
    for procs, (wrk_command, gen_command) in commands.items():
        print(f"\nprocs {procs}:\n  {wrk_command}\n  {gen_command}")
    print("\nnote: with --procs 2 both tools also use CPU 0, where the server runs.")


if __name__ == "__main__":
    main()
