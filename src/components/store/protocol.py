"""rqlite's HTTP API as data: request bodies and query strings in, JSON documents out.

No sockets here (the h11 habit): ``server.py`` hands this module the body bytes and the
query string and gets back statements, options, or the exact JSON rqlite would send. The
shapes follow rqlite's documented Data API (rqlite.io/docs/api/api, /bulk-api,
/read-consistency, /queued-writes):

- a request body is a JSON array; each element is a SQL string, or an array of a SQL
  string followed by its positional parameters ``["... ?", 1, "x"]`` or by one object of
  named parameters ``["... :name", {"name": "x"}]``;
- ``GET /db/query?q=SQL`` carries one statement in the query string;
- flags are bare query parameters (``?transaction&timings&pretty&associative``);
  ``level=none|weak|strong`` (weak when absent or unknown, as rqlite), ``freshness=1s``
  and ``timeout=2s`` are Go durations;
- a statement's result is ``{"columns", "types", "values"}`` for rows (``values`` left
  out when there are none), ``{"last_insert_id", "rows_affected"}`` for changes (zeros
  left out, as Go's ``omitempty`` does), ``{"error": "..."}`` for a failure; the
  associative form is ``{"types": {col: type}, "rows": [{col: value}]}``; ``?timings``
  adds ``"time"`` (seconds) per result and for the whole request.

Beyond rqlite: ``min_lsn=N`` on a query asks the node to wait until it has applied the
write with that LSN (read-your-writes across replicas); every write answer carries its
LSN in the body (``"lsn"``, next to ``"results"``) and in the ``X-Scalelab-Lsn`` header
(rqlite's ``raft_index`` has the same role and is in the body when ``?raft_index`` is
asked for). Every query answer carries ``"lsn"`` too: the last write contained in the
snapshot it read. All statements of one query request, with or without
``?transaction``, read one SQLite snapshot, so rows copied by a query plus the change
feed (``changes_body``) from that LSN on reproduce the table exactly.

``/db/load`` takes a SQL dump (or a SQLite file, converted by the server) and
``split_sql`` cuts it into statements that run as one logged transaction. ``?queue``
answers at once with a ``sequence_number`` and commits in the background (rqlite's
queued writes); ``&wait`` makes it wait for the commit.

Bounds: ``MAX_STATEMENTS`` per request and ``MAX_SQL_BYTES`` per statement; the body
size limit is the server's (``MAX_BODY_BYTES``, enforced before parsing).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from .database import Changes, Failure, Result, Rows
from .wal import Batch

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_STATEMENTS = 1000
MAX_SQL_BYTES = 1024 * 1024
MAX_PARAMS = 999  # SQLite's classic SQLITE_MAX_VARIABLE_NUMBER

LEVELS = ("none", "weak", "strong")
_FALSE = frozenset({"false", "0", "no", "off"})
_DURATION_UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                     "h": 3600.0}  # fmt: skip

Statement = tuple[str, list[Any] | dict[str, Any] | None]


class BadRequest(ValueError):
    """The request cannot be understood; answered 400 with this message, as rqlite does."""


@dataclass(frozen=True, slots=True)
class Options:
    """The query-string flags of one API request."""

    transaction: bool = False
    timings: bool = False
    pretty: bool = False
    associative: bool = False
    redirect: bool = False
    raft_index: bool = False
    queue: bool = False
    wait: bool = False
    level: str = "weak"
    freshness_s: float | None = None
    timeout_s: float | None = None
    min_lsn: int | None = None
    q: str | None = None


def parse_options(query: str | Mapping[str, str]) -> Options:
    """Flags from a raw query string (``a&b=1``) or an already parsed mapping (the
    server passes aiohttp's, parsed once per request); a bare name means true."""
    if isinstance(query, str):
        try:
            pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=64)
        except ValueError as exc:
            raise BadRequest(f"bad query string: {exc}") from None
        values = {}
        for key, value in pairs:
            values.setdefault(key, value)  # the first of repeated names, as aiohttp's query
    else:
        if len(query) > 64:
            raise BadRequest("bad query string: too many fields")
        values = {key: query[key] for key in query}

    def flag(name: str) -> bool:
        return name in values and values[name].lower() not in _FALSE

    level = values.get("level", "weak").lower()
    if level not in LEVELS:
        level = "weak"  # rqlite: an unrecognised level means weak
    min_lsn = None
    if "min_lsn" in values:
        try:
            min_lsn = int(values["min_lsn"])
        except ValueError:
            raise BadRequest(f"min_lsn must be an integer, got {values['min_lsn']!r}") from None
        if min_lsn < 0:
            raise BadRequest("min_lsn must be >= 0")
    return Options(
        transaction=flag("transaction"),
        timings=flag("timings"),
        pretty=flag("pretty"),
        associative=flag("associative"),
        redirect=flag("redirect"),
        raft_index=flag("raft_index"),
        queue=flag("queue"),
        wait=flag("wait"),
        level=level,
        freshness_s=parse_duration(values["freshness"]) if values.get("freshness") else None,
        timeout_s=parse_duration(values["timeout"]) if values.get("timeout") else None,
        min_lsn=min_lsn,
        q=values.get("q"),
    )


MAX_DURATION_S = 3600.0


def parse_duration(text: str) -> float:
    """A Go duration (``1.5s``, ``100ms``, ``1m30s``) in seconds; a bare number is seconds.
    Bounded to ``MAX_DURATION_S``: a timeout is never infinite."""
    value = _duration(text)
    if not 0.0 <= value <= MAX_DURATION_S:
        raise BadRequest(f"duration out of range 0..{MAX_DURATION_S:.0f}s: {text[:40]!r}")
    return value


def _duration(text: str) -> float:
    text = text.strip()
    total, i, n = 0.0, 0, len(text)
    if n == 0 or n > 32:
        raise BadRequest(f"invalid duration {text[:40]!r}")
    try:
        return float(text)
    except ValueError:
        pass
    while i < n:
        j = i
        while j < n and (text[j].isdigit() or text[j] == "."):
            j += 1
        k = j
        while k < n and not (text[k].isdigit() or text[k] == "."):
            k += 1
        number, unit = text[i:j], text[j:k]
        if not number or unit not in _DURATION_UNITS_S:
            raise BadRequest(f"invalid duration {text!r}")
        try:
            total += float(number) * _DURATION_UNITS_S[unit]
        except ValueError:
            raise BadRequest(f"invalid duration {text!r}") from None
        i = k
    return total


def parse_statements(body: bytes) -> list[Statement]:
    """The JSON array of statements of a POST body, validated and bounded."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON body: {exc}") from None
    if not isinstance(doc, list):
        raise BadRequest("body must be a JSON array of statements")
    if not doc:
        raise BadRequest("empty statement list")
    if len(doc) > MAX_STATEMENTS:
        raise BadRequest(f"too many statements: {len(doc)} > {MAX_STATEMENTS}")
    return [_statement(item, i) for i, item in enumerate(doc)]


def single_statement(sql: str) -> list[Statement]:
    """``GET /db/query?q=...``: one statement without parameters."""
    if not sql.strip():
        raise BadRequest("empty query")
    return [_statement(sql, 0)]


def _statement(item: Any, index: int) -> Statement:
    if isinstance(item, str):
        sql, params = item, None
    elif isinstance(item, list) and item and isinstance(item[0], str):
        sql = item[0]
        rest = item[1:]
        if len(rest) == 1 and isinstance(rest[0], dict):
            params = {str(k): _param(v, index) for k, v in rest[0].items()}
        else:
            params = rest  # a fresh list (the slice): kept as it is when all values are plain
            for value in rest:
                if type(value) not in _PLAIN_TYPES:  # a bool to convert, or an error
                    params = [_param(v, index) for v in rest]
                    break
        if len(rest) > MAX_PARAMS or (isinstance(params, dict) and len(params) > MAX_PARAMS):
            raise BadRequest(f"statement {index}: more than {MAX_PARAMS} parameters")
    else:
        raise BadRequest(f"statement {index}: expected a SQL string or [SQL, params...]")
    if len(sql) > MAX_SQL_BYTES:
        raise BadRequest(f"statement {index}: SQL longer than {MAX_SQL_BYTES} bytes")
    if not sql or sql.isspace():
        raise BadRequest(f"statement {index}: empty SQL")
    return sql, params


#: Parameter types JSON gives that SQLite takes as they are (``bool`` is an ``int`` subclass
#: but is converted, so it is not here).
_PLAIN_TYPES = frozenset({str, int, float, type(None)})


def _param(value: Any, index: int) -> Any:
    if value is None or isinstance(value, int | float | str):
        return int(value) if isinstance(value, bool) else value
    raise BadRequest(f"statement {index}: parameters must be numbers, strings, booleans or null")


# -- /db/load: a SQL dump as statements -------------------------------------------------

#: Statements of a dump that the store manages itself and skips on load.
_DUMP_SKIP_PREFIXES = ("BEGIN", "COMMIT", "END", "ROLLBACK", "PRAGMA")


def split_sql(text: str, skip_table: str) -> list[Statement]:
    """Split a SQL script (``sqlite3 .dump``, ``/db/backup?fmt=sql``) into statements.

    A ``;`` ends a statement only where SQLite agrees it is complete
    (``sqlite3.complete_statement``), so semicolons inside strings and triggers are kept.
    The dump's own transaction control and pragmas are dropped (the load runs as one
    logged transaction), as are statements about ``skip_table`` (the store's meta table).
    """
    import sqlite3

    statements: list[Statement] = []
    pending = ""
    for piece in text.split(";"):
        pending += piece + ";"
        if not sqlite3.complete_statement(pending):
            continue
        sql = pending.strip()
        pending = ""
        if sql == ";":
            continue
        head = sql.lstrip().upper()
        if head.startswith(_DUMP_SKIP_PREFIXES) or skip_table in sql:
            continue
        statements.append((sql, None))
        if len(statements) > MAX_LOAD_STATEMENTS:
            raise BadRequest(f"dump has more than {MAX_LOAD_STATEMENTS} statements")
    if pending.strip(" \t\r\n;"):
        raise BadRequest("dump ends inside an incomplete statement")
    return statements


MAX_LOAD_STATEMENTS = 1_000_000


# -- answers ---------------------------------------------------------------------------


def result_json(result: Result, options: Options) -> dict[str, Any]:
    """One statement's result in rqlite's shape."""
    if isinstance(result, Rows):
        if options.associative:
            doc: dict[str, Any] = {
                "types": dict(zip(result.columns, result.types, strict=True)),
                "rows": [dict(zip(result.columns, row, strict=True)) for row in result.values],
            }
        else:
            doc = {"columns": result.columns, "types": result.types}
            if result.values:
                doc["values"] = result.values
    elif isinstance(result, Changes):
        doc = {}
        if result.last_insert_id:
            doc["last_insert_id"] = result.last_insert_id
        if result.rows_affected:
            doc["rows_affected"] = result.rows_affected
    else:
        doc = {"error": result.error}
    if options.timings:
        doc["time"] = result.time
    return doc


def results_body(
    results: list[Result], options: Options, elapsed_s: float, lsn: int | None = None
) -> bytes:
    """The whole answer: ``{"results": [...], "lsn": N}`` (``lsn`` when known) plus
    ``time`` / ``raft_index`` when asked."""
    doc: dict[str, Any] = {"results": [result_json(r, options) for r in results]}
    if lsn is not None:
        doc["lsn"] = lsn
    if options.timings:
        doc["time"] = elapsed_s
    if options.raft_index and lsn is not None:
        doc["raft_index"] = lsn
    return dumps(doc, options.pretty)


def statement_json(sql: str, params: Any) -> str | list[Any]:
    """A statement in the request body's own form: ``sql``, ``[sql, p1, ...]`` or
    ``[sql, {"name": value}]``, so a change can be sent back to ``/db/execute`` as is."""
    if params is None:
        return sql
    if isinstance(params, dict):
        return [sql, params]
    return [sql, *params]


def change_json(lsn: int, epoch: int, batch: Batch) -> dict[str, Any]:
    """One redo record in the change feed: its LSN, its epoch, whether it was
    all-or-nothing, and its statements as logged (after the nondeterminism rewrite)."""
    return {
        "lsn": lsn,
        "epoch": epoch,
        "transaction": batch.transaction,
        "statements": [statement_json(sql, params) for sql, params in batch.statements],
    }


def error_body(message: str, options: Options | None = None) -> bytes:
    """A request-level error in rqlite's shape (``{"error": "..."}``)."""
    return dumps({"error": message}, bool(options and options.pretty))


def dumps(doc: Any, pretty: bool = False) -> bytes:
    if pretty:
        # rqlite indents with four spaces (Go's json.MarshalIndent); orjson only has two.
        return json.dumps(doc, indent=4).encode()
    return orjson.dumps(doc)


def is_failure(result: Result) -> bool:
    return isinstance(result, Failure)
