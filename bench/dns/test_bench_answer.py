"""Hot-path benchmarks: parse and answer a typical query, with no sockets.

Run: ``.venv/bin/python -m pytest bench/dns --benchmark-only -p no:cacheprovider``
"""

from __future__ import annotations

from pathlib import Path

import dns.edns
import dns.message
import pytest

from components.dns.geo import Geo, load_rules
from components.dns.protocol import parse_query
from components.dns.responder import Responder
from components.dns.zone import Catalog, load_zone

DATA = Path(__file__).resolve().parents[2] / "tests" / "components" / "dns" / "data"

A_QUERY = dns.message.make_query("www.example.com", "A", use_edns=0).to_wire()
NX_QUERY = dns.message.make_query("nope.example.com", "A", use_edns=0).to_wire()
GEO_QUERY = dns.message.make_query("www.geo.example.com", "A", use_edns=0,
                                   options=[dns.edns.ECSOption("10.1.7.0", 24)]).to_wire()  # fmt: skip


@pytest.fixture(scope="module")
def responder():
    catalog = Catalog([load_zone(DATA / "example.com.zone")])
    rules = load_rules(DATA / "geo.toml")
    for name, rule in rules.names.items():
        catalog.add_dynamic(name, rule.rtype)
    return Responder(catalog, Geo(rules))


def test_parse_query(benchmark):
    query = benchmark(parse_query, A_QUERY)
    assert query.qtype == 1


def test_answer_static_cached(benchmark, responder):
    """The common case: a query repeated byte for byte, its reply already cached."""
    reply = benchmark(responder.respond, A_QUERY, "127.0.0.1", True)
    assert reply.rcode == 0


def test_answer_static_uncached(benchmark, responder):
    """Parse, lookup and encode with compression (the caches cleared every round)."""

    def run():
        responder._cache.clear()
        responder._exact[True].clear()
        return responder.respond(A_QUERY, "127.0.0.1", True)

    assert benchmark(run).rcode == 0


def test_answer_static_new_case(benchmark, responder):
    """Same name in a new case each round: parsed, then the decoded-key cache."""

    def run():
        responder._exact[True].clear()
        return responder.respond(A_QUERY, "127.0.0.1", True)

    assert benchmark(run).rcode == 0


def test_answer_nxdomain(benchmark, responder):
    assert benchmark(responder.respond, NX_QUERY, "127.0.0.1", True).rcode == 3


def test_answer_geo_with_client_subnet(benchmark, responder):
    """A geo name with ECS, repeated byte for byte (a load tool, a resolver's users):
    the geo fast path, one ``geo.answer`` (health, weighted pick) and the per-target
    encoding; no parse, no zone walk."""
    reply = benchmark(responder.respond, GEO_QUERY, "127.0.0.1", True)
    assert reply.region == "eu"


def test_answer_geo_full_path(benchmark, responder):
    """A geo name with ECS seen for the first time: parse, lookup, locate, pick; the
    per-target encoding still cached."""

    def run():
        responder._geo_exact[True].clear()
        return responder.respond(GEO_QUERY, "127.0.0.1", True)

    assert benchmark(run).region == "eu"
