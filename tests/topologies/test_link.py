"""The emulated link (``topologies/link.py``) as a real process in front of an echo server.

The echo server runs in the test's own event loop; the link is spawned with port 0. The
delay is checked as a lower bound only (a relay cannot deliver early; how much later
it delivers depends on this busy machine), so no assertion depends on timing luck.
"""

import asyncio
import json
import time

import pytest

import harness
from contract import ContractSuite


class TestContract(ContractSuite):
    component = "link"
    module = "topologies.link"
    flags = ("--target", "127.0.0.1:9")


@pytest.fixture
async def echo():
    """An echo server: writes back what it reads; on EOF, half-closes its side too."""

    async def serve(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield "127.0.0.1:%d" % server.sockets[0].getsockname()[1]  # noqa: UP031
    server.close()


def start_link(spawn, target, *flags):
    return spawn("link", "--target", target, *flags, module="topologies.link")


async def round_trip(proc, payload=b"ping\n"):
    host, port = proc.address()
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    writer.write(payload)
    await writer.drain()
    got = await reader.readexactly(len(payload))
    took = time.monotonic() - started
    writer.close()
    return got, took


def admin(proc, method, body=None):
    status, _, text = harness.http(method, proc.url("admin") + "/admin/delay", body,
                                   {"Content-Type": "application/json"})  # fmt: skip
    return status, json.loads(text)


async def test_every_byte_crosses_twice_the_one_way_delay(spawn, echo):
    proc = start_link(spawn, echo, "--delay-ms", "150")
    got, took = await round_trip(proc)
    assert got == b"ping\n"
    assert took >= 0.3  # there and back: two one-way delays, never less


async def test_delay_changes_at_runtime_through_the_admin_op(spawn, echo):
    proc = start_link(spawn, echo)
    assert admin(proc, "GET") == (200, {"delay_ms": 0.0, "target": echo})
    status, body = admin(proc, "POST", b'{"delay_ms": 250}')
    assert (status, body) == (200, {"delay_ms": 250, "before_ms": 0.0})
    got, took = await round_trip(proc)
    assert got == b"ping\n" and took >= 0.5
    _, _, metrics = harness.http("GET", proc.url("admin") + "/metrics")
    assert b"scalelab_link_delay_seconds 0.25\n" in metrics
    for bad in (b'{"delay_ms": -1}', b'{"delay_ms": "5"}', b'{"delay_ms": true}', b"{}",
                b'{"delay_ms": 1e9}', b"[1]"):  # fmt: skip
        assert admin(proc, "POST", bad)[0] == 400, bad
    assert harness.http("POST", proc.url("admin") + "/admin/delay", b"{nope")[0] == 400
    assert admin(proc, "GET")[1]["delay_ms"] == 250


async def test_a_large_stream_arrives_whole_and_in_order(spawn, echo):
    # More than the link's pending bound (1 MiB): reading pauses and resumes on the way.
    proc = start_link(spawn, echo, "--delay-ms", "20")
    payload = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit
    host, port = proc.address()
    reader, writer = await asyncio.open_connection(host, port)

    async def send():
        for i in range(0, len(payload), 100_000):
            writer.write(payload[i : i + 100_000])
            await writer.drain()
        writer.write_eof()  # half-close: the echo answers, then closes

    sender = asyncio.ensure_future(send())
    got = await asyncio.wait_for(reader.read(-1), 30)  # to EOF: the close came through
    await sender
    writer.close()
    assert got == payload


async def test_unreachable_target_closes_the_client_and_counts_it(spawn, unused_port):
    proc = start_link(spawn, f"127.0.0.1:{unused_port}")
    host, port = proc.address()
    reader, writer = await asyncio.open_connection(host, port)
    assert await asyncio.wait_for(reader.read(10), 10) == b""
    writer.close()
    _, _, metrics = harness.http("GET", proc.url("admin") + "/metrics")
    assert b"scalelab_link_target_errors_total 1\n" in metrics


async def test_connections_beyond_the_limit_are_closed(spawn, echo):
    proc = start_link(spawn, echo, "--max-connections", "1")
    host, port = proc.address()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"one\n")
    assert await reader.readexactly(4) == b"one\n"
    reader2, writer2 = await asyncio.open_connection(host, port)
    assert await asyncio.wait_for(reader2.read(10), 10) == b""
    writer2.close()
    writer.close()
    await harness.wait_until(  # the first pair is gone: room for a new one
        lambda: (
            b"scalelab_link_open_connections 0\n"
            in harness.http("GET", proc.url("admin") + "/metrics")[2]
        ),
        what="the closed connection leaves the count",
    )
    got, _ = await round_trip(proc)
    assert got == b"ping\n"


@pytest.fixture
def unused_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_scenario_delays_a_link_in_a_running_topology(tmp_path):
    """A stage puts a link in front of its web server; a ``delay`` event slows it down."""
    from topologies.launcher import Launcher
    from topologies.scenario import Event, Scenario, ScenarioPlayer
    from topologies.tiers import link
    from topologies.topology import Component, Topology

    topology = Topology("far", [
        Component("web-1", "web", "--db sqlite:{data}/app.db --seed-users 5"),
        link("link-web", "web-1"),
    ], entry="link-web")  # fmt: skip
    with Launcher(topology, tmp_path / "far") as launcher:
        launcher.start()
        assert harness.http("GET", launcher.entry_url + "/users/1")[0] == 200
        scenario = Scenario("far", "", (Event(0, "delay", "link-web", delay_ms=200),
                                        Event(0, "delay", "web-1", delay_ms=5)))  # fmt: skip
        player = ScenarioPlayer(launcher, scenario)
        player.start()
        player.join(30)
        ok, refused = player.records
        assert ok["ok"] and ok["delay_ms"] == 200, ok
        assert not refused["ok"] and "not a link" in refused["error"], refused  # web-1 has no op
        started = time.monotonic()
        assert harness.http("GET", launcher.entry_url + "/users/1")[0] == 200
        assert time.monotonic() - started >= 0.4  # the request and the answer, 200 ms each
