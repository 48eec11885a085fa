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
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from topologies import process  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = benchlib.REPO


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@dataclass
class Server:
    name: str
    port: int
    proc: process.ComponentProcess


def start_server(name: str, argv: list[str], workdir: Path, src: Path | None = None) -> Server:
    """One server on CPU 0 at a free port; ``src``: ours from another source tree."""
    port = benchlib.free_port()
    argv = [a.replace("{port}", str(port)) for a in argv]
    env = {"PYTHONPATH": str(src or benchlib.SRC)}
    proc = benchlib.start_reference(argv, name=name, log_path=workdir / f"{name}.log",
                                    port=port, env=env)  # fmt: skip
    return Server(name, port, proc)


def start_servers(workdir: Path, memory_mb: int, baseline: Path | None = None) -> list[Server]:
    memcached = shutil.which("memcached")
    if memcached is None:
        sys.exit("memcached is not installed (apt-get install memcached)")
    user = ["-u", "root"] if os.geteuid() == 0 else []
    ours = [sys.executable, "-m", "components.cache", "--port", "{port}", "--admin-port", "0",
            "-m", str(memory_mb)]  # fmt: skip
    theirs = [memcached, *user, "-t", "1", "-p", "{port}", "-U", "0", "-l", "127.0.0.1",
              "-m", str(memory_mb)]  # fmt: skip
    servers: list[Server] = []
    try:
        servers.append(start_server("scalelab", ours, workdir))
        servers.append(start_server("memcached", theirs, workdir))
        if baseline is not None:
            servers.append(start_server("baseline", ours, workdir, baseline))
    except BaseException:
        stop(servers)
        raise
    return servers


def stop(servers: list[Server]) -> None:
    benchlib.stop_all(server.proc for server in servers)


def mcload(binary: Path, port: int, conns: int, depth: int, seconds: float,
           keyspace: int) -> float:  # fmt: skip
    argv = benchlib.pinned([str(binary), "127.0.0.1", str(port), str(conns), str(depth),
                            str(seconds), str(keyspace), "0.1", "100"], benchlib.LOAD_CPUS)  # fmt: skip
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
    argv = benchlib.pinned(["memcaslap", "-s", f"127.0.0.1:{port}", "-F", str(config),
                            "-t", f"{int(seconds)}s", "-c", "64", "-T", "1"], benchlib.LOAD_CPUS)  # fmt: skip
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
        workdir = Path(tmp)
        binary = build_mcload(workdir)
        scenarios = [("pipelined (8 conns x depth 32)", 8, 32),
                     ("not pipelined (64 conns x depth 1)", 64, 1)]  # fmt: skip
        if args.only:
            scenarios = [scenarios[0 if args.only == "pipelined" else 1]]
        servers = start_servers(workdir, memory_mb=1024, baseline=args.baseline_src)
        names = [server.name for server in servers]
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        try:
            for _ in range(args.rounds):
                for label, conns, depth in scenarios:
                    for server in servers:
                        before = benchlib.cpu_seconds([server.proc.pid])
                        rate = mcload(binary, server.port, conns, depth, args.seconds,
                                      args.keyspace)  # fmt: skip
                        cpu = benchlib.cpu_seconds([server.proc.pid]) - before
                        # CPU includes the preload of the keyspace; count those ops too.
                        ops = rate * args.seconds + args.keyspace
                        results.setdefault((label, server.name), []).append(
                            {"rate": rate, "cpu": benchlib.us_per_op(cpu, ops)}
                        )
            caslap = {}
            if args.memcaslap and shutil.which("memcaslap"):
                for server in servers:
                    caslap[server.name] = memcaslap(workdir, server.port, args.seconds)
        finally:
            stop(servers)

        print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  {benchlib.machine_note()}  "
              f"command: {' '.join(sys.argv)}")  # fmt: skip
        rows, notes = [], []
        for label, _, _ in scenarios:
            medians = {name: benchlib.medians(results[(label, name)], ("rate", "cpu"))
                       for name in names}  # fmt: skip
            rows += [[label, name, m["rate"], m["cpu"]] for name, m in medians.items()]
            ours, theirs = medians["scalelab"], medians["memcached"]
            rows.append(["", "ratio", f"{ours['rate'] / theirs['rate']:.0%}",
                         f"{ours['cpu'] / theirs['cpu']:.1f}x"])  # fmt: skip
            if "baseline" in medians:
                # Paired by round (the two ran seconds apart), so a load swing on the
                # shared machine moves both: steadier than the ratio of the medians.
                now, base = results[(label, "scalelab")], results[(label, "baseline")]
                gain = benchlib.paired_ratio([r["rate"] for r in now], [r["rate"] for r in base])
                cpu_gain = benchlib.paired_ratio([r["cpu"] for r in now], [r["cpu"] for r in base])
                per_round = " ".join(
                    f"{a['cpu'] / b['cpu']:.2f}" for a, b in zip(now, base, strict=True)
                )
                rows.append(["", "vs base", f"{gain:.0%}", f"{cpu_gain:.2f}x"])
                notes.append(f"{label}: vs base paired by round; cpu ratios {per_round}")
        print(benchlib.table(["scenario", "server", "ops/s (median)", "cpu us/op"], rows,
                             ["", "", ",.0f", ".2f"], left=2))  # fmt: skip
        print("\n".join(notes))
        if caslap:
            print(f"memcaslap -c 64 -T 1 TPS: scalelab {caslap['scalelab']:,.0f}, memcached "
                  f"{caslap['memcached']:,.0f} (ratio {caslap['scalelab'] / caslap['memcached']:.0%})")  # fmt: skip

        if args.no_rss:
            return
        # Memory: fresh servers, store N items of 100 bytes, compare resident sets.
        servers = start_servers(workdir, memory_mb=4096)
        try:
            rss = {}
            for server in servers:
                mcload(binary, server.port, 8, 32, 0.1, args.items)
                rss[server.name] = rss_kib(server.proc.pid)
            print(f"RSS after {args.items:,} items of 100 B: scalelab {rss['scalelab'] / 1024:.0f} "
                  f"MiB, memcached {rss['memcached'] / 1024:.0f} MiB, "
                  f"ratio {rss['scalelab'] / rss['memcached']:.2f}x")  # fmt: skip
        finally:
            stop(servers)


if __name__ == "__main__":
    main()
