"""Real workers against a real queue: processing, retries, burying, kills and drains."""

import json
import signal

import greenstalk

import harness


def metric(proc, name: str) -> float:
    body = harness.http("GET", proc.url("admin") + "/metrics")[2].decode()
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_worker(spawn, queue, *flags):
    host, port = queue.address()
    return spawn("worker", "--queue", f"{host}:{port}", "--tube", "photos", *flags)


def job(image: str, **extra) -> str:
    return json.dumps({"image": image, "width": 64, "height": 48, "thumb": 8, **extra})


def test_jobs_are_processed_stored_and_deleted(spawn, tmp_path):
    queue = spawn("queue")
    worker = start_worker(spawn, queue, "--concurrency", "3", "--result-dir", str(tmp_path))
    with greenstalk.Client(queue.address(), use="photos") as c:
        for i in range(20):
            c.put(job(f"u{i}/p.jpg"))
        harness.wait_until_sync(lambda: metric(worker, "scalelab_worker_jobs_done_total") == 20)
        assert c.stats_tube("photos")["current-jobs-ready"] == 0
        assert c.stats()["cmd-delete"] == 20
    meta = json.loads((tmp_path / "u7__p.jpg.json").read_text())
    assert meta["bytes"] == 8 * 8 * 3 and len(meta["digest"]) == 64
    assert (tmp_path / "u7__p.jpg.rgb").stat().st_size == 8 * 8 * 3


def test_failing_job_is_retried_with_backoff_then_buried(spawn):
    queue = spawn("queue")
    worker = start_worker(spawn, queue, "--max-failures", "3", "--retry-delay-s", "100",
                          "--retry-max-delay-s", "1000")  # fmt: skip
    with greenstalk.Client(queue.address(), use="photos") as c:
        job_id = c.put(job("poison.jpg", fail=True))
        for attempt in (1, 2):
            harness.wait_until_sync(
                lambda attempt=attempt: c.stats_job(job_id)["releases"] == attempt,
                what=f"release {attempt}",
            )
            stats = c.stats_job(job_id)
            assert stats["state"] == "delayed"
            assert stats["delay"] == 100 * 2 ** (attempt - 1)  # exponential backoff
            c.kick_job(job_id)  # skip the wait instead of sleeping
        harness.wait_until_sync(lambda: c.stats_job(job_id)["state"] == "buried", what="buried")
    assert metric(worker, "scalelab_worker_jobs_failed_total") == 3


def test_job_held_by_a_killed_worker_is_processed_by_another(spawn, tmp_path):
    queue = spawn("queue")
    slow = start_worker(spawn, queue, "--concurrency", "1", "--service-time-ms", "60000")
    with greenstalk.Client(queue.address(), use="photos") as c:
        job_id = c.put(job("survivor.jpg"))
        harness.wait_until_sync(lambda: c.stats_job(job_id)["state"] == "reserved")
        slow.kill()  # kill -9 mid-job
        harness.wait_until_sync(lambda: c.stats_job(job_id)["state"] == "ready")
        start_worker(spawn, queue, "--result-dir", str(tmp_path))
        harness.wait_until_sync(lambda: (tmp_path / "survivor.jpg.json").exists())
        harness.wait_until_sync(lambda: c.stats()["current-jobs-ready"] == 0)
        try:
            c.peek(job_id)
            raise AssertionError("job not deleted after processing")
        except greenstalk.NotFoundError:
            pass


def test_sigterm_finishes_the_current_job_then_exits(spawn, tmp_path):
    queue = spawn("queue")
    worker = start_worker(
        spawn, queue, "--concurrency", "1", "--service-time-ms", "1500",
        "--result-dir", str(tmp_path), "--drain-timeout", "10",
    )  # fmt: skip
    with greenstalk.Client(queue.address(), use="photos") as c:
        job_id = c.put(job("drain.jpg"))
        harness.wait_until_sync(lambda: c.stats_job(job_id)["state"] == "reserved")
        worker.signal(signal.SIGTERM)
        assert worker.popen.wait(timeout=15) == 0
        assert (tmp_path / "drain.jpg.json").exists()
        assert c.stats()["current-jobs-reserved"] == 0
        try:
            c.peek(job_id)
            raise AssertionError("drained job was not deleted")
        except greenstalk.NotFoundError:
            pass


def test_sigterm_does_not_wait_out_an_idle_reserve(spawn, tmp_path):
    queue = spawn("queue")
    worker = start_worker(spawn, queue, "--concurrency", "4", "--reserve-timeout-s", "120",
                          "--result-dir", str(tmp_path), "--drain-timeout", "60")  # fmt: skip
    with greenstalk.Client(queue.address()) as c:
        harness.wait_until_sync(lambda: c.stats()["current-waiting"] == 4,
                                what="all four slots blocked in reserve")  # fmt: skip
        worker.signal(signal.SIGTERM)
        # Well inside the 120 s reserve and the 60 s drain: the idle slots were cancelled.
        assert worker.popen.wait(timeout=20) == 0
        assert '"drain_cut_short"' not in worker.log_tail(50)
        # Their connections are gone, so a job put now waits for the next worker.
        harness.wait_until_sync(lambda: c.stats()["current-waiting"] == 0)
        c.use("photos")
        job_id = c.put(job("later.jpg"))
        assert c.stats_job(job_id)["state"] == "ready"


def test_worker_reconnects_when_the_queue_comes_back(spawn, tmp_path):
    queue = spawn("queue", "-b", str(tmp_path / "q"), "-f", "0")
    host, port = queue.address()
    worker = start_worker(spawn, queue, "--result-dir", str(tmp_path / "r"))
    harness.wait_until_sync(lambda: harness.http("GET", worker.url("admin") + "/health")[0] == 200)
    queue.kill()
    harness.wait_until_sync(
        lambda: harness.http("GET", worker.url("admin") + "/health")[0] == 503,
        what="worker notices the queue is gone",
    )
    queue = spawn("queue", "-b", str(tmp_path / "q"), "-f", "0", "--port", str(port))
    with greenstalk.Client(queue.address(), use="photos") as c:
        c.put(job("after.jpg"))
    harness.wait_until_sync(lambda: (tmp_path / "r" / "after.jpg.json").exists())


def test_job_of_a_hung_worker_returns_after_its_ttr(spawn, tmp_path):
    queue = spawn("queue")
    hung = start_worker(spawn, queue, "--concurrency", "1", "--service-time-ms", "60000")
    with greenstalk.Client(queue.address(), use="photos") as c:
        job_id = c.put(job("hung.jpg"), ttr=30)
        harness.wait_until_sync(lambda: c.stats_job(job_id)["state"] == "reserved")
        hung.signal(signal.SIGSTOP)  # a real hang: the connection stays open
        harness.http("POST", queue.url("admin") + "/admin/clock", b'{"advance": 31}')
        assert c.stats_job(job_id)["state"] == "ready"
        assert c.stats_job(job_id)["timeouts"] == 1
        start_worker(spawn, queue, "--result-dir", str(tmp_path))
        harness.wait_until_sync(lambda: (tmp_path / "hung.jpg.json").exists())
        harness.wait_until_sync(lambda: c.stats()["current-jobs-ready"] == 0)
    hung.signal(signal.SIGCONT)
    hung.kill()


def test_touching_keeps_a_long_job_past_its_ttr(spawn):
    queue = spawn("queue")
    worker = start_worker(spawn, queue, "--concurrency", "1", "--service-time-ms", "2500",
                          "--touch-interval-s", "0.4")  # fmt: skip
    with greenstalk.Client(queue.address(), use="photos") as c:
        c.put(job("long.jpg"), ttr=2)
        harness.wait_until_sync(lambda: metric(worker, "scalelab_worker_jobs_done_total") == 1)
        stats = c.stats()
        assert stats["job-timeouts"] == 0 and stats["cmd-touch"] >= 3
        assert stats["cmd-delete"] == 1
