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
  group's rows may sit on every shard), then ORDER BY and LIMIT over the merged groups;
- ``avg``: the average of averages is wrong (shards hold different numbers of rows), so
  the shards are not asked for it: ``partial_query`` rewrites each ``avg(x)`` into
  ``sum(x)`` (under the name the average column would have) plus a hidden ``count(x)``
  appended to the result, and the merge divides the summed sums by the summed counts
  as SQLite's ``avgFinalize`` does (``(double)sum / (double)count``; NULL when no row
  had a non-NULL ``x``; always a real). Vitess and Citus rewrite AVG the same way.

What cannot (``count(DISTINCT x)``, ``group_concat``; HAVING, GROUP BY an expression,
DISTINCT, OFFSET) is refused by the scanner before the query runs, as is GROUP BY with
LIMIT (each shard would cut its own groups). Honest caveats: a float ``sum`` (or
``avg``) added in a different order can differ from a single database's in the last
bits, as it would between two SQLite versions; an integer ``sum`` past 2**63, an
"integer overflow" error in one SQLite, is answered here as the exact number; and an
``avg`` whose sum overflows 64 bits *on one shard* is answered with that shard's
"integer overflow" error, where one SQLite would fall back to floating point: an error,
never a wrong number.

Writes sent to every group merge as ``rows_affected`` summed; an error from any group
makes the statement's result an error naming the groups that failed and those that
applied it.
"""

from __future__ import annotations

import dataclasses
import heapq
from typing import Any

from .sqlscan import NUMBER, PARAM, Aggregate, Scan, value_of

#: Names of the hidden count columns ``partial_query`` appends (never shown to clients).
HIDDEN_PREFIX = "_shard_count_"


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


def partial_query(sql: str, info: Scan) -> tuple[str, Scan]:
    """What each shard runs for a fan-out read of ``sql``, and the scan to merge it with.

    Only ``avg`` needs it: ``avg(x)`` becomes ``sum(x) AS "avg(x)"`` (SQLite names an
    unaliased column by its text, so the name stays; an alias stays as it was), and
    ``count(x)`` is appended after the last result column, so that ORDER BY positions
    and names keep meaning what they meant. Other statements are returned unchanged.
    """
    aggregates = info.aggregates or []
    avgs = [i for i, agg in enumerate(aggregates) if agg.func == "avg"]
    if not avgs or info.projection_end <= 0:
        return sql, info
    visible = len(aggregates)
    edits: list[tuple[int, int, str]] = []
    counts: list[str] = []
    merged: list[Aggregate] = list(aggregates)
    for n, i in enumerate(avgs):
        agg = aggregates[i]
        (start, end), (a0, a1) = agg.call, agg.args
        edits.append((start, start + len("avg"), "sum"))
        if not agg.aliased:
            edits.append((end, end, " AS " + _quote(sql[start:end])))
        counts.append(f"count({sql[a0:a1]}) AS {_quote(HIDDEN_PREFIX + str(n))}")
        merged[i] = dataclasses.replace(agg, count_at=visible + n)
    at = info.projection_end
    edits.append((at, at, ", " + ", ".join(counts) + " "))
    for start, end, text in sorted(edits, reverse=True):  # from the end: offsets hold
        sql = sql[:start] + text + sql[end:]
    merged += [Aggregate("count") for _ in avgs]
    return sql, dataclasses.replace(info, aggregates=merged, hidden=len(avgs))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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
    shown = len(columns) - info.hidden
    if shown < 0:
        raise MergeError("shards answered with fewer columns than asked for")
    parts = [r.get("values", []) for r in results]
    if info.aggregates is not None and info.group_by is not None:
        values = _grouped(info.aggregates[: len(columns)], parts)
        if info.order_by:
            positions = _positions(info, columns[:shown])
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
    if info.hidden:
        columns = columns[:shown]
        values = [row[:shown] for row in values]
    out: dict[str, Any] = {"columns": columns, "types": _types(results, values, shown)}
    if values:
        out["values"] = values
    return out


def _types(results: list[dict[str, Any]], values: list[list[Any]], shown: int) -> list[str]:
    """The store's rule, on the merged rows: a column's type is the storage class of its
    first non-NULL value, ``""`` if it has none (blobs arrive as base64 text, so a column
    any shard called ``blob`` stays ``blob``)."""
    types = []
    for c in range(shown):
        if any(c < len(r.get("types", [])) and r["types"][c] == "blob" for r in results):
            types.append("blob")
            continue
        value = next((row[c] for row in values if row[c] is not None), None)
        types.append(_STORAGE_CLASS.get(type(value), "text") if value is not None else "")
    return types


_STORAGE_CLASS = {int: "integer", bool: "integer", float: "real", str: "text"}


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
        elif agg.func == "avg":
            # SQLite's avgFinalize: (double)sum / (double)count, NULL with no count.
            if agg.count_at is None:
                raise MergeError("avg over shards needs its counts (see partial_query)")
            count = sum(row[agg.count_at] or 0 for row in rows)
            out.append(float(sum(present)) / float(count) if count else None)
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
