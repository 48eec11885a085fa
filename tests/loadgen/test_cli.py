"""The command line: flags, exit codes, ``python -m loadgen``, Ctrl-C with workers."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness import wait_until_sync
from loadgen.cli import main

SRC = str(Path(__file__).resolve().parents[2] / "src")


def loadgen_process(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen(
        [sys.executable, "-m", "loadgen", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--profile" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["http://127.0.0.1:1", "--users", "2", "--rate", "5"],
        ["http://127.0.0.1:1", "--duration", "soon"],
        ["http://127.0.0.1:1", "--metrics", "no-equals-sign"],
        ["http://127.0.0.1:1", "--procs", "-1"],
        ["http://127.0.0.1:1", "--colour"],
    ],
)
def test_bad_flags_exit_two(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_unknown_profile_exits_two_and_names_it(capsys):
    assert main(["http://127.0.0.1:1", "--profile", "nonesuch"]) == 2
    assert "nonesuch" in capsys.readouterr().err


def test_warmup_longer_than_duration_exits_two(capsys):
    assert main(["http://127.0.0.1:1", "--duration", "1"]) == 2  # default warm-up is 2 s
    assert "warm-up" in capsys.readouterr().err


def test_bad_target_exits_one(capsys):
    assert main(["ftp://127.0.0.1/"]) == 1
    assert "http://" in capsys.readouterr().err


def test_python_m_loadgen_runs_a_profile_and_writes_json(server, tmp_path):
    report_path = tmp_path / "r.json"
    proc = loadgen_process(
        server.url, "--profile", "default", "--duration", "1", "--warmup", "0",
        "--users", "2", "--json", str(report_path), "--no-progress",
        "--metrics", f"test={server.url}/metrics",
    )  # fmt: skip
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    report = json.loads(report_path.read_text())
    assert report["requests"] == server.requests
    assert {"get_user", "put_user", "create_user", "static_css"} >= set(report["by_kind"])
    assert "tier test" in out and "[   1s]" not in out


def child_pids(pid: int) -> set[int]:
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.add(int(entry))
    return children


@pytest.mark.parametrize("procs", [1, 2])
def test_ctrl_c_reports_what_was_measured_and_leaves_no_worker(server, procs):
    proc = loadgen_process(
        server.url, "--profile", "default", "--duration", "60", "--warmup", "0",
        "--procs", str(procs),
    )  # fmt: skip
    first_line = proc.stdout.readline()  # the first progress line: the run is on
    assert "req/s" in first_line
    workers = set()
    if procs > 1:
        workers = wait_until_sync(lambda: child_pids(proc.pid), what="worker processes")
        assert len(workers) == procs
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "INTERRUPTED" in out and f"procs {procs}" in out
    assert "latency ms" in out  # the report of what was measured until then
    window = float(out.split("measured window ")[1].split()[0])
    assert 0.5 < window < 30  # the window ends at Ctrl-C, not at the planned end
    assert int(re.search(r"^requests (\d+)", out, re.M).group(1)) > 0
    # The timeline stops at Ctrl-C too: a row per second run, not 60.
    timeline = out.split("  second ")[1].split("\n\n")[0].splitlines()[1:]
    assert 2 <= len(timeline) <= 31
    wait_until_sync(lambda: not any(Path(f"/proc/{p}").exists() for p in workers),
                    what="workers gone")  # fmt: skip
