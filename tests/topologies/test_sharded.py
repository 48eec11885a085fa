"""The sharded stage as real processes: two store groups behind the shard router, the web
tier behind the balancer pointed at the router as at one store.

Users created through the balancer land on both groups (asked of each group's store
directly: split, none lost, none twice), each is read back through the whole stack, the
router's figures show both groups serving, and a group killed with SIGKILL takes down
only its own users. Small sizes: no replicas, one web server, no cache tier (a cached
user would hide the dead group).
"""

import tomllib

import aiohttp
import orjson
import pyrqlite.dbapi2 as dbapi2
import pytest
from test_claims import start_stage

import harness
from components.shard import config as shard_config
from components.web.store_tier import SEED_BATCH_STATEMENTS
from loadgen.exposition import parse_exposition
from loadgen.tier import tier_figures
from topologies import cli, sharded, stages
from topologies.figures import format_figures, stage_figures
from topologies.launcher import Launcher
from topologies.topology import TopologyError

USERS = 24
JSON = {"Content-Type": "application/json"}


def user(i: int) -> dict:
    return {"firstName": f"First{i}", "lastName": "Sharded",
            "address": {"streetAddress": f"{i} Main St", "city": "Springfield",
                        "state": "IL", "postalCode": "62701"},
            "phoneNumbers": []}  # fmt: skip


def start(tmp_path_factory, **options) -> Launcher:
    return start_stage(tmp_path_factory, "sharded", replicas=0, web=1, caches=0, **options)


@pytest.fixture
def stage(tmp_path_factory):
    launcher = start(tmp_path_factory, seed_users=0)
    yield launcher
    launcher.close()


def group_ids(launcher: Launcher, group: str) -> list[int]:
    """The user ids a group's primary holds, asked of that store directly."""
    host, _, port = launcher.address(f"store-{group}-1").rpartition(":")
    conn = dbapi2.connect(host=host, port=int(port))
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT id FROM users ORDER BY id")
        return [row[0] for row in cursor.fetchall()]
    finally:
        conn.close()


def router_metrics(launcher: Launcher):
    status, _, body = harness.http("GET", launcher.url("router", "admin") + "/metrics")
    assert status == 200
    return parse_exposition(body.decode())


async def test_users_are_split_over_the_groups_none_lost_none_twice(stage):
    before = router_metrics(stage)
    created: dict[int, str] = {}
    async with aiohttp.ClientSession(stage.entry_url) as http:
        for i in range(USERS):
            async with http.post("/users", json=user(i)) as response:
                assert response.status == 201, await response.text()
                created[(await response.json())["id"]] = f"First{i}"
        for user_id, first in created.items():
            async with http.get(f"/users/{user_id}") as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["firstName"] == first
    g1, g2 = group_ids(stage, "g1"), group_ids(stage, "g2")
    assert g1 and g2, (g1, g2)  # both groups took writes
    assert not set(g1) & set(g2)  # none on two groups
    assert sorted(g1 + g2) == sorted(created)  # none lost, none invented
    assert min(created) > 10**15  # Snowflake ids from the router, not a group's rowid

    tier = {"router": tier_figures(before, router_metrics(stage), 1.0)}
    figures = stage_figures({"tier": tier})["shards"]
    assert set(figures["queries_per_s"]) == {"g1", "g2"}
    assert all(v > 0 for v in figures["queries_per_s"].values()), figures
    assert figures["refused"] == 0 and figures["group_errors"] == {}
    assert any(line.startswith("  shard groups: statements/s g1 ")
               for line in format_figures(stage_figures({"tier": tier})))  # fmt: skip


async def test_a_dead_group_takes_down_only_its_own_users(tmp_path_factory):
    # Two seeding batches: users 1..500 on g1, 501..1000 on g2 (whole batches per group).
    launcher = start(tmp_path_factory, seed_users=SEED_BATCH_STATEMENTS + 10)
    try:
        on_g1, on_g2 = 7, SEED_BATCH_STATEMENTS + 3
        assert on_g1 in group_ids(launcher, "g1") and on_g2 in group_ids(launcher, "g2")
        async with aiohttp.ClientSession(launcher.entry_url) as http:
            for user_id in (on_g1, on_g2):
                async with http.get(f"/users/{user_id}") as response:
                    assert response.status == 200
            launcher.kill("store-g2-1")

            async def status(user_id: int) -> int:
                async with http.get(f"/users/{user_id}") as response:
                    return response.status

            # g2's users get the web tier's 503 (database unavailable), g1's still 200.
            await harness.wait_until(lambda: _is(status(on_g2), 503), what="g2's user 503")
            assert await status(on_g1) == 200
            assert await status(on_g2) == 503
    finally:
        launcher.close()


async def _is(answer, expected: int) -> bool:
    return await answer == expected


def test_seeded_ids_are_placed_in_whole_batches_and_the_file_is_the_routers_own():
    batch = SEED_BATCH_STATEMENTS
    assert sharded.seed_ranges(0, ["g1", "g2"]) == []
    assert sharded.seed_ranges(1, ["g1", "g2"]) == [(1, 1 + batch, "g1")]
    assert sharded.seed_ranges(2 * batch, ["g1", "g2", "g3"]) == [
        (1, 1 + batch, "g1"), (1 + batch, 1 + 2 * batch, "g2")]  # fmt: skip
    assert sharded.seed_ranges(3 * batch, ["g1", "g2"]) == [
        (1, 1 + 2 * batch, "g1"), (1 + 2 * batch, 1 + 3 * batch, "g2")]  # fmt: skip
    groups = [("g1", ["127.0.0.1:4001"], ["127.0.0.1:14001"]),
              ("g2", ["127.0.0.1:4011", "127.0.0.1:4012"], ["127.0.0.1:1", "127.0.0.1:2"])]  # fmt: skip
    config = shard_config.parse(tomllib.loads(sharded.shards_toml(groups, 2 * batch)))
    assert config.groups["g2"].nodes == ("127.0.0.1:4011", "127.0.0.1:4012")
    assert config.groups["g2"].admin == ("127.0.0.1:1", "127.0.0.1:2")
    assert config.tables == {"users": "id"} and config.ids == {"users": "id"}
    placed = [config.routing.group_for(k) for k in (1, batch, batch + 1, 2 * batch)]
    assert placed == ["g1", "g1", "g2", "g2"]


@pytest.mark.parametrize("text", ["g1", "g1=", "=127.0.0.1:1@127.0.0.1:2",
                                  "g1=127.0.0.1:1", "g1=127.0.0.1:1@"])  # fmt: skip
def test_a_malformed_group_flag_is_refused(text):
    with pytest.raises(ValueError, match="--group must be"):
        sharded.parse_group(text)


def test_the_stage_declares_a_group_per_shard_each_watched_when_it_has_replicas():
    module = stages.load("sharded")
    args = stages.default_options(module)
    vars(args).update(shards=3, queue=True, edge=True)
    names = module.topology(args).names
    for g in ("g1", "g2", "g3"):
        assert {f"store-{g}-1", f"store-{g}-2", f"failover-{g}"} <= set(names)
    assert names.index("router") < names.index("web-1") < names.index("lb")
    assert {"queue", "autoscaler", "edge", "cache-1"} <= set(names)
    args.shards = sharded.MAX_SHARDS + 1
    with pytest.raises(TopologyError, match="at most"):
        module.topology(args)


def test_the_stage_is_catalogued_last(capsys):
    assert list(stages.STAGES)[-1] == "sharded"
    assert cli.main(["stages"]) == 0
    assert "Stage 9 (figures 20-23)" in capsys.readouterr().out


def router_execute(launcher: Launcher, statements: list, query: str = "") -> list[dict]:
    status, _, body = harness.http("POST", launcher.url("router") + "/db/execute" + query,
                                   orjson.dumps(statements), JSON)  # fmt: skip
    assert status == 200, body
    return orjson.loads(body)["results"]


def test_the_router_takes_what_the_web_tier_sends_and_still_refuses_the_rest(stage):
    # Seen by the store client as one writable node (it looks for the primary so).
    status, _, body = harness.http("GET", stage.url("router") + "/status")
    node = orjson.loads(body)["scalelab"]
    assert node["writable"] is True and node["api_addr"] == stage.address("router")
    # Several writes without ?transaction: each runs on its own groups, as rqlite runs them.
    rows = [["INSERT INTO users (id, first_name, last_name, street_address, city, state, "
             "postal_code, phone_numbers) VALUES (?, 'a', 'b', 'c', 'd', 'e', 'f', '[]')", i]
            for i in range(1, 41)]  # fmt: skip
    results = router_execute(stage, rows)
    assert [r.get("rows_affected") for r in results] == [1] * 40
    assert sorted(group_ids(stage, "g1") + group_ids(stage, "g2")) == list(range(1, 41))
    assert group_ids(stage, "g1") and group_ids(stage, "g2")
    # The same as one transaction spans both groups: still refused, and nothing ran.
    results = router_execute(stage, [[sql, i + 100] for sql, i in rows], "?transaction")
    assert "cross-shard transaction refused" in results[0]["error"]
    assert max(group_ids(stage, "g1") + group_ids(stage, "g2")) == 40
    # A read-your-writes position from another group's log is answered by the primary,
    # not held until this group's log reaches a number it may never reach.
    status, _, body = harness.http(
        "GET", stage.url("router") + "/db/query?level=none&min_lsn=999999999&q="
        + "SELECT%20count(*)%20FROM%20users%20WHERE%20id%20%3D%203")  # fmt: skip
    assert status == 200 and orjson.loads(body)["results"][0]["values"] == [[1]]
