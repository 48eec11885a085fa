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
import shutil
import socket
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from topologies import process  # noqa: E402

BODY = "a small cached body, 42 bytes long.......\\n"


def start_ours(tmp: Path, origin_port: int) -> process.ComponentProcess:
    edge = process.start("edge", "--log-level", "warning", "--origin",
                         f"127.0.0.1:{origin_port}", log_path=tmp / "edge.log")  # fmt: skip
    benchlib.pin(edge.pid)
    return edge


def varnish_answers(port: int) -> bool:
    """The manager accepts on the socket before its child is ready to answer: wait for
    the child (an answer of any status) before measuring."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/1.1")
    except OSError:
        return False


def start_varnish(tmp: Path, origin_port: int) -> tuple[process.ComponentProcess, int]:
    port = benchlib.free_port()
    argv = ["varnishd", "-F", "-n", str(tmp / "varnish"), "-a", f"127.0.0.1:{port}",
            "-b", f"127.0.0.1:{origin_port}", "-s", "malloc,256m"]  # fmt: skip
    varnish = benchlib.start_reference(argv, name="varnish", log_path=tmp / "varnish.log",
                                       ready=lambda: varnish_answers(port))  # fmt: skip
    return varnish, port


def nginx_workers(pid: int) -> list[int]:
    """nginx's worker (it names itself a little after the master starts listening)."""

    def workers() -> list[int]:
        found = []
        for child in benchlib.children(pid):
            try:
                if b"worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(child)
            except OSError:
                continue
        return found

    return benchlib.wait_for(workers, "an nginx worker")


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


def wrk(port: int, path: str, args, pids: list[int]) -> benchlib.WrkResult:
    return benchlib.run_wrk(f"http://127.0.0.1:{port}{path}", connections=args.connections,
                            duration_s=args.duration, pids=pids,
                            script=args.lua if path == "/hit/" else None)  # fmt: skip


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
    benchlib.require("nginx", "wrk", "taskset")
    tmp = Path(tempfile.mkdtemp(prefix="scalelab-bench-edge-"))
    # nginx's worker drops to an unprivileged user when started as root; it must be able
    # to write its cache and temp directories here.
    tmp.chmod(0o777)
    origin_port = benchlib.free_port()
    origin_conf = f"""
    server {{ listen 127.0.0.1:{origin_port};
        location /hit {{ add_header Cache-Control "max-age=60"; return 200 "{BODY}"; }}
        location /pass {{ add_header Cache-Control "no-store"; return 200 "{BODY}"; }} }}"""
    procs: list[process.ComponentProcess] = []
    runs: dict[str, list[benchlib.WrkResult]] = {}
    try:
        procs.append(benchlib.start_nginx(tmp, "origin", origin_conf, port=origin_port,
                                          cpus=benchlib.LOAD_CPUS))  # fmt: skip
        # name -> (port, path, pids)
        targets: dict[str, tuple[int, str, list[int]]] = {}
        port = benchlib.free_port()
        cache_conf = f"""
    proxy_cache_path {tmp}/nginx-cache keys_zone=edge:10m max_size=256m;
    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}
    server {{ listen 127.0.0.1:{port};
        location / {{ proxy_pass http://origin; proxy_http_version 1.1;
                      proxy_set_header Connection ""; proxy_cache edge;
                      add_header X-Cache-Status $upstream_cache_status; }} }}"""
        nginx = benchlib.start_nginx(tmp, "cache", cache_conf, port=port)
        procs.append(nginx)
        # Only the worker: with proxy_cache nginx also forks a cache manager and a cache
        # loader (which exits after a minute); neither serves requests.
        nginx_pids = nginx_workers(nginx.pid)
        ours = start_ours(tmp, origin_port)
        procs.append(ours)
        caches = {"nginx proxy_cache (1 worker)": (port, nginx_pids),
                  "scalelab edge (uvloop)": (ours.address()[1], [ours.pid])}  # fmt: skip
        if shutil.which("varnishd"):
            varnish, vport = start_varnish(tmp, origin_port)
            procs.append(varnish)
            # The manager and its child (the one that serves): both burn CPU for us.
            caches["varnish (malloc,256m)"] = (vport, benchlib.process_tree(varnish.pid))
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
        benchlib.stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)
    keys = ("rps", "p50_ms", "p99_ms", "cpu_us_per_request", "errors")
    results = {name: benchlib.medians(rs, keys) for name, rs in runs.items()}
    print(f"medians of {args.rounds} rounds, wrk -t1 -c{args.connections} -d{args.duration}s; "
          f"{benchlib.machine_note()}")  # fmt: skip
    print(benchlib.table(
        ["target", "req/s", "p50 ms", "p99 ms", "CPU us/req", "errors"],
        [[name, r["rps"], r["p50_ms"], r["p99_ms"], r["cpu_us_per_request"], r["errors"]]
         for name, r in results.items()],
        ["", ".0f", ".2f", ".2f", ".1f", ".0f"],
    ))  # fmt: skip
    print("req/s of every round:", {n: [round(r.rps) for r in rs] for n, rs in runs.items()})
    ours = results["hit  scalelab edge (uvloop)"]
    ng = results["hit  nginx proxy_cache (1 worker)"]
    print(f"\nhit req/s ratio ours/nginx: {ours['rps'] / ng['rps']:.2f} (goal >= 0.60)")
    cpu_ratio = ours["cpu_us_per_request"] / ng["cpu_us_per_request"]
    print(f"hit CPU per request ours/nginx: {cpu_ratio:.2f}")
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
    print(f"wrk: {runs['hit  scalelab edge (uvloop)'][0].command}")
    print(f"wrk (fills): {runs['fill scalelab edge (uvloop)'][0].command}")


if __name__ == "__main__":
    main()
