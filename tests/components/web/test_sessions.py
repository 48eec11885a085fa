"""The in-process session table: sliding expiry and a bound, clock passed in."""

import pytest

from components.web.sessions import MemorySessions, SessionTable


def test_a_session_maps_its_token_to_the_user():
    table = SessionTable(ttl_s=60, max_sessions=10)
    table.create("t1", 7, now=0)
    assert table.get("t1", now=1) == 7
    assert table.get("other", now=1) is None


def test_expiry_slides_with_use():
    table = SessionTable(ttl_s=10, max_sessions=10)
    table.create("t", 1, now=0)
    assert table.get("t", now=9) == 1  # used: now valid until 19
    assert table.get("t", now=18) == 1
    assert table.get("t", now=28.5) is None
    assert len(table) == 0


def test_the_least_recently_used_session_goes_first_past_the_bound():
    table = SessionTable(ttl_s=60, max_sessions=2)
    table.create("a", 1, now=0)
    table.create("b", 2, now=0)
    table.get("a", now=1)
    table.create("c", 3, now=2)
    assert table.get("b", now=3) is None
    assert table.get("a", now=3) == 1 and table.get("c", now=3) == 3


def test_delete_ends_a_session():
    table = SessionTable(ttl_s=60, max_sessions=2)
    table.create("a", 1, now=0)
    assert table.delete("a") and not table.delete("a")
    assert table.get("a", now=0) is None


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError):
        SessionTable(ttl_s=0, max_sessions=1)
    with pytest.raises(ValueError):
        SessionTable(ttl_s=1, max_sessions=0)


async def test_memory_sessions_issue_unguessable_distinct_tokens():
    clock = [0.0]
    sessions = MemorySessions(ttl_s=5, max_sessions=100, clock=lambda: clock[0])
    tokens = {await sessions.create(3) for _ in range(50)}
    assert len(tokens) == 50 and all(len(t) >= 32 for t in tokens)
    token = tokens.pop()
    assert await sessions.user_for(token) == 3
    clock[0] = 100
    assert await sessions.user_for(token) is None
