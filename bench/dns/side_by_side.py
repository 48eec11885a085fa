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
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src")]

from topologies import process  # noqa: E402

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
NSD_CONF = """\
server:
    server-count: 1
    ip-address: 127.0.0.1
    port: {port}
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{work}"
    database: ""
    zonelistfile: "{work}/zone.list"
    pidfile: "{work}/nsd.pid"
    xfrdfile: "{work}/xfrd.state"
    xfrdir: "{work}"
    logfile: "{work}/nsd.log"
    rrl-ratelimit: 0
    verbosity: 0
remote-control:
    control-enable: no
zone:
    name: example.com
    zonefile: "{zone}"
"""
READY_TIMEOUT_S = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (NSD forks its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process tree (all threads), from /proc."""
    total = 0
    for member in tree(pid):
        fields = _stat(member)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def free_port() -> int:
    """A port free for both UDP and TCP (NSD and dnsmasq bind both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


def wait_answering(port: int, popen: subprocess.Popen, name: str) -> None:
    """Neither C server prints a ready line: ask it until it answers (with a deadline)."""
    query = dns.message.make_query("www.example.com", "A")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            sys.exit(f"{name} exited with {popen.returncode}")
        try:
            reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
        except (TimeoutError, dns.exception.Timeout, OSError):
            continue
        if reply.answer:
            return
    sys.exit(f"{name} did not answer on 127.0.0.1:{port} within {READY_TIMEOUT_S:g} s")


def start_nsd(work: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = work / "nsd.conf"
    conf.write_text(NSD_CONF.format(port=port, work=work, zone=ZONE))
    # -d: stay in the foreground, so the PID we hold is NSD's own (its tree is measured).
    popen = subprocess.Popen(["taskset", "-c", "0", "nsd", "-d", "-c", str(conf)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_answering(port, popen, "nsd")
    except BaseException:
        stop(popen)  # never leave it behind
        raise
    return popen, port


def start_dnsmasq() -> tuple[subprocess.Popen, int]:
    port = free_port()
    popen = subprocess.Popen(
        ["taskset", "-c", "0", "dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv",
         "--no-hosts", "--no-negcache", f"--port={port}", "--listen-address=127.0.0.1",
         "--bind-interfaces", "--pid-file=", "--cache-size=0", "--user=root",
         *DNSMASQ_RECORDS],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_answering(port, popen, "dnsmasq")
    except BaseException:
        stop(popen)  # never leave it behind
        raise
    return popen, port


def stop(popen: subprocess.Popen) -> None:
    """SIGTERM by PID, then wait; SIGKILL only if it will not go."""
    if popen.poll() is None:
        os.kill(popen.pid, signal.SIGTERM)
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(popen.pid, signal.SIGKILL)
            popen.wait(5)


def dnsperf(port: int, query_file: Path, seconds: float, extra: list[str]) -> dict:
    argv = ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d",
            str(query_file), "-l", str(seconds), "-c", "8", "-q", "200", *extra]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout

    def number(label: str) -> float:
        match = re.search(rf"{label}:\s+([\d.]+)", out)
        return float(match.group(1)) if match else 0.0

    return {"completed": number("Queries completed"), "lost": number("Queries lost"),
            "qps": number("Queries per second"), "latency_s": number("Average Latency \\(s\\)"),
            "raw": out}  # fmt: skip


def measure(name: str, pid: int, port: int, query_file: Path, seconds: float,
            extra: list[str] | None = None) -> dict:  # fmt: skip
    before = cpu_seconds(pid)
    result = dnsperf(port, query_file, seconds, extra or [])
    used = cpu_seconds(pid) - before
    result["cpu_s"] = used
    result["cpu_us_per_query"] = used / result["completed"] * 1e6 if result["completed"] else 0
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
    tools = ["dnsperf", "nsd", "taskset"] + ([] if args.no_dnsmasq else ["dnsmasq"])
    for tool in tools:
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    work = Path(tempfile.mkdtemp(prefix="dns-bench-"))
    query_file = work / "queries.txt"
    query_file.write_text("\n".join(QUERIES) + "\n")
    geo_file = work / "geo.txt"
    geo_file.write_text("www.geo.example.com A\n")
    ecs = ["-E", "8:00011800" + "0a0107"]  # ECS 10.1.7.0/24: region eu

    servers: dict[str, tuple[int, int]] = {}  # name -> (pid, port)
    started: list[subprocess.Popen] = []
    ours = process.start("dns", "--zone", str(ZONE), "--geo", str(DATA / "geo.toml"),
                         "--loop", args.loop, "--log-level", "warning",
                         log_path=work / "dns.log")  # fmt: skip
    try:
        subprocess.run(["taskset", "-a", "-pc", "0", str(ours.pid)], check=True,
                       capture_output=True)  # fmt: skip
        servers["scalelab"] = (ours.pid, ours.address()[1])
        nsd, nsd_port = start_nsd(work)
        started.append(nsd)
        servers["nsd"] = (nsd.pid, nsd_port)
        if not args.no_dnsmasq:
            dnsmasq, dnsmasq_port = start_dnsmasq()
            started.append(dnsmasq)
            servers["dnsmasq"] = (dnsmasq.pid, dnsmasq_port)
        print(
            f"dnsperf -c 8 -q 200 -l {args.seconds:g} x {args.rounds} round(s); servers on"
            f" CPU 0, dnsperf on CPU 1; loop={args.loop}; {os.cpu_count()} CPUs,"
            f" load {os.getloadavg()[0]:.1f}",
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
            if theirs["cpu_us_per_query"]:
                print(f"  CPU/query ours/NSD: {ratio(mine, theirs):.2f}x", flush=True)
        print(f"median of {args.rounds} round(s):")
        medians = {}
        for name, runs in results.items():
            qps = statistics.median(r["qps"] for r in runs)
            cpu = statistics.median(r["cpu_us_per_query"] for r in runs)
            medians[name] = cpu
            print(f"  {name:26s} {qps:>9.0f} q/s  {cpu:>6.1f} µs CPU/query")
        for other in ("nsd", "dnsmasq"):
            if medians.get(other):
                print(f"  CPU per query, ours / {other}: {medians['scalelab'] / medians[other]:.2f}x"
                      f" (geo+ECS / {other}: {medians['scalelab geo+ECS'] / medians[other]:.2f}x)")  # fmt: skip
    finally:
        for popen in reversed(started):
            stop(popen)
        ours.stop()
        shutil.rmtree(work, ignore_errors=True)


def ratio(mine: dict, theirs: dict) -> float:
    return mine["cpu_us_per_query"] / theirs["cpu_us_per_query"]


if __name__ == "__main__":
    main()
