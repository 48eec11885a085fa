"""Sessions in the cache tier: real cache processes, real web servers, real kills.

The stateless stage's promise, checked end to end: a user logged in on web server A is
logged in on B; logging out on B logs out on A; a session expires when idle and every
use slides its expiry; a dead cache node means 503 or "logged out", never a hang.
"""

import asyncio
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

import harness
from components.cache.protocol import valid_key
from components.web.sessions import (
    MemorySessions,
    SessionsUnavailable,
    SharedSessions,
    open_sessions,
    parse_sessions_spec,
    session_key,
)

COOKIE = "scalelab_session"


def memcached_line(address: str, line: bytes) -> bytes:
    """One raw command to a cache node, its one-line answer."""
    return harness.exchange(address, line, b"\r\n")


def remaining_ttl(address: str, key: str) -> int:
    """The seconds a key has left, read with the meta get's ``t`` flag."""
    answer = memcached_line(address, b"mg %s t\r\n" % key.encode())
    assert answer.startswith(b"HD t"), answer
    return int(answer.split()[1][1:])


def login(web, user_id: int) -> str:
    code, headers, body = harness.http("POST", web.url() + "/login",
                                       b'{"id": %d}' % user_id, {"Content-Type": "application/json"})  # fmt: skip
    assert code == 200, body
    return headers["Set-Cookie"].partition(f"{COOKIE}=")[2].partition(";")[0]


def metric(proc, name: str) -> float:
    text = harness.http("GET", proc.url("admin") + "/metrics")[2].decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + " ", name + "{")))  # fmt: skip


def me(web, token: str) -> int:
    return harness.http("GET", web.url() + "/me", headers={"Cookie": f"{COOKIE}={token}"})[0]


# -- no sockets -------------------------------------------------------------------------


def test_the_spec_names_where_sessions_live():
    assert parse_sessions_spec("memory", "local:8") == ("memory", [])
    assert parse_sessions_spec("cache", "memcached:h:1,h:2") == ("memcached", ["h:1", "h:2"])
    assert parse_sessions_spec("memcached:h:3", "none") == ("memcached", ["h:3"])
    assert isinstance(open_sessions("memory", "none", 60, 10), MemorySessions)


@pytest.mark.parametrize("spec,cache", [("cache", "local:8"), ("cache", "none"),
                                        ("memcached:", "none"), ("memcached:h", "none"),
                                        ("memcached:h:1,h:1", "none"), ("redis:h:1", "none"),
                                        ("", "none")])  # fmt: skip
def test_a_bad_spec_is_a_clear_error(spec, cache):
    with pytest.raises(ValueError):
        parse_sessions_spec(spec, cache)


def test_the_web_tier_refuses_a_bad_sessions_flag():
    result = subprocess.run([sys.executable, "-m", "components.web", "--sessions", "cache",
                             "--cache", "local:8"], capture_output=True, text=True,
                            timeout=harness.DEADLINE_S)  # fmt: skip
    assert result.returncode == 2
    assert "--sessions cache needs --cache memcached" in result.stderr


@given(st.text(max_size=300))
def test_any_cookie_maps_to_a_valid_key_that_hides_the_token(token):
    key = session_key(token)
    assert valid_key(key.encode())
    assert not token or len(token) < 4 or token not in key


# -- against real cache processes -------------------------------------------------------


async def test_use_slides_the_expiry_and_forged_values_are_no_session(spawn):
    cache = spawn("cache")
    address = cache.listen["main"]
    sessions = SharedSessions([address], 100, timeout_s=1, retry_after_s=5)
    try:
        token = await sessions.create(42)
        key = session_key(token)
        assert memcached_line(address, b"touch %s 5\r\n" % key.encode()) == b"TOUCHED\r\n"
        assert remaining_ttl(address, key) <= 5
        assert await sessions.user_for(token) == 42
        assert remaining_ttl(address, key) > 50  # the use set it back to the session TTL
        for forged in (b"x", b"1" * 21, b"-1"):
            memcached_line(
                address, b"set %s 0 60 %d\r\n%s\r\n" % (key.encode(), len(forged), forged)
            )
            assert await sessions.user_for(token) is None
        assert await sessions.user_for("never-issued") is None
        assert await sessions.user_for("x" * 1000) is None  # refused unread
        await sessions.delete(token)
        assert memcached_line(address, b"mg %s v\r\n" % key.encode()) == b"EN\r\n"
    finally:
        await sessions.close()


async def test_a_dead_store_is_unavailable_within_the_deadline(spawn):
    cache = spawn("cache")
    sessions = SharedSessions([cache.listen["main"]], 60, timeout_s=0.5, retry_after_s=60)
    try:
        token = await sessions.create(1)
        cache.kill()
        for call in (sessions.user_for(token), sessions.create(2), sessions.delete(token)):
            with pytest.raises(SessionsUnavailable):
                await asyncio.wait_for(call, timeout=harness.DEADLINE_S)
    finally:
        await sessions.close()


def test_login_on_a_is_login_on_b_and_logout_on_b_is_logout_on_a(spawn):
    caches = [spawn("cache", name=f"cache-{i}") for i in (1, 2)]
    nodes = "memcached:" + ",".join(c.listen["main"] for c in caches)
    a, b = (spawn("web", "--seed-users", "5", "--cache", nodes, "--sessions", "cache",
                  name=f"web-{n}") for n in "ab")  # fmt: skip
    tokens = {uid: login(a, uid) for uid in range(1, 6)}
    for uid, token in tokens.items():
        code, _, body = harness.http(
            "GET", b.url() + "/me", headers={"Cookie": f"{COOKIE}={token}"}
        )
        assert code == 200 and b'"id":%d' % uid in body
    assert (
        harness.http("POST", b.url() + "/logout", headers={"Cookie": f"{COOKIE}={tokens[1]}"})[0]
        == 204
    )
    assert me(a, tokens[1]) == 401
    assert me(a, tokens[2]) == 200
    assert metric(a, "scalelab_web_sessions") == 0  # none held in the process


def test_an_idle_session_expires(spawn):
    cache = spawn("cache")
    web = spawn("web", "--seed-users", "2", "--sessions", f"memcached:{cache.listen['main']}",
                "--session-ttl-s", "1")  # fmt: skip
    token = login(web, 2)
    assert me(web, token) == 200
    harness.wait_until_sync(lambda: me(web, token) == 401)


def test_a_dead_session_node_is_503_or_logged_out_never_a_hang(spawn):
    caches = [spawn("cache", name=f"cache-{i}") for i in (1, 2)]
    nodes = "memcached:" + ",".join(c.listen["main"] for c in caches)
    web = spawn("web", "--seed-users", "40", "--sessions", nodes)
    tokens = [login(web, uid) for uid in range(1, 41)]
    caches[0].kill()
    codes = [me(web, token) for token in tokens]
    assert set(codes) <= {200, 401, 503}
    assert 503 in codes  # the calls that found the node dead, before it left the ring
    # Once off the ring, the dead node's users are logged out, the others are not.
    codes = [me(web, token) for token in tokens]
    assert 200 in codes and 401 in codes and 503 not in codes
    assert metric(web, "scalelab_web_session_store_errors_total") >= 1
    caches[1].kill()
    assert harness.http("POST", web.url() + "/login", b'{"id": 1}',
                        {"Content-Type": "application/json"})[0] == 503  # fmt: skip
