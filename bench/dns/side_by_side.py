"""Our DNS server, NSD and dnsmasq side by side under dnsperf, in one run.

The issue's reference is NSD (NLnet Labs' authoritative-only server, written in C): it
loads the very same zone file as ours, with ``server-count: 1`` (one answering process,
like ours) and ``rrl-ratelimit: 0`` (Debian's build limits responses per client subnet,
which would cap a benchmark that sends everything from 127.0.0.1). It runs from a
throw-away config, zonesdir and pidfile with ``username: ""`` so it needs nothing in /etc
and drops no privileges; it is stopped by its PID. dnsmasq is an extra column: it answers
the same names from ``--host-record``/``--mx-host`` with ``--no-resolv``, so it never
forwards.

Every server is pinned to CPU 0 and dnsperf to CPU 1; each gets the same query mix for
the same time, round after round. dnsperf saturates near 200k q/s here, well before a C
server saturates its CPU, so queries/s alone flatters nobody: we read the server's CPU
time (utime+stime from /proc/<pid>/stat, summed over its process tree: NSD runs as
xfrd + main + one server child) before and after, and report CPU µs per query and the
ratio ours/NSD. The issue's goal: <= 2x.

    .venv/bin/python bench/dns/side_by_side.py --seconds 10 --rounds 3

Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import dns.exception
import dns.message
import dns.query

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from topologies import process  # noqa: E402

ROOT = benchlib.REPO
DATA = ROOT / "tests" / "components" / "dns" / "data"
ZONE = DATA / "example.com.zone"
QUERIES = ["www.example.com A", "www.example.com AAAA", "mail.example.com A", "ns1.example.com A",
           "example.com MX", "sip.example.com A"]  # fmt: skip
DNSMASQ_RECORDS = [
    "--host-record=www.example.com,192.0.2.1,2001:db8::1",
    "--host-record=mail.example.com,192.0.2.25",
    "--host-record=ns1.example.com,192.0.2.53",
    "--host-record=sip.example.com,192.0.2.9",
    "--mx-host=example.com,mail.example.com,10",
]


def answers(port: int) -> bool:
    """Neither C server prints a ready line: it is ready once it answers a query."""
    query = dns.message.make_query("www.example.com", "A")
    try:
        return bool(dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2).answer)
    except (dns.exception.Timeout, OSError):
        return False


def start_nsd(work: Path) -> tuple[process.ComponentProcess, int]:
    port = benchlib.free_port(udp_too=True)
    return benchlib.start_nsd(work, ZONE, port=port, ready=lambda: answers(port)), port


def start_dnsmasq(work: Path) -> tuple[process.ComponentProcess, int]:
    port = benchlib.free_port(udp_too=True)
    argv = ["dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            "--no-negcache", f"--port={port}", "--listen-address=127.0.0.1",
            "--bind-interfaces", "--pid-file=", "--cache-size=0", "--user=root",
            *DNSMASQ_RECORDS]  # fmt: skip
    server = benchlib.start_reference(argv, name="dnsmasq", log_path=work / "dnsmasq.log",
                                      ready=lambda: answers(port))  # fmt: skip
    return server, port


def dnsperf(port: int, query_file: Path, seconds: float, extra: list[str]) -> dict:
    argv = benchlib.pinned(["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(query_file),
                            "-l", str(seconds), "-c", "8", "-q", "200", *extra],
                           benchlib.LOAD_CPUS)  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout

    def number(label: str) -> float:
        match = re.search(rf"{label}:\s+([\d.]+)", out)
        return float(match.group(1)) if match else 0.0

    return {"completed": number("Queries completed"), "lost": number("Queries lost"),
            "qps": number("Queries per second"), "latency_s": number("Average Latency \\(s\\)"),
            "raw": out}  # fmt: skip


def measure(name: str, pid: int, port: int, query_file: Path, seconds: float,
            extra: list[str] | None = None) -> dict:  # fmt: skip
    # The whole tree: NSD answers from a forked child, next to xfrd and its main process.
    pids = benchlib.process_tree(pid)
    before = benchlib.cpu_seconds(pids)
    result = dnsperf(port, query_file, seconds, extra or [])
    used = benchlib.cpu_seconds(pids) - before
    result["cpu_s"] = used
    result["cpu_us_per_query"] = benchlib.us_per_op(used, result["completed"])
    print(
        f"  {name:26s} {result['qps']:>9.0f} q/s  {result['cpu_us_per_query']:>6.1f} µs CPU/query"
        f"  lost {result['lost']:.0f}  avg latency {result['latency_s'] * 1e3:.2f} ms",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per server per round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    parser.add_argument("--no-dnsmasq", action="store_true", help="skip the extra column")
    args = parser.parse_args()
    benchlib.require("dnsperf", "nsd", "taskset", *([] if args.no_dnsmasq else ["dnsmasq"]))
    work = Path(tempfile.mkdtemp(prefix="dns-bench-"))
    query_file = work / "queries.txt"
    query_file.write_text("\n".join(QUERIES) + "\n")
    geo_file = work / "geo.txt"
    geo_file.write_text("www.geo.example.com A\n")
    ecs = ["-E", "8:00011800" + "0a0107"]  # ECS 10.1.7.0/24: region eu

    servers: dict[str, tuple[int, int]] = {}  # name -> (pid, port)
    started: list[process.ComponentProcess] = []
    try:
        ours = process.start("dns", "--zone", str(ZONE), "--geo", str(DATA / "geo.toml"),
                             "--loop", args.loop, "--log-level", "warning",
                             log_path=work / "dns.log")  # fmt: skip
        started.append(ours)
        benchlib.pin(ours.pid)
        servers["scalelab"] = (ours.pid, ours.address()[1])
        nsd, nsd_port = start_nsd(work)
        started.append(nsd)
        servers["nsd"] = (nsd.pid, nsd_port)
        if not args.no_dnsmasq:
            dnsmasq, dnsmasq_port = start_dnsmasq(work)
            started.append(dnsmasq)
            servers["dnsmasq"] = (dnsmasq.pid, dnsmasq_port)
        print(
            f"dnsperf -c 8 -q 200 -l {args.seconds:g} x {args.rounds} round(s); servers on"
            f" CPU 0, dnsperf on CPU 1; loop={args.loop}; {benchlib.machine_note()}",
            flush=True,
        )
        results: dict[str, list[dict]] = {name: [] for name in [*servers, "scalelab geo+ECS"]}
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}")
            for name, (pid, port) in servers.items():
                label = f"{name} (static mix)"
                results[name].append(measure(label, pid, port, query_file, args.seconds))
            pid, port = servers["scalelab"]
            results["scalelab geo+ECS"].append(
                measure("scalelab (geo + ECS)", pid, port, geo_file, args.seconds, ecs)
            )
            mine, theirs = results["scalelab"][-1], results["nsd"][-1]
            print(f"  CPU/query ours/NSD: "
                  f"{mine['cpu_us_per_query'] / theirs['cpu_us_per_query']:.2f}x", flush=True)  # fmt: skip
    finally:
        benchlib.stop_all(started)
        shutil.rmtree(work, ignore_errors=True)
    keys = ("qps", "cpu_us_per_query", "lost")
    medians = {name: benchlib.medians(runs, keys) for name, runs in results.items()}
    print(f"median of {args.rounds} round(s):")
    print(benchlib.table(["server", "q/s", "µs CPU/query", "lost"],
                         [[name, m["qps"], m["cpu_us_per_query"], m["lost"]]
                          for name, m in medians.items()],
                         ["", ".0f", ".1f", ".0f"]))  # fmt: skip
    cpu = {name: [r["cpu_us_per_query"] for r in runs] for name, runs in results.items()}
    for other in ("nsd", "dnsmasq"):
        if other in cpu:
            print(f"CPU per query, ours / {other} (median of per-round ratios): "
                  f"{benchlib.paired_ratio(cpu['scalelab'], cpu[other]):.2f}x"
                  f" (geo+ECS / {other}: "
                  f"{benchlib.paired_ratio(cpu['scalelab geo+ECS'], cpu[other]):.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
