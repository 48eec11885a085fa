"""What every side-by-side benchmark needs: pinned processes, wrk, CPU time, medians, a table.

A side-by-side run puts our server and the mature C server that does the same job on the
same machine, in one run, under the same load tool, and reports ratios (DESIGN.md,
"Performance rules"). Every script under ``bench/`` does the same few things around its
own workload, and this module holds them once:

- **pinning** (``pinned``, ``pin``): servers on CPU 0 and the load tool on CPU 1 with
  ``taskset``, so the two never fight over one core and a run measures the server;
- **reference servers** (``start_reference``): a C server knows nothing of our ready
  line, so it is started pinned, with its stderr in a log file, and polled until its port
  accepts (or a probe of the caller's says it answers); it comes back as a
  ``topologies.process.ComponentProcess``, so it is stopped the way our components are:
  SIGTERM by PID, SIGKILL if it will not go. Our own servers keep their ready line:
  start them with ``topologies.process.start``/``launch`` and ``pin`` them;
- **wrk** (``run_wrk``, ``parse_wrk``): one command line, and the parsed figures:
  requests/s, the ``--latency`` percentiles in milliseconds, non-2xx/3xx answers and
  socket errors;
- **CPU per operation** (``cpu_seconds``, ``process_tree``, ``us_per_op``): user+system
  time from ``/proc/<pid>/stat`` (fields 14 and 15, ``utime`` and ``stime``, in clock
  ticks; proc(5)) read before and after a run and divided by the operations served. On a
  shared, noisy machine this is the steadiest figure: a busy neighbour slows a server's
  requests/s, not the CPU it spends per request;
- **rounds** (``medians``, ``paired_ratio``): the contenders alternate round after round
  so drift in the machine's load hits each alike; medians are reported, and the median
  of per-round ratios, which is steadier still;
- **before/after** (``export_source``): an earlier revision's ``src`` extracted beside
  the work tree, so an optimisation is measured against its base in the same run rather
  than against a figure taken minutes ago on a machine whose load has since changed;
- **reporting** (``table``, ``machine_note``, ``scrape_metric``): a plain aligned table,
  the machine's load to quote next to the figures, and one figure from a component's
  ``/metrics`` (hits, misses, fsyncs) to check what a run really exercised.

What it deliberately is not: a framework. Each script keeps its own workload, its own
reference server's configuration and its own verdict; this module has no opinion on
those. Only loopback addresses are ever targeted (``LOOPBACK``).
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SRC = REPO / "src"
for _path in (SRC, REPO / "tests"):  # a script run as a file has neither on sys.path
    if str(_path) not in sys.path:
        sys.path.append(str(_path))

from harness import wait_until_sync  # noqa: E402
from topologies import process  # noqa: E402

LOOPBACK = "127.0.0.1"
SERVER_CPUS = "0"
LOAD_CPUS = "1"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_FREE_PORT_ATTEMPTS = 20


class BenchError(SystemExit):
    """A measurement that cannot go on: the script ends with this message, no traceback."""


# -- tools, ports, pinning ----------------------------------------------------------------


def require(*tools: str) -> None:
    """End the script with a clear message unless every tool is on PATH."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise BenchError(f"not installed (not on PATH): {', '.join(missing)}")


def free_port(udp_too: bool = False) -> int:
    """A loopback port nothing listens on now; with ``udp_too`` free for UDP as well.

    The kernel picks it (bind to port 0); the small race until the server binds it is
    acceptable for a benchmark, and is why ``start_reference`` reports a server that
    exits early with its log.
    """
    for _ in range(_FREE_PORT_ATTEMPTS):
        kind = socket.SOCK_DGRAM if udp_too else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as first:
            first.bind((LOOPBACK, 0))
            port = first.getsockname()[1]
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue  # taken for TCP: ask again
                return port
    raise BenchError("no loopback port free for both UDP and TCP")


def accepts(port: int, host: str = LOOPBACK) -> bool:
    """Whether a TCP connection to ``host:port`` is accepted now."""
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def wait_for(predicate: Callable[[], object], what: str,
             timeout_s: float = START_TIMEOUT_S) -> object:  # fmt: skip
    """Poll ``predicate`` until it is true (returned) or the deadline ends the script.

    ``tests/harness.wait_until_sync`` does the polling; a bench script gets a
    ``BenchError`` (its message, no traceback) instead of an AssertionError.
    """
    try:
        return wait_until_sync(predicate, timeout_s, 0.05, what)
    except AssertionError as error:
        raise BenchError(str(error)) from None


def wait_port(port: int, timeout_s: float = START_TIMEOUT_S, host: str = LOOPBACK) -> None:
    """Wait (with a deadline) until ``host:port`` accepts TCP connections."""
    wait_for(lambda: accepts(port, host), f"{host}:{port} accepting", timeout_s)


def pinned(argv: Sequence[str], cpus: str = SERVER_CPUS) -> list[str]:
    """``argv`` run under ``taskset -c CPUS``: the process and all it forks stay there."""
    return ["taskset", "-c", cpus, *argv]


def pin(pid: int, cpus: str = SERVER_CPUS) -> None:
    """Pin a running process, every thread of it (``taskset -a``), to ``cpus``.

    For our components, started by ``topologies.process.start`` (which builds their
    argv itself): threads created later inherit the affinity.
    """
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip


# -- reference (C) servers --------------------------------------------------------------


def start_reference(
    argv: Sequence[str],
    *,
    name: str,
    log_path: Path | str,
    port: int | None = None,
    ready: Callable[[], bool] | None = None,
    cpus: str | None = SERVER_CPUS,
    env: Mapping[str, str] | None = None,
    timeout_s: float = START_TIMEOUT_S,
    death_signal: int = signal.SIGKILL,
) -> process.ComponentProcess:
    """Start a server that prints no ready line, pinned to ``cpus``; wait until it serves.

    Ready means ``ready()`` is true when given (a real request answered: some servers
    accept connections before they can answer), else that ``port`` accepts. Its stderr
    (and stdout) go to ``log_path``; ``env`` adds to this process's environment. If it
    exits or stays unready, it is stopped and the error carries its last log lines.
    Stop it with ``.stop()`` (SIGTERM by PID).
    """
    if ready is None:
        if port is None:
            raise ValueError("start_reference needs a port or a ready probe")
        ready = lambda: accepts(port)  # noqa: E731
    command = pinned(argv, cpus) if cpus is not None else list(argv)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # A parent-death signal, as for our components: a bench script killed with -9
        # takes its reference server with it (it survives taskset's exec). A server with
        # worker processes needs ``death_signal`` to be one its master stops them on.
        popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 env={**os.environ, **env} if env else None,
                                 preexec_fn=functools.partial(process.die_with_parent,
                                                              death_signal))  # fmt: skip
    server = process.ComponentProcess(name, name, command, log_path, popen)

    def serving() -> bool:
        if not server.alive():
            raise BenchError(f"{name} exited with {popen.returncode} before it served")
        return ready()

    try:
        wait_for(serving, f"{name} serving", timeout_s)
    except BenchError as error:
        server.stop(STOP_TIMEOUT_S)
        raise BenchError(f"{error}; its log:\n{server.log_tail()}") from None
    except BaseException:
        server.stop(STOP_TIMEOUT_S)  # never leave it behind
        raise
    return server


def stop_all(servers: Iterable[process.ComponentProcess]) -> None:
    """Stop servers by PID, last started first (a proxy before the origin behind it)."""
    for server in reversed(list(servers)):
        server.stop(STOP_TIMEOUT_S)


def start_nginx(
    workdir: Path,
    name: str,
    http_block: str,
    *,
    port: int,
    cpus: str | None = SERVER_CPUS,
    master: bool = True,
) -> process.ComponentProcess:
    """nginx with one worker, in the foreground, from a throw-away config under ``workdir``.

    ``http_block`` is the inside of ``http { }`` (servers, upstreams, caches); every path
    nginx writes (pid, error log, temp directories) is under ``workdir``, so it needs
    nothing in /etc or /var. With ``master`` the served requests are the worker's (a
    child: measure ``process_tree(server.pid)``); without, the one process serves. As
    root the worker runs as nobody: ``workdir`` must then be writable by it.
    """
    conf = workdir / f"nginx-{name}.conf"
    conf.write_text(f"""
daemon off;
master_process {"on" if master else "off"};
worker_processes 1;
pid {workdir}/nginx-{name}.pid;
error_log {workdir}/nginx-{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {workdir}/cb-{name}; proxy_temp_path {workdir}/pt-{name};
    fastcgi_temp_path {workdir}/ft-{name}; uwsgi_temp_path {workdir}/ut-{name};
    scgi_temp_path {workdir}/st-{name};
    {http_block}
}}
""")
    argv = ["nginx", "-p", str(workdir), "-e", str(workdir / f"nginx-{name}-error.log"),
            "-c", str(conf)]  # fmt: skip
    # SIGKILL of the master would orphan its worker; SIGTERM is nginx's fast shutdown.
    return start_reference(argv, name=f"nginx-{name}", log_path=workdir / f"nginx-{name}.log",
                           port=port, cpus=cpus, death_signal=signal.SIGTERM)  # fmt: skip


_NSD_CONF = """\
server:
    server-count: 1
    ip-address: {host}
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
    name: {origin}
    zonefile: "{zone}"
"""


def start_nsd(
    workdir: Path,
    zone: Path | str,
    *,
    port: int,
    ready: Callable[[], bool],
    origin: str = "example.com",
    cpus: str | None = SERVER_CPUS,
) -> process.ComponentProcess:
    """NSD serving one zone file on a loopback ``port``, from a throw-away config.

    Everything NSD writes (pid, zone list, xfrd state, log) is under ``workdir``; no
    chroot, no privilege drop, no rate limiting (it would drop a benchmark's queries).
    ``-d`` keeps it in the foreground, so the PID held is NSD's own. ``port`` must be free
    for UDP and TCP (``free_port(udp_too=True)``); ``ready`` should send a real query.
    """
    conf = workdir / "nsd.conf"
    conf.write_text(_NSD_CONF.format(host=LOOPBACK, port=port, work=workdir, zone=zone,
                                     origin=origin))  # fmt: skip
    return start_reference(["nsd", "-d", "-c", str(conf)], name="nsd",
                           log_path=workdir / "nsd.out", ready=ready, cpus=cpus)  # fmt: skip


# -- CPU time from /proc ----------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None once the pid is gone.

    The name (field 2) is in parentheses and may hold spaces, so split after the last
    ``)``: what follows starts at field 3 (state), so field N is at index N - 3.
    """
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (field 4, ppid)."""
    found = []
    for entry in os.listdir("/proc"):
        fields = _stat(int(entry)) if entry.isdigit() else None
        if fields is not None and int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (NSD, nginx and Varnish fork their workers)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, ()))
    return sorted(found)


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time, in seconds, summed over ``pids`` (all threads of each).

    ``utime`` and ``stime`` are fields 14 and 15 of /proc/<pid>/stat, in clock ticks
    (proc(5)). A pid that has exited counts nothing: read the same pids before and after.
    """
    ticks = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS_PER_S


def us_per_op(cpu_s: float, operations: float) -> float:
    """CPU microseconds per operation; NaN when nothing was served (no figure, no crash)."""
    return cpu_s / operations * 1e6 if operations > 0 else math.nan


# -- wrk --------------------------------------------------------------------------------

#: wrk's time units (its ``format_time``): the latency percentiles and the run's length.
_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([\d.]+)(us|ms|s|m|h)"
_REQUESTS = re.compile(r"^\s*(\d+) requests in " + _TIME + ",", re.M)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_PERCENTILE = re.compile(r"^\s+(50|75|90|99)%\s+" + _TIME + r"\s*$", re.M)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", re.M)
_SOCKET_ERRORS = re.compile(
    r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.M
)
_SOCKET_ERROR_KINDS = ("connect", "read", "write", "timeout")


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run printed, in numbers. Latencies in milliseconds.

    ``percentiles_ms`` (50, 75, 90, 99) is empty unless wrk ran with ``--latency`` and got
    answers. ``socket_errors`` maps connect/read/write/timeout to counts (wrk prints that
    line only when one is nonzero).
    ``command`` and ``cpu_us_per_request`` are filled in by ``run_wrk``.
    """

    requests: int
    seconds: float
    rps: float
    percentiles_ms: dict[int, float] = field(default_factory=dict)
    non_2xx_3xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    command: str = ""
    cpu_us_per_request: float = math.nan

    @property
    def p50_ms(self) -> float:
        return self.percentiles_ms.get(50, math.nan)

    @property
    def p99_ms(self) -> float:
        return self.percentiles_ms.get(99, math.nan)

    @property
    def errors(self) -> int:
        """Non-2xx/3xx answers plus socket errors: anything but a good answer."""
        return self.non_2xx_3xx + sum(self.socket_errors.values())


def _ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS_MS[unit]


def parse_wrk(text: str) -> WrkResult:
    """Parse wrk 4's report (stdout). Raises ValueError if it is not one (wrk failed)."""
    rate = _RATE.search(text)
    total = _REQUESTS.search(text)
    if rate is None or total is None:
        raise ValueError(f"not a wrk report: {text[-500:]!r}")
    percentiles = {int(m[1]): _ms(m[2], m[3]) for m in _PERCENTILE.finditer(text)}
    if int(total[1]) == 0:
        percentiles = {}  # wrk prints 0.00us for a run with no answers: no latency at all
    non_2xx = _NON_2XX.search(text)
    sockets = _SOCKET_ERRORS.search(text)
    return WrkResult(
        requests=int(total[1]),
        seconds=_ms(total[2], total[3]) / 1000.0,
        rps=float(rate[1]),
        percentiles_ms=percentiles,
        non_2xx_3xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=dict(zip(_SOCKET_ERROR_KINDS, map(int, sockets.groups()), strict=True))
        if sockets
        else {},
    )


def wrk_argv(
    url: str,
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    latency: bool = True,
    script: Path | str | None = None,
    cpus: str = LOAD_CPUS,
) -> list[str]:
    """The wrk command line, pinned to the load tool's CPUs."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s"]
    if latency:
        argv.append("--latency")
    if script is not None:
        argv += ["-s", str(script)]
    return pinned([*argv, url], cpus)


def run_wrk(url: str, *, pids: Iterable[int] = (), **options) -> WrkResult:
    """Run wrk (``wrk_argv`` options) and parse it; with ``pids``, their CPU per request.

    ``pids`` are the server's serving processes: their CPU time is read before and
    after and divided by the requests wrk completed. A wrk that prints no report (bad
    URL, nothing listening) ends the script with its output.
    """
    command = wrk_argv(url, **options)
    pids = list(pids)
    before = cpu_seconds(pids)
    done = subprocess.run(command, capture_output=True, text=True,
                          timeout=float(options.get("duration_s", 10)) + 60)  # fmt: skip
    spent = cpu_seconds(pids) - before
    try:
        result = parse_wrk(done.stdout)
    except ValueError:
        raise BenchError(f"wrk failed: {' '.join(command)}\n{done.stdout}{done.stderr}") from None
    return replace(
        result,
        command=" ".join(command),
        cpu_us_per_request=us_per_op(spent, result.requests) if pids else math.nan,
    )


def scrape_metric(admin: str, name: str) -> float:
    """The value of an unlabelled sample on a component's ``GET /metrics`` (admin address).

    0.0 when the sample is absent: a counter nothing has incremented yet.
    """
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as response:
        body = response.read().decode()
    prefix = name + " "
    for line in body.splitlines():
        if line.startswith(prefix):
            return float(line.split()[1])
    return 0.0


# -- rounds and reporting ---------------------------------------------------------------


def _value(run: object, key: str) -> float:
    return run[key] if isinstance(run, Mapping) else getattr(run, key)


def medians(runs: Sequence[object], keys: Iterable[str]) -> dict[str, float]:
    """The median of each key over rounds; a run is a mapping or an object with attributes."""
    if not runs:
        raise ValueError("no runs to take medians of")
    return {key: statistics.median(_value(run, key) for run in runs) for key in keys}


def paired_ratio(ours: Sequence[float], theirs: Sequence[float]) -> float:
    """The median of per-round ratios ours/theirs.

    Each round measures both back to back, so a pair shares the machine's load of the
    moment: steadier than the ratio of the medians on a shared machine.
    """
    return statistics.median(o / t for o, t in zip(ours, theirs, strict=True))


def table(headers: Sequence[str], rows: Iterable[Sequence[object]],
          formats: Sequence[str] | None = None, left: int = 1) -> str:  # fmt: skip
    """An aligned plain-text table: the first ``left`` columns (names) left, the rest right.

    ``formats`` gives a format spec per column (``",.0f"``, ``".2f"``) for cells that
    are numbers; strings are shown as they are. NaN shows as ``-``.
    """
    formats = list(formats or [""] * len(headers))
    cells = [list(headers)]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells for {len(headers)} columns")
        cells.append([_cell(value, spec) for value, spec in zip(row, formats, strict=True)])
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    lines = []
    for line in cells:
        parts = [cell.ljust(width) if i < left else cell.rjust(width)
                 for i, (cell, width) in enumerate(zip(line, widths, strict=True))]  # fmt: skip
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _cell(value: object, spec: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return format(value, spec)


def machine_note() -> str:
    """CPUs and load averages, to print next to figures measured on a shared machine."""
    one, five, fifteen = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.2f} {five:.2f} {fifteen:.2f}"


def export_source(rev: str, into: Path | str, paths: Sequence[str] = ("src",)) -> Path:
    """``paths`` of git revision ``rev`` extracted under ``into``; returns ``into/src``.

    ``git archive | tar -x`` reads the repository and writes only below ``into``, so the
    work tree and the index are never touched. Put the returned directory first on a
    child's ``PYTHONPATH`` (or ``sys.path``) to run that revision's code.
    """
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", rev, *paths], cwd=REPO, capture_output=True)
    if archive.returncode != 0:
        raise BenchError(f"git archive {rev}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"
