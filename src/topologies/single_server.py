"""Stage 1 (figures 1-2): one web server with its database and cache in the same process.

Everything the product needs runs in one box: the web tier answers HTTP, the database is
SQLite embedded in that process (a file in the run directory, WAL mode), and the cache is
a byte-bounded LRU in the same memory. Nothing crosses a network between tiers, so this
is the fastest a single request will ever be served in the journey, and the simplest to
run. Its limits are the chapter's reasons to move on: one process is one point of
failure (kill it and the site is down), and the web tier, the database and the cache
compete for the same CPU and memory, so none of them can be scaled on its own.

Capacity emulation (``--service-time-ms``, ``--max-concurrency``) bounds the server by a
modelled resource instead of by this laptop, so the later stages compare honestly.
"""

from __future__ import annotations

import argparse

from .topology import Component, Topology


def count(text: str) -> int:
    """A whole number >= 0, for argparse."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def add_arguments(parser) -> None:
    parser.add_argument("--seed-users", type=count, default=1000, help="users in the database")
    parser.add_argument(
        "--cache-mb", type=count, default=64, help="in-process cache size (0: no cache)"
    )
    parser.add_argument("--service-time-ms", type=float, default=None,
                        help="emulated work per request")  # fmt: skip
    parser.add_argument("--max-concurrency", type=count, default=None,
                        help="requests served at once; beyond it a bounded queue, then 503")  # fmt: skip


def web_flags(options: argparse.Namespace, db: str, cache: str) -> str:
    """The web tier's flags; the later stages change only where db and cache live."""
    flags = f"--db {db} --cache {cache} --seed-users {options.seed_users}"
    if options.service_time_ms is not None:
        flags += f" --service-time-ms {options.service_time_ms:g}"
    if options.max_concurrency is not None:
        flags += f" --max-concurrency {options.max_concurrency}"
    return flags


def topology(options: argparse.Namespace) -> Topology:
    cache = f"local:{options.cache_mb}" if options.cache_mb > 0 else "none"
    return Topology(
        "single_server",
        [
            Component("web-1", "web", web_flags(options, "sqlite:{data}/app.db", cache)),
        ],
        entry="web-1",
    )
