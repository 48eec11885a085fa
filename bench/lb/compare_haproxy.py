"""Our load balancer beside HAProxy and nginx, proxying the same two backends, under wrk.

What it measures (issue 5's goal: >= 50% of HAProxy's req/s, added p99 <= 2x HAProxy's):
requests per second, p50/p99 latency, the latency each proxy *adds* over hitting a
backend directly, and the proxy's CPU time per request (user+system from
``/proc/<pid>/stat`` around the run, divided by the requests served).

How: two fast backends are one nginx (one worker) serving a small body on two ports.
The three proxies are pinned to CPU 0 with ``taskset -c 0`` and loaded one at a time:
HAProxy with ``nbthread 1`` and server-side keep-alive (``http-reuse always``), nginx
with one worker and ``upstream keepalive``, ours (uvloop) with its defaults. wrk runs
on CPU 1 (``taskset -c 1 wrk -t1 -c64 -d10s --latency``), as do the backends, so CPU 0
holds the proxy under load and nothing else of ours. A direct run against one backend gives the baseline for
"added" latency. Rounds alternate between the targets and medians are reported, so drift
in the machine's load hits all of them alike; on a shared, noisy machine the figures
still move by tens of percent between invocations (CPU per request moves least).

Run::

    .venv/bin/python bench/lb/compare_haproxy.py [--duration 10] [--connections 64] [--rounds 3]

Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
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

import orjson

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SRC = REPO / "src"
BODY = "hello from backend\\n"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def nginx_conf(tmp: Path, body: str) -> str:
    return f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx-%s.pid;
error_log {tmp}/nginx-%s-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/cb; proxy_temp_path {tmp}/pt; fastcgi_temp_path {tmp}/ft;
    uwsgi_temp_path {tmp}/ut; scgi_temp_path {tmp}/st;
    keepalive_requests 1000000;
    {body}
}}
"""


def start_nginx(tmp: Path, name: str, http_body: str, cpu: str) -> subprocess.Popen:
    conf = tmp / f"nginx-{name}.conf"
    conf.write_text(nginx_conf(tmp, http_body).replace("%s", name))
    return subprocess.Popen(["taskset", "-c", cpu, "nginx", "-c", str(conf), "-p", str(tmp)],
                            stderr=subprocess.DEVNULL)  # fmt: skip


def start_haproxy(tmp: Path, port: int, backends: list[int]) -> subprocess.Popen:
    servers = "\n".join(f"    server b{i} 127.0.0.1:{p}" for i, p in enumerate(backends))
    conf = tmp / "haproxy.cfg"
    conf.write_text(f"""
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 3s
    timeout client 60s
    timeout server 30s
    http-reuse always
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    balance roundrobin
{servers}
""")
    return subprocess.Popen(["taskset", "-c", "0", "haproxy", "-f", str(conf), "-db"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def start_ours(tmp: Path, backends: list[int]) -> tuple[subprocess.Popen, int]:
    argv = ["taskset", "-c", "0", sys.executable, "-m", "components.lb", "--port", "0",
            "--admin-port", "0", "--log-level", "warning"]  # fmt: skip
    for port in backends:
        argv += ["--backend", f"127.0.0.1:{port}"]
    env = dict(os.environ, PYTHONPATH=str(SRC), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=(tmp / "lb.log").open("wb"), env=env
    )
    buffered = b""
    deadline = time.monotonic() + 20
    while b"\n" not in buffered:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("our lb did not start:\n" + (tmp / "lb.log").read_text()[-2000:])
        if select.select([proc.stdout], [], [], 0.2)[0]:
            buffered += os.read(proc.stdout.fileno(), 65536)
    ready = orjson.loads(buffered.partition(b"\n")[0])
    return proc, int(ready["listen"]["main"].rpartition(":")[2])


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLK_TCK


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def to_ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if match is None:
        raise SystemExit(f"cannot read wrk latency {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(port: int, args, pids: list[int]) -> dict:
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{args.connections}",
               f"-d{args.duration}s", "--latency", f"http://127.0.0.1:{port}/"]  # fmt: skip
    before = cpu_seconds(pids) if pids else 0.0
    out = subprocess.run(command, capture_output=True, text=True, timeout=args.duration + 60).stdout
    after = cpu_seconds(pids) if pids else 0.0
    if "Requests/sec" not in out:
        raise SystemExit(f"wrk failed: {' '.join(command)}\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*", out)
    return {
        "command": " ".join(command),
        "rps": rate,
        "p50_ms": to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99_ms": to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        "cpu_us_per_req": (after - before) / total * 1e6 if pids and total else float("nan"),
        "errors": (int(errors.group(1)) if errors else 0),
        "socket_errors": socket_errors.group(0) if socket_errors else "",
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="runs per target; medians reported")
    args = parser.parse_args()
    for tool in ("haproxy", "nginx", "wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="scalelab-bench-lb-"))
    backend_ports = [free_port(), free_port()]
    servers = "\n".join(
        f'server {{ listen 127.0.0.1:{p}; location / {{ return 200 "{BODY}"; }} }}'
        for p in backend_ports
    )
    procs = [start_nginx(tmp, "backends", servers, "1")]
    runs: dict[str, list[dict]] = {}
    try:
        for port in backend_ports:
            wait_port(port)
        # All three proxies run at once, idle but for the one under load, so rounds can
        # alternate between them and drift in the machine's load hits each alike.
        targets: dict[str, tuple[int, list[int]]] = {"direct (one backend)": (backend_ports[0], [])}
        port = free_port()
        haproxy = start_haproxy(tmp, port, backend_ports)
        procs.append(haproxy)
        wait_port(port)
        targets["haproxy (nbthread 1)"] = (port, [haproxy.pid])
        port = free_port()
        upstream = " ".join(f"server 127.0.0.1:{p};" for p in backend_ports)
        proxy_conf = f"""
    upstream be {{ {upstream} keepalive 64; }}
    server {{ listen 127.0.0.1:{port};
        location / {{ proxy_pass http://be; proxy_http_version 1.1;
                      proxy_set_header Connection ""; }} }}"""
        nginx = start_nginx(tmp, "proxy", proxy_conf, "0")
        procs.append(nginx)
        wait_port(port)
        targets["nginx (1 worker, keepalive)"] = (port, children(nginx.pid))
        ours, port = start_ours(tmp, backend_ports)
        procs.append(ours)
        targets["scalelab lb (uvloop)"] = (port, [ours.pid])
        for _ in range(args.rounds):
            for name, (port, pids) in targets.items():
                runs.setdefault(name, []).append(wrk(port, args, pids))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    results = {
        name: {key: median([r[key] for r in rs]) for key in ("rps", "p50_ms", "p99_ms",
               "cpu_us_per_req", "errors")} | {"command": rs[0]["command"]}
        for name, rs in runs.items()
    }  # fmt: skip
    base = results["direct (one backend)"]
    print(f"medians of {args.rounds} rounds, wrk -t1 -c{args.connections} -d{args.duration}s")
    print(
        f"{'target':30} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'+p99 ms':>8} {'CPU us/req':>10}"
    )
    for name, r in results.items():
        added = r["p99_ms"] - base["p99_ms"]
        print(f"{name:30} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {added:8.2f} "
              f"{r['cpu_us_per_req']:10.1f}  non-2xx={r['errors']:.0f}")  # fmt: skip
    print("req/s of every round:", {n: [round(r["rps"]) for r in rs] for n, rs in runs.items()})
    ours, ha = results["scalelab lb (uvloop)"], results["haproxy (nbthread 1)"]
    added_ours = ours["p99_ms"] - base["p99_ms"]
    added_ha = ha["p99_ms"] - base["p99_ms"]
    print(f"\nreq/s ratio ours/haproxy: {ours['rps'] / ha['rps']:.2f} (goal >= 0.50)")
    if added_ha > 0:
        print(f"added p99 ratio ours/haproxy: {added_ours / added_ha:.2f} (goal <= 2.0)")
    print(f"CPU per request ours/haproxy: {ours['cpu_us_per_req'] / ha['cpu_us_per_req']:.2f}")
    print(f"wrk: {ours['command']}")


if __name__ == "__main__":
    main()
