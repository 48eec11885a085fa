"""greenstalk (a real beanstalkd client) against a real queue process on port 0.

Time-dependent behaviour (TTR, delays, pauses, reserve timeouts) is driven through the
server's clock (``POST /admin/clock``), never by sleeping. One server serves the module
(starting a process costs a second on a busy machine); each test works in a tube of its
own, and tests that need whole-server figures start their own server.
"""

import contextlib
import itertools
import json
import signal
import socket

import greenstalk
import pytest
from prometheus_client.parser import text_string_to_metric_families

import harness

_tubes = itertools.count()


@pytest.fixture(scope="module")
def queue():
    proc = harness.start("queue")
    yield proc
    proc.stop(timeout_s=5)


@pytest.fixture
def tube():
    return f"t{next(_tubes)}"


@pytest.fixture
def client(queue, tube):
    """A client that uses and watches only this test's tube."""
    with greenstalk.Client(queue.address(), use=tube, watch=tube) as c:
        yield c


def raw_in(queue, tube):
    sock = raw(queue)
    assert ask(sock, b"watch %s\r\nignore default\r\n" % tube.encode(), b"WATCHING 1\r\n")
    return sock


def advance(queue, seconds):
    status, _, body = harness.http(
        "POST", queue.url("admin") + "/admin/clock", json.dumps({"advance": seconds}).encode()
    )
    assert status == 200, body


def raw(queue):
    sock = socket.create_connection(queue.address(), timeout=5)
    return sock


def ask(sock, data: bytes, expect_end: bytes = b"\r\n") -> bytes:
    sock.sendall(data)
    got = b""
    while not got.endswith(expect_end):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_put_reserve_delete(client):
    job_id = client.put("hello")
    job = client.reserve(timeout=0)
    assert (job.id, job.body) == (job_id, "hello")
    client.delete(job)
    with pytest.raises(greenstalk.NotFoundError):
        client.delete(job_id)


def test_priorities_then_fifo(client):
    ids = [client.put(f"j{i}", priority=p) for i, p in enumerate([5, 1, 1, 0])]
    order = [client.reserve(timeout=0).id for _ in ids]
    assert order == [ids[3], ids[1], ids[2], ids[0]]


def test_tubes_use_watch_ignore_and_lists(queue):
    with greenstalk.Client(queue.address()) as client:
        client.use("photos")
        assert client.using() == "photos"
        assert client.watch("photos") == 2
        assert client.ignore("default") == 1
        with pytest.raises(greenstalk.NotIgnoredError):
            client.ignore("photos")
        assert client.watching() == ["photos"]
        assert {"default", "photos"} <= set(client.tubes())
        job_id = client.put("x")
        assert client.reserve(timeout=0).id == job_id
        client.delete(job_id)


def test_release_with_delay_waits_for_the_clock(queue, client):
    job_id = client.put("x")
    job = client.reserve(timeout=0)
    client.release(job, delay=30)
    assert client.stats_job(job_id)["state"] == "delayed"
    with pytest.raises(greenstalk.TimedOutError):
        client.reserve(timeout=0)
    advance(queue, 31)
    assert client.reserve(timeout=0).id == job_id


def test_ttr_expiry_returns_the_job_and_counts_a_timeout(queue, client):
    job_id = client.put("x", ttr=5)
    client.reserve(timeout=0)
    advance(queue, 6)
    stats = client.stats_job(job_id)
    assert stats["state"] == "ready" and stats["timeouts"] == 1
    assert client.stats()["job-timeouts"] >= 1


def test_deadline_soon_inside_the_last_second(queue, client):
    client.put("x", ttr=3)
    job = client.reserve(timeout=0)
    advance(queue, 2.5)
    with pytest.raises(greenstalk.DeadlineSoonError):
        client.reserve(timeout=5)
    client.touch(job)
    assert client.stats_job(job.id)["time-left"] >= 2


def test_bury_peek_buried_and_kick(client):
    job_id = client.put("x")
    client.bury(client.reserve(timeout=0), priority=7)
    peeked = client.peek_buried()
    assert peeked.id == job_id
    assert client.stats_job(job_id)["pri"] == 7
    assert client.kick(10) == 1
    assert client.peek_ready().id == job_id
    with pytest.raises(greenstalk.NotFoundError):
        client.peek_buried()


def test_kick_job_and_peek_delayed(client):
    job_id = client.put("x", delay=100)
    assert client.peek_delayed().id == job_id
    client.kick_job(job_id)
    assert client.stats_job(job_id)["state"] == "ready"
    with pytest.raises(greenstalk.NotFoundError):
        client.kick_job(job_id)


def test_peek_by_id_and_reserve_job(client):
    job_id = client.put("payload")
    assert client.peek(job_id).body == "payload"
    job = client.reserve_job(job_id)
    assert job.id == job_id
    with pytest.raises(greenstalk.NotFoundError):
        client.reserve_job(job_id)


def test_binary_bodies_are_returned_verbatim(queue):
    body = bytes(range(256)) + b"\r\n"
    with greenstalk.Client(queue.address(), encoding=None) as c:
        job_id = c.put(body)
        assert c.peek(job_id).body == body
        assert c.reserve(timeout=0).body == body


def test_pause_tube_holds_reserves_until_the_clock_moves(queue, client, tube):
    job_id = client.put("x")
    client.pause_tube(tube, 60)
    assert client.stats_tube(tube)["pause"] == 60
    with pytest.raises(greenstalk.TimedOutError):
        client.reserve(timeout=0)
    advance(queue, 61)
    assert client.reserve(timeout=0).id == job_id
    with pytest.raises(greenstalk.NotFoundError):
        client.pause_tube("nope", 1)


def waiting(client, tube):
    return lambda: client.stats_tube(tube)["current-waiting"] == 1


def test_blocked_reserve_is_answered_by_a_put_from_another_client(queue, client, tube):
    worker = raw_in(queue, tube)
    worker.sendall(b"reserve\r\n")
    harness.wait_until_sync(waiting(client, tube), what="waiting")
    job_id = client.put("wake")
    assert ask(worker, b"", b"wake\r\n") == b"RESERVED %d 4\r\nwake\r\n" % job_id
    worker.close()


def test_reserve_with_timeout_times_out_on_the_clock(queue, client, tube):
    worker = raw_in(queue, tube)
    worker.sendall(b"reserve-with-timeout 100\r\n")
    harness.wait_until_sync(waiting(client, tube), what="waiting")
    advance(queue, 101)
    assert ask(worker, b"") == b"TIMED_OUT\r\n"
    worker.close()


def test_commands_pipelined_behind_a_blocked_reserve_wait_their_turn(queue, client, tube):
    worker = raw_in(queue, tube)
    worker.sendall(b"reserve\r\nlist-tube-used\r\n")
    harness.wait_until_sync(waiting(client, tube), what="waiting")
    job_id = client.put("a")
    assert ask(worker, b"", b"USING default\r\n") == (
        b"RESERVED %d 1\r\na\r\nUSING default\r\n" % job_id
    )
    worker.close()


def test_closed_connection_releases_its_reservations(queue, client, tube):
    job_id = client.put("x")
    with greenstalk.Client(queue.address(), watch=tube) as other:
        other.reserve(timeout=0)
        assert client.stats_job(job_id)["state"] == "reserved"
    harness.wait_until_sync(lambda: client.stats_job(job_id)["state"] == "ready")


def test_stats_figures_are_honest(spawn):
    client = greenstalk.Client(spawn("queue").address())
    client.put("a")
    client.put("b", delay=10)
    client.bury(client.reserve(timeout=0))
    stats = client.stats()
    assert stats["current-jobs-ready"] == 0
    assert stats["current-jobs-delayed"] == 1
    assert stats["current-jobs-buried"] == 1
    assert stats["cmd-put"] == 2 and stats["total-jobs"] == 2
    assert stats["current-connections"] == 1 and stats["current-producers"] == 1
    assert stats["max-job-size"] == 65535
    tube = client.stats_tube("default")
    assert tube["current-jobs-buried"] == 1 and tube["current-using"] == 1
    with pytest.raises(greenstalk.NotFoundError):
        client.stats_tube("missing")
    with pytest.raises(greenstalk.NotFoundError):
        client.stats_job(999)
    client.close()


def test_malformed_and_oversized_input_gets_beanstalkd_errors(queue):
    sock = raw(queue)
    assert ask(sock, b"bogus\r\n") == b"UNKNOWN_COMMAND\r\n"
    assert ask(sock, b"put 1 2\r\n") == b"BAD_FORMAT\r\n"
    assert ask(sock, b"delete -1\r\n") == b"BAD_FORMAT\r\n"
    assert ask(sock, b"use " + b"x" * 300 + b"\r\n") == b"BAD_FORMAT\r\n"
    assert ask(sock, b"put 0 0 1 3\r\nabcde") == b"EXPECTED_CRLF\r\n"
    big = b"y" * 70000
    assert ask(sock, b"put 0 0 1 70000\r\n" + big + b"\r\n") == b"JOB_TOO_BIG\r\n"
    # A long line without CRLF does not hang or grow the server; CRLF ends it.
    sock.sendall(b"z" * 100_000)
    assert ask(sock, b"\r\n") == b"BAD_FORMAT\r\n"
    # ...and the connection still works.
    assert ask(sock, b"put 0 0 1 2\r\nok\r\n").startswith(b"INSERTED ")
    assert ask(sock, b"quit\r\n", b"") == b""
    sock.close()


def test_job_size_flag(spawn):
    queue = spawn("queue", "-z", "10")
    with greenstalk.Client(queue.address()) as c:
        c.put("x" * 10)
        with pytest.raises(greenstalk.JobTooBigError):
            c.put("x" * 11)
        assert c.stats()["max-job-size"] == 10


def test_metrics_count_jobs_by_tube_and_state(spawn):
    queue = spawn("queue")
    client = greenstalk.Client(queue.address(), use="photos", watch="photos")
    client.put("a")
    client.put("b")
    client.delete(client.reserve(timeout=0))
    client.close()
    body = harness.http("GET", queue.url("admin") + "/metrics")[2].decode()
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("scalelab_queue_jobs", (("state", "ready"), ("tube", "photos")))] == 1
    assert samples[("scalelab_queue_puts_total", ())] == 2
    assert samples[("scalelab_queue_reserves_total", ())] == 1
    assert samples[("scalelab_queue_deletes_total", ())] == 1


def test_half_closed_connection_gets_timed_out_for_its_blocked_reserve(queue, client, tube):
    worker = raw_in(queue, tube)
    worker.sendall(b"reserve\r\n")
    harness.wait_until_sync(waiting(client, tube), what="waiting")
    worker.shutdown(socket.SHUT_WR)
    assert worker.recv(100) == b"TIMED_OUT\r\n"
    assert worker.recv(100) == b""  # and the server closes its side
    worker.close()


def test_commands_on_jobs_not_reserved_by_this_client_are_not_found(queue, client, tube):
    job_id = client.put("x")
    job = greenstalk.Job(id=job_id, body="x")
    for call in (client.release, client.bury, client.touch):
        with pytest.raises(greenstalk.NotFoundError):
            call(job)
    with greenstalk.Client(queue.address(), watch=tube) as other:
        other.reserve(timeout=0)
        with pytest.raises(greenstalk.NotFoundError):
            client.delete(job_id)  # reserved by someone else
        other.delete(job_id)


def test_sigusr1_enters_drain_mode_refusing_puts(spawn):
    queue = spawn("queue")
    with greenstalk.Client(queue.address()) as c:
        c.put("before")
        queue.signal(signal.SIGUSR1)
        harness.wait_until_sync(lambda: c.stats()["draining"] == "true", what="drain mode")
        with pytest.raises(greenstalk.DrainingError):
            c.put("after")
        assert c.reserve(timeout=0).body == "before"  # consumers are still served


def test_max_jobs_bounds_memory_with_out_of_memory(spawn):
    queue = spawn("queue", "--max-jobs", "2")
    with greenstalk.Client(queue.address()) as c:
        c.put("a")
        c.put("b")
        with pytest.raises(greenstalk.OutOfMemoryError):
            c.put("c")
        c.delete(c.reserve(timeout=0))
        c.put("c")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_client_that_never_reads_is_throttled_not_buffered(spawn):
    queue = spawn("queue")
    before = rss_bytes(queue.pid)
    flood = socket.create_connection(queue.address(), timeout=2)
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sent = 0
    try:
        while sent < 200_000 * 7:  # 200k stats requests: ~300 MB of replies if buffered
            sent += flood.send(b"stats\r\n" * 1000)
    except TimeoutError:
        pass  # the server stopped reading from us: backpressure reached the client
    with greenstalk.Client(queue.address()) as other:
        assert other.put("still served") > 0
    assert rss_bytes(queue.pid) - before < 64 << 20
    flood.close()


def test_half_closed_producer_still_reads_its_durable_ack(spawn, tmp_path):
    queue = spawn("queue", "-b", str(tmp_path), "-f", "0")
    sock = raw(queue)
    sock.sendall(b"put 0 0 10 2\r\nhi\r\n")
    sock.shutdown(socket.SHUT_WR)
    assert sock.recv(100) == b"INSERTED 1\r\n"
    assert sock.recv(100) == b""
    sock.close()


def test_tubes_are_bounded(spawn):
    queue = spawn("queue", "--max-tubes", "3")
    sock = raw(queue)
    assert ask(sock, b"watch a\r\n") == b"WATCHING 2\r\n"
    assert ask(sock, b"use b\r\n") == b"USING b\r\n"
    assert ask(sock, b"watch c\r\n") == b"OUT_OF_MEMORY\r\n"
    assert ask(sock, b"use c\r\n") == b"OUT_OF_MEMORY\r\n"
    assert ask(sock, b"use a\r\n") == b"USING a\r\n"  # existing tubes are fine
    assert ask(sock, b"use default\r\nuse c\r\n", b"USING c\r\n") == (
        b"USING default\r\nUSING c\r\n"  # b was dropped when nobody used it
    )
    sock.close()


def test_connections_are_bounded(spawn):
    queue = spawn("queue", "--max-connections", "2")
    first, second = raw(queue), raw(queue)
    assert ask(first, b"list-tube-used\r\n") == b"USING default\r\n"
    third = raw(queue)
    with contextlib.suppress(ConnectionResetError):  # a reset is as good as a close
        assert third.recv(100) == b""
    assert ask(second, b"list-tube-used\r\n") == b"USING default\r\n"
    for sock in (first, second, third):
        sock.close()
