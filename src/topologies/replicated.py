"""Stage 4 (figure 5): the database gets replicas, and a controller that fails over.

The store primary streams its log to two replicas (``--replicas N``); the web tier
writes to the primary and spreads its reads over every node, so read capacity grows with
the replicas, and a user's reads carry the LSN of their own last write, so they never
see their profile go back in time (read-your-writes). The failover controller
(``topologies/failover.py``) watches every node and promotes the most advanced replica
when the primary stops answering. With ``--sync-replicas 1`` (the default here) a write
is acknowledged only once a replica holds it too, so a promotion loses no acknowledged
write; the price is a replica round trip on every write.
"""

from __future__ import annotations

from .tiers import add_arguments as _add_arguments
from .tiers import balancer, count, failover, local_cache, store, store_access, web_tier
from .topology import Topology


def add_arguments(parser) -> None:
    _add_arguments(parser, web=2)
    parser.add_argument("--replicas", type=count, default=2, help="store replicas")
    parser.add_argument("--sync-replicas", type=count, default=1,
                        help="replicas that must hold a write before it is acknowledged")  # fmt: skip


def topology(options) -> Topology:
    db = store(options, replicas=options.replicas, sync=options.sync_replicas)
    between, spec = store_access(options, db)
    webs = web_tier(options, options.web, spec, local_cache(options))
    return Topology("replicated", [*db, failover(db), *between, *webs, balancer(webs)],
                    entry="lb")  # fmt: skip
