"""The command line: ``scalelab load URL --profile P [...]`` (also ``python -m loadgen``).

A thin shell over ``run_load``: flags to keyword arguments, errors to a one-line message
on stderr. Exit codes: 0 when the run completed (errors from the server are figures in
the report, not a failed run), 1 when the run could not be made (a worker died, an
invalid target), 2 for bad usage or an invalid profile, 130 when interrupted (Ctrl-C;
the report of what was measured is still printed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .profile import ProfileError, builtin_profiles
from .runner import LoadError, run_load

__all__ = ["main", "build_parser"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _metric_target(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep or not name or not url:
        raise argparse.ArgumentTypeError(f"expected NAME=URL, got {text!r}")
    return name, url


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
        return value

    return parse


def build_parser(prog: str = "scalelab load") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Drive an HTTP server with a load profile and report latency, "
        "throughput, errors and the tier figures scraped from /metrics.",
    )
    parser.add_argument("url", help="the target, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--profile",
        default="default",
        help=f"a built-in profile ({', '.join(builtin_profiles())}) or a .toml file",
    )
    parser.add_argument("--duration", type=_positive(float), metavar="S",
                        help="wall time of the run in seconds, warm-up included")  # fmt: skip
    parser.add_argument("--warmup", type=_positive(float), metavar="S",
                        help="seconds at the start excluded from the figures")  # fmt: skip
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--users", type=_positive(int), metavar="N",
                      help="closed loop with N users")  # fmt: skip
    mode.add_argument("--rate", type=_positive(float), metavar="R",
                      help="open loop at R requests/s (latency from each due time)")  # fmt: skip
    parser.add_argument("--think-ms", type=_positive(float), metavar="MS",
                        help="closed loop: pause between a user's requests")  # fmt: skip
    parser.add_argument("--procs", type=_positive(int), default=1, metavar="N",
                        help="worker processes (their histograms are merged)")  # fmt: skip
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--metrics", type=_metric_target, action="append", default=[],
                        metavar="NAME=URL",
                        help="scrape this /metrics URL before and after (repeatable)")  # fmt: skip
    parser.add_argument("--seed", type=int, help="random seed (reproducible request mix)")
    parser.add_argument("--no-progress", action="store_true", help="no line per second")
    return parser


def main(argv: list[str] | None = None, prog: str = "scalelab load") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        report = run_load(
            args.url,
            args.profile,
            duration_s=args.duration,
            warmup_s=args.warmup,
            users=args.users,
            rate=args.rate,
            think_ms=args.think_ms,
            procs=args.procs,
            metrics=dict(args.metrics),
            json_path=args.json,
            progress=not args.no_progress,
            seed=args.seed,
        )
    except ProfileError as error:
        print(f"{prog}: profile: {error}", file=sys.stderr)
        return EXIT_USAGE
    except LoadError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_INTERRUPTED if report["interrupted"] else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
