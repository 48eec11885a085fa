"""Our edge cache beside nginx ``proxy_cache``, caching the same origin response, under wrk.

What it measures (issue 7: hit throughput >= Varnish's and >= 60% of nginx's; the miss
path's added latency over the origin alone): for cache *hits*, requests per second,
p50/p99 latency and the cache process's CPU time per request (user+system from
``/proc/<pid>/stat`` around the run, divided by the requests served); for the *miss*
path, the same against an uncacheable URL (``Cache-Control: no-store``, so every request
goes through to the origin) next to the origin hit directly; for *fills*, a storable URL
never asked before on every request (a wrk Lua script), so each one is fetched, streamed
and stored.

Varnish joins when ``varnishd`` is on PATH: the default VCL with ``-b`` pointing at the
origin, ``-s malloc,256m``, in the foreground (``-F``) with its own working directory
(``-n``) under the run's temp directory, on a loopback port, pinned to CPU 0 and stopped
by PID. Varnish is two processes (the manager and the child that serves); CPU per
request sums both. It marks no cache status field, so the warm-up prints its ``Age``.

How: the origin is one nginx worker on CPU 1 answering ``/hit`` with
``Cache-Control: max-age=60`` and a small body, ``/pass`` with ``no-store``. The caches
are pinned to CPU 0 (``taskset -c 0``): nginx with one worker, ``proxy_cache`` in a
keys zone of 10 MiB on a temp directory and ``upstream keepalive``; ours (uvloop) with
its defaults. wrk runs on CPU 1 (``taskset -c 1 wrk -t1 -c64 -d10s --latency``). Each
cache is warmed with one request first. Rounds alternate between targets and medians are
reported; the machine is shared and noisy, so figures move by tens of percent between
invocations (CPU per request moves least).

Run::

    .venv/bin/python bench/edge/compare_nginx.py [--duration 10] [--connections 64] [--rounds 3]

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
import urllib.request
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[2]
BODY = "a small cached body, 42 bytes long.......\\n"
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


def start_nginx(tmp: Path, name: str, http_body: str, cpu: str) -> subprocess.Popen:
    conf = tmp / f"nginx-{name}.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx-{name}.pid;
error_log {tmp}/nginx-{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/cb-{name}; proxy_temp_path {tmp}/pt-{name};
    fastcgi_temp_path {tmp}/ft-{name}; uwsgi_temp_path {tmp}/ut-{name};
    scgi_temp_path {tmp}/st-{name};
    keepalive_requests 1000000;
    {http_body}
}}
""")
    return subprocess.Popen(["taskset", "-c", cpu, "nginx", "-c", str(conf), "-p", str(tmp)],
                            stderr=subprocess.DEVNULL)  # fmt: skip


def start_ours(tmp: Path, origin_port: int) -> tuple[subprocess.Popen, int]:
    argv = ["taskset", "-c", "0", sys.executable, "-m", "components.edge", "--port", "0",
            "--admin-port", "0", "--log-level", "warning",
            "--origin", f"127.0.0.1:{origin_port}"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=(tmp / "edge.log").open("wb"),
                            env=env)  # fmt: skip
    buffered = b""
    deadline = time.monotonic() + 20
    while b"\n" not in buffered:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("our edge did not start:\n" + (tmp / "edge.log").read_text()[-2000:])
        if select.select([proc.stdout], [], [], 0.2)[0]:
            buffered += os.read(proc.stdout.fileno(), 65536)
    ready = orjson.loads(buffered.partition(b"\n")[0])
    return proc, int(ready["listen"]["main"].rpartition(":")[2])


def start_varnish(tmp: Path, origin_port: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", "0", "varnishd", "-F", "-n", str(tmp / "varnish"),
                             "-a", f"127.0.0.1:{port}", "-b", f"127.0.0.1:{origin_port}",
                             "-s", "malloc,256m"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_port(port)
    # The manager accepts on the socket before its child is ready to answer: wait for
    # the child (an answer of any status) before measuring.
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(16).startswith(b"HTTP/1.1"):
                    return proc, port
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("varnishd did not start")
        time.sleep(0.1)


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
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


def nginx_workers(pid: int) -> list[int]:
    """nginx's worker (it names itself a little after the master starts listening)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        workers = []
        for child in children(pid):
            try:
                if b"worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                    workers.append(child)
            except OSError:
                continue
        if workers:
            return workers
        time.sleep(0.05)
    raise SystemExit("nginx started no worker")


def to_ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if match is None:
        raise SystemExit(f"cannot read wrk latency {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


#: wrk script for the fill target: every request a URL never asked before (a storable
#: miss each time: fetch, stream, store), under ``/hit/`` so the origin says max-age=60.
UNIQUE_URLS_LUA = """
local n = 0
local run = math.random(1, 1000000000)
request = function()
  n = n + 1
  return wrk.format("GET", "/hit/" .. run .. "-" .. n)
end
"""


def wrk(port: int, path: str, args, pids: list[int]) -> dict:
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{args.connections}",
               f"-d{args.duration}s", "--latency", f"http://127.0.0.1:{port}{path}"]  # fmt: skip
    if path == "/hit/":
        command[5:5] = ["-s", str(args.lua)]
    before = cpu_seconds(pids) if pids else 0.0
    out = subprocess.run(command, capture_output=True, text=True, timeout=args.duration + 60).stdout
    after = cpu_seconds(pids) if pids else 0.0
    if "Requests/sec" not in out:
        raise SystemExit(f"wrk failed: {' '.join(command)}\n{out}")
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "command": " ".join(command),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99_ms": to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        "cpu_us_per_req": (after - before) / total * 1e6 if pids and total else float("nan"),
        "errors": int(errors.group(1)) if errors else 0,
    }


def warm(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        response.read()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        headers = response.headers
        return (
            headers.get("X-Cache") or headers.get("X-Cache-Status") or f"Age: {headers.get('Age')}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="runs per target; medians reported")
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="scalelab-bench-edge-"))
    # nginx's worker drops to an unprivileged user when started as root; it must be able
    # to write its cache and temp directories here.
    tmp.chmod(0o777)
    origin_port = free_port()
    origin_conf = f"""
    server {{ listen 127.0.0.1:{origin_port};
        location /hit {{ add_header Cache-Control "max-age=60"; return 200 "{BODY}"; }}
        location /pass {{ add_header Cache-Control "no-store"; return 200 "{BODY}"; }} }}"""
    procs = [start_nginx(tmp, "origin", origin_conf, "1")]
    runs: dict[str, list[dict]] = {}
    try:
        wait_port(origin_port)
        # name -> (port, path, pids)
        targets: dict[str, tuple[int, str, list[int]]] = {}
        port = free_port()
        cache_conf = f"""
    proxy_cache_path {tmp}/nginx-cache keys_zone=edge:10m max_size=256m;
    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}
    server {{ listen 127.0.0.1:{port};
        location / {{ proxy_pass http://origin; proxy_http_version 1.1;
                      proxy_set_header Connection ""; proxy_cache edge;
                      add_header X-Cache-Status $upstream_cache_status; }} }}"""
        nginx = start_nginx(tmp, "cache", cache_conf, "0")
        procs.append(nginx)
        wait_port(port)
        # Only the worker: with proxy_cache nginx also forks a cache manager and a cache
        # loader (which exits after a minute); neither serves requests.
        nginx_pids = nginx_workers(nginx.pid)
        ours, ours_port = start_ours(tmp, origin_port)
        procs.append(ours)
        caches = {"nginx proxy_cache (1 worker)": (port, nginx_pids),
                  "scalelab edge (uvloop)": (ours_port, [ours.pid])}  # fmt: skip
        if shutil.which("varnishd"):
            varnish, vport = start_varnish(tmp, origin_port)
            procs.append(varnish)
            # The manager and its child (the one that serves): both burn CPU for us.
            caches["varnish (malloc,256m)"] = (vport, [varnish.pid, *children(varnish.pid)])
        for name, (cport, pids) in caches.items():
            status = warm(cport, "/hit")
            print(f"{name}: second request's cache status {status!r}")
            targets[f"hit  {name}"] = (cport, "/hit", pids)
        targets["miss origin alone (nginx)"] = (origin_port, "/pass", [])
        for name, (cport, pids) in caches.items():
            targets[f"miss {name}"] = (cport, "/pass", pids)
        args.lua = tmp / "unique.lua"
        args.lua.write_text(UNIQUE_URLS_LUA)
        for name, (cport, pids) in caches.items():
            targets[f"fill {name}"] = (cport, "/hit/", pids)
        for _ in range(args.rounds):
            for name, (tport, path, pids) in targets.items():
                runs.setdefault(name, []).append(wrk(tport, path, args, pids))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    keys = ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "errors")
    results = {name: {k: statistics.median([r[k] for r in rs]) for k in keys}
               for name, rs in runs.items()}  # fmt: skip
    print(f"medians of {args.rounds} rounds, wrk -t1 -c{args.connections} -d{args.duration}s")
    print(f"{'target':40} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10}")
    for name, r in results.items():
        print(f"{name:40} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{r['cpu_us_per_req']:10.1f}  non-2xx={r['errors']:.0f}")  # fmt: skip
    print("req/s of every round:", {n: [round(r["rps"]) for r in rs] for n, rs in runs.items()})
    ours = results["hit  scalelab edge (uvloop)"]
    ng = results["hit  nginx proxy_cache (1 worker)"]
    print(f"\nhit req/s ratio ours/nginx: {ours['rps'] / ng['rps']:.2f} (goal >= 0.60)")
    print(f"hit CPU per request ours/nginx: {ours['cpu_us_per_req'] / ng['cpu_us_per_req']:.2f}")
    if "hit  varnish (malloc,256m)" in results:
        va = results["hit  varnish (malloc,256m)"]
        print(f"hit req/s ratio ours/varnish: {ours['rps'] / va['rps']:.2f} (goal >= 1.0)")
    else:
        print("varnish: not installed (no varnishd on PATH), not measured")
    base = results["miss origin alone (nginx)"]
    for name in caches:
        r = results[f"miss {name}"]
        print(f"miss path added p50/p99 over the origin alone, {name}: "
              f"{r['p50_ms'] - base['p50_ms']:+.2f} / {r['p99_ms'] - base['p99_ms']:+.2f} ms")  # fmt: skip
    for name in caches:
        r = results[f"fill {name}"]
        print(f"fill (storable miss, new URL each request) added p50/p99 over the origin alone, "
              f"{name}: {r['p50_ms'] - base['p50_ms']:+.2f} / {r['p99_ms'] - base['p99_ms']:+.2f} ms")  # fmt: skip
    print(f"wrk: {runs['hit  scalelab edge (uvloop)'][0]['command']}")
    print(f"wrk (fills): {runs['fill scalelab edge (uvloop)'][0]['command']}")


if __name__ == "__main__":
    main()
