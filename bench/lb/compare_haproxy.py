"""Our load balancer beside HAProxy and nginx, proxying the same two backends, under wrk.

What it measures (issue 5's goal: >= 50% of HAProxy's req/s, added p99 <= 2x HAProxy's):
requests per second, p50/p99 latency, the latency each proxy *adds* over hitting a
backend directly, and the proxy's CPU time per request (user+system from
``/proc/<pid>/stat`` around the run, divided by the requests served).

How: two fast backends are one nginx (one worker) serving a small body on two ports.
The proxies are pinned to CPU 0 and loaded one at a time: HAProxy with
``nbthread 1`` and server-side keep-alive (``http-reuse always``), twice: once doing our
balancer's job (the forwarding headers it adds, ``Via`` both ways, a health check every
2 s), which is the goal's reference, and once bare (forwarding only), reported beside it;
nginx with one worker and ``upstream keepalive``; ours (uvloop) with its defaults. wrk runs on CPU 1
(``taskset -c 1 wrk -t1 -c64 -d10s --latency``), as do the backends, so CPU 0 holds the
proxy under load and nothing else of ours. A direct run against one backend gives the
baseline for "added" latency. Rounds alternate between the targets and medians are
reported, plus the median of per-round ratios for req/s, added p99 and CPU (each round
shares the machine's load of the moment), so drift hits all of them alike; on a shared, noisy machine the figures
still move by tens of percent between invocations (CPU per request moves least). The
pinning, wrk parsing, CPU accounting and table are ``bench/benchlib.py``'s.

wrk repeats one request, and our balancer recalls a head it has just parsed (the codec's
``repeat_heads``): the best case for it. ``--vary-requests`` gives every request its own
target (a wrk Lua script appending a counter), so no request head repeats and the cost of
parsing and rewriting every one is measured; the backends' answers still repeat.

Where the difference lies (``perf record -e cpu-clock -g -p PID`` on each proxy under this
load, ``strace -c`` for the calls; figures per request, a shared VM, session 3): both
make two reads and two writes and well under one ``epoll_wait``, and send the same TCP
segments. Kernel time was ~15.5 µs for us against HAProxy's ~12.6, mostly wake-ups: a
write to a peer asleep in ``epoll_wait`` wakes it across CPUs (``sock_def_readable``,
~2.3 µs against ~1.2), and we wrote each answer the moment it was ready where HAProxy's
tasklets send after its poller's round; since ``proxy.Outbox`` does the same, kernel
time is level (~11.8 µs each). What is left is user space, and the syscalls' kind:
session 4 measured (in one run, load 2) HAProxy at 5.8 µs user + 14.5 system per request
(6.8-7.6 user when it adds our headers), ours at 9.9-10.6 user + 15.1-15.9 system;
HAProxy calls ``recvfrom``/``sendto`` where libuv calls ``read``/``write``, whose VFS
layer (``fdget_pos``, ``vfs_read``/``vfs_write``) is about 1 µs of the system difference.
The user time is CPython running ~40 Python calls per exchange (no hotspot left:
``profile_live.py --profile``) plus uvloop's callbacks. Session 4's figures are in that
session's closing note.

``--base REV`` adds our balancer as of git revision ``REV`` to every round (its
``src`` extracted beside the work tree): a change's before/after under the same load,
with the goal's own figures; ``--skip-nginx`` leaves nginx out to keep such runs short.

Run::

    .venv/bin/python bench/lb/compare_haproxy.py [--duration 10] [--connections 64] [--rounds 3]
                                                 [--vary-requests] [--base REV] [--skip-nginx]

Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from topologies import process  # noqa: E402

BODY = "hello from backend\\n"
#: wrk script for --vary-requests: every request a target of its own.
VARY_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/?n=" .. counter)
end
"""
LOOPBACK = benchlib.LOOPBACK
DIRECT, HAPROXY, HAPROXY_BARE, NGINX, OURS = (
    "direct (one backend)",
    "haproxy (nbthread 1)",
    "haproxy, bare forwarding",
    "nginx (1 worker, keepalive)",
    "scalelab lb (uvloop)",
)


def haproxy_config(port: int, backends: list[int], same_work: bool = True) -> str:
    """HAProxy's config; ``same_work``: the headers and health checks ours does too.

    Ours appends the client to ``X-Forwarded-For`` and ``Forwarded``, sets
    ``X-Forwarded-Proto``, adds ``Via`` both ways, and GETs ``/health`` every 2 s (rise 2,
    fall 3): with ``same_work`` HAProxy does the same, so the comparison is of two proxies
    doing one job. Without it HAProxy only forwards (the bare figure, also reported).
    """
    check = " check inter 2s rise 2 fall 3" if same_work else ""
    servers = "\n".join(f"    server b{i} {LOOPBACK}:{p}{check}" for i, p in enumerate(backends))
    work = (
        """
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request add-header Forwarded "for=%[src];proto=http"
    http-request add-header Via "%[req.ver] haproxy"
    http-response add-header Via "%[res.ver] haproxy"
    option httpchk GET /health"""
        if same_work
        else ""
    )
    return f"""
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
    bind {LOOPBACK}:{port}
    default_backend be
backend be
    balance roundrobin{work}
{servers}
"""


def start_targets(
    workdir: Path, servers: list, base: tuple[str, Path] | None = None, nginx: bool = True
) -> dict[str, tuple[str, list[int]]]:
    """Backends, then the proxies: name -> (url, pids whose CPU to count).

    ``base``: (revision, its extracted ``src``) for our balancer as of that revision.
    """
    backends = [benchlib.free_port(), benchlib.free_port()]
    blocks = "\n".join(
        f'server {{ listen {LOOPBACK}:{p}; location / {{ return 200 "{BODY}"; }} }}'
        for p in backends
    )
    servers.append(benchlib.start_nginx(workdir, "backends", blocks, port=backends[0],
                                        cpus=benchlib.LOAD_CPUS))  # fmt: skip
    benchlib.wait_port(backends[1])
    targets = {DIRECT: (f"http://{LOOPBACK}:{backends[0]}/", [])}

    for name, same_work in ((HAPROXY, True), (HAPROXY_BARE, False)):
        port = benchlib.free_port()
        config = workdir / f"haproxy-{'same' if same_work else 'bare'}.cfg"
        config.write_text(haproxy_config(port, backends, same_work))
        haproxy = benchlib.start_reference(["haproxy", "-f", str(config), "-db"],
                                           name="haproxy", log_path=config.with_suffix(".log"),
                                           port=port)  # fmt: skip
        servers.append(haproxy)
        targets[name] = (f"http://{LOOPBACK}:{port}/", [haproxy.pid])

    if nginx:
        port = benchlib.free_port()
        upstream = " ".join(f"server {LOOPBACK}:{p};" for p in backends)
        block = f"""
        upstream be {{ {upstream} keepalive 64; }}
        server {{ listen {LOOPBACK}:{port};
            location / {{ proxy_pass http://be; proxy_http_version 1.1;
                          proxy_set_header Connection ""; }} }}"""
        proxy = benchlib.start_nginx(workdir, "proxy", block, port=port)
        servers.append(proxy)
        targets[NGINX] = (f"http://{LOOPBACK}:{port}/", benchlib.process_tree(proxy.pid))

    argv = [sys.executable, "-m", "components.lb", "--host", LOOPBACK,
            "--admin-port", "0", "--log-level", "warning"]  # fmt: skip
    for backend in backends:
        argv += ["--backend", f"{LOOPBACK}:{backend}"]
    ours = process.launch(benchlib.pinned([*argv, "--port", "0"]), log_path=workdir / "lb.log",
                          cwd=benchlib.REPO)  # fmt: skip
    servers.append(ours)
    targets[OURS] = (f"{ours.url()}/", [ours.pid])
    if base is not None:
        # Started like a reference server, with that revision's src on PYTHONPATH
        # (``process.launch`` would put this checkout's first).
        rev, src = base
        port = benchlib.free_port()
        before = benchlib.start_reference([*argv, "--port", str(port)], name="lb-base",
                                          log_path=workdir / "lb-base.log", port=port,
                                          env={"PYTHONPATH": str(src)})  # fmt: skip
        servers.append(before)
        targets[f"scalelab lb @{rev}"] = (f"http://{LOOPBACK}:{port}/", [before.pid])
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="runs per target; medians reported")
    parser.add_argument("--vary-requests", action="store_true",
                        help="a different target on every request (no request head repeats)")  # fmt: skip
    parser.add_argument("--base", metavar="REV",
                        help="also run our balancer as of git revision REV (before/after)")  # fmt: skip
    parser.add_argument("--skip-nginx", action="store_true", help="leave the nginx proxy out")
    args = parser.parse_args()
    benchlib.require("haproxy", "nginx", "wrk", "taskset")
    workdir = Path(tempfile.mkdtemp(prefix="scalelab-bench-lb-"))
    servers: list = []
    runs: dict[str, list[benchlib.WrkResult]] = {}
    try:
        # All proxies run at once, idle but for the one under load, so rounds can
        # alternate between them and drift in the machine's load hits each alike.
        base = None
        if args.base:
            base = (args.base, benchlib.export_source(args.base, workdir / "base"))
        targets = start_targets(workdir, servers, base, nginx=not args.skip_nginx)
        script = None
        if args.vary_requests:
            script = workdir / "vary.lua"
            script.write_text(VARY_SCRIPT)
        for round_number in range(1, args.rounds + 1):
            for name, (url, pids) in targets.items():
                result = benchlib.run_wrk(url, pids=pids, connections=args.connections,
                                          duration_s=args.duration, script=script)  # fmt: skip
                runs.setdefault(name, []).append(result)
                print(f"round {round_number}  {name:28} {result.rps:9.0f} req/s  "
                      f"{result.cpu_us_per_request:6.1f} µs CPU/req", flush=True)  # fmt: skip
    finally:
        benchlib.stop_all(servers)
        shutil.rmtree(workdir, ignore_errors=True)

    keys = ("rps", "p50_ms", "p99_ms", "cpu_us_per_request", "errors")
    results = {name: benchlib.medians(rs, keys) for name, rs in runs.items()}
    base = results[DIRECT]["p99_ms"]
    print(f"\nmedians of {args.rounds} rounds; {benchlib.machine_note()}")
    print(benchlib.table(
        ["target", "req/s", "p50 ms", "p99 ms", "+p99 ms", "CPU µs/req", "errors"],
        [[name, r["rps"], r["p50_ms"], r["p99_ms"], r["p99_ms"] - base,
          r["cpu_us_per_request"], r["errors"]] for name, r in results.items()],
        ["", ".0f", ".2f", ".2f", ".2f", ".1f", ".0f"],
    ))  # fmt: skip
    print("req/s each round:", {n: [round(r.rps) for r in rs] for n, rs in runs.items()})
    # Per round too: each round's direct run is the baseline of that round's proxies.
    added = {name: [r.p99_ms - d.p99_ms for r, d in zip(rs, runs[DIRECT], strict=True)]
             for name, rs in runs.items()}  # fmt: skip
    for name in [n for n in runs if n.startswith(OURS.split(" (")[0])]:  # ours, ours@REV
        print(f"\n{name}")
        # The goal is against HAProxy doing our job; the bare figure is for reference.
        for reference, goals in ((HAPROXY, True), (HAPROXY_BARE, False)):
            print_ratios(name, reference, results, runs, added, base, goals)
    print(f"wrk: {runs[OURS][0].command}")


def print_ratios(name, reference, results, runs, added, base, goals: bool) -> None:
    """Ours against one HAProxy: req/s, added p99 and CPU, of the medians and per round."""
    ours, ha = results[name], results[reference]
    label = "haproxy" if reference == HAPROXY else "bare haproxy"
    paired = benchlib.paired_ratio([r.rps for r in runs[name]], [r.rps for r in runs[reference]])
    cpu = benchlib.paired_ratio([r.cpu_us_per_request for r in runs[name]],
                                [r.cpu_us_per_request for r in runs[reference]])  # fmt: skip
    print(f"req/s ratio ours/{label}: {ours['rps'] / ha['rps']:.2f} of the medians, "
          f"{paired:.2f} median of per-round ratios{' (goal >= 0.50)' if goals else ''}")  # fmt: skip
    added_ha = ha["p99_ms"] - base
    if added_ha > 0:
        print(f"added p99 ratio ours/{label}: {(ours['p99_ms'] - base) / added_ha:.2f} of "
              "the medians", end="")  # fmt: skip
        if all(a > 0 for a in added[reference]):
            print(f", {benchlib.paired_ratio(added[name], added[reference]):.2f} median of "
                  "per-round ratios", end="")  # fmt: skip
        print(" (goal <= 2.0)" if goals else "")
    print(f"CPU per request ours/{label}: {cpu:.2f} (median of per-round ratios)")


if __name__ == "__main__":
    main()
