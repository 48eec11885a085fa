"""Merging one statement's results from several shards into the answer one database gives.

A fan-out read returns one result per group; the client must see one result, equal to
what a single database holding every row would return. What can be merged exactly:

- plain rows: concatenated (SQL promises no order without ORDER BY);
- ORDER BY result columns: a k-way merge of the per-shard sorted lists, comparing
  values the way SQLite does (NULL < numbers < text < blob; numbers by value, text by
  bytes: BINARY collation), then LIMIT n applied to the merged list (each shard already
  returned its own first n, and the global first n are among them);
- aggregates: ``count`` and ``sum``/``total`` of the partial results add up,
  ``min``/``max`` are the min/max of the partial ones (ignoring NULL, as SQL's
  aggregates do); with GROUP BY over plain columns the result shows, per group (a
  group's rows may sit on every shard), then ORDER BY and LIMIT over the merged groups.

What cannot (``avg``: the average of averages is wrong without the counts;
``count(DISTINCT x)``; HAVING, GROUP BY an expression, DISTINCT, OFFSET) is refused by the scanner before the
query runs, as is GROUP BY with LIMIT (each shard would cut its own groups). Two honest
caveats: a float ``sum`` added in a different order can differ from a single database's
in the last bits, as it would between two SQLite versions; and an integer ``sum`` past
2**63, an "integer overflow" error in one SQLite, is answered here as the exact number.

Writes sent to every group merge as ``rows_affected`` summed; an error from any group
makes the statement's result an error naming the groups that failed and those that
applied it.
"""

from __future__ import annotations

import heapq
from typing import Any

from .sqlscan import NUMBER, PARAM, Scan, value_of


class MergeError(ValueError):
    """The shards' results do not fit together (different columns)."""


def sort_key(value: Any) -> tuple[int, Any]:
    """SQLite's ordering across storage classes (sqlite.org/datatype3.html §4.1)."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value.encode("utf-8", "surrogatepass"))
    return (3, repr(value))


def merge_rows(results: list[dict[str, Any]], info: Scan, params: Any) -> dict[str, Any]:
    """Merge per-shard ``{"columns", "types", "values"}`` results of one SELECT."""
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return {"error": errors[0]}
    first = results[0]
    columns = first.get("columns", [])
    for other in results[1:]:
        if other.get("columns", []) != columns:
            raise MergeError("shards answered with different columns (schemas differ)")
    types = next((r["types"] for r in results if r.get("values")), first.get("types", []))
    parts = [r.get("values", []) for r in results]
    if info.aggregates is not None and info.group_by is not None:
        values = _grouped(info.aggregates[: len(columns)], parts)
        if info.order_by:
            positions = _positions(info, columns)
            values.sort(key=lambda row: _row_key(row, positions))
    elif info.aggregates is not None:
        rows = [part[0] for part in parts if part]
        values = [_combine(info.aggregates[: len(columns)], rows)] if rows else []
    elif info.order_by:
        positions = _positions(info, columns)
        values = list(heapq.merge(*parts, key=lambda row: _row_key(row, positions)))
    else:
        values = [row for part in parts for row in part]
    limit = _limit(info, params)
    if limit is not None and limit >= 0:
        values = values[:limit]
    out: dict[str, Any] = {"columns": columns, "types": types}
    if values:
        out["values"] = values
    return out


class _Reverse:
    """Inverts comparison for DESC terms inside a tuple key."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __lt__(self, other: _Reverse) -> bool:
        return other.key < self.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reverse) and other.key == self.key


def _positions(info: Scan, columns: list[str]) -> list[tuple[int, bool]]:
    lowered = [c.lower() for c in columns]
    positions = []
    for term in info.order_by:
        if isinstance(term.column, int):
            if not 1 <= term.column <= len(columns):
                raise MergeError(f"ORDER BY term {term.column} out of range")
            positions.append((term.column - 1, term.descending))
            continue
        name = term.column.lower()
        if lowered.count(name) != 1:
            raise MergeError(
                f"ORDER BY {term.column!r} is not exactly one result column; the router "
                "merges on result columns only"
            )
        positions.append((lowered.index(name), term.descending))
    return positions


def _row_key(row: list[Any], positions: list[tuple[int, bool]]) -> tuple:
    return tuple(_Reverse(sort_key(row[i])) if desc else sort_key(row[i]) for i, desc in positions)


def order_positions(info: Scan, columns: list[str]) -> list[tuple[int, bool]]:
    """Public for the oracle tests: which result columns the ORDER BY sorts on."""
    return _positions(info, columns)


def _grouped(aggregates, parts: list[list[list[Any]]]) -> list[list[Any]]:
    """GROUP BY across shards: a group may have rows on every shard; combine them.
    Python's ``1 == 1.0`` with equal hashes groups numbers as SQLite does."""
    keys = [i for i, agg in enumerate(aggregates) if agg.func == "group"]
    groups: dict[tuple, list[list[Any]]] = {}
    for part in parts:
        for row in part:
            groups.setdefault(tuple(row[i] for i in keys), []).append(row)
    merged = [_combine(aggregates, rows) for rows in groups.values()]
    # SQL gives groups in no defined order; sort by the grouped columns, as SQLite's
    # sorter usually does, so answers are reproducible.
    merged.sort(key=lambda row: tuple(sort_key(row[i]) for i in keys))
    return merged


def _combine(aggregates, rows: list[list[Any]]) -> list[Any]:
    """One output row from partial rows of the same group (or of the whole table)."""
    out = []
    for i, agg in enumerate(aggregates):
        column = [row[i] for row in rows]
        present = [v for v in column if v is not None]
        if agg.func == "group":
            out.append(column[0])
        elif agg.func == "count":
            out.append(sum(present))
        elif agg.func == "total":
            out.append(float(sum(present)))
        elif agg.func == "sum":
            out.append(sum(present) if present else None)
        elif agg.func == "min":
            out.append(min(present, key=sort_key) if present else None)
        else:
            out.append(max(present, key=sort_key) if present else None)
    return out


def _limit(info: Scan, params: Any) -> int | None:
    if info.limit is None:
        return None
    if info.limit.kind == NUMBER and isinstance(info.limit.value, int):
        return info.limit.value
    if info.limit.kind == PARAM:
        value = value_of([info.limit], params)
        if isinstance(value, int):
            return value
    raise MergeError("LIMIT must be an integer")


def merge_changes(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Merge a write statement run on several groups (group -> its result)."""
    failed = {g: r["error"] for g, r in results.items() if "error" in r}
    if failed:
        applied = sorted(g for g in results if g not in failed)
        group, error = sorted(failed.items())[0]
        return {"error": f"{error} (on group {group}; failed on {sorted(failed)}, "
                         f"applied on {applied}: not atomic across groups)"}  # fmt: skip
    out: dict[str, Any] = {}
    affected = sum(r.get("rows_affected", 0) for r in results.values())
    if affected:
        out["rows_affected"] = affected
    return out
