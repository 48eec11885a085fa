"""The autoscaler process against a real queue: it replaces a dead worker, holds still
while the queue cannot be read, refuses impossible rules, and takes its workers with it.

Workers write results to a directory (``--result-dir``), so no web tier is needed; the
end-to-end claim with the whole stage is in ``test_queued.py``.
"""

import json
import os
import signal

import pytest
from topology_helpers import wait_all_dead

import harness
from topologies import process
from topologies.launcher import pid_alive
from topologies.queued import autoscaler
from topologies.stages import default_options, load


@pytest.fixture
def queue(spawn):
    return spawn("queue")


def start_autoscaler(spawn, queue, tmp_path, *flags):
    host, port = queue.address()
    return spawn("autoscaler", "--queue", f"{host}:{port}", "--log-dir", str(tmp_path),
                 "--interval-s", "0.1", "--poll-timeout-s", "0.5",
                 "--worker-args", f"--result-dir {tmp_path / 'results'}",
                 *flags, module="topologies.autoscale", log_path=tmp_path / "autoscaler.log")  # fmt: skip


def status(scaler):
    code, _, body = harness.http("GET", scaler.url() + "/status")
    assert code == 200
    return json.loads(body)


def metric(scaler, series):
    text = harness.http("GET", scaler.url("admin") + "/metrics")[2].decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(series))  # fmt: skip


def test_a_worker_killed_is_replaced_and_the_event_logged(spawn, queue, tmp_path):
    scaler = start_autoscaler(spawn, queue, tmp_path, "--min-workers", "1")
    [first] = status(scaler)["workers"]
    assert first["name"] == "worker-1" and pid_alive(first["pid"])
    assert b'"event":"ready"' in (tmp_path / "worker-1.log").read_bytes()  # in --log-dir
    os.kill(first["pid"], signal.SIGKILL)
    doc = harness.wait_until_sync(
        lambda: (d := status(scaler))["workers"] and d["workers"][0]["name"] == "worker-2" and d,
        15, what="worker-2 replaces the killed worker-1")  # fmt: skip
    assert [e["worker"] for e in doc["events"] if e["event"] == "worker_exited"] == ["worker-1"]
    assert metric(scaler, "scalelab_autoscaler_worker_exits_total") == 1
    assert metric(scaler, 'scalelab_autoscaler_scale_events_total{direction="up"}') == 1


def test_a_queue_that_cannot_be_read_changes_nothing(spawn, queue, tmp_path):
    scaler = start_autoscaler(spawn, queue, tmp_path, "--min-workers", "1", "--max-workers", "3",
                              "--jobs-per-worker", "1")  # fmt: skip
    harness.wait_until_sync(lambda: status(scaler)["queue"] is not None, what="a first poll")
    queue.kill()
    harness.wait_until_sync(lambda: metric(scaler, "scalelab_autoscaler_poll_errors_total") >= 2,
                            what="failed polls counted")  # fmt: skip
    code, _, body = harness.http("GET", scaler.url("admin") + "/health")
    assert code == 503 and b"queue unreachable" in body
    assert len(status(scaler)["workers"]) == 1  # no figures, no decision: still one worker
    assert metric(scaler, "scalelab_autoscaler_scale_events_total") == 0


def test_stopping_the_autoscaler_drains_its_workers(spawn, queue, tmp_path):
    scaler = start_autoscaler(spawn, queue, tmp_path, "--min-workers", "2", "--max-workers", "2")
    pids = [w["pid"] for w in status(scaler)["workers"]]
    assert len(pids) == 2
    assert scaler.stop() == 0
    wait_all_dead(pids)
    for name in ("worker-1", "worker-2"):  # SIGTERM, drained: a clean stop, not a kill
        assert b'"event":"stopped"' in (tmp_path / f"{name}.log").read_bytes()


@pytest.mark.parametrize("flags", [
    ("--min-workers", "3", "--max-workers", "2"),
    ("--initial-workers", "5", "--max-workers", "4"),
    ("--jobs-per-worker", "0"),
    ("--interval-s", "0"),
    ("--worker-args", "'unclosed"),
])  # fmt: skip
def test_impossible_rules_are_a_usage_error(queue, tmp_path, flags):
    host, port = queue.address()
    with pytest.raises(process.StartError, match="exited with code 2"):
        process.start("autoscaler", "--queue", f"{host}:{port}", *flags,
                      module="topologies.autoscale", log_path=tmp_path / "bad.log")  # fmt: skip


def test_the_stage_refuses_a_pool_outside_its_bounds():
    options = default_options(load("queued"))
    options.workers, options.max_workers = 5, 3
    with pytest.raises(ValueError, match="--workers"):
        autoscaler(options)
