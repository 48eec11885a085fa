"""Stages 2-5 as real processes: each starts, serves, and survives its chapter's fault.

One launcher per test (a stage is started once and the test then breaks it), so the
tests stay independent; each uses few seed users and short health intervals so a test
takes seconds. The fault claims are checked with generous deadlines, never timings.
"""

import json
import time

import orjson
import pytest

import harness
from topologies import stages
from topologies.launcher import Launcher
from topologies.scenario import Event, Scenario, ScenarioPlayer

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def stage(tmp_path):
    made = []

    def _stage(name, **options):
        module = stages.load(name)
        args = stages.default_options(module)
        vars(args).update({"seed_users": 50, **options})
        launcher = Launcher(module.topology(args), tmp_path / name)
        made.append(launcher)
        launcher.start()
        return launcher

    yield _stage
    for launcher in made:
        launcher.close()


def get(url):
    return harness.http("GET", url, timeout_s=10)


def metric(launcher, name, component, series):
    text = get(launcher.url(component, "admin") + "/metrics")[2].decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(series))  # fmt: skip


def put(url, first):
    doc = {"firstName": first, "lastName": "L", "phoneNumbers": [],
           "address": {"streetAddress": "s", "city": "c", "state": "st", "postalCode": "1"}}  # fmt: skip
    return harness.http("PUT", url, orjson.dumps(doc), JSON, timeout_s=10)


def test_separate_db_serves_from_the_store_which_is_its_single_point_of_failure(stage):
    launcher = stage("separate_db")
    entry = launcher.entry_url
    assert [c.name for c in launcher.topology.components] == ["store-1", "web-1"]
    assert get(entry + "/users/3")[0] == 200
    assert put(entry + "/users/4", "Stored")[0] == 200
    assert json.loads(get(entry + "/users/4")[2])["firstName"] == "Stored"
    assert metric(launcher, "", "store-1", "scalelab_store_queries_total") >= 1
    launcher.kill("store-1")
    assert put(entry + "/users/4", "Lost")[0] == 503  # no database, no writes
    assert get(entry + "/users/3")[0] == 200  # a cached read still works


def test_load_balanced_survives_a_dead_web_server_and_takes_an_added_one(stage):
    launcher = stage("load_balanced", web=2)
    entry = launcher.entry_url
    for uid in range(1, 21):
        assert get(f"{entry}/users/{uid}")[0] == 200
    for web in ("web-1", "web-2"):
        assert metric(launcher, "", web, 'scalelab_web_requests_total{route="/users/{id}"') >= 5
    launcher.kill("web-1")
    # Connections refused by the dead server are retried on web-2: no GET fails.
    assert [get(f"{entry}/users/{uid}")[0] for uid in range(1, 41)] == [200] * 40
    player = ScenarioPlayer(
        launcher, Scenario("add", "", (Event(0, "add", "web-3", "web-1", "lb"),))
    )
    player.start()
    player.join(30)
    assert player.records[0]["ok"], player.records

    def web3_serves():
        for uid in range(1, 6):
            get(f"{entry}/users/{uid}")
        return metric(launcher, "", "web-3", "scalelab_web_requests_total") > 0

    harness.wait_until_sync(web3_serves, 10, what="web-3 takes traffic")


def test_replicated_promotes_a_replica_after_the_primary_is_killed(stage):
    launcher = stage("replicated", web=1)
    entry = launcher.entry_url
    assert put(entry + "/users/5", "Before")[0] == 200
    killed_at = time.monotonic()
    launcher.kill("store-1")

    def promoted():
        for name in ("store-2", "store-3"):
            status = json.loads(get(launcher.url(name, "admin") + "/admin/status")[2])
            if status["writable"]:
                return name
        return None

    # The chapter's bound, as the deadline of the wait: a promotion within 5 s of the kill.
    new_primary = harness.wait_until_sync(
        promoted, 5 - (time.monotonic() - killed_at), what="a promotion within 5 s"
    )
    harness.wait_until_sync(lambda: put(entry + "/users/5", "After")[0] == 200, 10,
                            what="writes through the new primary")  # fmt: skip
    assert json.loads(get(entry + "/users/5")[2])["firstName"] == "After"
    other = "store-3" if new_primary == "store-2" else "store-2"
    status = json.loads(get(launcher.url(other, "admin") + "/admin/status")[2])
    assert status["primary"] == launcher.address(new_primary) and status["epoch"] == 2


def test_cached_stage_shares_its_cache_and_survives_a_dead_cache_node(stage):
    launcher = stage("cached", web=1, replicas=0, edge=True)
    entry = launcher.entry_url
    assert launcher.topology.entry == "edge"
    statics = [harness.http("GET", entry + "/static/app.css")[1].get("X-Cache") for _ in range(3)]
    assert statics[-1] == "HIT", statics  # the edge serves the asset from its store
    code, headers, _ = get(entry + "/users/2")
    assert code == 200 and headers.get("X-Cache") != "HIT"  # private: passed through
    for _ in range(2):
        for uid in range(1, 31):
            assert get(f"{entry}/users/{uid}")[0] == 200
    hits = sum(metric(launcher, "", f"cache-{i}", "scalelab_cache_get_hits_total")
               for i in (1, 2, 3))  # fmt: skip
    assert hits >= 30  # the second pass was served by the cache tier
    launcher.kill("cache-1")
    assert [get(f"{entry}/users/{uid}")[0] for uid in range(1, 31)] == [200] * 30
    assert metric(launcher, "", "web-1", "scalelab_web_cache_errors_total") >= 1
