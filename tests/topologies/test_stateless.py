"""The stateless stage as real processes: a login survives the web server that took it.

Small sizes (no store replicas, two cache nodes, three web servers, ten users) keep the
launch to a few seconds; every claim is a status code, waited for with a deadline.
"""

import asyncio
import json

import aiohttp
import pytest

import harness
from topologies import cli, journey, stages
from topologies.launcher import Launcher
from topologies.topology import TopologyError

JSON = {"Content-Type": "application/json"}
COOKIE = "scalelab_session"


def small_options(**overrides):
    args = stages.default_options(stages.load("stateless"))
    vars(args).update({"seed_users": 10, "replicas": 0, "sync_replicas": 0, "caches": 2, "web": 3,
                       **overrides})  # fmt: skip
    return args


@pytest.fixture
def stateless(tmp_path):
    launcher = Launcher(stages.load("stateless").topology(small_options()), tmp_path / "run")
    try:
        launcher.start()
        yield launcher
    finally:
        launcher.close()


def login(entry: str, user_id: int) -> str:
    code, headers, body = harness.http("POST", entry + "/login", b'{"id": %d}' % user_id, JSON)
    assert code == 200, body
    return headers["Set-Cookie"].partition(f"{COOKIE}=")[2].partition(";")[0]


def me(url: str, token: str) -> int:
    return harness.http("GET", url + "/me", headers={"Cookie": f"{COOKIE}={token}"})[0]


def test_the_stage_is_catalogued_after_cached_and_stays_out_of_the_journey(capsys):
    names = list(stages.STAGES)
    assert names.index("stateless") == names.index("cached") + 1
    assert "stateless" not in journey.DEFAULT_STAGES
    assert cli.main(["stages"]) == 0
    assert "Stage 6 (figures 12-14)" in capsys.readouterr().out


def test_every_web_server_keeps_its_sessions_in_the_cache_tier():
    topology = stages.load("stateless").topology(small_options())
    webs = [c for c in topology.components if c.component == "web"]
    assert len(webs) == 3
    assert all(c.argv[-2:] == ("--sessions", "cache") for c in webs)
    own = stages.load("stateless").topology(small_options(session_nodes=2))
    names = [c.name for c in own.components]
    assert names.index("session-2") < names.index("web-1")
    assert own.components[names.index("web-1")].argv[-1] == "memcached:{session-1},{session-2}"
    with pytest.raises(TopologyError, match="cache tier"):
        stages.load("stateless").topology(small_options(caches=0))


def test_a_login_survives_a_killed_web_server_and_any_server_logs_out(stateless):
    entry = stateless.entry_url
    tokens = {uid: login(entry, uid) for uid in range(1, 7)}
    # Every web server knows every session: ask each one directly.
    for web in ("web-1", "web-2", "web-3"):
        assert [me(stateless.url(web), t) for t in tokens.values()] == [200] * 6
    stateless.kill("web-1")  # kill -9: whatever it held in memory is gone
    # The balancer retries what web-1 refused on the survivors: nobody is logged out.
    assert [me(entry, t) for t in tokens.values() for _ in range(3)] == [200] * 18
    code = harness.http("POST", entry + "/logout", headers={"Cookie": f"{COOKIE}={tokens[1]}"})[0]
    assert code == 204
    assert me(stateless.url("web-2"), tokens[1]) == 401
    assert me(stateless.url("web-3"), tokens[1]) == 401
    assert me(stateless.url("web-3"), tokens[2]) == 200


def test_autoscaled_the_web_tier_grows_under_a_burst_and_a_new_server_knows_old_logins(tmp_path):
    options = small_options(web=1, max_web=2, inflight_per_server=3, cooldown_s=60,
                            scale_interval_s=0.1, service_time_ms=300, max_concurrency=32)  # fmt: skip
    topology = stages.load("stateless").topology(options)
    assert not [c for c in topology.components if c.component == "web"]  # the autoscaler's now
    launcher = Launcher(topology, tmp_path / "run")
    try:
        launcher.start()
        entry, admin = launcher.entry_url, launcher.url("lb", "admin")
        token = login(entry, 3)  # on the only server there is
        [first] = backends(admin)

        async def burst():
            stop = asyncio.Event()

            async def user(session):
                while not stop.is_set():
                    async with session.get(entry + "/users/1") as response:
                        assert response.status == 200

            async with aiohttp.ClientSession() as session:
                users = [asyncio.create_task(user(session)) for _ in range(9)]
                try:
                    return await harness.wait_until(
                        lambda: [b for b in backends(admin)
                                 if b["address"] != first["address"] and b["requests"] > 0],
                        what="an autoscaled web server joins the balancer and serves")  # fmt: skip
                finally:
                    stop.set()
                    await asyncio.gather(*users)

        [added] = asyncio.run(burst())
        # The new server never saw the login, and serves it: the session is in the cache tier.
        assert me(f"http://{added['address']}", token) == 200
    finally:
        launcher.close()


def backends(admin_url: str) -> list[dict]:
    code, _, body = harness.http("GET", admin_url + "/admin/backends")
    assert code == 200
    return json.loads(body)["backends"]
