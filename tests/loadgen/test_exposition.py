"""The exposition parser agrees with the real producers and refuses malformed text."""

import contextlib
import math

import prometheus_client
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from components.common.metrics import Registry
from loadgen.exposition import ExpositionError, parse_exposition


def test_parses_what_prometheus_client_renders():
    registry = prometheus_client.CollectorRegistry()
    c = prometheus_client.Counter("app_hits", "hits", ["route"], registry=registry)
    c.labels(route="/users/{id}").inc(7)
    g = prometheus_client.Gauge("app_depth", "depth", registry=registry)
    g.set(-2.5)
    h = prometheus_client.Histogram("app_seconds", "latency", registry=registry)
    h.observe(0.2)
    text = prometheus_client.generate_latest(registry).decode()
    ours = parse_exposition(text)
    theirs = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert ours.samples == theirs
    assert ours.kind("app_hits_total") == "counter"
    assert ours.kind("app_seconds_bucket") == "histogram"
    assert ours.kind("app_depth") == "gauge"
    assert ours.value("app_hits_total", route="/users/{id}") == 7


label_values = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=20)


@given(label_values, st.integers(min_value=0, max_value=10**12))
def test_round_trips_our_own_registry_with_any_label_value(value, count):
    registry = Registry()
    registry.counter("scalelab_x_things_total", "things", ["what"]).labels(value).inc(count)
    parsed = parse_exposition(registry.render())
    assert parsed.value("scalelab_x_things_total", what=value) == count
    assert parsed.kind("scalelab_x_things_total") == "counter"


def test_special_values_timestamps_and_comments():
    text = (
        "# a free comment\n\n"
        "# TYPE a gauge\n"
        "a NaN\n"
        'b{x="1"} +Inf 1700000000000\n'
        "c -Inf\n"
        'd{ x = "y" } 1e3\n'
    )
    parsed = parse_exposition(text)
    assert math.isnan(parsed.value("a"))
    assert parsed.value("b", x="1") == math.inf
    assert parsed.value("c") == -math.inf
    assert parsed.kind("c") == "untyped"


def test_escapes_in_label_values():
    parsed = parse_exposition('m{path="a\\\\b\\"c\\nd"} 1\n')
    assert parsed.value("m", path='a\\b"c\nd') == 1


def test_total_sums_over_labels():
    parsed = parse_exposition('q{op="a"} 2\nq{op="b"} 3\nr 1\n')
    assert parsed.total("q") == 5 and parsed.total("absent") == 0


@pytest.mark.parametrize(
    "text",
    [
        "9metric 1\n",
        "m\n",
        "m one\n",
        "m 1 2 3\n",
        "m{x} 1\n",
        'm{x="1" 1\n',
        'm{x "1"} 1\n',
        "m{x=1} 1\n",
        'm{x="1\n',
        'm{x="\\q"} 1\n',
        'm{x="1"}1\n',
        "m 1 notatime\n",
        "# TYPE m flavour\n",
        "# TYPE m\n",
    ],
)
def test_malformed_lines_are_refused_with_the_line_number(text):
    with pytest.raises(ExpositionError, match="line 1|TYPE"):
        parse_exposition(text)


@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_is_refused_cleanly(text):
    with contextlib.suppress(ExpositionError):
        parse_exposition(text)


def test_oversized_exposition_is_refused():
    with pytest.raises(ExpositionError, match="larger"):
        parse_exposition("#" * (8 << 20 | 1))
