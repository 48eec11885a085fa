"""A small, honest SQL scanner: just enough of a statement to route it to a shard.

A shard router does not need a SQL parser; it needs three facts about each statement:
which tables it touches, which values of the shard key it is pinned to, and (for a read
that must visit every shard) what its result looks like (plain rows, an ORDER BY, a
LIMIT, aggregates) so that the pieces can be merged. Vitess and Citus carry full
parsers; this module carries a tokenizer (SQLite's lexical rules: ``'strings'`` with
``''`` escapes, ``"identifiers"``, `` `identifiers` ``, ``[identifiers]``, ``--`` and
``/* */`` comments, ``?``, ``?NNN``, ``:name``, ``@name``, ``$name`` parameters, see
sqlite.org/lang_expr.html#varparam) and a few patterns over the tokens.

Honesty is the design rule. Whatever the scanner does not understand it reports as not
understood (``key_values is None``: "could be any shard"; ``mergeable`` False with a
reason), and the router then fans the statement out or refuses it. It never guesses a
key: a key is only taken from a top-level conjunct of the WHERE clause of the exact
form ``key = value``, ``value = key`` or ``key IN (value, ...)``, and only when the
WHERE has no top-level OR (``a = 1 OR key = 2`` pins nothing). A missed key costs a
fan-out, never a wrong answer.

Positional parameters follow SQLite's numbering: a bare ``?`` takes the number one above
the largest used so far, ``?NNN`` takes NNN.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

#: Statements longer than this are not scanned (the store's own limit is 1 MiB).
MAX_SCAN_BYTES = 1024 * 1024
#: Most tokens the scanner will produce for one statement.
MAX_TOKENS = 200_000

# Token kinds.
WORD = "word"  # keyword or bare identifier, value is lowercased text
IDENT = "ident"  # quoted identifier, value is its text
STRING = "string"
NUMBER = "number"
PARAM = "param"  # value: int (positional index) or str (name, without its sigil)
BLOB = "blob"
OP = "op"  # punctuation and operators


class ScanError(ValueError):
    """The text is not lexically SQL (an unterminated string or comment)."""


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    value: Any
    start: int  # offset in the SQL text
    end: int


_OPS2 = ("<=", ">=", "==", "!=", "<>", "||", "<<", ">>", "->")
_DIGITS = frozenset("0123456789")
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")


def tokenize(sql: str) -> list[Token]:
    """SQLite's tokens of ``sql``; whitespace and comments dropped."""
    if len(sql) > MAX_SCAN_BYTES:
        raise ScanError(f"statement longer than {MAX_SCAN_BYTES} bytes")
    tokens: list[Token] = []
    i, n = 0, len(sql)
    next_param = 1
    while i < n:
        if len(tokens) >= MAX_TOKENS:
            raise ScanError(f"statement has more than {MAX_TOKENS} tokens")
        c = sql[i]
        if c in " \t\r\n\f\v":
            i += 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2  # SQLite accepts a comment running to the end
        elif c == "'" or ((c in "xX") and sql.startswith("'", i + 1)):
            blob = c != "'"
            q = i + 1 if blob else i
            text, j = _quoted(sql, q, "'")
            tokens.append(Token(BLOB if blob else STRING, text, i, j))
            i = j
        elif c in '"`':
            text, j = _quoted(sql, i, c)
            tokens.append(Token(IDENT, text, i, j))
            i = j
        elif c == "[":
            j = sql.find("]", i + 1)
            if j < 0:
                raise ScanError("unterminated [identifier]")
            tokens.append(Token(IDENT, sql[i + 1 : j], i, j + 1))
            i = j + 1
        elif c.isdigit() or (c == "." and i + 1 < n and sql[i + 1].isdigit()):
            j = _number_end(sql, i)
            tokens.append(Token(NUMBER, _number(sql[i:j]), i, j))
            i = j
        elif c == "?":
            j = i + 1
            while j < n and sql[j] in _DIGITS:  # ASCII only: "?²" is no parameter number
                j += 1
            if j > i + 1:
                index = int(sql[i + 1 : j])
                if index < 1 or index > 32766:
                    raise ScanError(f"parameter ?{index} out of range")
            else:
                index = next_param
            next_param = max(next_param, index + 1)
            tokens.append(Token(PARAM, index, i, j))
            i = j
        elif c in ":@$" and i + 1 < n and (sql[i + 1].isalnum() or sql[i + 1] == "_"):
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] == "_"):
                j += 1
            tokens.append(Token(PARAM, sql[i + 1 : j], i, j))
            i = j
        elif c.isalpha() or c == "_" or ord(c) > 127:
            j = i + 1
            while j < n and (sql[j] in _WORD_CHARS or ord(sql[j]) > 127):
                j += 1
            tokens.append(Token(WORD, sql[i:j].lower(), i, j))
            i = j
        else:
            two = sql[i : i + 2]
            if two in _OPS2:
                tokens.append(Token(OP, two, i, i + 2))
                i += 2
            else:
                tokens.append(Token(OP, c, i, i + 1))
                i += 1
    return tokens


def _quoted(sql: str, i: int, quote: str) -> tuple[str, int]:
    """The text of a quoted token starting at ``sql[i] == quote``; doubled quotes escape."""
    parts = []
    j = i + 1
    while True:
        k = sql.find(quote, j)
        if k < 0:
            raise ScanError(f"unterminated {quote}quoted{quote} text")
        parts.append(sql[j:k])
        if sql.startswith(quote, k + 1):
            parts.append(quote)
            j = k + 2
        else:
            return "".join(parts), k + 1


def _number_end(sql: str, i: int) -> int:
    n = len(sql)
    if sql.startswith(("0x", "0X"), i):
        j = i + 2
        while j < n and sql[j] in "0123456789abcdefABCDEF_":
            j += 1
        return j
    j = i
    while j < n and (sql[j].isdigit() or sql[j] in "._"):
        j += 1
    if j < n and sql[j] in "eE":
        k = j + 1
        if k < n and sql[k] in "+-":
            k += 1
        if k < n and sql[k].isdigit():
            j = k
            while j < n and sql[j].isdigit():
                j += 1
    return j


def _number(text: str) -> int | float | str:
    """The value of a numeric literal; text we cannot read stays text (never a key)."""
    clean = text.replace("_", "")
    try:
        if clean[:2].lower() == "0x":
            value = int(clean, 16)
            return value - (1 << 64) if value >= 1 << 63 else value  # SQLite: 64-bit
        if any(ch in clean for ch in ".eE"):
            return float(clean)
        return int(clean)
    except ValueError:
        return text


# -- what a statement is ----------------------------------------------------------------

#: Aggregates whose per-shard partial results can be combined exactly (``avg`` once each
#: shard is asked for its sum and count instead: ``merge.partial_query``).
MERGEABLE_AGGREGATES = frozenset({"count", "sum", "total", "min", "max", "avg"})
#: Every aggregate SQLite knows (a fan-out read using one of the others is refused).
AGGREGATES = MERGEABLE_AGGREGATES | {"group_concat", "string_agg", "median"}


@dataclass(slots=True)
class Aggregate:
    """One result column of an aggregate read: ``count(*)``, ``sum(x)``, ..."""

    func: str
    #: Offsets in the SQL text of the call ``func(...)`` and of its arguments, and
    #: whether the column has an alias (what a rewrite of the call needs).
    call: tuple[int, int] = (0, 0)
    args: tuple[int, int] = (0, 0)
    aliased: bool = False
    #: For an ``avg`` rewritten for the shards: the result column holding its count.
    count_at: int | None = None


@dataclass(slots=True)
class OrderKey:
    """One ORDER BY term: a result column by name or 1-based position."""

    column: str | int
    descending: bool = False


@dataclass(slots=True)
class Scan:
    """What the router needs to know about one statement."""

    verb: str  # select, insert, update, delete, create, drop, alter, ... ('' if unknown)
    tables: list[str] = field(default_factory=list)
    #: Values the key column is pinned to (None: not pinned, could touch every shard).
    #: Filled by ``key_values`` for one key column; raw tokens are kept here.
    writes: bool = True
    has_subquery: bool = False
    #: For INSERT: the column list (None when absent) and each VALUES row's tokens.
    insert_columns: list[str] | None = None
    insert_rows: list[list[list[Token]]] | None = None
    insert_columns_open: int | None = None  # offset just after the column list's "("
    insert_row_opens: list[int] = field(default_factory=list)  # offset after each "("
    insert_select: bool = False
    #: The top-level WHERE clause's tokens (None: no WHERE).
    where: list[Token] | None = None
    # -- for SELECT: how to merge a fan-out
    mergeable: bool = True
    unmergeable_reason: str = ""
    #: Per result column: its aggregate, or ``Aggregate("group")`` for a GROUP BY column;
    #: set when the projection is aggregates (and grouped columns) only.
    aggregates: list[Aggregate] | None = None
    group_by: list[str] | None = None  # GROUP BY column names (lowercase)
    order_by: list[OrderKey] = field(default_factory=list)
    limit: Token | None = None
    tokens: list[Token] = field(default_factory=list)
    #: Offset of the top-level FROM of a SELECT (where result columns can be appended).
    projection_end: int = 0
    #: Trailing result columns the shards return for the merge only (see partial_query).
    hidden: int = 0


CLAUSE_END = frozenset({"group", "order", "limit", "having", "window", "returning",
                         "union", "intersect", "except"})  # fmt: skip
_WRITE_VERBS = frozenset({"insert", "replace", "update", "delete", "create", "drop",
                          "alter", "vacuum", "reindex", "analyze"})  # fmt: skip


#: Distinct statement texts whose scans are remembered (a plan cache, as MySQL and
#: Vitess keep one): a statement sent with parameters is tokenized once, not per request.
SCAN_CACHE_ENTRIES = 4096
#: Longer statements are scanned every time (the cache's memory stays bounded).
SCAN_CACHE_MAX_CHARS = 2048


def scan_cached(sql: str) -> Scan:
    """``scan(sql)``, remembered for short statements. The ``Scan`` is shared between
    requests: callers read it and never change it."""
    if len(sql) > SCAN_CACHE_MAX_CHARS:
        return scan(sql)
    return _scan_remembered(sql)


@functools.lru_cache(maxsize=SCAN_CACHE_ENTRIES)
def _scan_remembered(sql: str) -> Scan:
    return scan(sql)  # a ScanError is raised, not remembered


def scan(sql: str) -> Scan:
    """Scan one statement (raises ``ScanError`` for lexically broken SQL)."""
    tokens = tokenize(sql)
    while tokens and tokens[-1].kind == OP and tokens[-1].value == ";":
        tokens.pop()
    if any(t.kind == OP and t.value == ";" for t in tokens):
        raise ScanError("one statement per entry: ';' inside a statement")
    if not tokens or tokens[0].kind != WORD:
        return Scan("", tokens=tokens)
    verb = tokens[0].value
    out = Scan(verb, tokens=tokens, writes=verb in _WRITE_VERBS)
    depth = 0
    for i, tok in enumerate(tokens):
        if tok.kind == OP and tok.value == "(":
            depth += 1
        elif tok.kind == OP and tok.value == ")":
            depth -= 1
        elif tok.kind == WORD:
            if tok.value == "select" and i > 0:
                out.has_subquery = True
            if tok.value in ("from", "join", "into", "update") or (
                tok.value == "table" and verb in ("create", "drop", "alter")
            ):
                name = _table_after(tokens, i + 1)
                if name is not None and not (tok.value == "update" and i > 0):
                    out.tables.append(name)
                if tok.value == "from" and depth == 0:
                    _check_single_source(tokens, i, out)
            elif tok.value == "on" and verb == "create":
                name = _table_after(tokens, i + 1)  # CREATE INDEX ... ON table
                if name is not None:
                    out.tables.append(name)
    out.tables = list(dict.fromkeys(out.tables))
    if verb in ("select", "update", "delete"):
        out.where = _where(tokens)
    if verb in ("insert", "replace"):
        _scan_insert(tokens, out)
    if verb == "select":
        _scan_select(tokens, out)
    elif verb == "with":
        out.mergeable, out.unmergeable_reason = False, "WITH (common table expressions)"
    return out


def _table_after(tokens: list[Token], i: int) -> str | None:
    """The table name at ``tokens[i]``, skipping IF [NOT] EXISTS and a schema prefix."""
    while i < len(tokens) and tokens[i].kind == WORD and tokens[i].value in ("if", "not",
                                                                                "exists"):  # fmt: skip
        i += 1
    if i >= len(tokens) or tokens[i].kind not in (WORD, IDENT):
        return None
    name = tokens[i].value
    dotted = i + 2 < len(tokens) and tokens[i + 1].kind == OP and tokens[i + 1].value == "."
    if dotted and tokens[i + 2].kind in (WORD, IDENT):
        name = tokens[i + 2].value  # schema.table: the table
    return name.lower()


def _check_single_source(tokens: list[Token], i: int, out: Scan) -> None:
    """A FROM with a comma at top level (``FROM a, b``) is a join."""
    depth = 0
    for k in range(i + 1, len(tokens)):
        tok = tokens[k]
        if tok.kind == OP and tok.value == "(":
            depth += 1
        elif tok.kind == OP and tok.value == ")":
            depth -= 1
            if depth < 0:
                return
        elif depth == 0 and tok.kind == WORD and (tok.value == "where" or tok.value in CLAUSE_END):
            return
        elif depth == 0 and tok.kind == OP and tok.value == ",":
            if "," not in out.tables:
                out.tables.append(",")  # marks "more than one source"
            name = _table_after(tokens, k + 1)
            if name is not None:
                out.tables.append(name)


def _where(tokens: list[Token]) -> list[Token] | None:
    depth = 0
    start = None
    for i, tok in enumerate(tokens):
        if tok.kind == OP and tok.value == "(":
            depth += 1
        elif tok.kind == OP and tok.value == ")":
            depth -= 1
        elif depth == 0 and tok.kind == WORD:
            if start is None and tok.value == "where":
                start = i + 1
            elif start is not None and tok.value in CLAUSE_END:
                return tokens[start:i]
    return tokens[start:] if start is not None else None


def key_values(where: list[Token] | None, column: str, params: Any) -> list[Any] | None:
    """The values ``column`` is pinned to by a top-level conjunct of ``where``, or None.

    Several pinning conjuncts intersect (``k = 1 AND k IN (1, 2)`` is ``[1]``); an empty
    list means no row can match. A value we cannot read (an expression, a missing
    parameter) means None: the statement may touch any shard.
    """
    if not where:
        return None
    conjuncts: list[list[Token]] = [[]]
    depth = 0
    between = False
    for tok in where:
        if tok.kind == OP and tok.value == "(":
            depth += 1
        elif tok.kind == OP and tok.value == ")":
            depth -= 1
        if depth == 0 and tok.kind == WORD:
            if tok.value == "or":
                return None  # a top-level OR: no conjunct pins the whole clause
            if tok.value == "between":
                between = True
            elif tok.value == "and":
                if between:
                    between = False  # BETWEEN x AND y: this AND is part of it
                else:
                    conjuncts.append([])
                    continue
        conjuncts[-1].append(tok)
    pinned: list[Any] | None = None
    for conj in conjuncts:
        values = _pinning(conj, column, params)
        if values is None:
            continue
        if pinned is None:
            pinned = values
        else:
            keep = {canonical_key(v) for v in values}
            had = {canonical_key(v) for v in pinned}
            if None in keep or None in had:
                # A value only the column's affinity can compare: no exact intersection,
                # but either side alone is a sound (larger) answer.
                if None in had and None not in keep:
                    pinned = values
                continue
            pinned = [v for v in pinned if canonical_key(v) in keep]
    return pinned


def _is_column(tokens: list[Token], column: str) -> bool:
    """``column`` or ``table.column`` (quoted or not)."""
    if len(tokens) == 1:
        return tokens[0].kind in (WORD, IDENT) and tokens[0].value.lower() == column
    if len(tokens) == 3 and tokens[1].kind == OP and tokens[1].value == ".":
        return tokens[2].kind in (WORD, IDENT) and tokens[2].value.lower() == column
    return False


#: What ``value_of`` returns for tokens that are not one value (an expression).
MISSING = object()


def value_of(tokens: list[Token], params: Any) -> Any:
    """The value of a literal, a signed number or a parameter; ``MISSING`` otherwise."""
    sign = 1
    if len(tokens) == 2 and tokens[0].kind == OP and tokens[0].value in "+-":
        sign = -1 if tokens[0].value == "-" else 1
        tokens = tokens[1:]
        if tokens[0].kind != NUMBER:
            return MISSING
    if len(tokens) != 1:
        return MISSING
    tok = tokens[0]
    if tok.kind == STRING:
        return tok.value
    if tok.kind == NUMBER and not isinstance(tok.value, str):
        return sign * tok.value
    if tok.kind == PARAM:
        try:
            if isinstance(tok.value, int):
                if isinstance(params, list):
                    return params[tok.value - 1]
                return MISSING
            if isinstance(params, dict):
                return params[tok.value]
        except (IndexError, KeyError):
            return MISSING
    return MISSING


def _pinning(conj: list[Token], column: str, params: Any) -> list[Any] | None:
    for i, tok in enumerate(conj):
        if tok.kind == OP and tok.value in ("=", "=="):
            left, right = conj[:i], conj[i + 1 :]
            if _is_column(left, column):
                value = value_of(right, params)
            elif _is_column(right, column):
                value = value_of(left, params)
            else:
                return None
            return None if value is MISSING or value is None else [value]
        if tok.kind == WORD and tok.value == "in" and _is_column(conj[:i], column):
            inner = conj[i + 1 :]
            if len(inner) < 2 or inner[0].value != "(" or inner[-1].value != ")":
                return None
            if inner[0].kind != OP or inner[-1].kind != OP:
                return None
            values = []
            for item in _split_commas(inner[1:-1]):
                value = value_of(item, params)
                if value is MISSING:
                    return None  # a subquery or an expression: not pinned
                if value is not None:
                    values.append(value)
            return values
    return None


def _split_commas(tokens: list[Token]) -> list[list[Token]]:
    items: list[list[Token]] = [[]]
    depth = 0
    for tok in tokens:
        if tok.kind == OP and tok.value == "(":
            depth += 1
        elif tok.kind == OP and tok.value == ")":
            depth -= 1
        if depth == 0 and tok.kind == OP and tok.value == ",":
            items.append([])
        else:
            items[-1].append(tok)
    return items if items != [[]] else []


def canonical_key(value: Any) -> Any:
    """The form a key value is hashed and compared in, or None when it cannot be a key.

    SQLite compares ``5`` and ``'5'`` equal against a column with INTEGER or TEXT
    affinity, so both must land on the same shard: integers and strings that spell an
    integer in canonical form become ``int``; floats that hold an integer become that
    integer. Text that SQLite might read as a number some other way (``' 5'``, ``'5.0'``,
    ``'+5'``) equals 5 in an INTEGER column but not in a TEXT one; without the schema
    the router cannot tell, so such text is no key (the statement goes to every group),
    like other floats, blobs and NULL. Other strings stay strings.
    """
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 2**63 else None
    if isinstance(value, str):
        digits = value.isascii() and (value.isdigit() or (value[:1] == "-" and value[1:].isdigit()))
        if digits and str(int(value)) == value:
            return int(value)
        if not value.isascii():
            return value  # SQLite reads only ASCII digits as numbers
        try:
            float(value)
        except ValueError:
            return value
        return None  # numeric-looking text: equal to a number or not, by column affinity
    return None


# -- INSERT ---------------------------------------------------------------------------


def _scan_insert(tokens: list[Token], out: Scan) -> None:
    """``INSERT [OR x] INTO t [(cols)] VALUES (..), (..)`` or ``... SELECT``."""
    i = next((k for k, t in enumerate(tokens) if t.kind == WORD and t.value == "into"), None)
    if i is None:
        return
    i += 2
    if i < len(tokens) and tokens[i].kind == OP and tokens[i].value == ".":
        i += 2
    if i < len(tokens) and tokens[i].kind == WORD and tokens[i].value == "as":
        i += 2  # INSERT INTO t AS alias
    if i < len(tokens) and tokens[i].kind == OP and tokens[i].value == "(":
        close = _matching(tokens, i)
        if close is None:
            return
        out.insert_columns_open = tokens[i].end
        out.insert_columns = [
            item[0].value.lower() for item in _split_commas(tokens[i + 1 : close]) if item
        ]
        i = close + 1
    if i < len(tokens) and tokens[i].kind == WORD and tokens[i].value == "values":
        rows = []
        i += 1
        while i < len(tokens) and tokens[i].kind == OP and tokens[i].value == "(":
            close = _matching(tokens, i)
            if close is None:
                return
            out.insert_row_opens.append(tokens[i].end)
            rows.append(_split_commas(tokens[i + 1 : close]))
            i = close + 1
            if i < len(tokens) and tokens[i].kind == OP and tokens[i].value == ",":
                i += 1
            else:
                break
        out.insert_rows = rows
    elif i < len(tokens) and tokens[i].kind == WORD and tokens[i].value in ("select", "with"):
        out.insert_select = True


def _matching(tokens: list[Token], i: int) -> int | None:
    depth = 0
    for k in range(i, len(tokens)):
        tok = tokens[k]
        if tok.kind == OP and tok.value == "(":
            depth += 1
        elif tok.kind == OP and tok.value == ")":
            depth -= 1
            if depth == 0:
                return k
    return None


# -- SELECT: can a fan-out be merged? ---------------------------------------------------


def _refuse(out: Scan, reason: str) -> None:
    if out.mergeable:
        out.mergeable, out.unmergeable_reason = False, reason


def _scan_select(tokens: list[Token], out: Scan) -> None:
    depth = 0
    top: list[tuple[int, Token]] = []  # top-level tokens with their index
    for i, tok in enumerate(tokens):
        if tok.kind == OP and tok.value == "(":
            depth += 1
        elif tok.kind == OP and tok.value == ")":
            depth -= 1
        elif depth == 0:
            top.append((i, tok))
    words = {t.value for _, t in top if t.kind == WORD}
    if out.has_subquery:
        _refuse(out, "a subquery (it would see one shard's rows only)")
    for word, reason in (("having", "HAVING"), ("distinct", "DISTINCT"),
                         ("union", "UNION"), ("intersect", "INTERSECT"),
                         ("except", "EXCEPT"), ("offset", "OFFSET"), ("window", "WINDOW"),
                         ("join", "JOIN")):  # fmt: skip
        if word in words:
            _refuse(out, reason)
    if any(t.kind == WORD and t.value == "over" for t in tokens):
        _refuse(out, "a window function")
    # The projection: between SELECT and the top-level FROM (or the end).
    from_at = next((i for i, t in top if t.kind == WORD and t.value == "from"), len(tokens))
    out.projection_end = tokens[from_at].start if from_at < len(tokens) else tokens[-1].end
    items = _split_commas(tokens[1:from_at])
    funcs = [
        (k, t.value)
        for k, t in enumerate(tokens[1:from_at])
        if t.kind == WORD and t.value in AGGREGATES
        and k + 2 < from_at and tokens[k + 2].kind == OP and tokens[k + 2].value == "("
    ]  # fmt: skip
    group_at = next((i for i, t in top if t.kind == WORD and t.value == "group"), None)
    if group_at is not None:
        end = next((i for i, t in top if i > group_at and t.kind == WORD
                    and t.value in ("having", "order", "limit", "window")), len(tokens))  # fmt: skip
        out.group_by = []
        for term in _split_commas(tokens[group_at + 2 : end]):
            name = _column_name(term)
            if name is None:
                _refuse(out, "GROUP BY an expression (only plain columns can be merged)")
                break
            out.group_by.append(name)
    if funcs or out.group_by is not None:
        aggregates = []
        for item in items:
            agg = _simple_aggregate(item)
            if agg is None and out.group_by is not None:
                name = _column_name(item)
                if name is not None and name in out.group_by:
                    agg = Aggregate("group")
            if agg is None:
                _refuse(out, "an aggregate inside an expression, or mixed with columns that "
                        "are not grouped")  # fmt: skip
                break
            aggregates.append(agg)
        out.aggregates = aggregates
        shown = {_column_name(item) for item in items}
        if out.group_by is not None and not set(out.group_by) <= shown:
            _refuse(out, "GROUP BY a column the result does not show (groups could not be "
                    "matched across shards)")  # fmt: skip
    # ORDER BY terms, and LIMIT.
    order_at = next((i for i, t in top if t.kind == WORD and t.value == "order"), None)
    limit_at = next((i for i, t in top if t.kind == WORD and t.value == "limit"), None)
    if order_at is not None:
        end = limit_at if limit_at is not None else len(tokens)
        for term in _split_commas(tokens[order_at + 2 : end]):
            key = _order_term(term)
            if key is None:
                _refuse(out, "ORDER BY an expression (only result columns can be merged)")
                break
            out.order_by.append(key)
    if limit_at is not None and out.group_by is not None:
        # Each shard would cut its own list of groups, dropping partial counts of groups
        # that the merged answer keeps: LIMIT would have to be lifted from the shards.
        _refuse(out, "GROUP BY with LIMIT")
    if limit_at is not None:
        rest = tokens[limit_at + 1 :]
        if any(t.kind == OP and t.value == "," for t in rest):
            _refuse(out, "LIMIT with an offset")
        elif len(rest) == 1 and rest[0].kind in (NUMBER, PARAM):
            out.limit = rest[0]
        else:
            _refuse(out, "LIMIT with an expression")


def _column_name(term: list[Token]) -> str | None:
    """``col`` or ``table.col`` (lowercased), else None."""
    if len(term) == 1 and term[0].kind in (WORD, IDENT):
        return str(term[0].value).lower()
    if len(term) == 3 and term[1].kind == OP and term[1].value == "." and term[2].kind in (
        WORD, IDENT):  # fmt: skip
        return str(term[2].value).lower()
    return None


def _simple_aggregate(item: list[Token]) -> Aggregate | None:
    """``func(args) [[AS] alias]`` with a mergeable func and no DISTINCT or nesting."""
    if len(item) < 3 or item[0].kind != WORD or item[0].value not in MERGEABLE_AGGREGATES:
        return None
    if item[1].kind != OP or item[1].value != "(":
        return None
    close = _matching(item, 1)
    if close is None:
        return None
    inner = item[2:close]
    if any(t.kind == WORD and (t.value in AGGREGATES or t.value == "distinct") for t in inner):
        return None
    if item[0].value in ("min", "max") and len(_split_commas(inner)) != 1:
        return None  # min(a, b) is SQLite's scalar function, not the aggregate
    if any(t.kind == OP and t.value == "(" for t in inner) and any(
        t.kind == WORD and t.value == "select" for t in inner
    ):
        return None
    rest = item[close + 1 :]
    if rest and rest[0].kind == WORD and rest[0].value == "as":
        rest = rest[1:]
    if len(rest) > 1 or (rest and rest[0].kind not in (WORD, IDENT, STRING)):
        return None
    args = (inner[0].start, inner[-1].end) if inner else (item[1].end, item[1].end)
    return Aggregate(item[0].value, (item[0].start, item[close].end), args, bool(rest))


def _order_term(term: list[Token]) -> OrderKey | None:
    descending = False
    if term and term[-1].kind == WORD and term[-1].value in ("asc", "desc"):
        descending = term[-1].value == "desc"
        term = term[:-1]
    if len(term) == 1 and term[0].kind == NUMBER and isinstance(term[0].value, int):
        return OrderKey(term[0].value, descending)
    if len(term) == 1 and term[0].kind in (WORD, IDENT):
        return OrderKey(term[0].value if term[0].kind == IDENT else term[0].value, descending)
    if len(term) == 3 and term[1].kind == OP and term[1].value == "." and term[2].kind in (
        WORD, IDENT):  # fmt: skip
        return OrderKey(term[2].value, descending)
    return None  # COLLATE, NULLS FIRST/LAST, expressions
