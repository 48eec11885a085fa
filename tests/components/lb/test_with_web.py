"""The chapter's load-balanced stage for real: two ``components.web`` servers behind the lb.

The web tier keeps login sessions in process memory until the "stateless" stage, so a
session made on one server is unknown to the other. Round robin therefore breaks logins
half the time, and the ``cookie`` algorithm (sticky sessions) is the crutch that makes it
work: exactly the trade-off the chapter describes.
"""

from __future__ import annotations

import aiohttp
import pytest

import harness


@pytest.fixture(scope="module")
def webs():
    procs = [harness.start("web", "--seed-users", "5", name=f"web-{i}") for i in (1, 2)]
    yield procs
    for proc in procs:
        proc.stop(timeout_s=5)


def lb_over(spawn, webs, algorithm: str):
    flags = []
    for proc in webs:
        flags += ["--backend", proc.listen["main"]]
    return spawn("lb", *flags, "--algorithm", algorithm, "--health-interval", "0.5")


async def me_statuses(lb_url: str, user_id: int, times: int) -> list[int]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post(lb_url + "/login", json={"id": user_id}) as response:
            assert response.status == 200
        statuses = []
        for _ in range(times):
            async with session.get(lb_url + "/me") as response:
                statuses.append(response.status)
                if response.status == 200:
                    assert (await response.json())["id"] == user_id
        return statuses


@pytest.fixture(scope="module")
def round_robin_lb(webs):
    flags = sum((["--backend", proc.listen["main"]] for proc in webs), [])
    proc = harness.start("lb", *flags, "--health-interval", "0.5", name="lb-web")
    yield proc
    proc.stop(timeout_s=5)


async def test_users_are_served_through_the_balancer(round_robin_lb):
    proc = round_robin_lb
    async with aiohttp.ClientSession() as session:
        for user_id in (1, 2, 3, 4):
            async with session.get(f"{proc.url()}/users/{user_id}") as response:
                assert response.status == 200
                assert (await response.json())["id"] == user_id
                assert response.headers["Via"] == "1.1 lb-web"


async def test_round_robin_loses_in_memory_sessions(round_robin_lb):
    statuses = await me_statuses(round_robin_lb.url(), 2, 6)
    assert 401 in statuses and 200 in statuses  # half the requests reach the other server


async def test_cookie_stickiness_keeps_each_session_on_its_server(spawn, webs):
    proc = lb_over(spawn, webs, "cookie")
    for user_id in (1, 2, 3):
        assert await me_statuses(proc.url(), user_id, 6) == [200] * 6
