"""bench/benchlib.py: wrk's report parsed from real captured output, /proc CPU time, tables.

The samples under ``data/`` are wrk 4.1 (Debian) stdout captured on this machine: a run
with ``--latency``, one without, one whose every answer was a 404, one whose server reset
connections (socket errors), and one whose server never answered.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import wait_until_sync

DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA.parents[2] / "bench"))

import benchlib  # noqa: E402


def sample(name: str) -> str:
    return (DATA / f"wrk_{name}.txt").read_text()


# -- parse_wrk ------------------------------------------------------------------------------


def test_parse_wrk_reads_rate_requests_and_latency_percentiles():
    result = benchlib.parse_wrk(sample("latency"))
    assert result.requests == 105103
    assert result.seconds == pytest.approx(2.01)
    assert result.rps == pytest.approx(52252.85)
    assert result.percentiles_ms == pytest.approx({50: 0.122, 75: 1.19, 90: 3.65, 99: 9.52})
    assert (result.p50_ms, result.p99_ms) == pytest.approx((0.122, 9.52))
    assert result.errors == 0


def test_parse_wrk_without_latency_flag_has_no_percentiles():
    result = benchlib.parse_wrk(sample("no_latency"))
    assert (result.requests, result.rps) == (61081, pytest.approx(59835.52))
    assert result.percentiles_ms == {}
    assert math.isnan(result.p50_ms) and math.isnan(result.p99_ms)


def test_parse_wrk_counts_non_2xx_answers_as_errors():
    result = benchlib.parse_wrk(sample("non_2xx"))
    assert result.non_2xx_3xx == result.requests == 1737
    assert result.errors == 1737
    assert result.p99_ms == pytest.approx(419.45)


def test_parse_wrk_reads_socket_errors_by_kind():
    result = benchlib.parse_wrk(sample("socket_errors"))
    assert result.socket_errors == {"connect": 0, "read": 9809, "write": 17204, "timeout": 0}
    assert result.non_2xx_3xx == 0
    assert result.errors == 9809 + 17204


def test_parse_wrk_run_without_answers_has_no_latency_figures():
    # wrk prints "0.00us" percentiles when nothing came back; they are not latencies.
    result = benchlib.parse_wrk(sample("no_answers"))
    assert (result.requests, result.rps) == (0, 0.0)
    assert result.percentiles_ms == {}


def test_parse_wrk_converts_every_time_unit_to_milliseconds():
    text = (
        sample("latency")
        .replace("50%  122.00us", "50%    1.50s")
        .replace("99%    9.52ms", "99%    2.00m")
        .replace("105103 requests in 2.01s", "105103 requests in 1.00m")
    )
    result = benchlib.parse_wrk(text)
    assert result.p50_ms == pytest.approx(1500.0)
    assert result.p99_ms == pytest.approx(120_000.0)
    assert result.seconds == pytest.approx(60.0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "unable to connect to 127.0.0.1:1 Connection refused\n",
        "Usage: wrk <options> <url>\n  Options:\n    -c, --connections <N>\n",
        sample("latency").split("Requests/sec")[0],  # cut short before the rate
    ],
)
def test_parse_wrk_refuses_what_is_not_a_report(text):
    with pytest.raises(ValueError, match="not a wrk report"):
        benchlib.parse_wrk(text)


def test_wrk_argv_is_pinned_to_the_load_cpu():
    argv = benchlib.wrk_argv("http://127.0.0.1:1/", connections=64, duration_s=10,
                             script="/tmp/x.lua")  # fmt: skip
    assert argv == ["taskset", "-c", "1", "wrk", "-t1", "-c64", "-d10s", "--latency",
                    "-s", "/tmp/x.lua", "http://127.0.0.1:1/"]  # fmt: skip


# -- rounds and reporting -----------------------------------------------------------------


@dataclass
class Run:
    rps: float


def test_medians_of_mappings_and_of_objects():
    assert benchlib.medians([{"a": 1, "b": 9}, {"a": 3, "b": 7}, {"a": 2, "b": 8}], "ab") == {
        "a": 2,
        "b": 8,
    }
    assert benchlib.medians([Run(10.0), Run(30.0)], ["rps"]) == {"rps": 20.0}
    with pytest.raises(ValueError):
        benchlib.medians([], ["rps"])


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # Ratio of medians would be 20/10 = 2.0; the rounds themselves say 1, 3 and 1.5.
    assert benchlib.paired_ratio([10, 30, 20], [10, 10, 40]) == pytest.approx(1.0)
    assert benchlib.paired_ratio([10, 30, 30], [10, 10, 20]) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        benchlib.paired_ratio([1, 2], [1])


def test_table_aligns_columns_and_formats_numbers():
    text = benchlib.table(
        ["target", "req/s", "p99 ms"],
        [["nginx", 12345.6, 1.234], ["scalelab edge", 987.0, math.nan]],
        ["", ",.0f", ".2f"],
    )
    assert text.splitlines() == [
        "target          req/s  p99 ms",
        "nginx          12,346    1.23",
        "scalelab edge     987       -",
    ]
    with pytest.raises(ValueError):
        benchlib.table(["a", "b"], [["only one"]])


def test_table_can_left_align_several_name_columns():
    text = benchlib.table(["scenario", "server", "ops/s"],
                          [["pipelined", "scalelab", 10], ["", "memcached", 9]], left=2)  # fmt: skip
    assert text.splitlines() == [
        "scenario   server     ops/s",
        "pipelined  scalelab      10",
        "           memcached      9",
    ]


def test_us_per_op_has_no_figure_for_no_operations():
    assert benchlib.us_per_op(0.5, 1000) == pytest.approx(500.0)
    assert math.isnan(benchlib.us_per_op(0.5, 0))


# -- processes, ports, /proc --------------------------------------------------------------


def test_cpu_seconds_grows_with_the_work_a_process_does():
    before = benchlib.cpu_seconds([os.getpid()])

    def burned() -> bool:
        sum(range(100_000))
        return benchlib.cpu_seconds([os.getpid()]) > before

    wait_until_sync(burned, what="CPU time advancing")
    assert benchlib.cpu_seconds([2**22 + 12345]) == 0.0  # no such pid: nothing counted


def test_process_tree_and_children_find_a_forked_child():
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys; subprocess.run(['sleep', '30'])"])  # fmt: skip
    try:
        kids = wait_until_sync(lambda: benchlib.children(parent.pid), what="the child")
        assert benchlib.process_tree(parent.pid) == sorted([parent.pid, *kids])
    finally:
        for pid in benchlib.process_tree(parent.pid)[::-1]:
            os.kill(pid, 9)
        parent.wait()


def test_free_port_for_udp_and_tcp_binds_both():
    port = benchlib.free_port(udp_too=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", port))
        tcp.bind(("127.0.0.1", port))


def test_wait_port_gives_up_with_a_clear_error():
    port = benchlib.free_port()
    with pytest.raises(benchlib.BenchError, match=f"127.0.0.1:{port} accepting"):
        benchlib.wait_port(port, timeout_s=0.3)


def test_require_names_the_missing_tools():
    with pytest.raises(benchlib.BenchError, match="no-such-tool-here"):
        benchlib.require("sh", "no-such-tool-here")


def test_reference_server_that_exits_early_reports_its_log(tmp_path):
    with pytest.raises(benchlib.BenchError, match="(?s)exited with 3.*boom"):
        benchlib.start_reference(["sh", "-c", "echo boom >&2; exit 3"], name="broken",
                                 log_path=tmp_path / "broken.log", port=1)  # fmt: skip


def test_reference_server_is_pinned_measured_under_wrk_and_stopped(tmp_path):
    benchlib.require("wrk", "taskset")
    port = benchlib.free_port()
    server = benchlib.start_reference(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        name="http.server", log_path=tmp_path / "server.log", port=port, cpus="0",
    )  # fmt: skip
    try:
        assert server.argv[:3] == ["taskset", "-c", "0"]
        allowed = os.sched_getaffinity(server.pid)
        assert allowed == {0}
        result = benchlib.run_wrk(f"http://127.0.0.1:{port}/", connections=1, duration_s=1,
                                  pids=[server.pid])  # fmt: skip
        assert result.requests > 0 and result.errors == 0
        assert result.cpu_us_per_request > 0
        assert result.command.startswith("taskset -c 1 wrk -t1 -c1 -d1s --latency")
    finally:
        benchlib.stop_all([server])
    assert not server.alive()


def test_scrape_metric_reads_an_unlabelled_sample(tmp_path):
    (tmp_path / "metrics").write_text(
        "# TYPE scalelab_web_cache_hits_total counter\n"
        "scalelab_web_cache_hits_total 41.0\n"
        'scalelab_web_cache_hits_total_by{tier="x"} 7.0\n'
        "scalelab_web_cache_hits 3.0\n"
    )
    port = benchlib.free_port()
    server = benchlib.start_reference(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(tmp_path)],
        name="metrics", log_path=tmp_path / "server.log", port=port, cpus=None,
    )  # fmt: skip
    try:
        admin = f"127.0.0.1:{port}"
        assert benchlib.scrape_metric(admin, "scalelab_web_cache_hits_total") == 41.0
        assert benchlib.scrape_metric(admin, "scalelab_web_cache_hits") == 3.0
        assert benchlib.scrape_metric(admin, "scalelab_web_cache_misses_total") == 0.0
    finally:
        server.stop()


def test_reference_server_that_never_serves_is_stopped(tmp_path):
    port = benchlib.free_port()
    with pytest.raises(benchlib.BenchError, match="silent serving not met") as raised:
        benchlib.start_reference(["sleep", "30"], name="silent", log_path=tmp_path / "s.log",
                                 port=port, timeout_s=0.3)  # fmt: skip
    assert "its log:" in str(raised.value)
    assert not any(b"sleep\x0030" in Path(f"/proc/{pid}/cmdline").read_bytes()
                   for pid in benchlib.children(os.getpid()))  # fmt: skip


def test_export_source_extracts_a_revision_without_touching_the_work_tree(tmp_path):
    src = benchlib.export_source("HEAD", tmp_path / "base")
    assert src == tmp_path / "base" / "src"
    assert (src / "components" / "common" / "runner.py").is_file()
    assert not (tmp_path / "base" / "tests").exists()  # only the paths asked for


def test_export_source_of_an_unknown_revision_is_a_clear_error(tmp_path):
    with pytest.raises(benchlib.BenchError, match="no-such-revision"):
        benchlib.export_source("no-such-revision", tmp_path / "base")


def test_reference_server_dies_with_a_bench_script_killed_with_sigkill(tmp_path):
    script = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); import benchlib\n"
        "server = benchlib.start_reference(['sleep', '300'], name='ref', cpus=None,\n"
        "                                  log_path=sys.argv[2], ready=lambda: True)\n"
        "print(server.pid, flush=True); time.sleep(300)\n"
    )
    bench_dir = str(DATA.parents[2] / "bench")
    script_proc = subprocess.Popen([sys.executable, "-c", script, bench_dir, str(tmp_path / "r.log")],
                                   stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        server_pid = int(script_proc.stdout.readline())
        assert _alive(server_pid)
        script_proc.kill()  # SIGKILL: no cleanup code of the script runs
        script_proc.wait()
        wait_until_sync(lambda: not _alive(server_pid), what="reference server gone")
    finally:
        script_proc.kill()
        script_proc.wait()


#: A server with a master and a worker, as nginx runs: the master stops its worker on
#: SIGTERM, and a worker whose master is SIGKILLed lives on (the orphan to avoid).
_MASTER = (
    "import os, signal, subprocess, sys, time\n"
    "worker = subprocess.Popen(['sleep', '300'])\n"
    "def stop(*_): worker.kill(); worker.wait(); sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "print(worker.pid, flush=True)\n"
    "while True: time.sleep(1)\n"
)


def test_a_master_and_its_worker_die_with_a_bench_script_given_the_masters_signal(tmp_path):
    (tmp_path / "master.py").write_text(_MASTER)
    script = (
        "import signal, sys, time; sys.path.insert(0, sys.argv[1]); import benchlib\n"
        "log = sys.argv[2]\n"
        "server = benchlib.start_reference([sys.executable, sys.argv[3]], name='ref', cpus=None,\n"
        "    log_path=log, ready=lambda: open(log).read().strip() != '',\n"
        "    death_signal=signal.SIGTERM)\n"
        "print(server.pid, open(log).read().strip(), flush=True); time.sleep(300)\n"
    )
    bench_dir = str(DATA.parents[2] / "bench")
    script_proc = subprocess.Popen([sys.executable, "-c", script, bench_dir, str(tmp_path / "r.log"),
                                    str(tmp_path / "master.py")],
                                   stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        master_pid, worker_pid = map(int, script_proc.stdout.readline().split())
        assert _alive(master_pid) and _alive(worker_pid)
        script_proc.kill()
        script_proc.wait()
        wait_until_sync(lambda: not _alive(master_pid) and not _alive(worker_pid),
                        what="master and worker gone")  # fmt: skip
    finally:
        script_proc.kill()
        script_proc.wait()


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has exited; it only waits for its parent's wait)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
