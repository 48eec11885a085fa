"""Streamed fills (``components.edge.fill``): a miss is answered as the body arrives.

The origin here is held mid-body by a gate the test opens, so "the client got the first
bytes before the origin finished" is proven by construction: the origin cannot finish
before the test has read those bytes (without streaming, the read runs into its
deadline). Collapsed requests read the same growing body; a fill that outgrows
``--max-object-mb`` is shared as a pass-through, not fetched again by each waiter.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import aiohttp
import pytest

import harness

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scripted_origin import Route, ScriptedOrigin  # noqa: E402

BODY = bytes(range(256)) * 800  # 200 KiB
HALF = len(BODY) // 2


@pytest.fixture(scope="module")
def origin():
    server = ScriptedOrigin()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def edge(origin):
    # Objects up to 150 KiB are stored: BODY (200 KiB) turns into a pass-through.
    proc = harness.start("edge", "--origin", origin.address, "--max-object-mb", "0.15")
    yield proc
    proc.stop(timeout_s=5)


def metric(edge, name: str, **labels) -> float:
    _, _, text = harness.http("GET", edge.url("admin") + "/metrics")
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.decode().splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


async def read_half_then_rest(session, url: str, gate_open: asyncio.Event, half: int):
    """(X-Cache, body): the first ``half`` bytes must come while the origin is held."""
    async with session.get(url) as response:
        assert response.status == 200
        first = await asyncio.wait_for(response.content.readexactly(half), 5)
        await gate_open.wait()
        return response.headers["X-Cache"], first + await response.content.read()


async def test_a_miss_is_streamed_before_the_origin_finishes_and_stored_whole(origin, edge):
    body = BODY[: 100 * 1024]
    gate = threading.Event()
    origin.routes["/s/one"] = Route(headers={"Cache-Control": "max-age=60"}, body=body,
                                    chunked=True, gate=gate)  # fmt: skip
    url = edge.url("main") + "/s/one"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            assert response.headers["X-Cache"] == "MISS"
            first = await asyncio.wait_for(response.content.readexactly(len(body) // 2), 5)
            assert first == body[: len(body) // 2]
            gate.set()  # only now may the origin finish
            rest = await response.content.read()
        assert first + rest == body
        async with session.get(url) as response:
            assert response.headers["X-Cache"] == "HIT"
            assert await response.read() == body  # the stored object is the streamed body
    assert origin.hits["/s/one"] == 1


async def test_collapsed_requests_read_the_growing_body_and_get_identical_bytes(origin, edge):
    body = BODY[: 100 * 1024]
    gate, opened = threading.Event(), asyncio.Event()
    origin.routes["/s/many"] = Route(headers={"Cache-Control": "max-age=60"}, body=body,
                                     chunked=True, gate=gate)  # fmt: skip
    url = edge.url("main") + "/s/many"
    before = metric(edge, "scalelab_edge_requests_total", result="collapsed")
    async with aiohttp.ClientSession() as session:
        first = asyncio.ensure_future(read_half_then_rest(session, url, opened, len(body) // 2))
        await harness.wait_until(lambda: origin.hits["/s/many"] == 1, what="the fill started")
        others = [asyncio.ensure_future(read_half_then_rest(session, url, opened, len(body) // 2))
                  for _ in range(5)]  # fmt: skip
        # Every one of them has its first half while the origin is still held.
        await harness.wait_until(
            lambda: metric(edge, "scalelab_edge_requests_total", result="collapsed") == before + 5,
            what="five collapsed answers begun",
        )
        gate.set()
        opened.set()
        results = await asyncio.wait_for(asyncio.gather(first, *others), 10)
    assert results[0] == ("MISS", body)
    assert all(result == ("HIT", body) for result in results[1:])
    assert origin.hits["/s/many"] == 1


async def test_waiters_behind_a_fill_too_big_to_store_share_one_pass_through(origin, edge):
    head_gate, gate, opened = threading.Event(), threading.Event(), asyncio.Event()
    origin.routes["/s/big"] = Route(headers={"Cache-Control": "max-age=60"}, body=BODY,
                                    chunked=True, gate=gate, head_gate=head_gate)  # fmt: skip
    url = edge.url("main") + "/s/big"
    waiting = metric(edge, "scalelab_edge_collapsed_total")
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.ensure_future(read_half_then_rest(session, url, opened, HALF))
                 for _ in range(4)]  # fmt: skip
        await harness.wait_until(
            lambda: metric(edge, "scalelab_edge_collapsed_total") == waiting + 3,
            what="three requests waiting behind the fill",
        )
        # The origin answers: the first 100 KiB stream to all four; the rest takes the
        # body past 0.15 MiB, which turns the fill into a pass-through they all share.
        head_gate.set()
        gate.set()
        opened.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert [body for _, body in results] == [BODY] * 4
    assert origin.hits["/s/big"] == 1  # one origin request for all four
    # Not stored, and now known to be too big: the next request passes to the origin.
    status, headers, body = harness.http("GET", url)
    assert (status, body) == (200, BODY)
    assert headers["X-Cache"] == "MISS"
    assert origin.hits["/s/big"] == 2


@pytest.mark.parametrize("how", ["HEAD", "Range"])
def test_head_and_range_on_an_object_declared_too_big_are_passed_through(origin, edge, how):
    # Content-Length 2.5 MiB > 0.15 MiB: a pass-through from the head on, larger than the
    # pass-through's backlog bound. HEAD gets the fields; a Range request the whole 200
    # (a server may ignore Range, RFC 9110 §14.2).
    path = "/s/declared-" + how
    big = BODY * 13
    origin.routes[path] = Route(headers={"Cache-Control": "max-age=60"}, body=big)
    url = edge.url("main") + path
    if how == "HEAD":
        status, headers, body = harness.http("HEAD", url)
        assert (status, body, headers["Content-Length"]) == (200, b"", str(len(big)))
    else:
        status, headers, body = harness.http("GET", url, headers={"Range": "bytes=0-9"})
        assert (status, body) == (200, big)
    assert headers["X-Cache"] == "MISS"
    assert origin.hits[path] == 1
