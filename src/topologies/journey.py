"""``scalelab journey``: every stage, one after another, under the same load; one table.

The chapter is a sequence of architectures, each answering the previous one's limit.
The journey runs them in order with the *same* load profile and the *same* capacity
emulation, so the only thing that changes between two rows of the table is the
architecture:

- capacity emulation (``--service-time-ms``, ``--max-concurrency`` per web server,
  ``--store-service-time-ms``, ``--store-max-concurrency`` per store node)
  makes a modelled resource the bottleneck instead of this laptop's two cores: a web
  server that can serve ``max_concurrency / service_time`` requests per second, whatever
  the machine. Without it every stage would measure the same thing, the Python
  processes competing for two cores;
- each stage is started fresh (its own run directory), loaded for ``--duration``
  seconds, measured (``figures.stage_figures``) and stopped before the next starts.

The result is a table (stage, req/s, p50, p99, errors, db reads/s, cache hit ratio),
``journey.json`` with every stage's full report, and ``journey.png``: throughput and p99
per stage, side by side (matplotlib, drawn off-screen).

Honesty note: on a shared two-core machine the absolute figures are noisy and the later
stages run more processes on the same cores (a store, replicas, caches, a balancer),
which the capacity emulation only partly hides. Read the *ratios* the claims are about,
and rerun before believing a small difference.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TextIO

import orjson

from . import stages
from .figures import comparison_table
from .launcher import Launcher

#: The stages the journey runs by default, in the chapter's order.
DEFAULT_STAGES = ("single_server", "separate_db", "load_balanced", "replicated", "cached")
DEFAULT_SERVICE_TIME_MS = 10.0
DEFAULT_MAX_CONCURRENCY = 4


def stage_options(module, overrides: dict) -> argparse.Namespace:
    """The stage's defaults with the journey's shared settings applied where it has them."""
    options = stages.default_options(module)
    for key, value in overrides.items():
        if value is not None and hasattr(options, key):
            setattr(options, key, value)
    return options


def run_journey(
    names: list[str],
    run_load,
    run_dir: Path,
    overrides: dict,
    out: TextIO,
    *,
    drain_timeout_s: float = 5.0,
    ready_timeout_s: float = 30.0,
) -> list[dict]:
    """Start, load and stop each stage; ``run_load(launcher) -> report``. Returns the rows."""
    from .cli import run_with_faults  # the same measuring path as `scalelab run --load`

    rows = []
    for name in names:
        module = stages.load(name)
        topology = module.topology(stage_options(module, overrides))
        print(f"\n=== {name}: {stages.summary(module)}", file=out, flush=True)
        with Launcher(topology, run_dir / name, drain_timeout_s=drain_timeout_s,
                      ready_timeout_s=ready_timeout_s, out=out) as launcher:  # fmt: skip
            launcher.start()
            print(launcher.table(), file=out, flush=True)
            report = run_with_faults(launcher, None, lambda _, lr=launcher: run_load(lr), out)
        rows.append({"stage": name, **report["stage_figures"], "report": report})
    return rows


def draw_chart(rows: list[dict], path: Path) -> None:
    """Throughput and p99 per stage, two bar charts side by side, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display: draw to a file
    import matplotlib.pyplot as plt

    names = [row["stage"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.bar(names, [row["rps"] or 0 for row in rows], color="#3b7dd8")
    left.set_title("throughput (req/s, higher is better)")
    right.bar(names, [row["p99_ms"] or 0 for row in rows], color="#d8613b")
    right.set_title("p99 latency (ms, lower is better)")
    for axis in (left, right):
        axis.tick_params(axis="x", labelrotation=20)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("scalelab journey: the same load on each stage")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--load", default="default", metavar="PROFILE",
                        help="load profile for every stage (default: default)")  # fmt: skip
    parser.add_argument("--duration", type=float, default=15.0, metavar="S",
                        help="seconds of load per stage, warm-up included")  # fmt: skip
    parser.add_argument("--stages", default=",".join(DEFAULT_STAGES), metavar="A,B,...",
                        help="stages to run, in order")  # fmt: skip
    parser.add_argument("--service-time-ms", type=float, default=DEFAULT_SERVICE_TIME_MS,
                        help="emulated work per request on each web server")  # fmt: skip
    parser.add_argument("--max-concurrency", type=int, default=DEFAULT_MAX_CONCURRENCY,
                        help="requests each web server serves at once")  # fmt: skip
    parser.add_argument("--store-service-time-ms", type=float, default=None,
                        help="emulated work per query on each store node (default: none)")  # fmt: skip
    parser.add_argument("--store-max-concurrency", type=int, default=None,
                        help="queries each store node serves at once (default: unlimited)")  # fmt: skip
    parser.add_argument("--run-dir", type=Path, metavar="DIR",
                        help="where each stage's run goes (default: runs/journey-TIMESTAMP)")  # fmt: skip
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")


def _store_capacity(args: argparse.Namespace) -> str:
    if args.store_service_time_ms is None and args.store_max_concurrency is None:
        return ""
    return (f"and store capacity as {args.store_service_time_ms or 0:g} ms x "
            f"{args.store_max_concurrency or 'unlimited'} per node ")  # fmt: skip


def journey_command(args: argparse.Namespace, out: TextIO) -> int:
    from loadgen import run_load

    from .cli import new_run_dir

    names = [n.strip() for n in args.stages.split(",") if n.strip()]
    for name in names:
        if name not in stages.STAGES:
            raise stages.UnknownStage(
                f"unknown stage {name!r} (stages: {', '.join(stages.STAGES)})"
            )
    run_dir = args.run_dir or new_run_dir("journey")
    run_dir.mkdir(parents=True, exist_ok=True)
    overrides = {"service_time_ms": args.service_time_ms, "max_concurrency": args.max_concurrency,
                 "store_service_time_ms": args.store_service_time_ms,
                 "store_max_concurrency": args.store_max_concurrency}  # fmt: skip
    started = time.monotonic()

    def load(launcher):
        return run_load(launcher.entry_url, args.load, duration_s=args.duration, procs=args.procs,
                        metrics=launcher.metrics_urls(), progress=False, out=out,
                        json_path=launcher.run_dir / "report.json")  # fmt: skip

    rows = run_journey(names, load, run_dir, overrides, out)
    table = comparison_table(rows)
    print(f"\njourney: {len(rows)} stages, profile {args.load}, {args.duration:g} s each, "
          f"web capacity emulated as {args.service_time_ms:g} ms x {args.max_concurrency} "
          f"{_store_capacity(args)}"
          f"(took {time.monotonic() - started:.0f} s)\n\n{table}", file=out, flush=True)  # fmt: skip
    doc = {"stages": [{k: v for k, v in row.items() if k != "report"} for row in rows],
           "settings": {**overrides, "profile": args.load, "duration_s": args.duration}}  # fmt: skip
    (run_dir / "journey.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    (run_dir / "journey.txt").write_text(table + "\n")
    draw_chart(rows, run_dir / "journey.png")
    print(f"\ntable: {run_dir / 'journey.txt'}\nchart: {run_dir / 'journey.png'}", file=out)
    return 0
