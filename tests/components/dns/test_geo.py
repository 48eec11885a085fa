"""Geo rules: locating clients, weighted splits, health with rise/fall, failover."""

from __future__ import annotations

import contextlib
import ipaddress
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.dns.geo import (
    Geo,
    GeoError,
    HealthBook,
    packed_address,
    parse_rules,
    rules_from_dict,
)
from components.dns.protocol import RRType, name_from_text

WWW = name_from_text("www.geo.example.com.")


def ip(text):
    return ipaddress.ip_address(text).packed


@pytest.fixture
def rules(rules_text):
    return parse_rules(rules_text, "geo.toml")


@pytest.fixture
def geo(rules):
    return Geo(rules)


def test_rules_parse(rules):
    assert set(rules.regions) == {"eu", "eu-lab", "us"}
    rule = rules.names[WWW]
    assert rule.rtype == RRType.A and rule.ttl == 20 and rule.default_region == "us"
    assert rule.answers["eu"] == (("eu-1", 70), ("eu-2", 30))
    assert rules.health.interval_s == 0.1 and rules.health.rise == 2


def test_longest_matching_subnet_wins(rules):
    assert rules.locate(ip("10.1.2.3"))[0] == "eu"
    assert rules.locate(ip("10.1.200.9")) == ("eu-lab", 24)
    assert rules.locate(ip("10.2.9.9")) == ("us", 16)
    assert rules.locate(ip("2001:db8:1::5"))[0] == "eu"


def test_scope_excludes_nested_subnets_of_other_regions(rules):
    # eu is 10.1.0.0/16 with eu-lab's 10.1.200.0/24 nested inside. Third octets:
    # 200 = 0b11001000, 128 = 0b10000000 share one bit, so 10.1.128.1 is answered for
    # 10.1.128.0/18; 2 = 0b00000010 shares none, so 10.1.2.3 for 10.1.0.0/17.
    assert rules.locate(ip("10.1.128.1")) == ("eu", 18)
    assert rules.locate(ip("10.1.2.3")) == ("eu", 17)
    assert rules.locate(ip("10.1.200.9")) == ("eu-lab", 24)


def test_unmatched_clients_have_no_region_and_a_scope_excluding_every_subnet(rules):
    region, scope = rules.locate(ip("192.0.2.1"))
    assert region is None
    assert scope == 1  # 192.x differs from 10.x in the first bit
    assert rules.locate(ip("2001:db9::1")) == (None, 32)


def test_weighted_answers_split_exactly_over_each_window(geo):
    picks = Counter(geo.answer(WWW, ip("10.1.2.3")).target for _ in range(100))
    assert picks == {"eu-1": 70, "eu-2": 30}


def test_weighted_split_over_ten_thousand_answers_is_within_two_points(geo):
    picks = Counter(geo.answer(WWW, ip("10.1.2.3")).target for _ in range(10_000))
    assert abs(picks["eu-1"] / 10_000 - 0.70) <= 0.02


def test_smooth_weighting_interleaves_rather_than_bursting(geo):
    first_ten = [geo.answer(WWW, ip("10.1.2.3")).target for _ in range(10)]
    assert first_ten.count("eu-2") == 3
    assert "eu-2eu-2" not in "".join(first_ten)


def test_unknown_clients_get_the_default_region(geo):
    found = geo.answer(WWW, ip("203.0.113.5"))
    assert (found.region, found.target) == ("us", "us-1")
    assert geo.answer(WWW, None).target == "us-1"


def test_a_down_target_leaves_the_answers(geo):
    geo.health.force("eu-1", False)
    picks = {geo.answer(WWW, ip("10.1.2.3")).target for _ in range(20)}
    assert picks == {"eu-2"}


def test_a_region_with_no_one_left_falls_back_to_the_next(geo):
    geo.health.force("lab-1", False)
    found = geo.answer(WWW, ip("10.1.200.1"))
    assert found.region == "eu" and found.target in {"eu-1", "eu-2"}
    geo.health.force("eu-1", False)
    geo.health.force("eu-2", False)
    # eu-lab falls back to eu only (its list); eu is empty too: fail open to eu-lab.
    assert geo.answer(WWW, ip("10.1.200.1")).target == "lab-1"
    found = geo.answer(WWW, ip("10.1.2.3"))
    assert (found.region, found.target) == ("us", "us-1")


def test_forcing_back_to_auto_restores_the_checked_state(geo):
    geo.health.force("eu-1", False)
    geo.health.force("eu-1", None)
    assert geo.health.healthy("eu-1")
    with pytest.raises(KeyError):
        geo.health.force("nope", False)


def checked_rules(rules_text):
    text = rules_text.replace('eu-1 = { address = "192.0.2.10" }',
                              'eu-1 = { address = "192.0.2.10", health = "http://127.0.0.1:1/health" }')  # fmt: skip
    return parse_rules(text)


def test_fall_consecutive_failures_take_a_target_down_and_rise_bring_it_back(rules_text):
    book = HealthBook(checked_rules(rules_text))
    assert book.report("eu-1", False, 1.0) is None  # one failure is not enough (fall=2)
    assert book.healthy("eu-1")
    assert book.report("eu-1", False, 2.0) is False
    assert not book.healthy("eu-1")
    assert book.report("eu-1", True, 3.0) is None
    assert book.report("eu-1", False, 4.0) is None  # a failure resets the rise count
    assert book.report("eu-1", True, 5.0) is None
    assert book.report("eu-1", True, 6.0) is True
    assert book.healthy("eu-1")


def test_checks_are_due_once_per_interval_and_never_twice_in_flight(rules_text):
    book = HealthBook(checked_rules(rules_text))
    assert book.due(0.0) == [("eu-1", "http://127.0.0.1:1/health")]
    assert book.due(0.0) == []  # in flight
    book.report("eu-1", True, 10.0)
    assert book.due(10.05) == []
    assert [t for t, _ in book.due(10.1)] == ["eu-1"]


def test_a_reload_keeps_the_health_of_targets_that_stay(rules_text):
    old = HealthBook(checked_rules(rules_text))
    old.report("eu-1", False, 1.0)
    old.report("eu-1", False, 2.0)
    new = HealthBook(checked_rules(rules_text), old)
    assert not new.healthy("eu-1")
    assert new.report("ghost", True, 3.0) is None  # a target gone in a reload is ignored


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (('fallback = ["us"]', 'fallback = ["mars"]'), "unknown region 'mars'"),
        (('target = "us-1"', 'target = "us-9"'), "unknown target"),
        (("10.2.0.0/16", "10.2.0.1/16"), "bad subnet"),
        (('address = "192.0.2.11"', 'address = "2001:db8::11"'), "mixes IPv4 and IPv6"),
        (("rise = 2", "rise = 0"), "health.rise"),
        (("ttl = 20", "ttl = 20\nbogus = 1"), "unknown top-level"),
        (('default_region = "us"', 'default_region = "eu-lab2"'), "default_region"),
        (("weight = 70", "weight = -1"), "weight"),
        (("[targets]", "[targets"), "geo.toml"),
    ],
)
def test_bad_rules_are_refused_with_the_reason(rules_text, edit, reason):
    with pytest.raises(GeoError) as error:
        parse_rules(rules_text.replace(*edit), "geo.toml")
    assert reason in str(error.value)
    assert str(error.value).startswith("geo.toml")


def test_zero_weights_everywhere_share_equally(rules_text):
    text = rules_text.replace("weight = 70", "weight = 0").replace("weight = 30", "weight = 0")
    geo = Geo(parse_rules(text))
    picks = Counter(geo.answer(WWW, ip("10.1.2.3")).target for _ in range(10))
    assert picks == {"eu-1": 5, "eu-2": 5}


def test_zero_weight_is_standby(rules_text):
    geo = Geo(parse_rules(rules_text.replace("weight = 30", "weight = 0")))
    assert {geo.answer(WWW, ip("10.1.2.3")).target for _ in range(20)} == {"eu-1"}


def test_describe_is_plain_data(rules):
    described = rules.describe()
    assert described["names"]["www.geo.example.com."]["answers"]["us"] == [
        {"target": "us-1", "weight": 1}
    ]


@pytest.mark.parametrize(
    ("text", "packed"),
    [("10.1.2.3", bytes([10, 1, 2, 3])), ("::ffff:10.1.2.3", bytes([10, 1, 2, 3])),
     ("2001:db8::1", ip("2001:db8::1")), ("nonsense", None)],
)  # fmt: skip
def test_packed_address(text, packed):
    assert packed_address(text) == packed


@given(st.text(max_size=200))
@settings(max_examples=200)
def test_any_rules_text_parses_or_fails_with_a_geo_error(text):
    with contextlib.suppress(GeoError):
        parse_rules(text, "fuzz.toml")


@given(st.dictionaries(st.sampled_from(["regions", "targets", "names", "health", "ttl"]),
                       st.one_of(st.integers(), st.text(max_size=5),
                                 st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)),
                       max_size=5))  # fmt: skip
@settings(max_examples=200)
def test_wrongly_shaped_rules_fail_with_a_geo_error(doc):
    with contextlib.suppress(GeoError):
        rules_from_dict(doc, "fuzz.toml")


def test_a_region_that_is_not_a_table_is_a_geo_error():
    with pytest.raises(GeoError, match="must be a table"):
        rules_from_dict({"regions": {"eu": 3}})
