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

Autoscaling (``--max-web N``): the web tier is no longer a fixed list. An autoscaler
(``autoscale.py --lb``) runs between ``--web`` and ``--max-web`` web servers, sized by
the requests in flight at the balancer (``--inflight-per-server`` each), registers each
new server with the balancer's admin API and drains one there before stopping it. That
is only safe because of the sessions' move: a server stopped on scale-down takes no
login with it. The servers are then the autoscaler's children (``RUN/web-N.log``, its
``/status``), not rows of the endpoint table.

Built on the cached stage (replicated store, failover, cache tier, balancer, optional
edge): the same components, with the web tier's sessions moved.
"""

from __future__ import annotations

import shlex
from dataclasses import replace

from . import cached
from .autoscale_policy import MAX_WORKERS
from .single_server import count
from .tiers import balancer, cache_tier
from .topology import Component, Topology, TopologyError


def add_arguments(parser) -> None:
    cached.add_arguments(parser)
    parser.add_argument("--session-nodes", type=count, default=0,
                        help="cache nodes for sessions alone (0: keep sessions in the "
                             "cache tier, next to the cached user documents)")  # fmt: skip
    parser.add_argument("--max-web", type=count, default=0,
                        help="autoscale the web tier between --web and this many servers "
                             "(0: a fixed tier of --web servers)")  # fmt: skip
    parser.add_argument("--inflight-per-server", type=float, default=8.0,
                        help="requests in flight at the balancer one web server is sized for")  # fmt: skip
    parser.add_argument("--cooldown-s", type=float, default=10.0,
                        help="a smaller web tier must do this long before a server is stopped")  # fmt: skip
    parser.add_argument("--scale-interval-s", type=float, default=0.5,
                        help="seconds between the autoscaler's looks at the balancer")  # fmt: skip


def topology(options) -> Topology:
    base = cached.topology(options)
    sessions, spec = cache_tier(options, options.session_nodes, prefix="session")
    if not sessions:
        spec = "cache"  # the web tier's own --cache nodes
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
    if options.max_web:
        components = autoscaled(options, components)
    return Topology("stateless", components, entry=base.entry, scrape=base.scrape)


def autoscaled(options, components: list[Component]) -> list[Component]:
    """The web servers handed to an autoscaler: the balancer starts with no backend and
    the autoscaler, declared after it, starts ``--web`` servers (each one's flags those
    of the fixed tier's web-1) and registers them before its ready line."""
    if not 1 <= options.web <= options.max_web <= MAX_WORKERS:
        raise TopologyError(f"need 1 <= --web ({options.web}) <= --max-web "
                            f"({options.max_web}) <= {MAX_WORKERS}")  # fmt: skip
    if not (options.inflight_per_server > 0 and options.cooldown_s >= 0
            and options.scale_interval_s > 0):  # fmt: skip
        raise TopologyError("--inflight-per-server and --scale-interval-s must be > 0, "
                            "--cooldown-s >= 0")  # fmt: skip
    webs = [c for c in components if c.component == "web"]
    rest = [balancer([]) if c.name == "lb" else c for c in components if c.component != "web"]
    flags = ["--lb", "{lb.admin}", "--log-dir", "{run}", "--min-workers", str(options.web),
             "--max-workers", str(options.max_web),
             "--inflight-per-server", f"{options.inflight_per_server:g}",
             "--cooldown-s", f"{options.cooldown_s:g}",
             "--interval-s", f"{options.scale_interval_s:g}",
             "--worker-args", shlex.join(webs[0].argv)]  # fmt: skip
    at = [c.name for c in rest].index("lb") + 1
    scaler = Component("autoscaler", "autoscaler", flags, module="topologies.autoscale")
    return [*rest[:at], scaler, *rest[at:]]
