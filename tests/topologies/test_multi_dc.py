"""The multi_dc stage: geoDNS sends each region to its data centre, a dead data centre
leaves the answers, and dc2's writes cross the WAN link to the primary in dc1."""

from __future__ import annotations

import json

import dns.edns
import dns.message
import dns.query
import dns.rcode
import orjson
import pytest

import harness
from components.dns.geo import parse_rules
from topologies import cli, journey, multi_dc, stages
from topologies.launcher import Launcher

JSON = {"Content-Type": "application/json"}
EAST, WEST = "10.1.7.0", "10.2.9.0"


def small_options(**overrides):
    args = stages.default_options(stages.load("multi_dc"))
    vars(args).update({"seed_users": 10, "wan_ms": 5.0, **overrides})
    return args


@pytest.fixture
def stage(tmp_path):
    launcher = Launcher(multi_dc.topology(small_options()), tmp_path / "run")
    try:
        launcher.start()
        yield launcher
    finally:
        launcher.close()


def ask(launcher: Launcher, subnet: str) -> list[str]:
    """The A records the stage's DNS gives a user in ``subnet`` (Client Subnet option)."""
    host, _, port = launcher.address("dns").rpartition(":")
    query = dns.message.make_query("www.scalelab.test", "A")
    query.use_edns(0, options=[dns.edns.ECSOption(subnet, 24)])
    reply = dns.query.udp(query, host, port=int(port), timeout=2)
    assert reply.rcode() == dns.rcode.NOERROR
    return sorted(rr.address for rrset in reply.answer for rr in rrset)


def site(launcher: Launcher, address: str) -> str:
    """The URL a user who resolved ``address`` uses: both balancers share one port."""
    port = launcher.address("dc1-lb").rpartition(":")[2]
    return f"http://{address}:{port}"


def put(url: str, first: str):
    doc = {"firstName": first, "lastName": "L", "phoneNumbers": [],
           "address": {"streetAddress": "s", "city": "c", "state": "st", "postalCode": "1"}}  # fmt: skip
    return harness.http("PUT", url, orjson.dumps(doc), JSON, timeout_s=10)


def test_the_stage_is_catalogued_after_stateless_and_stays_out_of_the_journey(capsys):
    names = list(stages.STAGES)
    assert names.index("multi_dc") == names.index("stateless") + 1
    assert "multi_dc" not in journey.DEFAULT_STAGES
    assert cli.main(["stages"]) == 0
    assert "Stage 7 (figures 15-16)" in capsys.readouterr().out


def test_the_data_centres_live_on_their_own_addresses_behind_one_port():
    topology = multi_dc.topology(small_options(web=2))
    flags = {c.name: " ".join(c.argv) for c in topology.components}
    assert [n for n in flags if n.startswith("dc1-web")] == ["dc1-web-1", "dc1-web-2"]
    port = flags["dc1-lb"].rpartition("--port ")[2]
    assert "--host 127.0.1.1" in flags["dc1-lb"] and "--host 127.0.2.1" in flags["dc2-lb"]
    assert flags["dc2-lb"].endswith(f"--port {port}")
    assert "--join {wan}" in flags["dc2-store"]  # the replica's log crosses the WAN
    assert "--db store:{wan},{dc2-store}" in flags["dc2-web-1"]  # so do dc2's writes
    assert "--delay-ms 5" in flags["wan"]


def test_the_generated_rules_place_each_region_on_its_data_centre():
    text = multi_dc.geo_rules({"dc1": "127.0.1.1:8080", "dc2": "127.0.2.1:8081"}, ttl=7)
    rules = parse_rules(text).describe()
    assert rules["ttl"] == 7
    assert rules["targets"]["dc2"] == {"address": "127.0.2.1",
                                       "health": "http://127.0.2.1:8081/health"}  # fmt: skip
    www = rules["names"]["www.scalelab.test."]["answers"]
    assert www == {"east": [{"target": "dc1", "weight": 1}],
                   "west": [{"target": "dc2", "weight": 1}]}  # fmt: skip
    assert rules["regions"]["east"]["fallback"] == ["west"]
    with pytest.raises(ValueError):  # an A record needs an address, not a host name
        multi_dc.geo_rules({"dc1": "localhost:8080"}, ttl=7)


def test_users_go_to_their_nearest_data_centre_and_move_when_it_dies(stage):
    assert ask(stage, EAST) == ["127.0.1.1"]
    assert ask(stage, WEST) == ["127.0.2.1"]
    for address in ("127.0.1.1", "127.0.2.1"):
        code, _, body = harness.http("GET", site(stage, address) + "/users/3")
        assert code == 200 and json.loads(body)["id"] == 3

    stage.kill("dc1-lb")
    # The DNS server's checks fail `fall` times, then east users get the west's centre.
    harness.wait_until_sync(lambda: ask(stage, EAST) == ["127.0.2.1"], timeout_s=15)
    assert ask(stage, WEST) == ["127.0.2.1"]
    code, _, _ = harness.http("GET", site(stage, ask(stage, EAST)[0]) + "/users/3")
    assert code == 200


def test_a_write_through_dc2_reaches_the_primary_and_returns_to_dc2_over_the_wan(stage):
    dc1, dc2 = site(stage, "127.0.1.1"), site(stage, "127.0.2.1")
    code, headers, body = put(dc2 + "/users/4", "Crossed")
    assert code == 200, body
    lsn = int(headers["Set-Cookie"].partition("scalelab_lsn=")[2].partition(";")[0])
    # The primary in dc1 holds it (dc1 reads only the primary) ...
    assert json.loads(harness.http("GET", dc1 + "/users/4")[2])["firstName"] == "Crossed"

    # ... and the replica in dc2, which follows the primary through the link, applies it.
    def replica() -> dict:
        return json.loads(harness.http("GET", stage.url("dc2-store") + "/status")[2])["scalelab"]

    assert replica()["primary"] == stage.address("wan")
    harness.wait_until_sync(lambda: replica()["applied_lsn"] >= lsn)
    assert json.loads(harness.http("GET", dc2 + "/users/4")[2])["firstName"] == "Crossed"


def test_a_data_centre_whose_web_tier_died_leaves_the_answers_too(stage):
    assert ask(stage, EAST) == ["127.0.1.1"]
    stage.kill("dc1-web-1")  # dc1's balancer lives on, with nothing behind it
    harness.wait_until_sync(lambda: ask(stage, EAST) == ["127.0.2.1"], timeout_s=15)
    code, _, _ = harness.http("GET", site(stage, "127.0.2.1") + "/users/3")
    assert code == 200
