"""The asyncio stub resolver against a real server (and a silent socket)."""

from __future__ import annotations

import socket

import pytest

import harness
from components.dns.client import ResolveError, Resolver
from components.dns.protocol import Rcode, parse_response


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def queries_seen(proc) -> float:
    body = harness.http("GET", proc.url("admin") + "/metrics")[2].decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith("scalelab_dns_queries_total{"))  # fmt: skip


async def test_resolves_and_caches_until_the_ttl_runs_out(server):
    clock = FakeClock()
    async with Resolver(server.address(), clock=clock) as resolver:
        first = await resolver.resolve("mail.example.com")
        assert first.addresses == ["192.0.2.25"] and first.ttl == 300 and not first.from_cache
        seen = queries_seen(server)
        clock.now += 299
        again = await resolver.resolve("MAIL.example.com")
        assert again.from_cache and again.ttl == 1
        assert queries_seen(server) == seen  # no query went out
        clock.now += 2
        assert not (await resolver.resolve("mail.example.com")).from_cache


async def test_nxdomain_raises_and_is_cached_for_the_negative_ttl(server):
    clock = FakeClock()
    async with Resolver(server.address(), clock=clock) as resolver:
        with pytest.raises(ResolveError) as error:
            await resolver.resolve("nope.example.com")
        assert error.value.rcode == Rcode.NXDOMAIN
        with pytest.raises(ResolveError, match="cached"):
            await resolver.resolve("nope.example.com")
        clock.now += 301
        with pytest.raises(ResolveError) as error:
            await resolver.resolve("nope.example.com")
        assert "cached" not in str(error.value)


async def test_nodata_is_an_empty_answer(server):
    async with Resolver(server.address()) as resolver:
        answer = await resolver.resolve("mail.example.com", "AAAA")
        assert answer.addresses == [] and answer.ttl == 300


async def test_refused_raises(server):
    async with Resolver(server.address()) as resolver:
        with pytest.raises(ResolveError) as error:
            await resolver.resolve("example.org")
        assert error.value.rcode == Rcode.REFUSED


async def test_truncated_reply_is_retried_over_tcp(server):
    async with Resolver(server.address()) as resolver:
        answer = await resolver.resolve("big.example.com", "TXT")
        assert len(answer.response.answer) == 21 and not answer.response.truncated


async def test_client_subnet_plays_a_user_in_a_region(server):
    async with Resolver(server.address(), ecs="10.2.0.0/16") as us:
        answer = await us.resolve("www.geo.example.com")
        assert answer.addresses == ["198.51.100.10"] and answer.ttl == 20
        assert answer.response.ecs.scope_prefix == 16
    async with Resolver(server.address(), ecs="10.1.200.0/24") as lab:
        assert (await lab.resolve("www.geo.example.com")).addresses == ["192.0.2.77"]


async def test_silence_times_out_after_the_retries():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        resolver = Resolver(silent.getsockname(), timeout_s=0.1, retries=1)
        try:
            with pytest.raises(ResolveError, match="2 tries"):
                await resolver.resolve("www.example.com")
            # It did try twice.
            silent.settimeout(1)
            assert silent.recv(512) and silent.recv(512)
        finally:
            resolver.close()


def test_parse_response_reads_ecs_scope_and_extended_rcode():
    import dns.edns
    import dns.message
    import dns.rcode

    reply = dns.message.make_response(dns.message.make_query("x.example.", "A"))
    reply.use_edns(0, options=[dns.edns.ECSOption("10.0.0.0", 8, 8)])
    reply.set_rcode(dns.rcode.BADVERS)
    parsed = parse_response(reply.to_wire())
    assert parsed.rcode == 16 and parsed.ecs.scope_prefix == 8
