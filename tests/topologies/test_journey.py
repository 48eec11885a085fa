"""``scalelab journey``: its flags, the shared settings per stage, and the chart."""

import struct

from topologies import cli, stages
from topologies.journey import DEFAULT_STAGES, draw_chart, stage_options


def test_default_stages_are_the_catalogue_in_order():
    # All but queued, whose claim (a backlog and the workers it calls up) needs its own
    # load profile (photos), not the journey's shared one; `--stages queued` still runs it.
    # And but sharded, the full architecture: a dozen processes, too many for the
    # journey's two-core budget (`--stages sharded` runs it). And but stateless: under the
    # journey's anonymous load it serves what cached serves (its claim is about logins
    # and killed web servers, tests/topologies/test_stateless.py). And but multi_dc: its
    # claim (geoDNS, a data centre's failover) is asked of its DNS, not of one entry.
    skipped = ("stateless", "multi_dc", "queued", "sharded")
    assert list(DEFAULT_STAGES) == [s for s in stages.STAGES if s not in skipped]


def test_shared_settings_reach_every_stage_that_has_them():
    for name in DEFAULT_STAGES:
        options = stage_options(stages.load(name), {"service_time_ms": 7.0,
                                                    "max_concurrency": 3, "nonsense": 1})  # fmt: skip
        assert options.service_time_ms == 7.0 and options.max_concurrency == 3
        assert not hasattr(options, "nonsense")
        flags = " ".join(" ".join(c.argv) for c in stages.load(name).topology(options).components
                         if c.component == "web")  # fmt: skip
        assert "--service-time-ms 7 " in flags and "--max-concurrency 3" in flags


def test_unknown_stage_and_bad_duration_are_usage_errors(capsys):
    assert cli.main(["journey", "--stages", "single_server,nope"]) == 2
    assert "unknown stage(s) nope" in capsys.readouterr().err
    assert cli.main(["journey", "--duration", "0"]) == 2
    assert cli.main(["journey", "--store-max-concurrency", "-1"]) == 2


def test_the_chart_is_a_png_of_the_right_size(tmp_path):
    rows = [{"stage": "single_server", "rps": 300.0, "p99_ms": 100.0},
            {"stage": "load_balanced", "rps": 600.0, "p99_ms": None}]  # fmt: skip
    path = tmp_path / "journey.png"
    draw_chart(rows, path)
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert (width, height) == (1210, 462)


def test_store_capacity_reaches_every_store_node_and_only_them():
    overrides = {"store_service_time_ms": 4.0, "store_max_concurrency": 2}
    options = stage_options(stages.load("single_server"), overrides)
    assert not hasattr(options, "store_service_time_ms")  # no store: nothing to model
    options = stage_options(stages.load("replicated"), overrides)
    components = stages.load("replicated").topology(options).components
    stores = [" ".join(c.argv) for c in components if c.component == "store"]
    assert len(stores) == 3
    assert all("--service-time-ms 4 --max-concurrency 2" in flags for flags in stores)
    webs = [" ".join(c.argv) for c in components if c.component == "web"]
    assert webs and not any("--max-concurrency 2" in flags for flags in webs)


def test_the_header_names_the_store_capacity_only_when_set():
    from argparse import Namespace

    from topologies.journey import _store_capacity

    assert _store_capacity(Namespace(store_service_time_ms=None, store_max_concurrency=None)) == ""
    text = _store_capacity(Namespace(store_service_time_ms=10.0, store_max_concurrency=2))
    assert text == "and store capacity as 10 ms x 2 per node "
