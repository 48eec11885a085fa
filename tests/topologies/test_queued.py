"""The queued stage as real processes: a burst of photos scales the workers up, a worker
killed mid-burst loses nothing (every accepted photo gets done), and the pool shrinks
back, one drained worker per cool-down.

Small sizes (one web server, one to three workers of one slot each, 300 ms of emulated
work per photo) make a backlog that one worker would need seconds to clear; every claim
is waited for with a deadline, never a timing.
"""

import json
import os
import signal

import orjson
import pytest

import harness
from topologies import cli, stages
from topologies.launcher import Launcher

JSON = {"Content-Type": "application/json"}
PHOTOS = 24
COOLDOWN_S = 1.0


@pytest.fixture
def queued(tmp_path):
    module = stages.load("queued")
    args = stages.default_options(module)
    vars(args).update(seed_users=10, web=1, workers=1, min_workers=1, max_workers=3,
                      worker_concurrency=1, worker_service_time_ms=300, jobs_per_worker=2,
                      cooldown_s=COOLDOWN_S, scale_interval_s=0.2)  # fmt: skip
    launcher = Launcher(module.topology(args), tmp_path / "queued")
    try:
        launcher.start()
        yield launcher
    finally:
        launcher.close()


def test_the_stage_is_catalogued_after_cached(capsys):
    assert list(stages.STAGES)[-5:-1] == ["cached", "stateless", "multi_dc", "queued"]
    assert cli.main(["stages"]) == 0
    assert "queued         Stage 8 (figures 17-19): slow work leaves the request" in \
        capsys.readouterr().out  # fmt: skip


def status(launcher):
    code, _, body = harness.http("GET", launcher.url("autoscaler") + "/status")
    assert code == 200
    return json.loads(body)


def photo_state(launcher, location):
    code, _, body = harness.http("GET", launcher.entry_url + location)
    assert code == 200, body
    return json.loads(body)["state"]


def test_a_burst_scales_workers_up_every_photo_gets_done_and_the_pool_shrinks_back(queued):
    assert [c.name for c in queued.topology.components] == \
        ["store-1", "queue", "web-1", "lb", "autoscaler"]  # fmt: skip
    assert len(status(queued)["workers"]) == 1
    locations = []
    for n in range(PHOTOS):
        doc = {"image": f"user-{n}/burst.jpg", "width": 32, "height": 24, "thumb": 8}
        code, headers, body = harness.http("POST", queued.entry_url + "/photos",
                                           orjson.dumps(doc), JSON)  # fmt: skip
        assert code == 202, body
        locations.append(headers["Location"])
    # The backlog (24 jobs, 2 per worker wanted) asks for the maximum: 3 workers.
    harness.wait_until_sync(lambda: len(status(queued)["workers"]) == 3, 20,
                            what="the autoscaler runs 3 workers")  # fmt: skip
    ups = [e for e in status(queued)["events"] if e.get("direction") == "up"]
    assert ups and ups[0]["ready"] + ups[0]["reserved"] > 2  # scaled on a real backlog
    # A crash mid-burst: worker-1 has been busy since the first photo, so it most likely
    # holds a job. The queue gives that job back when its connection drops (at least once).
    [oldest] = [w for w in status(queued)["workers"] if w["name"] == "worker-1"]
    os.kill(oldest["pid"], signal.SIGKILL)
    harness.wait_until_sync(
        lambda: all(photo_state(queued, loc) == "done" for loc in locations), 30,
        what="every accepted photo done")  # fmt: skip

    # The queue is empty; after the cool-down, one worker fewer per cool-down, to the min.
    def scaled_down():
        doc = status(queued)
        downs = [e for e in doc["events"] if e.get("direction") == "down"]
        return (doc, downs) if downs and downs[-1]["workers"] == 1 else None

    doc, downs = harness.wait_until_sync(scaled_down, 20, what="the pool down to 1 worker")
    assert len(doc["workers"]) == 1 and all(e["previous"] - e["workers"] == 1 for e in downs)
    assert [e["worker"] for e in doc["events"] if e["event"] == "worker_exited"] == ["worker-1"]
    assert doc["queue"]["ready"] == doc["queue"]["reserved"] == 0
    # The workers scaled away were stopped with SIGTERM and drained: exit 0, a clean stop.
    stopped = [orjson.loads(line) for line in (queued.run_dir / "autoscaler.log").read_bytes()
               .splitlines() if b'"event":"worker_stopped"' in line]  # fmt: skip
    assert len(stopped) == len(downs) and all(s["exit_code"] == 0 for s in stopped)
    for record in stopped:
        log = (queued.run_dir / f"{record['worker']}.log").read_bytes()
        assert b'"event":"stopped"' in log
