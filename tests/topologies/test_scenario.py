"""Scenario files (parsing, checks against a stage) and playing one through the CLI."""

import contextlib
import json
import subprocess
import sys
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from topologies import cli
from topologies.process import child_env
from topologies.scenario import (
    SHIPPED_DIR,
    Event,
    ScenarioError,
    load_scenario,
    parse_scenario,
)


def doc(*events, **extra):
    return {"events": list(events), **extra}


def test_events_are_parsed_and_sorted_by_time():
    scenario = parse_scenario(doc({"at": 7, "action": "resume", "target": "store-1"},
                                  {"at": 2.5, "action": "pause", "target": "store-1"},
                                  {"at": 9, "action": "add", "target": "web-3", "like": "web-1",
                                   "join": "lb"}), "s")  # fmt: skip
    assert scenario.events == (Event(2.5, "pause", "store-1"), Event(7.0, "resume", "store-1"),
                               Event(9.0, "add", "web-3", "web-1", "lb"))  # fmt: skip
    assert scenario.last_at_s == 9.0
    (event,) = parse_scenario(doc({"at": 3, "action": "delay", "target": "link-db",
                                   "delay_ms": 80}), "d").events  # fmt: skip
    assert event == Event(3.0, "delay", "link-db", delay_ms=80.0)
    assert event.describe() == "delay link-db to 80 ms"


@pytest.mark.parametrize(("raw", "message"), [
    ({}, "needs \\[\\[events\\]\\]"),
    ({"events": []}, "needs"),
    ({"events": [], "bogus": 1}, "unknown keys"),
    (doc({"at": -1, "action": "kill", "target": "a"}), "'at'"),
    (doc({"at": True, "action": "kill", "target": "a"}), "'at'"),
    (doc({"at": "5", "action": "kill", "target": "a"}), "'at'"),
    (doc({"at": 1, "action": "explode", "target": "a"}), "'action' must be one of"),
    (doc({"at": 1, "action": "delay", "target": "a"}), "needs 'delay_ms'"),
    (doc({"at": 1, "action": "delay", "target": "a", "delay_ms": -5}), "needs 'delay_ms'"),
    (doc({"at": 1, "action": "delay", "target": "a", "delay_ms": "5"}), "needs 'delay_ms'"),
    (doc({"at": 1, "action": "delay", "target": "a", "delay_ms": True}), "needs 'delay_ms'"),
    (doc({"at": 1, "action": "delay", "target": "a", "delay_ms": 1e9}), "needs 'delay_ms'"),
    (doc({"at": 1, "action": "kill", "target": "a", "delay_ms": 5}), "for delay only"),
    (doc({"at": 1, "action": "kill", "target": "Web 1"}), "'target'"),
    (doc({"at": 1, "action": "kill"}), "'target'"),
    (doc({"at": 1, "action": "add", "target": "web-3"}), "needs 'like'"),
    (doc({"at": 1, "action": "kill", "target": "a", "like": "b"}), "for add only"),
    (doc({"at": 1, "action": "kill", "target": "a", "when": 2}), "unknown keys"),
    (doc("kill a"), "must be a table"),
    ({"events": [{"at": 1, "action": "kill", "target": "a"}] * 1001}, "at most"),
])  # fmt: skip
def test_bad_scenarios_are_refused_with_the_reason(raw, message):
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(raw, "bad")


@given(st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=8),
                                                      st.lists(st.integers(), max_size=3))))  # fmt: skip
def test_arbitrary_documents_parse_or_raise_scenario_error(raw):
    with contextlib.suppress(ScenarioError):
        parse_scenario(raw, "fuzz")


def test_targets_are_checked_against_the_stage():
    names = ["store-1", "web-1", "lb"]
    load_scenario("kill_primary").check_against(names)
    load_scenario("add_web").check_against(names)
    with pytest.raises(ScenarioError, match="no such component"):
        load_scenario("kill_cache").check_against(names)
    with pytest.raises(ScenarioError, match="already a component"):
        load_scenario("add_web").check_against([*names, "web-3"])
    with pytest.raises(ScenarioError, match="no component 'lb'"):
        load_scenario("add_web").check_against(["store-1", "web-1"])


def test_every_shipped_scenario_parses():
    shipped = sorted(p.stem for p in SHIPPED_DIR.glob("*.toml"))
    assert {"kill_web", "kill_primary", "kill_cache", "add_web"} <= set(shipped)
    for name in shipped:
        assert load_scenario(name).events


def test_unknown_scenario_names_the_shipped_ones(tmp_path):
    with pytest.raises(ScenarioError, match="kill_web"):
        load_scenario(str(tmp_path / "nope.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("events = [")
    with pytest.raises(ScenarioError, match="not TOML"):
        load_scenario(str(bad))


def scalelab(tmp_path, *args, timeout_s=90):
    return subprocess.run([sys.executable, "-m", "topologies.cli", *args], cwd=tmp_path,
                          capture_output=True, text=True, env=child_env(), timeout=timeout_s)  # fmt: skip


def test_scenario_needs_load_and_a_matching_stage(capsys):
    # Both are usage errors found before anything starts (in-process: no signal handlers).
    assert cli.main(["run", "separate_db", "--scenario", "kill_web"]) == 2
    assert "--scenario needs --load" in capsys.readouterr().err
    assert cli.main(["run", "separate_db", "--load", "default", "--scenario", "kill_cache"]) == 2
    assert "cache-1: no such component" in capsys.readouterr().err


def test_kill_web_under_load_costs_no_failed_gets(tmp_path):
    """The chapter's claim for the load balancer, end to end through ``scalelab run``."""
    profile = tomllib.loads((SHIPPED_DIR.parent.parent / "loadgen/profiles/default.toml")
                            .read_text())  # fmt: skip
    assert profile["requests"][0]["name"] == "get_user"
    (tmp_path / "kill.toml").write_text(
        'description = "kill web-1"\n[[events]]\nat = 2.5\naction = "kill"\ntarget = "web-1"\n'
    )
    report_path = tmp_path / "report.json"
    result = scalelab(tmp_path, "run", "load_balanced", "--load", "default", "--duration", "5",
                      "--scenario", str(tmp_path / "kill.toml"), "--report", str(report_path))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(report_path.read_text())
    assert report["stage"] == "load_balanced"
    [event] = report["scenario"]["events"]
    assert event["ok"] and event["action"] == "kill" and event["exit_code"] == -9
    # In-flight writes on the killed server may fail (they are not retried); reads may not.
    failed = report["errors"]["by_request"].get("http_5xx", {})
    assert "get_user" not in failed and "static_css" not in failed, report["errors"]
    assert "http_4xx" not in report["errors"]["by_request"], report["errors"]
    assert report["requests"] > 100
    assert len(report["timeline"]) >= 3
    [window] = report["fault_windows"]  # the users' seconds around the kill, in the JSON
    assert any(row["offset_s"] == 0 for row in window["rows"])
    for kind, n in window["errors"].items():  # a part of the run's errors of that kind
        assert n <= report["errors"]["by_kind"].get(kind, 0) + report["warmup"]["errors"]
    assert "<- kill web-1" in result.stdout
    audit = report["write_audit"]  # the auditor's writes went through web-2 or were retried
    assert audit["acknowledged"] >= 5 and audit["lost"] == 0, audit
    assert audit["stale_reads_with_cookie"] == 0, audit
    assert "write audit:" in result.stdout
    share = report["stage_figures"]["lb_share"]
    assert len(share) == 2 and abs(sum(share.values()) - 1) < 0.01


READS_PROFILE = """
description = "reads of 20 users by 4 users, for the scenarios played in-process"
duration_s = 4
warmup_s = 0
users = 4
think_ms = 20
timeout_s = 5

[keys]
n = 20

[[requests]]
name = "get_user"
method = "GET"
path = "/users/{key}"
weight = 1
"""


def play(tmp_path, stage, scenario, duration_s=4, **options):
    """``scalelab run STAGE --load (4 s of reads) --scenario``, in this process: the
    report dict that the CLI writes as JSON, and the text it prints."""
    import io

    from loadgen import run_load
    from topologies import stages
    from topologies.launcher import Launcher

    module = stages.load(stage)
    args = stages.default_options(module)
    vars(args).update({"seed_users": 20, **options})
    topology = module.topology(args)
    scenario.check_against(topology.names)
    profile = tmp_path / "reads.toml"
    profile.write_text(READS_PROFILE)
    out = io.StringIO()
    with Launcher(topology, tmp_path / "run", out=out) as launcher:
        launcher.start()
        report = cli.run_with_faults(launcher, scenario, lambda on_start: run_load(
            launcher.entry_url, profile, duration_s=duration_s, progress=False, out=out,
            on_start=on_start), out)  # fmt: skip
    assert all(e["ok"] for e in report["scenario"]["events"]), report["scenario"]
    return report, out.getvalue()


def test_the_users_errors_around_a_kill_are_in_its_window_by_kind(tmp_path):
    """The client's timeline, cut around the event: killing the only web server leaves
    every later request refused, and the window puts those errors on the kill's second."""
    scenario = parse_scenario(doc({"at": 1.5, "action": "kill", "target": "web-1"}), "kill_entry")
    report, text = play(tmp_path, "single_server", scenario)
    [window] = report["fault_windows"]
    assert window["what"] == "kill web-1"
    assert window["load_s"] >= 1.5  # the scenario's clock starts at the load's t = 0
    offsets = [row["offset_s"] for row in window["rows"]]
    assert 0 in offsets and min(offsets) < 0  # the kill's second, and seconds before it
    kill_row = next(row for row in report["timeline"] if row["t"] == window["second"])
    assert kill_row["t"] <= window["load_s"] < kill_row["t"] + report["timeline_step_s"]
    before = [row for row in window["rows"] if row["offset_s"] < 0]
    assert all(row["answers"] > 0 and not row["errors"] for row in before), before
    # After the kill nothing answers: connections refused (or cut, for one in flight).
    after = [row for row in window["rows"] if row["offset_s"] > 0]
    assert after and all(row["answers"] == 0 for row in after), after
    errors = window["errors_from_event"]
    assert errors.get("connect", 0) > 0 and set(errors) <= {"connect", "disconnect"}, errors
    assert sum(errors.values()) == sum(sum(r["errors"].values()) for r in [kill_row, *after])
    assert window["errors"] == errors  # nothing failed before the kill
    assert "around kill web-1" in text and "<- kill web-1" in text


def test_the_shipped_delay_scenario_shows_in_the_users_p50(tmp_path):
    """``delay_db`` played faster (its delay at 1.2 s, its return to 0 at 3.6 s): with no
    cache every GET crosses link-db twice, so the seconds between have a p50 of at least
    the delay, and those before and after are far below it."""
    import dataclasses

    shipped = load_scenario("delay_db")
    delay, back = shipped.events
    assert delay.action == back.action == "delay" and delay.target == back.target == "link-db"
    assert delay.delay_ms >= 50 and back.delay_ms == 0
    events = (dataclasses.replace(delay, at_s=1.2), dataclasses.replace(back, at_s=3.6))
    report, text = play(tmp_path, "separate_db", dataclasses.replace(shipped, events=events),
                        duration_s=5, db_link_ms=0.0, cache_mb=0)  # fmt: skip
    assert report["errors"]["total"] == 0, report["errors"]
    slowed, restored = report["fault_windows"]
    # Lower bounds only: the added delay is a floor (2 x delay_ms per GET, asserted as 1 x),
    # and without it a GET on loopback is far below it even on a busy machine.
    before = [row for row in slowed["rows"] if row["offset_s"] < 0]
    during = [
        row for row in slowed["rows"] if row["offset_s"] > 0 and row["t"] < restored["second"]
    ]
    after = [row for row in restored["rows"] if row["offset_s"] > 0]
    assert before and during and after, report["fault_windows"]
    assert all(row["p50_ms"] < delay.delay_ms for row in before + after), before + after
    assert all(row["p50_ms"] >= delay.delay_ms for row in during), during
    assert f"<- delay link-db to {delay.delay_ms:g} ms" in text


def test_delay_db_plays_on_the_stages_db_link_only():
    """``--db-link-ms`` puts link-db in front of the primary, where the web tier's --db
    points; replicas stay direct. Without it delay_db has no target."""
    from topologies import stages

    scenario = load_scenario("delay_db")
    for stage in ("separate_db", "replicated"):
        module = stages.load(stage)
        args = stages.default_options(module)
        with pytest.raises(ScenarioError, match="link-db: no such component"):
            scenario.check_against(module.topology(args).names)
        args.db_link_ms = 0.0
        topology = module.topology(args)
        scenario.check_against(topology.names)
        link = next(c for c in topology.components if c.name == "link-db")
        assert link.module == "topologies.link" and "--target {store-1}" in link.flags
        web = next(c for c in topology.components if c.name == "web-1")
        db = web.flags.split("--db ")[1].split()[0]
        assert db.startswith("store:{link-db}") and "{store-1}" not in db
        assert topology.names.index("link-db") < topology.names.index("web-1")
