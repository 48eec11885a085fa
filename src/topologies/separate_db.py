"""Stage 2 (figure 3): the database moves to its own server; the web server talks to it.

The web tier keeps its in-process cache but no longer holds the data: users live in the
store (``components.store``, rqlite's HTTP API over SQLite), a process of its own. Each
tier can now be sized and restarted on its own, and the web server becomes replaceable,
which is what the next stage needs. The price is a network hop on every cache miss and
every write, and the database is still one box: kill it and every write fails (reads
that hit the web server's cache still succeed).
"""

from __future__ import annotations

from .tiers import add_arguments as _add_arguments
from .tiers import local_cache, store, store_access, web_tier
from .topology import Topology


def add_arguments(parser) -> None:
    _add_arguments(parser)


def topology(options) -> Topology:
    db = store(options)
    between, spec = store_access(options, db)
    return Topology(
        "separate_db",
        [*db, *between, *web_tier(options, 1, spec, local_cache(options))],
        entry="web-1",
    )
