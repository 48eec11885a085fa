"""run_load against a real aiohttp server: counts, stalls, errors, tier figures, --procs."""

import io
import json
import socket
import time

import pytest

from loadgen import LoadError, run_load
from loadgen.profile import parse_profile

GET_ONLY = parse_profile(
    """
    duration_s = 1.0
    [[requests]]
    name = "root"
    path = "/"
    """,
    "get_only",
)

USERS = parse_profile(
    """
    duration_s = 1.0
    [keys]
    distribution = "zipf"
    n = 100
    [[requests]]
    name = "get_user"
    path = "/users/{key}"
    weight = 9
    [[requests]]
    name = "put_user"
    method = "PUT"
    path = "/users/{key}"
    [requests.body]
    name = "u{key}"
    """,
    "users",
)


def quiet(**kwargs):
    return {"progress": False, "out": io.StringIO(), **kwargs}


def test_closed_loop_request_count_matches_the_servers_counter(server):
    report = run_load(server.url, GET_ONLY, users=4, **quiet())
    assert report["requests"] > 0 and report["errors"]["total"] == 0
    assert report["requests"] == server.requests
    assert report["status"] == {"200": server.requests}
    assert report["latency_ms"]["count"] == report["requests"]


def test_warmup_requests_are_counted_apart(server):
    before = time.time()
    started = []
    report = run_load(server.url, GET_ONLY, users=2, warmup_s=0.5, on_start=started.append,
                      **quiet())  # fmt: skip
    # t = 0 of the timeline on the wall clock: just after the call began, and told to
    # the caller (a scenario's clock) before any request.
    assert before < report["timeline_started_at"] < before + 5
    assert started == [pytest.approx(report["timeline_started_at"], abs=0.001)]
    assert report["warmup"]["requests"] > 0
    assert report["requests"] + report["warmup"]["requests"] == server.requests
    assert 0.4 < report["window_s"] < 1.0
    (row,) = report["timeline"]  # a 1 s run: one row, its first half warm-up
    assert row["warmup"] and row["t"] == 0
    assert row["requests"] == server.requests


def test_open_loop_shows_a_one_second_stall_in_p99_and_max(server):
    # 200 req/s for 2 s; the server's whole event loop blocks for 1 s on request 100.
    # Every request due during the stall waits for it: ~1/2 of all requests are late by
    # up to 1 s, so p99 and max must show it (a closed loop would record one per user).
    server.stall_after, server.stall_s = 100, 1.0
    report = run_load(server.url, GET_ONLY, rate=200, duration_s=2, **quiet())
    assert server.stalled
    assert report["profile"]["mode"] == "open"
    assert report["errors"]["total"] == 0
    assert report["requests"] == 400 == server.requests
    latency = report["latency_ms"]
    assert latency["max"] >= 900
    assert latency["p99"] >= 800
    assert latency["p90"] >= 100  # not one slow request: a whole second of them
    # Second by second: 200 due in each; the stall (request 100 onwards) is all in second 0's
    # second half and in second 1, whose requests waited for it; no error anywhere.
    timeline = report["timeline"]
    assert report["timeline_step_s"] == 1
    assert [row["t"] for row in timeline] == [0, 1]
    assert [row["requests"] for row in timeline] == [200, 200]
    assert all(row["errors"] == {} and not row["warmup"] for row in timeline)
    assert timeline[0]["p99_ms"] >= 800
    assert max(row["max_ms"] for row in timeline) == latency["max"]


def test_open_loop_bounds_requests_in_flight_and_counts_the_rest_as_dropped(server, tmp_path):
    profile = tmp_path / "bounded.toml"
    profile.write_text(
        'rate = 200\nduration_s = 1.5\nmax_outstanding = 10\n[[requests]]\npath = "/"\n'
    )
    server.stall_after, server.stall_s = 20, 1.0
    report = run_load(server.url, profile, **quiet())
    dropped = report["errors"]["by_kind"].get("dropped", 0)
    assert dropped > 100  # ~1 s at 200/s fell due while 10 were stuck
    assert report["requests"] + dropped == 300
    assert report["requests"] == server.requests


def test_think_time_paces_each_user(server):
    report = run_load(server.url, GET_ONLY, users=2, think_ms=100, duration_s=1, **quiet())
    # Each user: request, then 100 ms of thinking; at most ~10 rounds per second each.
    assert 2 <= report["requests"] <= 22
    assert report["profile"]["think_ms"] == 100


def test_server_errors_are_counted_by_kind(server):
    server.status = 503
    report = run_load(server.url, GET_ONLY, users=2, duration_s=0.5, **quiet())
    assert report["errors"]["by_kind"] == {"http_5xx": report["requests"]}
    assert report["status"] == {"503": report["requests"]}
    (row,) = report["timeline"]
    assert row["errors"] == {"http_5xx": row["requests"]} and row["answers"] == row["requests"]


def test_timeouts_are_counted_as_timeouts(server, tmp_path):
    profile = tmp_path / "impatient.toml"
    profile.write_text('users = 2\nduration_s = 1\ntimeout_s = 0.3\n[[requests]]\npath = "/"\n')
    server.stall_after, server.stall_s = 10, 0.8
    report = run_load(server.url, profile, **quiet())
    assert report["errors"]["by_kind"].get("timeout", 0) >= 1


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: nobody listens there


def test_refused_connections_are_connect_errors():
    port = closed_port()
    report = run_load(f"http://127.0.0.1:{port}", GET_ONLY, rate=50, duration_s=0.5, **quiet())
    assert report["requests"] == 0
    assert report["errors"]["by_kind"] == {"connect": 25}


def test_metrics_are_scraped_into_deltas_and_a_hit_ratio(server):
    broken = f"http://127.0.0.1:{closed_port()}/metrics"
    metrics = {"test": server.url + "/metrics", "broken": broken}
    server.hits = 1000  # before the run: must not count in the deltas
    report = run_load(server.url, USERS, users=4, metrics=metrics, **quiet())
    tier = report["tier"]["test"]
    counters = {c["name"]: c for c in tier["counters"]}
    # The first scrape is before the first request, the second after the last answer.
    assert report["errors"]["total"] == 0, report["errors"]
    assert counters["test_requests_total"]["delta"] == report["requests"]
    assert counters["test_cache_hits_total"]["delta"] == server.hits - 1000
    ratio = (server.hits - 1000) / (server.hits - 1000 + server.misses)
    assert tier["derived"]["hit_ratio"]["test_cache"] == pytest.approx(ratio, abs=1e-4)
    assert tier["derived"]["db_queries_per_s"] == pytest.approx(
        server.db_queries / tier["elapsed_s"], rel=0.01
    )
    assert "Connect" in report["tier"]["broken"]["error"]  # a figure lost, not the run


def test_json_report_and_text_report(server, tmp_path):
    out = io.StringIO()
    path = tmp_path / "report.json"
    report = run_load(
        server.url, USERS, users=2, duration_s=1.2, json_path=path, out=out, metrics={
            "test": server.url + "/metrics"}
    )  # fmt: skip
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))
    text = out.getvalue()
    assert "req/s" in text and "p99" in text  # the progress line
    assert "get_user" in text and "put_user" in text and "hit ratio" in text
    # The timeline, one line per second (1.2 s: seconds 0 and 1).
    rows = [line.split()[:2] for line in text.splitlines() if line.startswith("  ")]
    assert [str(report["timeline"][1]["t"]), str(report["timeline"][1]["requests"])] in rows


def test_two_processes_merge_into_one_report(server):
    report = run_load(server.url, USERS, users=4, procs=2, **quiet())
    assert report["procs"] == 2
    assert report["requests"] == server.requests > 0
    assert sum(k["requests"] for k in report["by_kind"].values()) == report["requests"]
    assert report["histogram_us"]["count"] == report["requests"]
    # Both workers' seconds add up into one timeline.
    assert sum(row["requests"] for row in report["timeline"]) == server.requests


def test_bad_targets_are_refused():
    for url in ("ftp://x", "127.0.0.1:80", "http://h/?q=1"):
        with pytest.raises(LoadError):
            run_load(url, GET_ONLY, **quiet())


def test_more_processes_than_users_is_refused(server):
    with pytest.raises(LoadError, match="split"):
        run_load(server.url, GET_ONLY, users=1, procs=2, **quiet())


def test_open_loop_rate_is_split_exactly_over_two_processes(server):
    report = run_load(server.url, GET_ONLY, rate=100, duration_s=1, procs=2, **quiet())
    # 100 due times in one second, interleaved over the two workers: all sent, none twice.
    assert report["requests"] == 100 == server.requests
    assert report["errors"]["total"] == 0
    assert [row["requests"] for row in report["timeline"]] == [100]


class DroppingServer:
    """Answers the first request on each connection, then closes on the second, silently.

    The classic race of keep-alive: the client reuses a connection the server has just
    given up on. aiohttp would quietly re-send such a request; a load generator must
    count it as a ``disconnect`` instead, or the server sees requests the report lacks.
    """

    def __init__(self) -> None:
        self.requests = 0

    def start(self) -> str:
        import asyncio
        import threading

        server = self
        ready = threading.Event()

        class Conn(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport, self.seen, self.buffer = transport, 0, b""

            def data_received(self, data):
                self.buffer += data
                while b"\r\n\r\n" in self.buffer:
                    _, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
                    server.requests += 1
                    self.seen += 1
                    if self.seen == 1:
                        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    else:
                        self.transport.close()
                        return

        def run():
            self.loop = asyncio.new_event_loop()
            srv = self.loop.run_until_complete(self.loop.create_server(Conn, "127.0.0.1", 0))
            self.port = srv.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_a_dropped_keepalive_request_is_a_disconnect_not_a_silent_retry():
    server = DroppingServer()
    url = server.start()
    try:
        report = run_load(url, GET_ONLY, users=1, duration_s=0.5, **quiet())
    finally:
        server.stop()
    disconnects = report["errors"]["by_kind"].get("disconnect", 0)
    assert disconnects > 0
    assert report["requests"] + disconnects == server.requests


def test_the_callers_sigint_handler_is_restored(server):
    import signal

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, mine)
    try:
        run_load(server.url, GET_ONLY, users=1, duration_s=0.3, **quiet())
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)
