"""Stage 9 (figures 20-23): the data is split by user over several replicated store groups.

One primary takes every write of the stages before, however many replicas read for it;
when writes outgrow it, the users table is partitioned by its shard key (the user's id)
over ``--shards N`` store groups, each a primary with ``--replicas`` replicas and, with
replicas, its own failover controller. The shard router (``components.shard``) stands
in front of them and speaks the store's rqlite API, so the web tier points at it as at
one store (``--db store:{router}``) and does not change. Writes now scale with the groups
(each group's primary takes only its users' writes), and a group that dies takes down
only its users: the others are still served. Behind the balancer, the shared cache tier
and (``--edge``) the edge are as in the cached stage; ``--queue`` adds the queued stage's
queue and autoscaled workers. The report shows statements per second by group, read from
the router, so the spread over the groups is seen directly.

Trade-offs, the chapter's and the router's. A query without the shard key fans out to
every group (N round trips, merged by the router); a join or a transaction over several
groups is refused, not answered wrongly (no two-phase commit). Ids come from the router's
Snowflake generator, because each group's autoincrement would collide. Resharding moves
rows (``POST /admin/reshard`` on the router's admin port: copy, catch up, a short write
fence). A hot key (a celebrity) stays on one group whatever the number of groups: here,
with a zipf load, the seeded users with the lowest ids are the hot ones.

Placement: the web tier seeds users ``1..N`` in transactions of
``SEED_BATCH_STATEMENTS`` rows, and the router refuses a transaction over two groups, so
the seeded ids are placed by range (``[[directory]]`` ranges, whole batches per group);
every other id (the Snowflake ids of users created later) by consistent hashing.

Run as ``python -m topologies.sharded``, this module is the router's process in the
stage: the router reads its groups from a file, and the nodes' addresses are only known
once they run, so the process writes that file from its ``--group`` flags (resolved by
the launcher) into its data directory, then runs the router.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from components.shard.server import ShardService
from components.web.store_tier import SEED_BATCH_STATEMENTS

from . import queued, stages
from .cached import add_arguments as _cached_arguments
from .tiers import balancer, cache_tier, failover, positive, store, store_access, web_tier
from .topology import Component, Topology, TopologyError

#: Groups at most (the router's own bound is higher; each group is several processes).
MAX_SHARDS = 16
ROUTER_MODULE = "topologies.sharded"


def add_arguments(parser) -> None:
    _cached_arguments(parser)
    # The full architecture on one machine: one replica per group and two cache nodes
    # keep it to about a dozen processes.
    parser.set_defaults(replicas=1, caches=2)
    parser.add_argument("--shards", type=positive, default=2,
                        help=f"store groups the users are split over (at most {MAX_SHARDS})")  # fmt: skip
    parser.add_argument("--queue", action="store_true",
                        help="add the queued stage's durable queue and autoscaled workers "
                        "(with that stage's defaults)")  # fmt: skip


def group_names(shards: int) -> list[str]:
    return [f"g{i}" for i in range(1, shards + 1)]


def router(groups: dict[str, list[Component]], seed_users: int) -> Component:
    """The router's process: ``--group g1=NODE@ADMIN,...`` per group, the seeded range."""
    flags: list[str] = []
    for name, nodes in groups.items():
        flags += ["--group", f"{name}=" + ",".join(f"{{{n.name}}}@{{{n.name}.admin}}"
                                                    for n in nodes)]  # fmt: skip
    flags += ["--seed-users", str(seed_users)]
    return Component("router", "shard", flags, module=ROUTER_MODULE)


def topology(options) -> Topology:
    if options.shards > MAX_SHARDS:
        raise TopologyError(f"--shards {options.shards}: at most {MAX_SHARDS}")
    groups = {g: store(options, replicas=options.replicas, sync=options.sync_replicas,
                       prefix=f"store-{g}") for g in group_names(options.shards)}  # fmt: skip
    nodes = [n for group in groups.values() for n in group]
    watchers = [failover(group, name=f"failover-{g}") for g, group in groups.items()
                if len(group) > 1]  # fmt: skip
    front = router(groups, options.seed_users)
    between, spec = store_access(options, [front])
    caches, cache = cache_tier(options)
    pieces: list[Component] = []
    extra = ""
    if options.queue:
        pieces = [Component("queue", "queue", "--binlog-dir {data} --fsync-ms 0")]
        extra = "--queue {queue}"
    webs = web_tier(options, options.web, spec, cache, extra=extra)
    lb = balancer(webs)
    tail = [queued.autoscaler(queued_options())] if options.queue else []
    edge = [Component("edge", "edge", "--origin {lb} --memory-mb 64")] if options.edge else []
    return Topology("sharded", [*nodes, *watchers, front, *between, *caches, *pieces, *webs,
                                lb, *tail, *edge],
                    entry="edge" if options.edge else "lb")  # fmt: skip


def queued_options() -> argparse.Namespace:
    """The queued stage's worker and autoscaler flags at their defaults."""
    return stages.default_options(queued)


# -- the router's process in this stage ------------------------------------------------


def seed_ranges(seed_users: int, groups: list[str]) -> list[tuple[int, int, str]]:
    """``[low, high)`` id ranges over ``groups`` covering the seeded ids ``1..seed_users``,
    whole seeding batches each, so that no seeding transaction spans two groups."""
    batches = -(-seed_users // SEED_BATCH_STATEMENTS)
    ranges = []
    for i, group in enumerate(groups):
        # Rounded up, so that with fewer batches than groups the first groups get them.
        first = -(-i * batches // len(groups))
        end = -(-(i + 1) * batches // len(groups))
        if end > first:
            ranges.append((1 + first * SEED_BATCH_STATEMENTS, 1 + end * SEED_BATCH_STATEMENTS,
                           group))  # fmt: skip
    return ranges


def parse_group(text: str) -> tuple[str, list[str], list[str]]:
    """``g1=HOST:PORT@HOST:PORT,...`` (each node's API then admin address)."""
    name, sep, members = text.partition("=")
    pairs = [member.partition("@") for member in members.split(",")] if sep else []
    if not name or not pairs or not all(node and at and admin for node, at, admin in pairs):
        raise ValueError(f"--group must be NAME=NODE@ADMIN[,NODE@ADMIN...], got {text!r}")
    return name, [node for node, _, _ in pairs], [admin for _, _, admin in pairs]


def q(text: str) -> str:
    """``text`` quoted for TOML: a JSON string is a TOML basic string."""
    return orjson.dumps(text).decode()


def shards_toml(groups: list[tuple[str, list[str], list[str]]], seed_users: int) -> str:
    """The router's ``--shards`` file (``components/shard/config.py``) for these groups:
    users sharded by id, ids generated by the router, the seeded ids placed by range."""
    lines = ['strategy = "directory"', "", "[tables]", "users = \"id\"", "", "[ids]",
             "users = \"id\"", "", "[directory]", 'fallback = "consistent"', "ranges = ["]  # fmt: skip
    for low, high, group in seed_ranges(seed_users, [g for g, _, _ in groups]):
        lines.append(f"  {{ low = {low}, high = {high}, group = {q(group)} }},")
    lines.append("]")
    for name, nodes, admin in groups:
        lines += ["", "[[groups]]", f"name = {q(name)}",
                  f"nodes = [{', '.join(q(n) for n in nodes)}]",
                  f"admin = [{', '.join(q(a) for a in admin)}]"]  # fmt: skip
    return "\n".join(lines) + "\n"


def router_main(argv: list[str]) -> None:
    """Write the groups file from ``--group`` flags, then run the router on it."""
    from components.common import main

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--group", action="append", default=[])
    parser.add_argument("--seed-users", type=int, default=0)
    parser.add_argument("--data-dir", required=True)
    own, rest = parser.parse_known_args(argv)
    try:
        groups = [parse_group(text) for text in own.group]
    except ValueError as error:
        sys.exit(f"topologies.sharded: {error}")
    if not groups:
        sys.exit("topologies.sharded: at least one --group")
    path = Path(own.data_dir) / "shards.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(shards_toml(groups, own.seed_users))
    main(ShardService, [*rest, "--data-dir", own.data_dir, "--shards", str(path)])


if __name__ == "__main__":
    router_main(sys.argv[1:])
