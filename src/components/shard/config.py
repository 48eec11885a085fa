"""The router's configuration file: shard groups, sharded tables, and the strategy.

Example (``--shards shards.toml``)::

    strategy = "consistent"      # modulo | consistent | range | directory
    vnodes = 128                 # consistent only
    home = "g1"                  # group holding the unsharded tables (default: the first)
    worker_id = 1                # 0..1023, this router's part of the generated ids

    store_admin_token = "..."    # the stores' --admin-token, for their change feed

    [[groups]]
    name = "g1"
    nodes = ["127.0.0.1:4001", "127.0.0.1:4002"]   # a store primary and its replicas
    admin = ["127.0.0.1:14001", "127.0.0.1:14002"] # their admin listeners (default:
                                                   # each node's port + 10000)

    [[groups]]
    name = "g2"
    nodes = ["127.0.0.1:4011"]

    [tables]                     # sharded table -> its shard key column
    users = "id"
    posts = "user_id"

    [ids]                        # generate the key when an INSERT leaves it out
    users = "id"

    [[ranges]]                   # range only: keys >= low (up to the next low)
    low = 0
    group = "g1"

    [directory]                  # directory only
    fallback = "modulo"          # or "consistent"
    keys = { "42" = "g2" }       # hot keys
    ranges = [ { low = 1000, high = 2000, group = "g2" } ]

Every table not listed under ``[tables]`` is unsharded and lives on the home group.
The file is validated as a whole at start: a bad one stops the router with a clear
message rather than routing wrongly later.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any

from .placement import STRATEGIES, Consistent, Directory, Modulo, Range, RoutingMap
from .ring import DEFAULT_VNODES, MAX_VNODES
from .sqlscan import canonical_key

MAX_GROUPS = 256


class ConfigError(ValueError):
    """The shard configuration is not usable."""


@dataclass(frozen=True)
class Group:
    name: str
    nodes: tuple[str, ...]
    #: Each node's admin listener (``GET /admin/changes``, the change feed resharding
    #: catches up from), in the order of ``nodes``.
    admin: tuple[str, ...] = ()


@dataclass
class ShardConfig:
    groups: dict[str, Group]
    tables: dict[str, str]  # sharded table -> key column (lowercase)
    home: str
    routing: RoutingMap
    ids: dict[str, str] = field(default_factory=dict)  # table -> generated column
    worker_id: int = 0
    store_admin_token: str | None = None


def load(path: str) -> ShardConfig:
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse(doc)


def parse(doc: dict[str, Any]) -> ShardConfig:
    raw_groups = doc.get("groups")
    if not isinstance(raw_groups, list) or not raw_groups:
        raise ConfigError("[[groups]] must list at least one shard group")
    if len(raw_groups) > MAX_GROUPS:
        raise ConfigError(f"more than {MAX_GROUPS} groups")
    groups: dict[str, Group] = {}
    for g in raw_groups:
        name, nodes = g.get("name"), g.get("nodes")
        if not isinstance(name, str) or not name:
            raise ConfigError("every group needs a name")
        if name in groups:
            raise ConfigError(f"group {name!r} is listed twice")
        if not isinstance(nodes, list) or not nodes or not all(isinstance(n, str) for n in nodes):
            raise ConfigError(f'group {name!r} needs nodes = ["host:port", ...]')
        admin = g.get("admin", [_admin_default(n) for n in nodes])
        if (
            not isinstance(admin, list)
            or len(admin) != len(nodes)
            or not all(isinstance(a, str) and a for a in admin)
        ):
            raise ConfigError(f"group {name!r}: admin must list one host:port per node")
        groups[name] = Group(name, tuple(nodes), tuple(admin))
    names = list(groups)

    tables = _str_map(doc.get("tables", {}), "tables")
    ids = _str_map(doc.get("ids", {}), "ids")
    for table, column in ids.items():
        if table not in tables:
            raise ConfigError(f"[ids] names {table!r}, which is not a sharded table")
        if tables[table] != column:
            raise ConfigError(f"[ids] {table}: ids are generated for the shard key column "
                              f"{tables[table]!r}, not {column!r}")  # fmt: skip
    home = doc.get("home", names[0])
    if home not in groups:
        raise ConfigError(f"home group {home!r} is not a group")
    token = doc.get("store_admin_token")
    if token is not None and (not isinstance(token, str) or not token):
        raise ConfigError("store_admin_token must be a non-empty string")
    worker_id = doc.get("worker_id", 0)
    if not isinstance(worker_id, int) or not 0 <= worker_id < 1024:
        raise ConfigError("worker_id must be an integer in 0..1023")

    strategy = doc.get("strategy", "consistent")
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}")
    placement = _placement(strategy, doc, names)
    return ShardConfig(groups, tables, home, RoutingMap(placement), ids, worker_id, token)


def _admin_default(node: str) -> str:
    """DESIGN.md's default: a component's admin port is its public port + 10000."""
    host, _, port = node.rpartition(":")
    return f"{host}:{int(port) + 10000}" if port.isdigit() and int(port) < 55536 else node


def _str_map(raw: Any, what: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in raw.items()
    ):
        raise ConfigError(f"[{what}] maps table names to column names")
    return {k.lower(): v.lower() for k, v in raw.items()}


def _placement(strategy: str, doc: dict[str, Any], names: list[str]):
    if strategy == "modulo":
        return Modulo(names)
    if strategy == "consistent":
        vnodes = doc.get("vnodes", DEFAULT_VNODES)
        if not isinstance(vnodes, int) or not 1 <= vnodes <= MAX_VNODES:
            raise ConfigError(f"vnodes must be an integer in 1..{MAX_VNODES}")
        return Consistent(names, vnodes)
    if strategy == "range":
        raw = doc.get("ranges")
        if not isinstance(raw, list) or not raw:
            raise ConfigError('strategy = "range" needs [[ranges]] with low and group')
        bounds = []
        for r in raw:
            low, group = r.get("low"), r.get("group")
            if not isinstance(low, int) or group not in names:
                raise ConfigError(f"bad range {r!r}: needs an integer low and a known group")
            bounds.append((low, group))
        try:
            return Range(bounds)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    directory = doc.get("directory", {})
    if not isinstance(directory, dict):
        raise ConfigError("[directory] must be a table")
    fallback_name = directory.get("fallback", "consistent")
    if fallback_name not in ("modulo", "consistent"):
        raise ConfigError("directory fallback must be modulo or consistent")
    fallback = _placement(fallback_name, doc, names)
    keys: dict[Any, str] = {}
    for key, group in dict(directory.get("keys", {})).items():
        if group not in names:
            raise ConfigError(f"directory key {key!r} maps to unknown group {group!r}")
        keys[canonical_key(key)] = group
    ranges = []
    for r in directory.get("ranges", []):
        low, high, group = r.get("low"), r.get("high"), r.get("group")
        if not (isinstance(low, int) and isinstance(high, int) and low < high) or (
            group not in names
        ):
            raise ConfigError(f"bad directory range {r!r}: needs low < high and a known group")
        ranges.append((low, high, group))
    return Directory(fallback, keys, ranges)
