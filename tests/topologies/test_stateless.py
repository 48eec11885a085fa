"""The stateless stage as real processes: a login survives the web server that took it.

Small sizes (no store replicas, two cache nodes, three web servers, ten users) keep the
launch to a few seconds; every claim is a status code, waited for with a deadline.
"""

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
