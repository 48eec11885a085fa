"""Strategies, the config file, and the router's plan per strategy (no sockets)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.shard import config
from components.shard.ids import EPOCH_MS, Snowflake
from components.shard.router import Refused, Router

GROUPS = '[[groups]]\nname = "g1"\nnodes = ["a:1"]\n[[groups]]\nname = "g2"\nnodes = ["b:1"]\n'
TABLES = '[tables]\nusers = "id"\nposts = "user_id"\n[ids]\nusers = "id"\n'


def make(text):
    import tomllib

    cfg = config.parse(tomllib.loads(text + GROUPS + TABLES))
    return Router(cfg, Snowflake(3, lambda: EPOCH_MS + 1000))


def plan(router, *sqls, write=False, transaction=False):
    return router.plan([(s, None) for s in sqls], write=write, transaction=transaction)


def test_range_strategy_routes_by_ordered_bounds():
    r = make('strategy = "range"\n[[ranges]]\nlow = 0\ngroup = "g1"\n'
             '[[ranges]]\nlow = 100\ngroup = "g2"\n')  # fmt: skip
    assert plan(r, "SELECT * FROM users WHERE id = 99").single == "g1"
    assert plan(r, "SELECT * FROM users WHERE id = 100").single == "g2"
    assert plan(r, "SELECT * FROM users WHERE id = -5").single == "g1"
    with pytest.raises(Refused, match="integer key"):
        plan(r, "SELECT * FROM users WHERE id = 'abc'")


def test_directory_hot_keys_and_ranges_override_the_fallback():
    r = make('strategy = "directory"\n[directory]\nfallback = "modulo"\n'
             'keys = { "7" = "g2", "celebrity" = "g2" }\n'
             'ranges = [ { low = 1000, high = 2000, group = "g1" } ]\n')  # fmt: skip
    assert plan(r, "SELECT * FROM users WHERE id = 7").single == "g2"
    assert plan(r, "SELECT * FROM users WHERE id = '7'").single == "g2"
    assert plan(r, "SELECT * FROM users WHERE id = 'celebrity'").single == "g2"
    assert all(plan(r, f"SELECT * FROM users WHERE id = {k}").single == "g1"
               for k in range(1000, 1010))  # fmt: skip


@pytest.mark.parametrize("strategy", ["modulo", "consistent"])
def test_hashing_strategies_use_both_groups_and_are_deterministic(strategy):
    r = make(f'strategy = "{strategy}"\n')
    owners = {plan(r, f"SELECT * FROM users WHERE id = {k}").single for k in range(50)}
    assert owners == {"g1", "g2"}
    assert plan(r, "SELECT 1 FROM posts WHERE user_id = 12").single == plan(
        r, "SELECT 1 FROM users WHERE id = 12").single  # co-located by key  # fmt: skip


def test_unsharded_tables_and_keyless_statements():
    r = make("")
    assert plan(r, "SELECT * FROM countries").single == "g1"
    p = plan(r, "SELECT * FROM users ORDER BY id")
    assert p.single is None and p.steps[0].groups == ["g1", "g2"]
    assert plan(r, "CREATE TABLE users (id)", write=True, transaction=True).steps[0].fan_out


@pytest.mark.parametrize("sql,match", [
    ("SELECT * FROM users JOIN countries ON users.c = countries.c", "join"),
    ("SELECT * FROM users, posts WHERE users.id = 1", "join"),
    ("SELECT * FROM countries, users", "join"),
    ("SELECT * FROM users WHERE id = (SELECT max(id) FROM users)", "subquery"),
    ("INSERT INTO posts VALUES (1, 2)", "name its columns"),
    ("INSERT INTO posts (body) VALUES ('x')", "shard key"),
    ("INSERT INTO posts (user_id) SELECT 1", "subquery|VALUES"),
    ("UPDATE users SET id = 5 WHERE id = 4", "move the row"),
    ("UPDATE users SET n = 1, (id, m) = (5, 2) WHERE id = 4", "move the row"),
    ("UPDATE users SET \"ID\" = 5", "move the row"),
    ("SELECT group_concat(id) FROM users", "merge"),
])  # fmt: skip
def test_refusals(sql, match):
    with pytest.raises(Refused, match=match):
        plan(make(""), sql, write=not sql.startswith("SELECT"))


def test_multi_row_insert_on_two_groups_is_refused_one_group_passes():
    r = make('strategy = "range"\n[[ranges]]\nlow = 0\ngroup = "g1"\n'
             '[[ranges]]\nlow = 100\ngroup = "g2"\n')  # fmt: skip
    assert plan(r, "INSERT INTO posts (user_id) VALUES (1), (2)", write=True).single == "g1"
    with pytest.raises(Refused, match="groups"):
        plan(r, "INSERT INTO posts (user_id) VALUES (1), (200)", write=True)


def test_cross_shard_transaction_is_refused_single_group_one_passes():
    r = make('strategy = "range"\n[[ranges]]\nlow = 0\ngroup = "g1"\n'
             '[[ranges]]\nlow = 100\ngroup = "g2"\n')  # fmt: skip
    a, b = "UPDATE users SET n = 1 WHERE id = 1", "UPDATE users SET n = 1 WHERE id = 2"
    assert plan(r, a, b, write=True, transaction=True).single == "g1"
    with pytest.raises(Refused, match="cross-shard transaction"):
        plan(r, a, "UPDATE users SET n = 1 WHERE id = 150", write=True, transaction=True)


def test_generated_ids_of_one_insert_land_on_one_group_and_are_unique():
    r = make("")
    p = plan(r, "INSERT INTO users (name) VALUES ('a'), ('b'), ('c')", write=True)
    sql = p.steps[0].statement[0]
    assert sql.startswith("INSERT INTO users (id, name) VALUES (") and p.generated_ids == 3
    ids = [int(part.split(",")[0]) for part in sql.split("(")[2:]]
    assert len(set(ids)) == 3 and {r.map.group_for(i) for i in ids} == {p.single}


def test_snowflake_ids_are_unique_and_ordered_even_when_the_clock_steps_back():
    now = [EPOCH_MS + 5000]
    gen = Snowflake(5, lambda: now[0])
    ids = [gen.next_id() for _ in range(5000)]  # more than 4096 in one millisecond
    now[0] -= 1000  # NTP steps the clock back
    ids += [gen.next_id() for _ in range(10)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert Snowflake.parts(ids[0]) == (EPOCH_MS + 5000, 5, 0)
    other = Snowflake(6, lambda: EPOCH_MS + 5000)
    assert not set(ids) & {other.next_id() for _ in range(100)}


@pytest.mark.parametrize("text,match", [
    ("", "groups"),
    ('[[groups]]\nname = "a"\nnodes = []\n', "nodes"),
    ('strategy = "x"\n' + GROUPS, "strategy"),
    ('strategy = "range"\n' + GROUPS, "ranges"),
    ('home = "zz"\n' + GROUPS, "home"),
    (GROUPS + '[tables]\nu = "id"\n[ids]\nu = "other"\n', "shard key"),
])  # fmt: skip
def test_bad_configs_are_rejected_with_a_reason(text, match):
    import tomllib

    with pytest.raises(config.ConfigError, match=match):
        config.parse(tomllib.loads(text))


def test_update_reading_the_key_is_not_an_update_of_it():
    r = make("")
    sql = "UPDATE users SET n = (CASE WHEN id = 5 THEN 1 ELSE 2 END), m = id WHERE id = 4"
    assert plan(r, sql, write=True).single == r.map.group_for(4)


_VOCAB = ["SELECT", "INSERT", "INTO", "UPDATE", "DELETE", "FROM", "WHERE", "users", "posts",
          "countries", "id", "user_id", "name", "=", "IN", "(", ")", ",", "?", ":k", "AND",
          "OR", "VALUES", "SET", "ORDER", "BY", "GROUP", "LIMIT", "count(*)", "sum(id)", "1",
          "'x'", "-", "JOIN", "ON", "*", "CREATE", "TABLE", "DESC", "BETWEEN", ";", "?2",
          "RETURNING", "OR REPLACE", "WITH", "AS", "NULL", "0x10", "1.5"]  # fmt: skip
_params = st.one_of(
    st.none(),
    st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.floats()), max_size=3),
    st.dictionaries(st.sampled_from(["k", "x"]), st.one_of(st.integers(), st.text(max_size=3))),
)


@pytest.mark.parametrize("strategy", ["consistent", "range"])
@settings(max_examples=150, deadline=None)
@given(words=st.lists(st.sampled_from(_VOCAB), min_size=1, max_size=14), params=_params,
       write=st.booleans(), transaction=st.booleans())  # fmt: skip
def test_any_statement_is_planned_or_refused_never_an_exception(strategy, words, params, write,
                                                                transaction):  # fmt: skip
    extra = '\n[[ranges]]\nlow = 0\ngroup = "g1"\n' if strategy == "range" else ""
    router = ROUTERS.setdefault(strategy, make(f'strategy = "{strategy}"\n{extra}'))
    try:
        plan = router.plan([(" ".join(words), params)], write=write, transaction=transaction)
    except Refused:
        return
    assert plan.steps and all(step.groups for step in plan.steps)


ROUTERS: dict = {}
