"""Topology declarations and reference resolution: pure, no processes."""

import pytest

from topologies.topology import Component, Topology, TopologyError, references, resolve

LISTEN = {
    "web-1": {"main": "127.0.0.1:40001", "admin": "127.0.0.1:50001"},
    "web-2": {"main": "127.0.0.1:40002", "admin": "127.0.0.1:50002"},
}
PLACES = {"data": "/runs/x/lb", "run": "/runs/x"}


def test_flags_string_is_split_like_a_shell():
    spec = Component("lb", "lb", "--backend {web-1} --note 'two words'")
    assert spec.argv == ("--backend", "{web-1}", "--note", "two words")


def test_flags_may_be_a_sequence():
    assert Component("lb", "lb", ["--a", "b c"]).argv == ("--a", "b c")


def test_bare_reference_is_the_main_address_and_role_selects_another():
    assert resolve("{web-1}", LISTEN, PLACES) == "127.0.0.1:40001"
    assert resolve("{web-2.admin}", LISTEN, PLACES) == "127.0.0.1:50002"
    assert resolve("{web-1},{web-2}", LISTEN, PLACES) == "127.0.0.1:40001,127.0.0.1:40002"


def test_data_and_run_are_places():
    assert resolve("sqlite:{data}/app.db", LISTEN, PLACES) == "sqlite:/runs/x/lb/app.db"
    assert resolve("{run}/shared", LISTEN, PLACES) == "/runs/x/shared"


def test_braces_around_other_text_are_left_alone():
    text = '{"weights": [1, 2]}'
    assert resolve(text, LISTEN, PLACES) == text


def test_unknown_role_names_the_roles_there_are():
    with pytest.raises(TopologyError, match="has no 'raft' address.*admin, main"):
        resolve("{web-1.raft}", LISTEN, PLACES)


def test_reference_to_a_component_not_running_is_an_error():
    with pytest.raises(TopologyError, match="no component 'web-9'"):
        resolve("{web-9}", LISTEN, PLACES)


def test_references_lists_name_and_role():
    assert references("--x {a} --y {b.admin} {c}x") == [
        ("a", "main"),
        ("b", "admin"),
        ("c", "main"),
    ]


def test_topology_accepts_references_to_earlier_components():
    topology = Topology(
        "two",
        [Component("web-1", "web"), Component("lb", "lb", "--backend {web-1}")],
        entry="lb",
    )
    assert topology.names == ["web-1", "lb"]
    assert topology.scraped == ["web-1", "lb"]


def test_reference_to_a_later_component_is_caught_before_anything_runs():
    with pytest.raises(TopologyError, match="lb: refers to \\{web-1\\}, which is not declared"):
        Topology("bad", [Component("lb", "lb", "--backend {web-1}"), Component("web-1", "web")],
                 entry="lb")  # fmt: skip


def test_self_reference_is_an_error():
    with pytest.raises(TopologyError, match="own address"):
        Topology("bad", [Component("lb", "lb", "--peer {lb}")], entry="lb")


def test_duplicate_names_are_an_error():
    with pytest.raises(TopologyError, match="declared twice"):
        Topology("bad", [Component("web-1", "web"), Component("web-1", "web")], entry="web-1")


@pytest.mark.parametrize("name", ["Web", "web.1", "1web", "", "data", "run"])
def test_bad_or_reserved_names_are_rejected(name):
    with pytest.raises(TopologyError):
        Topology("bad", [Component(name, "web")], entry=name or "x")


def test_entry_and_scrape_must_name_components():
    with pytest.raises(TopologyError, match="entry"):
        Topology("bad", [Component("web-1", "web")], entry="lb")
    with pytest.raises(TopologyError, match="scrape"):
        Topology("bad", [Component("web-1", "web")], entry="web-1", scrape=["cache"])


def test_entry_may_name_a_role():
    topology = Topology("t", [Component("web-1", "web")], entry="web-1.admin")
    assert topology.entry == "web-1.admin"


def _single_server(*argv):
    import argparse

    from topologies import single_server

    parser = argparse.ArgumentParser()
    single_server.add_arguments(parser)
    return single_server.topology(parser.parse_args(list(argv)))


def test_single_server_is_one_web_server_with_sqlite_and_a_local_cache():
    topology = _single_server()
    (web,) = topology.components
    assert (web.name, web.component) == ("web-1", "web")
    assert web.argv == ("--db", "sqlite:{data}/app.db", "--cache", "local:64",
                        "--seed-users", "1000")  # fmt: skip
    assert topology.entry == "web-1" and topology.scraped == ["web-1"]


def test_single_server_passes_capacity_emulation_and_can_drop_the_cache():
    (web,) = _single_server("--service-time-ms", "2.5", "--max-concurrency", "8",
                            "--cache-mb", "0").components  # fmt: skip
    argv = " ".join(web.argv)
    assert "--cache none" in argv
    assert "--service-time-ms 2.5" in argv and "--max-concurrency 8" in argv
