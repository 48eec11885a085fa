"""Stage 3 (figure 4): a load balancer spreads users over N web servers (``--web N``).

The web tier is now horizontally scaled: identical web servers behind one address, the
balancer (``components.lb``) checking their health and ejecting a dead one, retrying a
request that never reached a backend. Throughput grows with the number of web servers
until the next bottleneck, the single database. Each web server still has its own
in-process cache, so a write through one leaves the others' copies stale until their
TTL: the reason for the shared cache tier two stages on. Sessions are still held in
each web server's memory: use cookie stickiness at the balancer, or the stateless stage.
"""

from __future__ import annotations

from .tiers import add_arguments as _add_arguments
from .tiers import balancer, local_cache, store, store_access, web_tier
from .topology import Topology


def add_arguments(parser) -> None:
    _add_arguments(parser, web=2)


def topology(options) -> Topology:
    db = store(options)
    between, spec = store_access(options, db)
    webs = web_tier(options, options.web, spec, local_cache(options))
    return Topology("load_balanced", [*db, *between, *webs, balancer(webs)], entry="lb")
