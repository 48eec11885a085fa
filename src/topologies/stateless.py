"""Stage 6 (figures 12-14): sessions move out of the web servers into shared storage.

Until now a login lived in the memory of the web server that took it: behind the
balancer, the user's next request, sent to another server, found no session, and a
restart logged everyone out (the cure was stickiness at the balancer, which pins users
to servers and breaks on every removal). Here the web servers keep no state of their
own: sessions live in the cache tier (``--sessions cache``, ``components.web.sessions``
``SharedSessions``: memcached's protocol, a sliding TTL), the database and the cached
user documents were shared already. So any web server serves any user, the balancer
needs no stickiness, and a web server can be added, drained or killed (``kill -9``)
without logging anyone out: the tier can now grow and shrink with the load.

Trade-offs. Every authenticated request now asks the session store over the network
(one pipelined get and touch: a round trip where a dictionary lookup was). The store
is a cache: its nodes hold the sessions in memory only, so losing a node logs out the
users whose sessions it held (consistent hashing keeps the others), and under memory
pressure memcached's LRU may evict a session as it evicts a cached document. With
``--session-nodes N`` the sessions get cache nodes of their own (``session-1 ...``),
so user documents cannot push them out, at the price of more boxes. A session store
that cannot answer is a 503 with ``Retry-After``, never a hang.

Built on the cached stage (replicated store, failover, cache tier, balancer, optional
edge): the same components, with the web tier's sessions moved.
"""

from __future__ import annotations

from dataclasses import replace

from . import cached
from .single_server import count
from .topology import Component, Topology, TopologyError


def add_arguments(parser) -> None:
    cached.add_arguments(parser)
    parser.add_argument("--session-nodes", type=count, default=0,
                        help="cache nodes for sessions alone (0: keep sessions in the "
                             "cache tier, next to the cached user documents)")  # fmt: skip


def topology(options) -> Topology:
    base = cached.topology(options)
    sessions = [Component(f"session-{i}", "cache", f"--memory-mb {options.cache_node_mb}")
                for i in range(1, options.session_nodes + 1)]  # fmt: skip
    spec = ("memcached:" + ",".join(f"{{{s.name}}}" for s in sessions)) if sessions else "cache"
    if spec == "cache" and not options.caches:
        raise TopologyError("the stateless stage keeps sessions in the cache tier: --caches >= 1 "
                         "or --session-nodes >= 1")  # fmt: skip
    components: list[Component] = []
    for component in base.components:
        if component.component == "web":
            components.extend(sessions)  # started before the web servers that use them
            sessions = []
            component = replace(component, flags=(*component.argv, "--sessions", spec))
        components.append(component)
    return Topology("stateless", components, entry=base.entry, scrape=base.scrape)
