"""Our cache server and ``memcached -t 1`` side by side, in one run, on this machine.

What it measures (issue 4's benchmark), with both servers pinned to CPU 0 and the load
tool to CPU 1 (``taskset``), 90% get / 10% set, 16-byte keys, 100-byte values over a
keyspace that is stored first (so gets hit):

- pipelined: 8 connections, 32 requests in flight on each (goal: >= 50% of memcached);
- not pipelined: 64 connections, one request in flight on each (goal: >= 60%);
- CPU microseconds per operation of each server (user + system time from /proc);
- RSS after storing 1,000,000 items of 100 bytes, against memcached's (goal: <= 2x).

The load tool is ``mcload.c`` next to this file (compiled on the fly with ``cc -O2``):
one epoll loop written in C, so it does not limit either server the way a Python load
generator or single-threaded memcaslap would. Rounds alternate between the servers and
the medians are reported, because the machine is shared and noisy: quote ratios, not
absolute figures, and always with the command line that produced them.

Usage::

    .venv/bin/python bench/cache/side_by_side.py [--seconds 5] [--rounds 3] [--items 1000000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Server:
    def __init__(self, name: str, argv: list[str], src: Path | None = None) -> None:
        self.name = name
        self.port = free_port()
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        env = None
        if src is not None:  # our server from another source tree (an older commit)
            env = {**os.environ, "PYTHONPATH": str(src)}
        self.popen = subprocess.Popen(["taskset", "-c", "0", *argv], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, cwd=ROOT, env=env)  # fmt: skip
        wait_listening(self.port)

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def start_servers(memory_mb: int, baseline: Path | None = None) -> list[Server]:
    memcached = shutil.which("memcached")
    if memcached is None:
        sys.exit("memcached is not installed (apt-get install memcached)")
    user = ["-u", "root"] if os.geteuid() == 0 else []
    ours = [str(ROOT / ".venv/bin/python"), "-m", "components.cache", "--port", "{port}",
            "--admin-port", "0", "-m", str(memory_mb)]  # fmt: skip
    theirs = [memcached, *user, "-t", "1", "-p", "{port}", "-U", "0", "-l", "127.0.0.1",
              "-m", str(memory_mb)]  # fmt: skip
    env_path = str(ROOT / "src")
    os.environ["PYTHONPATH"] = env_path + os.pathsep + os.environ.get("PYTHONPATH", "")
    servers = [Server("scalelab", ours), Server("memcached", theirs)]
    if baseline is not None:
        servers.append(Server("baseline", ours, baseline))
    return servers


def mcload(binary: Path, port: int, conns: int, depth: int, seconds: float,
           keyspace: int) -> float:  # fmt: skip
    argv = ["taskset", "-c", "1", str(binary), "127.0.0.1", str(port), str(conns), str(depth),
            str(seconds), str(keyspace), "0.1", "100"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"mcload failed: {out.stderr.strip()}")
    fields = dict(part.split("=") for part in out.stdout.split())
    if int(fields["errors"]):
        raise RuntimeError(f"mcload saw error replies: {out.stdout}")
    return int(fields["ops"]) / float(fields["seconds"])


MEMCASLAP_CONFIG = """key
16 16 1
value
100 100 1
cmd
0 0.1
1 0.9
"""


def memcaslap(workdir: Path, port: int, seconds: float) -> float:
    """Cross-check with libmemcached's memcaslap (64 connections, one thread): its TPS.

    One memcaslap thread saturates before memcached does, so this number says more about
    memcaslap than about either server; it is printed as an independent sanity check."""
    config = workdir / "memcaslap.cfg"
    config.write_text(MEMCASLAP_CONFIG)
    argv = ["taskset", "-c", "1", "memcaslap", "-s", f"127.0.0.1:{port}", "-F", str(config),
            "-t", f"{int(seconds)}s", "-c", "64", "-T", "1"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("Run time:") and "TPS:" in line:
            return float(line.split("TPS:")[1].split()[0])
    raise RuntimeError(f"memcaslap gave no TPS: {out.stdout[-300:]} {out.stderr[-300:]}")


def build_mcload(workdir: Path) -> Path:
    binary = workdir / "mcload"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(HERE / "mcload.c")], check=True)
    return binary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one timed run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per scenario")
    parser.add_argument("--keyspace", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=1_000_000, help="items for the RSS test")
    parser.add_argument("--only", choices=("pipelined", "unpipelined"),
                        help="run one scenario only")  # fmt: skip
    parser.add_argument("--no-rss", action="store_true", help="skip the 1M-item RSS test")
    parser.add_argument("--baseline-src", type=Path,
                        help="also run our server from this src/ tree (e.g. `git archive "
                             "<commit> src | tar -x -C DIR`, then DIR/src), alternating")  # fmt: skip
    parser.add_argument("--memcaslap", action="store_true",
                        help="also run memcaslap (-c 64 -T 1) against both, as a cross-check")  # fmt: skip
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cache-bench-") as tmp:
        binary = build_mcload(Path(tmp))
        scenarios = [("pipelined (8 conns x depth 32)", 8, 32),
                     ("not pipelined (64 conns x depth 1)", 64, 1)]  # fmt: skip
        if args.only:
            scenarios = [scenarios[0 if args.only == "pipelined" else 1]]
        servers = start_servers(memory_mb=1024, baseline=args.baseline_src)
        names = [server.name for server in servers]
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        try:
            for _ in range(args.rounds):
                for label, conns, depth in scenarios:
                    for server in servers:
                        before = cpu_seconds(server.popen.pid)
                        rate = mcload(binary, server.port, conns, depth, args.seconds,
                                      args.keyspace)  # fmt: skip
                        cpu = cpu_seconds(server.popen.pid) - before
                        # CPU includes the preload of the keyspace; count those ops too.
                        ops = rate * args.seconds + args.keyspace
                        results.setdefault((label, server.name), []).append((rate, cpu / ops * 1e6))
            caslap = {}
            if args.memcaslap and shutil.which("memcaslap"):
                for server in servers:
                    caslap[server.name] = memcaslap(Path(tmp), server.port, args.seconds)
        finally:
            for server in servers:
                server.stop()

        print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  load: {os.getloadavg()[0]:.2f}  "
              f"command: {' '.join(sys.argv)}")  # fmt: skip
        print(f"{'scenario':38} {'server':10} {'ops/s (median)':>15} {'cpu us/op':>10}")
        for label, _, _ in scenarios:
            medians = {}
            for name in names:
                runs = results[(label, name)]
                rate = statistics.median(r for r, _ in runs)
                cpu = statistics.median(c for _, c in runs)
                medians[name] = (rate, cpu)
                print(f"{label:38} {name:10} {rate:15,.0f} {cpu:10.2f}")
            ratio = medians["scalelab"][0] / medians["memcached"][0]
            cpu_ratio = medians["scalelab"][1] / medians["memcached"][1]
            print(f"{'':38} {'ratio':10} {ratio:15.0%} {cpu_ratio:9.1f}x")
            if "baseline" in medians:
                # Paired by round (the two ran seconds apart), so a load swing on the
                # shared machine moves both: steadier than the ratio of the medians.
                pairs = zip(results[(label, "scalelab")], results[(label, "baseline")], strict=True)
                ratios = [(a[0] / b[0], a[1] / b[1]) for a, b in pairs]
                gain = statistics.median(r for r, _ in ratios)
                cpu_gain = statistics.median(c for _, c in ratios)
                per_round = " ".join(f"{c:.2f}" for _, c in ratios)
                print(f"{'':38} {'vs base':10} {gain:15.0%} {cpu_gain:9.2f}x  "
                      f"(paired by round; cpu ratios: {per_round})")  # fmt: skip
        if caslap:
            print(f"memcaslap -c 64 -T 1 TPS: scalelab {caslap['scalelab']:,.0f}, memcached "
                  f"{caslap['memcached']:,.0f} (ratio {caslap['scalelab'] / caslap['memcached']:.0%})")  # fmt: skip

        if args.no_rss:
            return
        # Memory: fresh servers, store N items of 100 bytes, compare resident sets.
        servers = start_servers(memory_mb=4096)
        try:
            rss = {}
            for server in servers:
                mcload(binary, server.port, 8, 32, 0.1, args.items)
                rss[server.name] = rss_kib(server.popen.pid)
            print(f"RSS after {args.items:,} items of 100 B: scalelab {rss['scalelab'] / 1024:.0f} "
                  f"MiB, memcached {rss['memcached'] / 1024:.0f} MiB, "
                  f"ratio {rss['scalelab'] / rss['memcached']:.2f}x")  # fmt: skip
        finally:
            for server in servers:
                server.stop()


if __name__ == "__main__":
    main()
