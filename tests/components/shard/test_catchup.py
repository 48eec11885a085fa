"""Naming the moving keys a change-feed record touched (or saying it cannot)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.shard.catchup import changed_keys, split_statement, touched
from components.shard.reshard import Move

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
