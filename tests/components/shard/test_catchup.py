"""Naming the moving keys a change-feed record touched (or saying it cannot), and the
catch-up driver that reads them again, against fake sources."""

import asyncio
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.shard.catchup import changed_keys, split_statement, touched
from components.shard.placement import Range, RoutingMap
from components.shard.reshard import Move, Progress, Staged
from components.shard.resharder import Catchup
from components.shard.upstream import FeedGone

TABLES = {"users": "id", "posts": "user_id"}


@pytest.mark.parametrize("statement,table,keys", [
    ("INSERT INTO users (id, name) VALUES (5, 'a'), (7, 'b')", "users", [5, 7]),
    (["INSERT INTO users (name, id) VALUES (?, ?)", "a", "12"], "users", [12]),
    (["INSERT OR IGNORE INTO posts (user_id, body) VALUES (:u, :b)", {"u": 3, "b": "x"}],
     "posts", [3]),
    (["UPDATE users SET score = score + 1 WHERE id = ?", 9], "users", [9]),
    ("UPDATE users SET n = (SELECT 1) WHERE id IN (1, 2) AND n > 0", "users", [1, 2]),
    (["DELETE FROM posts WHERE user_id = ?2 AND id = ?1", 100, 4], "posts", [4]),
    ("DELETE FROM users WHERE id IN ()", "users", []),
    ("INSERT INTO countries (code) VALUES ('fr')", None, None),
    ("CREATE TABLE other (x)", None, None),
])  # fmt: skip
def test_keys_a_statement_touches(statement, table, keys):
    touch = touched(statement, TABLES)
    assert (touch.table, touch.keys) == (table, keys), touch.why


@pytest.mark.parametrize("statement,why", [
    ("UPDATE users SET score = 0 WHERE score > 5", "without a pinned key"),
    ("DELETE FROM users", "without a pinned key"),
    ("UPDATE users SET id = 8 WHERE id = 5", "shard key"),
    ("INSERT OR REPLACE INTO users (id) VALUES (5)", "REPLACE"),
    ("REPLACE INTO users (id) VALUES (5)", "REPLACE"),
    ("INSERT INTO users (id, e) VALUES (5, 'x') ON CONFLICT (e) DO UPDATE SET id = 6", "upsert"),
    ("INSERT INTO users (name) VALUES ('no key')", "without its key"),
    ("INSERT INTO users (id) VALUES (1 + 1)", "computed key"),
    ("INSERT INTO users SELECT * FROM old", "other tables"),
    ("INSERT INTO users (id) SELECT 1", "without VALUES"),
    ("ALTER TABLE users ADD COLUMN x", "ALTER"),
    ("UPDATE users SET n = 1 WHERE id = 5.5", "not an integer"),
    ("DELETE FROM users WHERE id = 'it'' open", "unreadable"),
    ({"not": "a statement"}, "unreadable"),
])  # fmt: skip
def test_statements_whose_keys_cannot_be_named_say_why(statement, why):
    touch = touched(statement, TABLES)
    assert touch.keys is None and why in touch.why


def test_changed_keys_keeps_only_moving_keys_and_reports_the_first_unknown():
    changes = [
        {"lsn": 4, "statements": [["INSERT INTO users (id) VALUES (?)", 3],
                                  "INSERT INTO users (id) VALUES (300)",
                                  "UPDATE countries SET n = 1"]},
        {"lsn": 5, "statements": [["DELETE FROM posts WHERE user_id IN (?, ?)", 50, 99]]},
    ]  # fmt: skip
    got = changed_keys(changes, TABLES, Move("g2", low=0, high=100))
    assert got.keys == {"users": {3}, "posts": {50, 99}} and got.unknown == ""
    assert got.statements == 3 and got.count == 3
    changes.append({"lsn": 6, "statements": ["DELETE FROM posts"]})
    assert "pinned" in changed_keys(changes, TABLES, Move("g2", key="vip")).unknown
    assert changed_keys(changes[:1], TABLES, Move("g2", key=3)).keys["users"] == {3}


@given(st.one_of(st.text(max_size=40), st.lists(st.one_of(st.text(max_size=20), st.integers(),
                                                          st.none()), max_size=4)))  # fmt: skip
def test_any_logged_statement_is_named_or_refused_never_an_exception(statement):
    touch = touched(statement, TABLES)
    assert touch.table is None or touch.keys is not None or touch.why


def test_split_statement_forms():
    assert split_statement("SELECT 1") == ("SELECT 1", None)
    assert split_statement(["SELECT ?", 1]) == ("SELECT ?", [1])
    assert split_statement(["SELECT :a", {"a": 1}]) == ("SELECT :a", {"a": 1})


# -- the catch-up driver (server.Catchup) against fake sources ----------------------------


class FakeSource:
    """A source group: a change feed (records, or an error to raise) and a trigger count."""

    def __init__(self, name, records=(), error=None, triggers=0):
        self.name, self.epoch = name, 1
        self.records, self.error, self.triggers = list(records), error, triggers

    async def changes(self, since, limit):
        if self.error is not None:
            raise self.error
        newer = [r for r in self.records if r["lsn"] > since][:limit]
        return {"lsn": max([since] + [r["lsn"] for r in self.records]), "changes": newer}

    async def send(self, method, path, body):
        doc = {"results": [{"columns": ["n"], "values": [[self.triggers]]}]}
        return types.SimpleNamespace(status=200, json=lambda: doc)


class FakeService:
    def __init__(self, sources):
        self.groups = {s.name: s for s in sources}
        self.config = types.SimpleNamespace(tables={"users": "id"})
        self.progress = Progress()
        self.log = types.SimpleNamespace(info=lambda *a, **k: None)
        self.resyncs, self.refetched = 0, []

    async def _resync(self, froms, target, move, staged):
        self.resyncs += 1
        return {g.name: 100 for g in froms}, 0

    async def _read_moving(self, group, table, where, keys):
        return ["id"], [[k] for k in keys], 7

    async def replace_keys(self, target, table, keys, rows, staged):
        self.refetched += keys


def driver(*sources, positions=None):
    service = FakeService(sources)
    owners = RoutingMap(Range([(0, "a"), (50, "b"), (1000, "t")]))
    move = Move("t", low=0, high=100)
    catchup = Catchup(service, move, list(sources), None, Staged({"users": "id"}), owners,
                      positions or {s.name: 0 for s in sources})  # fmt: skip
    return catchup, service


def record(lsn, *statements):
    return {"lsn": lsn, "statements": list(statements)}


def test_catchup_reads_again_the_moving_keys_the_feeds_name_from_their_owners():
    a = FakeSource("a", [record(1, ["UPDATE users SET n = 1 WHERE id IN (?, ?)", 3, 60]),
                         record(2, "INSERT INTO users (id) VALUES (500)")])  # fmt: skip
    b = FakeSource("b", [record(5, "DELETE FROM users WHERE id = 70")])
    catchup, service = driver(a, b)
    asyncio.run(catchup.choose("changes"))
    asyncio.run(catchup.unfenced())
    assert catchup.mode == "changes" and catchup.positions == {"a": 2, "b": 5}
    assert sorted(service.refetched) == [3, 60, 70]  # 500 is not moving
    b.records.append(record(6, "INSERT INTO users (id, n) VALUES (71, 0)"))
    asyncio.run(catchup.fenced())
    assert catchup.mode == "changes" and service.refetched[-1] == 71
    assert service.progress.changes_seen == 4 and service.resyncs == 0


def test_a_statement_without_a_key_restarts_from_a_fresh_copy_before_the_fence():
    a = FakeSource("a", [record(1, "UPDATE users SET n = 0 WHERE n > 5")])
    catchup, service = driver(a)
    asyncio.run(catchup.unfenced())
    assert catchup.mode == "changes" and service.resyncs == 1
    assert "without a pinned key" in catchup.note and catchup.positions == {"a": 100}


def test_under_the_fence_an_unknown_statement_or_a_compacted_log_means_the_reread():
    a = FakeSource("a", [record(1, "ALTER TABLE users ADD COLUMN x")])
    catchup, _ = driver(a)
    asyncio.run(catchup.fenced())
    assert catchup.mode == "reread" and "ALTER" in catchup.note
    gone = FakeSource("a", error=FeedGone("change feed answered 410: log compacted", True))
    catchup, service = driver(gone)
    asyncio.run(catchup.unfenced())  # unfenced: copy again and try once more per round
    assert service.resyncs >= 1
    asyncio.run(catchup.fenced())
    assert catchup.mode == "reread" and "410" in catchup.note


@pytest.mark.parametrize("source,positions,why", [
    (FakeSource("a", error=FeedGone("change feed answered 401")), None, "401"),
    (FakeSource("a", triggers=1), None, "triggers"),
    (FakeSource("a"), {"a": None}, "no lsn"),
])  # fmt: skip
def test_the_feed_is_not_used_when_it_cannot_be_trusted(source, positions, why):
    catchup, _ = driver(source, positions=positions)
    asyncio.run(catchup.choose("changes"))
    assert catchup.mode == "reread" and why in catchup.note


def test_reread_on_request():
    catchup, _ = driver(FakeSource("a"))
    asyncio.run(catchup.choose("reread"))
    assert catchup.mode == "reread"
