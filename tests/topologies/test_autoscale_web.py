"""The autoscaler sizing a web tier behind a real balancer (``autoscale.py --lb``).

A balancer with no backends of its own, an autoscaler that starts web servers and
registers them through the balancer's admin API: a burst of slow requests (emulated
service time) raises the requests in flight, a second server is started, joins the
balancer and takes requests; once the burst is over the pool shrinks back, each
server drained at the balancer before it is stopped. Waited for, never timed.
"""

import asyncio
import json
import subprocess
import sys

import aiohttp

import harness

BURST = 12


def status(scaler) -> dict:
    code, _, body = harness.http("GET", scaler.url() + "/status")
    assert code == 200
    return json.loads(body)


def backends(lb) -> list[dict]:
    code, _, body = harness.http("GET", lb.url("admin") + "/admin/backends")
    assert code == 200
    return json.loads(body)["backends"]


async def test_a_burst_adds_a_web_server_the_lb_routes_to_and_the_pool_shrinks_back(
    spawn, tmp_path
):
    lb = spawn("lb", "--health-interval", "0.5")
    assert backends(lb) == []
    scaler = spawn("autoscaler", "--lb", lb.listen["admin"], "--min-workers", "1",
                   "--max-workers", "2", "--inflight-per-server", "3", "--cooldown-s", "1",
                   "--interval-s", "0.1", "--poll-timeout-s", "1", "--log-dir", str(tmp_path),
                   "--worker-args", "--seed-users 3 --service-time-ms 300 --max-concurrency 32",
                   module="topologies.autoscale", log_path=tmp_path / "autoscaler.log")  # fmt: skip
    [first] = status(scaler)["workers"]
    assert [b["address"] for b in backends(lb)] == [first["listen"]["main"]]  # joined before ready

    codes: list[int] = []
    stop = asyncio.Event()

    async def user(session):
        while not stop.is_set():
            async with session.get(lb.url() + "/users/1") as response:
                codes.append(response.status)

    async with aiohttp.ClientSession() as session:
        users = [asyncio.create_task(user(session)) for _ in range(BURST)]
        try:
            second = await harness.wait_until(
                lambda: [b for b in backends(lb)
                         if b["address"] != first["listen"]["main"] and b["requests"] > 0],
                what="a second web server joins the balancer and serves requests")  # fmt: skip
        finally:
            stop.set()
            await asyncio.gather(*users)
    doc = status(scaler)
    assert [w["listen"]["main"] for w in doc["workers"]][1] == second[0]["address"]
    assert [e["direction"] for e in doc["events"] if e["event"] == "scaled"][0] == "up"
    assert set(codes) == {200}, codes  # nobody was refused while the tier grew

    # Idle again: after the cool-down one server is drained at the balancer and stopped.
    await harness.wait_until(lambda: len(backends(lb)) == 1 and len(status(scaler)["workers"]) == 1,
                             what="the pool shrinks back to one server")  # fmt: skip
    assert backends(lb)[0]["address"] == first["listen"]["main"]
    log = (tmp_path / "autoscaler.log").read_text()
    assert '"op":"retire"' in log and '"op":"join"' in log


def test_the_autoscaler_needs_a_queue_or_a_balancer_not_both(spawn, tmp_path):
    for flags in ([], ["--queue", "127.0.0.1:1", "--lb", "127.0.0.1:2"]):
        result = subprocess.run([sys.executable, "-m", "topologies.autoscale", *flags],
                                capture_output=True, text=True, timeout=harness.DEADLINE_S)  # fmt: skip
        assert result.returncode == 2 and "give one of --queue" in result.stderr
