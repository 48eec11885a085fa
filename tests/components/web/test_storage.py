"""The SQLite user store and the cache-aside repository over it (no sockets)."""

import asyncio

import pytest

from components.common.metrics import Registry
from components.web.cache import CacheUnavailable, LocalCache, NoCache, open_cache
from components.web.repository import RepositoryMetrics, UserRepository, cache_key
from components.web.seed import seed_user
from components.web.storage import SqliteUserStore, open_store, parse_db_spec

USER = seed_user(99)


@pytest.fixture
async def store(tmp_path):
    store = await open_store(f"sqlite:{tmp_path / 'users.db'}")
    yield store
    await store.close()


async def test_wal_mode_is_on(store):
    async with store._db.execute("PRAGMA journal_mode") as cursor:
        assert (await cursor.fetchone())[0] == "wal"


async def test_create_get_replace_delete(store):
    user_id = await store.create(USER)
    assert await store.get(user_id) == USER
    changed = {**USER, "firstName": "Changed"}
    assert await store.replace(user_id, changed)
    assert (await store.get(user_id))["firstName"] == "Changed"
    assert await store.delete(user_id)
    assert await store.get(user_id) is None
    assert not await store.delete(user_id)
    assert not await store.replace(user_id, USER)


async def test_seeding_is_deterministic_and_idempotent(store):
    assert await store.seed(50) == 50
    assert await store.get(17) == seed_user(17)
    assert await store.seed(50) == 0
    await store.delete(3)
    assert await store.seed(50) == 0
    assert await store.get(3) is None  # a deleted seed user stays deleted
    assert await store.seed(60) == 10
    assert await store.count() == 59


async def test_created_ids_follow_the_seed_range_and_are_never_reused(store):
    await store.seed(10)
    first = await store.create(USER)
    assert first == 11
    await store.delete(first)
    assert await store.create(USER) == 12


async def test_data_survives_reopening(tmp_path):
    path = tmp_path / "again.db"
    store = await SqliteUserStore.open(str(path))
    user_id = await store.create(USER)
    await store.close()
    store = await SqliteUserStore.open(str(path), synchronous="normal")
    assert await store.get(user_id) == USER
    await store.close()


@pytest.mark.parametrize("spec", ["sqlite", "sqlite:", "mysql:x", "/tmp/x.db"])
def test_bad_db_specs_are_refused(spec):
    with pytest.raises(ValueError):
        parse_db_spec(spec)


@pytest.mark.parametrize("spec", ["local", "local:0", "local:-1", "local:x", "none:1", "redis:1"])
def test_bad_cache_specs_are_refused(spec):
    with pytest.raises(ValueError):
        open_cache(spec)


def test_cache_specs():
    assert isinstance(open_cache("none"), NoCache)
    local = open_cache("local:2")
    assert isinstance(local, LocalCache) and local.lru.max_bytes == 2 * 1024 * 1024


def make_repository(store, cache):
    registry = Registry()
    metrics = RepositoryMetrics.from_counters(
        registry.counter("q_total", "q", ["kind"]),
        registry.counter("h_total", "h"),
        registry.counter("m_total", "m"),
        registry.counter("e_total", "e"),
    )
    return UserRepository(store, cache, 60.0, metrics), metrics


async def test_cache_aside_reads_through_once_then_hits(store):
    await store.seed(5)
    repo, metrics = make_repository(store, LocalCache(1 << 20))
    first = await repo.get_json(2)
    assert await repo.get_json(2) == first
    assert (metrics.cache_misses.get(), metrics.cache_hits.get()) == (1, 1)
    assert metrics.db_reads.get() == 1


async def test_writes_delete_the_cached_copy(store):
    await store.seed(5)
    cache = LocalCache(1 << 20)
    repo, metrics = make_repository(store, cache)
    await repo.get_json(4)
    assert await cache.get(cache_key(4)) is not None
    await repo.replace(4, {**seed_user(4), "lastName": "Updated"})
    assert await cache.get(cache_key(4)) is None
    assert b'"lastName":"Updated"' in await repo.get_json(4)
    await repo.delete(4)
    assert await repo.get_json(4) is None
    assert metrics.db_writes.get() == 2


async def test_a_missing_user_is_not_cached(store):
    repo, metrics = make_repository(store, LocalCache(1 << 20))
    assert await repo.get_json(1) is None
    await store.seed(1)
    assert await repo.get_json(1) is not None
    assert metrics.db_reads.get() == 2


async def test_no_cache_reads_the_database_every_time(store):
    await store.seed(3)
    repo, metrics = make_repository(store, NoCache())
    for _ in range(3):
        await repo.get_json(1)
    assert metrics.db_reads.get() == 3 and metrics.cache_hits.get() == 0


class BrokenCache(NoCache):
    """A cache whose node is down: every call fails as a networked backend would."""

    async def get(self, key):
        raise CacheUnavailable("node down")

    async def set(self, key, value, ttl_s):
        raise CacheUnavailable("node down")

    async def delete(self, key):
        raise CacheUnavailable("node down")


async def test_a_dead_cache_degrades_to_the_database_never_to_an_error(store):
    await store.seed(3)
    repo, metrics = make_repository(store, BrokenCache())
    assert await repo.get_json(2) is not None
    assert await repo.replace(2, seed_user(9))
    assert metrics.db_reads.get() == 1 and metrics.db_writes.get() == 1
    assert metrics.cache_errors.get() == 3  # get, set after the miss, delete after the write


async def test_reads_see_every_acknowledged_write_at_once(store):
    # Reads use their own connection; WAL must still give read-after-write.
    for round_number in range(20):
        user = {**USER, "lastName": f"Round{round_number}"}
        user_id = await store.create(user)
        assert await store.get(user_id) == user
        assert await store.replace(user_id, {**user, "firstName": "Again"})
        assert (await store.get(user_id))["firstName"] == "Again"
        assert await store.delete(user_id)
        assert await store.get(user_id) is None


async def test_the_read_connection_cannot_write(store):
    import sqlite3

    with pytest.raises(sqlite3.OperationalError):
        await store._reader.execute("DELETE FROM users")


async def test_a_write_is_read_back_while_other_reads_keep_the_reader_busy(store):
    # Reads of other requests overlap all the time under load. A read that shares the
    # reader connection with a statement still open would see that statement's snapshot,
    # taken before the write: read-your-writes must hold whatever else is being read.
    await store.seed(20)
    done = False

    async def other_requests():
        while not done:
            await store.get(7)

    readers = [asyncio.create_task(other_requests()) for _ in range(4)]
    try:
        for n in range(200):
            user_id = await store.create({**USER, "firstName": f"n{n}"})
            assert (await store.get(user_id))["firstName"] == f"n{n}"
            changed = {**USER, "firstName": f"m{n}"}
            await store.replace(user_id, changed)
            assert (await store.get(user_id))["firstName"] == f"m{n}"
    finally:
        done = True
        await asyncio.gather(*readers)
