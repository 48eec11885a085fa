"""``scalelab``: run a stage of the journey, drive load at any URL, list the stages.

::

    scalelab run STAGE [--load PROFILE] [--duration S] [--report FILE] [--run-dir DIR]
                       [--scenario FILE] [--procs N] [--drain-timeout S]
                       [--ready-timeout S] [stage flags]
    scalelab load URL --profile P [...]      # the load generator alone, any HTTP server
    scalelab journey [--duration S] [--stages A,B] [--service-time-ms MS] [...]
    scalelab stages

``run`` without ``--load`` starts the stage, prints its endpoint table and keeps it up
until Ctrl-C (or for ``--duration`` seconds). With ``--load`` it drives the stage's entry
point with the load generator, scrapes every component's ``/metrics`` before and after,
prints the report and stops everything. ``--scenario`` plays a timeline of faults
(``scenario.py``) during the load; the report then adds the events and, around each,
the users' errors by kind and p99 second by second (``timeline.py``). STAGE is a name
from ``scalelab stages`` or the path of a topology file (``my_topology.py``, written
like ``single_server.py``).

Exit codes: 0 done, 1 a component failed to start (its last log lines are shown),
2 bad arguments (with usage), 130 a load run cut short by Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import ModuleType

import orjson

from . import stages
from .audit import WriteAuditor, format_audit
from .figures import format_figures, stage_figures
from .launcher import DRAIN_TIMEOUT_S, Launcher, install_signal_handlers
from .process import READY_TIMEOUT_S, StartError
from .scenario import ScenarioError, ScenarioPlayer, load_scenario
from .timeline import fault_windows, format_windows
from .topology import TopologyError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
RUNS_DIR = Path("runs")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text}")
    return value


def build_parser(stage: ModuleType | None = None):
    """The ``scalelab`` parser and its ``run`` sub-parser (with the stage's own flags)."""
    parser = argparse.ArgumentParser(
        prog="scalelab",
        description="Run the stages of the scaling journey and measure them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="start a stage (and drive load at it)",
        description="Start a stage as real processes; with --load, drive it and report.",
    )
    run.add_argument("stage", metavar="STAGE", help="a stage (see `scalelab stages`) or a .py file")
    run.add_argument("--load", metavar="PROFILE",
                     help="drive load with this profile (a built-in name or a TOML file)")  # fmt: skip
    run.add_argument("--duration", type=positive_float, metavar="S",
                     help="seconds of load (default: the profile's); without --load, "
                     "how long to keep the stage up (default: until Ctrl-C)")  # fmt: skip
    run.add_argument("--report", type=Path, metavar="FILE",
                     help="write the report as JSON here (default: RUN_DIR/report.json)")  # fmt: skip
    run.add_argument("--run-dir", type=Path, metavar="DIR",
                     help="logs, data and endpoints.json (default: runs/STAGE-TIMESTAMP)")  # fmt: skip
    run.add_argument("--scenario", metavar="FILE",
                     help="faults to inject during the load: a TOML file or a shipped "
                     "name (kill_web, kill_primary, kill_cache, add_web, pause_primary, "
                     "crash_and_return_primary, delay_db)")  # fmt: skip
    run.add_argument("--procs", type=positive_int, default=1, metavar="N",
                     help="load generator processes")  # fmt: skip
    run.add_argument("--drain-timeout", type=positive_float, default=DRAIN_TIMEOUT_S,
                     metavar="S", help="each component's drain time before SIGKILL")  # fmt: skip
    run.add_argument("--ready-timeout", type=positive_float, default=READY_TIMEOUT_S,
                     metavar="S", help="how long each component may take to be ready")  # fmt: skip
    if stage is not None:
        stages.add_arguments(stage, run)
    commands.add_parser(
        "load",
        help="drive load at any HTTP URL (scalelab load URL --profile P; see its --help)",
        add_help=False,
    )
    commands.add_parser(
        "journey",
        help="run every stage under the same load and compare them (see its --help)",
        add_help=False,
    )
    commands.add_parser("stages", help="list the stages of the journey")
    return parser, run


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scalelab`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _main(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2)
        code = exit_.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_FAILED)


def _main(argv: list[str]) -> int:
    if argv[:1] == ["load"]:
        return load_command(argv[1:])
    if argv[:1] == ["journey"]:
        return journey(argv[1:])
    stage = None
    if argv[:1] == ["run"] and len(argv) > 1 and not argv[1].startswith("-"):
        try:
            stage = stages.load(argv[1])
        except stages.UnknownStage as error:
            build_parser()[1].error(str(error))
    parser, run_parser = build_parser(stage)
    args = parser.parse_args(argv)
    if args.command == "stages":
        return stages_command()
    assert stage is not None  # argparse required STAGE, and we loaded it above
    return run_command(args, stage, run_parser)


def journey(argv: list[str], out=None) -> int:
    from .journey import add_arguments, journey_command

    parser = argparse.ArgumentParser(
        prog="scalelab journey",
        description="Run the stages one after another under the same load and capacity "
        "emulation; print one comparison table and draw journey.png.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not args.duration > 0 or args.procs < 1 or args.max_concurrency < 0:
        parser.error("--duration must be > 0, --procs >= 1, --max-concurrency >= 0")
    if (args.store_max_concurrency or 0) < 0 or not (args.store_service_time_ms or 0) >= 0:
        parser.error("--store-max-concurrency and --store-service-time-ms must be >= 0")
    unknown = [n for n in args.stages.split(",") if n.strip() not in stages.STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)} (stages: {', '.join(stages.STAGES)})")
    install_signal_handlers()
    try:
        return journey_command(args, out or sys.stdout)
    except StartError as error:
        print(f"scalelab journey: {error}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted; stopped", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return EXIT_OK


def stages_command(out=None) -> int:
    out = out or sys.stdout
    width = max(len(name) for name in stages.STAGES)
    for name in stages.STAGES:
        print(f"{name.ljust(width)}  {stages.summary(stages.load(name))}", file=out)
    return EXIT_OK


def load_command(argv: list[str]) -> int:
    try:
        from loadgen import cli as loadgen_cli
    except ModuleNotFoundError as error:
        if error.name not in ("loadgen", "loadgen.cli"):
            raise
        print(
            "scalelab load: the load generator (loadgen.cli) is not in this tree", file=sys.stderr
        )
        return EXIT_FAILED
    return loadgen_cli.main(argv)


def new_run_dir(stage: str, base: Path = RUNS_DIR) -> Path:
    """``runs/<stage>-<timestamp>``, with a suffix if two runs start in the same second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = base / (f"{stage}-{stamp}" if n == 1 else f"{stage}-{stamp}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"cannot make a fresh run directory under {base}")


def run_with_faults(launcher: Launcher, scenario, run, out) -> dict:
    """Run ``run(on_start)`` (the load) while a scenario plays.

    ``run`` passes ``on_start`` to ``run_load``, which calls it with the load's ``t = 0``
    (a Unix time): the scenario's clock starts there, so an event ``at = 5`` is played
    5 s into the load (warm-up included), whatever the load generator took to start.
    Returns the load report with ``stage_figures`` and, with a scenario, ``scenario`` (its
    events as they happened), ``fault_windows`` (the client's seconds around each event:
    ``timeline.py``) and ``write_audit`` (acknowledged writes found afterwards, stale
    reads: ``audit.py``) added, and prints those sections.
    """
    player = auditor = None
    if scenario is not None:
        print(f"scenario {scenario.name}: {scenario.description}", file=out, flush=True)
        auditor = WriteAuditor(launcher.entry_url)

    def on_start(started_at: float) -> None:
        nonlocal player
        if scenario is not None:
            player = ScenarioPlayer(launcher, scenario, started_at)
            player.start()
            auditor.start()

    try:
        report = run(on_start)
    finally:
        if player is not None:
            player.cancel()
            auditor.stop()
            player.join()
            auditor.join()
    if scenario is not None and player is None:
        raise RuntimeError("the load never started, so the scenario was not played")
    report["stage"] = launcher.topology.stage
    report["stage_figures"] = figures = stage_figures(report)
    lines = ["", *format_figures(figures)]
    if player is not None:
        events = player.records
        report["scenario"] = {"name": scenario.name, "description": scenario.description,
                              "events": events}  # fmt: skip
        lines += ["", f"scenario {scenario.name}: {scenario.description}"]
        for e in events:
            outcome = "ok" if e["ok"] else f"FAILED: {e['error']}"
            lines.append(f"  at {e['at_s']:>5.1f} s  {e['what']:<28} {outcome} "
                         f"(took {e['took_s']:.2f} s)")  # fmt: skip
        missed = len(scenario.events) - len(events)
        if missed:
            lines.append(f"  {missed} event(s) not played: the load ended first")
        report["write_audit"] = audit = auditor.verify()
        lines.append(format_audit(audit))
        report["fault_windows"] = windows = fault_windows(report, events)
        lines += format_windows(windows)
    print("\n".join(lines), file=out, flush=True)
    return report


def run_command(args: argparse.Namespace, stage: ModuleType, parser) -> int:
    out = sys.stdout
    if args.report is not None and not args.load:
        parser.error("--report needs --load (the report is the load generator's)")
    if args.scenario is not None and not args.load:
        parser.error("--scenario needs --load (faults are played during the load)")
    try:
        topology = stage.topology(args)
    except TopologyError as error:
        parser.error(f"{args.stage}: {error}")
    scenario = None
    if args.scenario is not None:
        try:
            scenario = load_scenario(args.scenario)
            scenario.check_against(topology.names)
        except ScenarioError as error:
            parser.error(str(error))
    run_load = None
    load_errors: tuple[type[Exception], ...] = ()
    if args.load:
        try:
            import loadgen
            from loadgen import run_load

            # A bad profile is a ValueError (usage, exit 2); a run that cannot be made is
            # the load generator's own LoadError (exit 1).
            load_errors = tuple(e for e in (getattr(loadgen, "LoadError", None),) if e)
        except ImportError:
            print("scalelab run --load: the load generator (loadgen.run_load) is not in "
                  "this tree", file=sys.stderr)  # fmt: skip
            return EXIT_FAILED
    run_dir = args.run_dir or new_run_dir(topology.stage)
    install_signal_handlers()
    launcher = Launcher(topology, run_dir, drain_timeout_s=args.drain_timeout,
                        ready_timeout_s=args.ready_timeout, out=out)  # fmt: skip
    try:
        with launcher:
            print(f"starting {topology.stage} ...", file=out, flush=True)
            launcher.start()
            print(launcher.table(), file=out, flush=True)
            if run_load is not None:
                report_path = args.report or launcher.run_dir / "report.json"
                report = run_with_faults(launcher, scenario, lambda on_start: run_load(
                    launcher.entry_url,
                    args.load,
                    duration_s=args.duration,
                    procs=args.procs,
                    metrics=launcher.metrics_urls(),
                    json_path=report_path,
                    out=out,
                    on_start=on_start,
                ), out)  # fmt: skip
                Path(report_path).write_bytes(
                    orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n"
                )
                launcher.check()
                print(f"report: {report_path}", file=out, flush=True)
            elif args.duration is not None:
                launcher.watch(args.duration)
            else:
                print("running; Ctrl-C to stop", file=out, flush=True)
                launcher.watch()
    except StartError as error:
        print(f"scalelab: {error}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except ValueError as error:
        if run_load is None:
            raise
        print(f"scalelab run --load {args.load}: {error}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except load_errors as error:
        print(f"scalelab run --load {args.load}: {error}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted; stopped", file=out, flush=True)
        return EXIT_INTERRUPTED if run_load is not None else EXIT_OK
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
