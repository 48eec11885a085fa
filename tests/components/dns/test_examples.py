"""The example zone and rules shipped for the multi_dc stage load and answer as documented.

They are package data (``components/dns/examples/``), read here through
``importlib.resources`` as the stage will, and loaded by the server's own loading path.
"""

from __future__ import annotations

from collections import Counter
from importlib import resources

import dns.edns
import dns.message
import dns.rcode
import pytest

from components.dns.server import build_responder

EXAMPLES = resources.files("components.dns") / "examples"


@pytest.fixture(scope="module")
def responder():
    with resources.as_file(EXAMPLES / "scalelab.zone") as zone, \
            resources.as_file(EXAMPLES / "geo.toml") as rules:  # fmt: skip
        return build_responder([str(zone)], str(rules), 1232)


def ask(responder, name, subnet=None, rdtype="A"):
    options = [dns.edns.ECSOption(subnet, 24 if ":" not in subnet else 48)] if subnet else []
    query = dns.message.make_query(name, rdtype, use_edns=0, options=options)
    return dns.message.from_wire(responder.respond(query.to_wire(), "127.0.0.1", True).wire)


def addresses(reply) -> list[str]:
    return [rr.address for rrset in reply.answer if rrset.rdtype == 1 for rr in rrset]


def test_the_files_are_shipped_inside_the_package():
    assert {p.name for p in EXAMPLES.iterdir()} >= {"scalelab.zone", "geo.toml"}


def test_each_region_gets_its_nearest_data_centre(responder):
    assert addresses(ask(responder, "www.scalelab.test", "10.1.5.0")) == ["127.0.1.1"]
    assert addresses(ask(responder, "www.scalelab.test", "10.2.5.0")) == ["127.0.2.1"]
    assert addresses(ask(responder, "www.scalelab.test", "fd00:2::")) == ["127.0.2.1"]
    assert addresses(ask(responder, "www.scalelab.test")) == ["127.0.1.1"]  # default: east
    reply = ask(responder, "api.scalelab.test", "10.2.5.0")  # CNAME into the rules
    assert addresses(reply) == ["127.0.2.1"] and reply.answer[-1].ttl == 20


def test_a_data_centre_down_sends_its_users_to_the_other(responder):
    health = responder.geo.health
    health.force("dc2", False)
    try:
        assert addresses(ask(responder, "www.scalelab.test", "10.2.5.0")) == ["127.0.1.1"]
    finally:
        health.force("dc2", None)
    assert addresses(ask(responder, "www.scalelab.test", "10.2.5.0")) == ["127.0.2.1"]


def test_the_weighted_name_splits_eighty_twenty(responder):
    split = Counter(addresses(ask(responder, "split.scalelab.test", "10.2.5.0"))[0]
                    for _ in range(100))  # fmt: skip
    assert split == {"127.0.1.1": 80, "127.0.2.1": 20}  # exact over whole windows


def test_static_names_and_negative_answers(responder):
    assert addresses(ask(responder, "lb.dc2.scalelab.test")) == ["127.0.2.1"]
    nx = ask(responder, "nope.scalelab.test")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].ttl == 60
    assert ask(responder, "www.scalelab.test", rdtype="AAAA").answer == []  # NODATA
