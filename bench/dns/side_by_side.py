"""Our DNS server and dnsmasq side by side under dnsperf, in one run.

Both servers answer the same names from the same data (ours from the test zone, dnsmasq
from ``--host-record``/``--mx-host``/``--txt-record`` with ``--no-resolv``, so it
answers locally and never forwards). Each server is pinned to CPU 0 and dnsperf to
CPU 1; each gets the same query mix for the same time. dnsperf saturates a fast C
server before the server saturates its CPU, so queries/s alone flatters nobody: we
also read the server's CPU time from /proc before and after and report CPU µs per
query, and the ratio ours/dnsmasq.

    .venv/bin/python bench/dns/side_by_side.py --seconds 10

The issue names NSD as the reference; it is not installed here, dnsmasq is. Only
loopback addresses are used.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src")]

from topologies import process  # noqa: E402

DATA = ROOT / "tests" / "components" / "dns" / "data"
QUERIES = ["www.example.com A", "www.example.com AAAA", "mail.example.com A", "ns1.example.com A",
           "example.com MX", "sip.example.com A"]  # fmt: skip
DNSMASQ_RECORDS = [
    "--host-record=www.example.com,192.0.2.1,2001:db8::1",
    "--host-record=mail.example.com,192.0.2.25",
    "--host-record=ns1.example.com,192.0.2.53",
    "--host-record=sip.example.com,192.0.2.9",
    "--mx-host=example.com,mail.example.com,10",
]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def free_port() -> int:
    """A port free for both UDP and TCP (dnsmasq binds both)."""
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
        f"{name:28s} {result['qps']:>10.0f} q/s  {result['cpu_us_per_query']:>7.1f} µs CPU/query"
        f"  lost {result['lost']:.0f}  avg latency {result['latency_s'] * 1e3:.2f} ms",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    args = parser.parse_args()
    for tool in ("dnsperf", "dnsmasq", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    work = Path(tempfile.mkdtemp(prefix="dns-bench-"))
    query_file = work / "queries.txt"
    query_file.write_text("\n".join(QUERIES) + "\n")
    geo_file = work / "geo.txt"
    geo_file.write_text("www.geo.example.com A\n")

    ours = process.start("dns", "--zone", str(DATA / "example.com.zone"), "--geo",
                         str(DATA / "geo.toml"), "--loop", args.loop,
                         "--log-level", "warning", log_path=work / "dns.log")  # fmt: skip
    subprocess.run(["taskset", "-a", "-pc", "0", str(ours.pid)], check=True,
                   capture_output=True)  # fmt: skip
    port = free_port()
    dnsmasq = subprocess.Popen(
        ["taskset", "-c", "0", "dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv",
         "--no-hosts", "--no-negcache", f"--port={port}", "--listen-address=127.0.0.1",
         "--bind-interfaces", "--pid-file=", "--cache-size=0", "--user=root",
         *DNSMASQ_RECORDS],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(0.5)  # dnsmasq prints no ready line; it binds at once
        if dnsmasq.poll() is not None:
            sys.exit(f"dnsmasq failed: {dnsmasq.stderr.read().decode()}")
        print(
            f"dnsperf -c 8 -q 200 -l {args.seconds:g}, servers on CPU 0, dnsperf on CPU 1;"
            f" loop={args.loop}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
        )
        host, our_port = ours.address()
        mine = measure("scalelab dns (static mix)", ours.pid, our_port, query_file, args.seconds)
        theirs = measure("dnsmasq (static mix)", dnsmasq.pid, port, query_file, args.seconds)
        ecs = ["-E", "8:00011800" + "0a0107"]  # ECS 10.1.7.0/24: region eu
        measure("scalelab dns (geo + ECS)", ours.pid, our_port, geo_file, args.seconds, ecs)
        if theirs["cpu_us_per_query"]:
            ratio = mine["cpu_us_per_query"] / theirs["cpu_us_per_query"]
            print(
                f"CPU per query, ours / dnsmasq: {ratio:.2f}x "
                f"(throughput ratio {mine['qps'] / max(theirs['qps'], 1):.2f}x)"
            )
    finally:
        ours.stop()
        dnsmasq.terminate()
        dnsmasq.wait(10)


if __name__ == "__main__":
    main()
