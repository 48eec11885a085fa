"""The web tier on the store tier and the cache tier: real store and cache processes.

One module-scoped deployment (a store primary and a replica, two cache nodes, two web
servers sharing both) serves the tests that only read and write their own users; tests
that kill something start their own processes.
"""

import orjson
import pytest

import harness
from components.store.client import StoreClient
from components.web.consistency import COOKIE_NAME, LAST_WRITE_LSN, parse_position
from components.web.seed import seed_user
from components.web.storage import DatabaseUnavailable, parse_db_spec
from components.web.store_tier import StoreTierUserStore

SEED = 60
JSON = {"Content-Type": "application/json"}


def user(first: str) -> dict:
    return {**seed_user(1), "firstName": first}


def metric(proc, name: str) -> float:
    total = 0.0
    for line in harness.http("GET", proc.url("admin") + "/metrics")[2].decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def status(store) -> dict:
    return orjson.loads(harness.http("GET", store.url("main") + "/status")[2])["scalelab"]


@pytest.fixture(scope="module")
def tiers(tmp_path_factory):
    data = tmp_path_factory.mktemp("tiers")
    started = []

    def start(component, *flags, name):
        proc = harness.start(component, *flags, name=name)
        started.append(proc)
        return proc

    try:
        primary = start("store", "--data-dir", str(data / "p"), name="store-1")
        replica = start("store", "--data-dir", str(data / "r"), "--join",
                        primary.listen["main"], name="store-2")  # fmt: skip
        caches = [start("cache", name=f"cache-{i}") for i in (1, 2)]
        db = f"store:{primary.listen['main']},{replica.listen['main']}"
        cache = "memcached:" + ",".join(c.listen["main"] for c in caches)
        webs = [start("web", "--db", db, "--cache", cache, "--seed-users", str(SEED),
                      name=f"web-{i}") for i in (1, 2)]  # fmt: skip
        yield {"primary": primary, "replica": replica, "caches": caches, "webs": webs}
    finally:
        for proc in reversed(started):
            proc.stop(timeout_s=5)


def test_seeded_users_are_served_from_the_store(tiers):
    web = tiers["webs"][0]
    code, headers, body = harness.http("GET", web.url("main") + "/users/7")
    assert code == 200
    assert headers["Cache-Control"] == "private, no-cache"  # never stored by an edge
    assert orjson.loads(body) == {"id": 7, **seed_user(7)}
    assert harness.http("GET", web.url("main") + f"/users/{SEED + 1000}")[0] == 404


def test_a_write_through_one_server_is_seen_through_the_other(tiers):
    web1, web2 = tiers["webs"]
    for _ in range(2):  # the second read is a hit in the shared cache
        assert harness.http("GET", web2.url("main") + "/users/11")[0] == 200
    hits = metric(web2, "scalelab_web_cache_hits_total")
    assert hits >= 1
    code, headers, _ = harness.http("PUT", web1.url("main") + "/users/11",
                                    orjson.dumps(user("Changed")), JSON)  # fmt: skip
    assert code == 200
    cookie = headers["Set-Cookie"].split(";")[0]
    code, _, body = harness.http("GET", web2.url("main") + "/users/11", headers={"Cookie": cookie})
    assert code == 200 and orjson.loads(body)["firstName"] == "Changed"  # delete on write


def test_write_sets_the_lsn_cookie_and_reads_are_spread_over_replicas(tiers):
    web, replica = tiers["webs"][0], tiers["replica"]
    code, headers, body = harness.http("POST", web.url("main") + "/users",
                                       orjson.dumps(user("New")), JSON)  # fmt: skip
    assert code == 201
    new_id = orjson.loads(body)["id"]
    name, _, value = headers["Set-Cookie"].split(";")[0].partition("=")
    assert name == COOKIE_NAME and 0 < int(value) <= status(tiers["primary"])["lsn"]
    before = metric(replica, "scalelab_store_queries_total")
    for uid in range(20, 30):  # cache misses: these users were never read
        assert harness.http("GET", web.url("main") + f"/users/{uid}")[0] == 200
    assert metric(replica, "scalelab_store_queries_total") >= before + 3
    code, _, body = harness.http("GET", web.url("main") + f"/users/{new_id}",
                                 headers={"Cookie": f"{COOKIE_NAME}={value}"})  # fmt: skip
    assert code == 200 and orjson.loads(body)["firstName"] == "New"
    assert harness.http("DELETE", web.url("main") + f"/users/{new_id}")[0] == 204
    assert harness.http("DELETE", web.url("main") + f"/users/{new_id}")[0] == 404


def test_a_dead_cache_node_costs_misses_not_errors(tiers, spawn):
    store = tiers["primary"]
    caches = [spawn("cache", name=f"c{i}") for i in range(3)]
    cache = "memcached:" + ",".join(c.listen["main"] for c in caches)
    web = spawn("web", "--db", f"store:{store.listen['main']}", "--cache", cache,
                "--seed-users", "90", name="w")  # fmt: skip
    for uid in range(1, 91):
        assert harness.http("GET", web.url("main") + f"/users/{uid}")[0] == 200
    caches[0].kill()
    for uid in range(1, 91):
        assert harness.http("GET", web.url("main") + f"/users/{uid}")[0] == 200
    assert metric(web, "scalelab_web_cache_errors_total") >= 1
    assert metric(web, "scalelab_web_cache_nodes_down") == 1
    hits = metric(web, "scalelab_web_cache_hits_total")
    # the two live nodes kept their share (about two thirds of the 90 keys)
    assert 30 <= hits <= 80


def test_a_dead_store_gives_503_with_retry_after(tmp_path, spawn):
    store = spawn("store", "--data-dir", str(tmp_path / "s"), name="s")
    web = spawn("web", "--db", f"store:{store.listen['main']}", "--cache", "none",
                "--seed-users", "5", "--db-timeout-s", "2", name="w")  # fmt: skip
    assert harness.http("GET", web.url("main") + "/users/1")[0] == 200
    store.kill()
    code, headers, body = harness.http("GET", web.url("main") + "/users/1")
    assert code == 503 and headers["Retry-After"] == "1", body
    code, _, _ = harness.http("PUT", web.url("main") + "/users/1", orjson.dumps(user("X")), JSON)
    assert code == 503
    assert metric(web, "scalelab_web_db_unavailable_total") == 2


# -- no sockets -------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["store:", "store:host", "store:h:0", "store:h:1,:2",
                                  "store:h:99999", "store:h:x"])  # fmt: skip
def test_bad_store_specs_are_refused(spec):
    with pytest.raises(ValueError):
        parse_db_spec(spec)


def test_store_spec_with_several_nodes_parses():
    assert parse_db_spec("store:127.0.0.1:1,127.0.0.1:2") == ("store", "127.0.0.1:1,127.0.0.1:2")


@pytest.mark.parametrize(("text", "lsn"), [(None, 0), ("", 0), ("12", 12), ("-1", 0),
                                           ("1e9", 0), ("²", 0), ("9" * 40, 0)])  # fmt: skip
def test_lsn_cookie_parsing(text, lsn):
    assert parse_position(text) == lsn


class FakeAnswer:
    def __init__(self, results, lsn=None):
        self.results, self.lsn = results, lsn

    def raise_for_errors(self):
        return self


class FakeClient:
    """Records what the backend asks; answers like the store would."""

    def __init__(self):
        self.queries = []

    async def execute(self, statements, transaction=False):
        return FakeAnswer([{"rows_affected": 1}], lsn=41)

    async def query(self, statements, level="none", min_lsn=None):
        self.queries.append(min_lsn)
        return FakeAnswer([{"columns": [], "types": []}])


async def test_reads_after_a_write_carry_min_lsn():
    client = FakeClient()
    store = StoreTierUserStore(client)
    token = LAST_WRITE_LSN.set(0)
    try:
        assert await store.get(1) is None
        assert await store.replace(1, seed_user(1))
        assert LAST_WRITE_LSN.get() == 41  # the middleware turns this into the cookie
        await store.get(1)
        LAST_WRITE_LSN.set(50)  # a cookie from a later write is not lowered
        await store.replace(1, seed_user(1))
        await store.get(1)
    finally:
        LAST_WRITE_LSN.reset(token)
    assert client.queries == [None, 41, 50]


async def test_store_errors_become_database_unavailable():
    store = StoreTierUserStore(StoreClient(["127.0.0.1:9"], timeout_s=1))
    try:
        with pytest.raises(DatabaseUnavailable):
            await store.get(1)
        with pytest.raises(DatabaseUnavailable):
            await store.create(seed_user(1))
    finally:
        await store.close()
