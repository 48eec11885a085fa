"""One cookie jar per simulated user: sessions and per-user cookies flow under load."""

import io

from loadgen import run_load
from loadgen.engine import MAX_COOKIES_PER_USER
from loadgen.profile import load_profile, parse_profile

CHAIN = """
duration_s = 1.0
{extra}
[[requests]]
name = "chain"
path = "/chain"
"""


def quiet(**kwargs):
    return {"progress": False, "out": io.StringIO(), **kwargs}


def chain_profile(extra: str = ""):
    return parse_profile(CHAIN.format(extra=extra), "chain")


def test_each_closed_loop_user_carries_its_own_cookie_and_nobody_elses(server):
    report = run_load(server.url, chain_profile(), users=4, **quiet())
    assert report["errors"]["total"] == 0 and report["requests"] == server.requests
    # Four users, four chains, each user's every later request carrying its own latest
    # cookie: a shared jar would give one chain (or stale values), no jar one per request.
    assert len(server.chains) == 4
    assert server.stale == 0 and server.leaked == 0
    assert sum(server.chain_returns.values()) == server.requests - 4
    assert all(n > 1 for n in server.chain_returns.values())


def test_cookies_false_sends_none(server):
    report = run_load(
        server.url, chain_profile("cookies = false"), users=4, duration_s=0.5, **quiet()
    )
    assert report["profile"]["cookies"] is False
    assert report["requests"] == server.requests == len(server.chains) > 4
    assert server.chain_returns == {}


def test_open_loop_users_come_from_a_bounded_pool(server):
    # 200 req/s for 1 s through a pool of 8 users: 8 chains, each a user's own. On a busy
    # machine a few requests may find 8 in flight and be dropped (never sent, no user).
    profile = chain_profile("max_outstanding = 8")
    report = run_load(server.url, profile, rate=200, **quiet())
    dropped = report["errors"]["by_kind"].get("dropped", 0)
    assert report["errors"]["total"] == dropped < 100
    assert report["requests"] == server.requests == 200 - dropped
    assert len(server.chains) == 8 and server.stale == 0 and server.leaked == 0
    assert sum(server.chain_returns.values()) == server.requests - 8


def test_users_over_two_processes_keep_their_own_cookies(server):
    report = run_load(server.url, chain_profile(), users=4, procs=2, duration_s=0.5, **quiet())
    assert report["requests"] == server.requests > 4
    assert len(server.chains) == 4 and server.stale == 0 and server.leaked == 0


def test_the_sessions_profile_logs_in_once_per_user_then_reads_me(server):
    profile = load_profile("sessions")
    report = run_load(server.url, profile, users=3, duration_s=1.0, warmup_s=0, **quiet())
    assert report["errors"]["total"] == 0
    assert report["by_kind"]["login"]["requests"] == 3 == len(server.sessions)
    assert set(server.sessions.values()) <= set(range(1, 1001))
    assert server.me[401] == 0 and server.me[200] == report["by_kind"]["me"]["requests"] > 3


def test_without_cookies_the_sessions_profile_is_all_401(server):
    import dataclasses

    profile = dataclasses.replace(load_profile("sessions"), cookies=False)
    report = run_load(server.url, profile, users=2, duration_s=0.5, warmup_s=0, **quiet())
    assert server.me[200] == 0 and server.me[401] > 0
    assert report["errors"]["by_kind"] == {"http_4xx": server.me[401]}


def test_a_users_jar_is_bounded(server):
    profile = parse_profile('duration_s = 0.5\n[[requests]]\npath = "/crumbs"', "crumbs")
    report = run_load(server.url, profile, users=1, **quiet())
    assert report["requests"] > MAX_COOKIES_PER_USER + 1  # enough to pass the bound
    assert MAX_COOKIES_PER_USER - 1 <= server.most_cookies <= MAX_COOKIES_PER_USER


def test_a_cookie_set_by_a_redirect_is_kept_for_the_users_next_requests(server):
    profile = parse_profile(
        """
        duration_s = 0.5
        [[requests]]
        path = "/bounce"
        first = true
        [[requests]]
        path = "/landing"
        """,
        "bounce",
    )
    report = run_load(server.url, profile, users=2, **quiet())
    assert report["errors"]["total"] == 0
    # The two redirects' own follow-ups went out without it (inside aiohttp); every
    # later request of both users carried it.
    assert server.landings[False] == 2
    assert server.landings[True] == report["requests"] - 2 > 0
