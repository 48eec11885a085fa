"""The building blocks the stages share: a web tier of N servers, a balancer, a store.

Each helper returns ``Component`` lines, so a stage still reads like the chapter's
figure: ``[*store(options, replicas=2), *web_tier(options, db, cache), balancer(n)]``.
The flags chosen here are the ones that make faults visible within seconds on a laptop:
the balancer checks its backends every half second and ejects one after two failed
checks, and retries a request that could not reach a backend on another one. Passive
ejection on 5xx answers is off (``--max-fails 0``): a web server answering 503 while the
database fails over, or over its emulated capacity, is healthy. The balancer's panic mode
(``--panic-threshold 50``, its default, written out here) would keep "every web server
ejected" from becoming a site-wide 503, but not the step before it: one server ejected
for the database's fault and all its users piled on the others, which then overflow and
are ejected in turn. So panic only matters here when health checks find most web servers
dead: requests then go to all of them (a 502 after the retry) instead of a 503 from the
balancer. The failover controller checks the store every 0.3 s and promotes after three
misses (one to two and a half seconds of silence).

``--db-link-ms MS`` puts an emulated long link (``link-db``, ``link.py``) between the web
tier and the store primary: the database in another building. A ``delay`` scenario
(``scenarios/delay_db.toml``) changes its delay under load, and every cache miss and
write pays the new round trip while cached reads do not.
"""

from __future__ import annotations

import argparse

from .link import delay_ms
from .single_server import add_arguments as single_server_arguments
from .single_server import count, web_flags
from .topology import Component

LB_FLAGS = "--health-interval 0.5 --fall 2 --rise 2 --max-fails 0 --panic-threshold 50"
#: Three missed checks, each allowed 0.8 s: a stalled primary is replaced within about
#: 2.5 s, while a primary that is merely slow under load (a busy two-core machine) is
#: not mistaken for a dead one, which would make two primaries for a check interval.
FAILOVER_FLAGS = "--interval-s 0.3 --misses 3 --check-timeout-s 0.8"


def positive(text: str) -> int:
    value = count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text}")
    return value


def add_arguments(parser, *, web: int | None = None) -> None:
    """single_server's flags (seed users, capacity emulation), the store's capacity
    emulation, plus ``--web N``."""
    single_server_arguments(parser)
    parser.add_argument("--store-service-time-ms", type=float, default=None,
                        help="emulated work per query on each store node")  # fmt: skip
    parser.add_argument("--store-max-concurrency", type=count, default=None,
                        help="queries each store node serves at once (its capacity is "
                             "this / the service time)")  # fmt: skip
    parser.add_argument("--db-link-ms", type=delay_ms, default=None, metavar="MS",
                        help="put an emulated link (link-db) between the web tier and the "
                        "store primary, adding MS each way (a delay scenario changes it)")  # fmt: skip
    if web is not None:
        parser.add_argument("--web", type=positive, default=web,
                            help="web servers behind the load balancer")  # fmt: skip


def store(options, replicas: int = 0, sync: int = 0, prefix: str = "store") -> list[Component]:
    """``store-1`` the primary, then ``store-2 ...`` its replicas (semi-sync to ``sync``).

    ``sync`` is capped at the number of replicas: a primary waiting for an acknowledgement
    no replica can send would hold every write for its ``--sync-timeout``. ``prefix``
    names the nodes (``store-g1-1 ...``), so several groups can live in one topology.
    """
    sync = min(sync, replicas)
    flags = f"--sync-replicas {sync}" if sync else ""
    flags += store_capacity_flags(options)
    primary = f"{prefix}-1"
    nodes = [Component(primary, "store", flags.strip())]
    for i in range(2, replicas + 2):
        nodes.append(Component(f"{prefix}-{i}", "store", f"--join {{{primary}}} {flags}".strip()))
    return nodes


def store_capacity_flags(options) -> str:
    """``--service-time-ms`` / ``--max-concurrency`` for each store node, when set."""
    flags = ""
    service_time_ms = getattr(options, "store_service_time_ms", None)
    max_concurrency = getattr(options, "store_max_concurrency", None)
    if service_time_ms is not None:
        flags += f" --service-time-ms {service_time_ms:g}"
    if max_concurrency is not None:
        flags += f" --max-concurrency {max_concurrency}"
    return flags


def store_spec(nodes: list[Component]) -> str:
    """The web tier's ``--db`` for these store nodes: ``store:{store-1},{store-2},...``."""
    return "store:" + ",".join(f"{{{n.name}}}" for n in nodes)


def store_access(options, nodes: list[Component]) -> tuple[list[Component], str]:
    """The components between the web tier and the store, and the web tier's ``--db``.

    Without ``--db-link-ms``: none, and ``store_spec(nodes)``. With it: ``link-db`` in front
    of the primary, named in the primary's place (replicas are still reached directly;
    after a failover the store's redirect names the new primary itself, not the link).
    """
    delay = getattr(options, "db_link_ms", None)
    if delay is None:
        return [], store_spec(nodes)
    front = link("link-db", nodes[0].name, delay)
    return [front], store_spec([front, *nodes[1:]])


def failover(nodes: list[Component], name: str = "failover") -> Component:
    admin = ",".join(f"{{{n.name}.admin}}" for n in nodes)
    return Component(name, "failover", f"--nodes {admin} {FAILOVER_FLAGS}",
                     module="topologies.failover")  # fmt: skip


#: The web tier's deadline for one store call: a write to a primary that stalled (paused,
#: partitioned) holds a user that long before the web tier looks for the new primary.
DB_TIMEOUT_S = 2


def web_tier(options, count: int, db: str, cache: str, extra: str = "",
             prefix: str = "web") -> list[Component]:  # fmt: skip
    """``web-1 ... web-<count>``; ``extra`` adds flags (the queued stage's ``--queue``);
    ``prefix`` names them (``dc1-web-1 ...``: one tier per data centre)."""
    flags = web_flags(options, db, cache) + f" --db-timeout-s {DB_TIMEOUT_S} {extra}".rstrip()
    return [Component(f"{prefix}-{i}", "web", flags) for i in range(1, count + 1)]


def balancer(webs: list[Component], name: str = "lb", extra: str = "") -> Component:
    """The balancer over ``webs``; ``extra`` adds flags (a data centre's ``--host``)."""
    backends = " ".join(f"--backend {{{w.name}}}" for w in webs)
    return Component(name, "lb", f"{backends} {LB_FLAGS} {extra}".rstrip())


def link(name: str, target: str, delay_ms: float = 0.0) -> Component:
    """An emulated long link (``link.py``) in front of ``target``: whatever connects to
    ``{name}`` reaches ``{target}`` ``delay_ms`` later each way. A scenario's ``delay``
    action changes the delay under load; the multi-datacenter stage puts one between
    its datacenters (a replica joins ``{link}`` instead of the primary)."""
    return Component(name, "link", f"--target {{{target}}} --delay-ms {delay_ms:g}",
                     module="topologies.link")  # fmt: skip


def cache_tier(options, count: int | None = None,
               prefix: str = "cache") -> tuple[list[Component], str]:  # fmt: skip
    """``cache-1 ... cache-<options.caches>`` and the web tier's ``--cache`` for them.

    ``count`` and ``prefix`` make another set of cache nodes (the stateless stage's
    ``session-N``), with the memcached spec that names them.
    """
    count = options.caches if count is None else count
    caches = [Component(f"{prefix}-{i}", "cache", f"--memory-mb {options.cache_node_mb}")
              for i in range(1, count + 1)]  # fmt: skip
    return caches, ("memcached:" + ",".join(f"{{{c.name}}}" for c in caches) if caches
                    else "none")  # fmt: skip


def local_cache(options) -> str:
    return f"local:{options.cache_mb}" if options.cache_mb > 0 else "none"
