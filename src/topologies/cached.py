"""Stage 5 (figure 6): a shared cache tier in front of the replicated database.

Three cache nodes (``components.cache``, memcached's protocol) replace the web servers'
private caches: every web server asks the same nodes, placed by consistent hashing
(ketama), so a write deletes the one shared copy and the cache's size grows with its
nodes, not with the web servers. Reads of popular users stop at the cache: with a zipf
key distribution, most of them, so the database's reads per second drop by the hit
ratio. A dead cache node costs its share of the keys as misses (served by the database),
never an error. With ``--edge``, an edge cache (``components.edge``, the CDN of the
figure) stands in front of the balancer and becomes the entry: it serves the static
assets from its own memory (they carry ``Cache-Control: public, max-age``), and passes
the API through (user documents say ``Cache-Control: private``, so it does not store
them). The pages reference their assets as ``/static/...`` on the same origin, so with
the edge as the entry every asset is fetched through it: the role a separate CDN host
name plays on the internet.
"""

from __future__ import annotations

from .replicated import add_arguments as _replicated_arguments
from .tiers import balancer, cache_tier, count, failover, store, store_access, web_tier
from .topology import Component, Topology


def add_arguments(parser) -> None:
    _replicated_arguments(parser)
    parser.add_argument("--caches", type=count, default=3, help="cache nodes")
    parser.add_argument("--cache-node-mb", type=count, default=64, help="memory per cache node")
    parser.add_argument("--edge", action="store_true",
                        help="an edge cache (CDN) in front of the balancer, as the entry")  # fmt: skip


def topology(options) -> Topology:
    db = store(options, replicas=options.replicas, sync=options.sync_replicas)
    caches, cache = cache_tier(options)
    between, spec = store_access(options, db)
    webs = web_tier(options, options.web, spec, cache)
    front = [Component("edge", "edge", "--origin {lb} --memory-mb 64")] if options.edge else []
    return Topology("cached", [*db, failover(db), *between, *caches, *webs, balancer(webs),
                               *front], entry="edge" if options.edge else "lb")  # fmt: skip
