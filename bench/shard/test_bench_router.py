"""The router's own work per request, without IO: scan + place, and a fan-out merge.

Run: ``.venv/bin/python -m pytest bench/shard --benchmark-only -p no:cacheprovider``.
"""

from components.shard import config
from components.shard.ids import Snowflake
from components.shard.merge import merge_rows
from components.shard.router import Router
from components.shard.sqlscan import scan

CONFIG = config.parse({
    "strategy": "consistent",
    "groups": [{"name": f"g{i}", "nodes": [f"127.0.0.1:{4001 + i}"]} for i in range(4)],
    "tables": {"users": "id"}, "ids": {"users": "id"},
})  # fmt: skip
ROUTER = Router(CONFIG, Snowflake(1, lambda: 1_800_000_000_000))


def test_plan_point_select(benchmark):
    statements = [("SELECT id, name, email FROM users WHERE id = ?", [42])]
    plan = benchmark(ROUTER.plan, statements, write=False, transaction=False)
    assert plan.single is not None


def test_scan_point_select_uncached(benchmark):
    """What the plan cache saves on a statement's first sight (``sqlscan.scan_cached``)."""
    info = benchmark(scan, "SELECT id, name, email FROM users WHERE id = ?")
    assert info.tables == ["users"]


def test_plan_insert_with_generated_id(benchmark):
    statements = [("INSERT INTO users (name, email) VALUES (?, ?)", ["fiona", "f@x.io"])]
    plan = benchmark(ROUTER.plan, statements, write=True, transaction=True)
    assert plan.generated_ids == 1


def test_plan_keyless_select_fans_out(benchmark):
    statements = [("SELECT id, name FROM users ORDER BY name LIMIT 20", None)]
    plan = benchmark(ROUTER.plan, statements, write=False, transaction=False)
    assert len(plan.steps[0].groups) == 4


def test_merge_order_by_limit_4x100_rows(benchmark):
    info = scan("SELECT id, name FROM users ORDER BY name LIMIT 50")
    parts = [{"columns": ["id", "name"], "types": ["integer", "text"],
              "values": sorted(([g * 1000 + i, f"n{(i * 7919 + g) % 1000:04d}"]
                                for i in range(100)), key=lambda r: r[1])}
             for g in range(4)]  # fmt: skip
    merged = benchmark(merge_rows, parts, info, None)
    assert len(merged["values"]) == 50
