"""Make a statement deterministic before it is logged: ``random()`` and 'now' become values.

The store replicates *statements*, not pages: a replica (and crash recovery) re-executes
the very SQL the primary executed. That only reproduces the primary's state if every
statement computes the same thing twice. Most SQL does; a few functions do not, so the
primary rewrites them into literals once, before the batch is logged, exactly as rqlite
does (its ``rewrite`` of ``RANDOM()`` and of time functions given ``'now'``):

- ``random()``                 -> a 64-bit integer literal drawn on the primary;
- ``randomblob(N)`` (N literal) -> a blob literal ``X'...'`` of N random bytes;
- ``'now'`` as an argument of ``date``, ``time``, ``datetime``, ``julianday``,
  ``unixepoch``, ``strftime`` or ``timediff`` -> the primary's time as
  ``'YYYY-MM-DD HH:MM:SS.SSS'`` (the format those functions accept);
- ``CURRENT_TIMESTAMP``, ``CURRENT_DATE``, ``CURRENT_TIME`` -> string literals.

The clock and the random source are passed in, so the rewriter is pure and testable.

The scanner understands just enough SQL to never rewrite inside a string, a quoted
identifier (``"x"``, ``[x]``, `` `x` ``) or a comment: it walks the text with ``find``,
copying those spans verbatim. What this refuses to chase: nondeterminism SQLite hides
elsewhere (``changes()`` is deterministic given the same history; user-defined functions
do not exist here; a ``DEFAULT CURRENT_TIMESTAMP`` in ``CREATE TABLE`` is left as it is,
so such defaults are evaluated per node, as in rqlite; ``INSERT ... SELECT`` without ``ORDER BY`` is deterministic on the same
file layout, which replicas share by replaying the same history).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable

TIME_FUNCTIONS = frozenset(
    {"date", "time", "datetime", "julianday", "unixepoch", "strftime", "timediff"}
)
_CURRENT_KEYWORDS = {
    "current_timestamp": "%Y-%m-%d %H:%M:%S",
    "current_date": "%Y-%m-%d",
    "current_time": "%H:%M:%S",
}
_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")
#: randomblob(N) with N above this is left alone (and will fail the same way everywhere).
MAX_RANDOMBLOB_BYTES = 1 << 16


class Rewriter:
    """``rewrite(sql) -> sql`` with nondeterministic calls replaced by literals."""

    def __init__(self, now: Callable[[], float], random_bits: Callable[[int], int]) -> None:
        self._now = now
        self._random_bits = random_bits

    def rewrite(self, sql: str) -> str:
        lowered = sql.lower()
        # Fast path: the common INSERT/UPDATE mentions none of the trigger words.
        if not any(word in lowered for word in ("random", "now", "current_")):
            return sql
        if lowered.lstrip().startswith("create"):
            # DEFAULT CURRENT_TIMESTAMP in a schema is evaluated per insert: keep it.
            return sql
        return self._rewrite(sql)

    def _rewrite(self, sql: str) -> str:
        out: list[str] = []
        i, n = 0, len(sql)
        # For each open parenthesis, the name of the function it calls ('' if none).
        calls: list[str] = []
        stamp: str | None = None
        last_ident = ""
        while i < n:
            ch = sql[i]
            if ch == "'":
                end = _string_end(sql, i, "'")
                literal = sql[i:end]
                if literal.lower() == "'now'" and calls and calls[-1] in TIME_FUNCTIONS:
                    if stamp is None:
                        stamp = self._stamp()
                    literal = f"'{stamp}'"
                out.append(literal)
                i, last_ident = end, ""
            elif ch in '"`':
                end = _string_end(sql, i, ch)
                out.append(sql[i:end])
                i, last_ident = end, ""
            elif ch == "[":
                end = sql.find("]", i)
                end = n if end < 0 else end + 1
                out.append(sql[i:end])
                i, last_ident = end, ""
            elif ch == "-" and sql.startswith("--", i):
                end = sql.find("\n", i)
                end = n if end < 0 else end
                out.append(sql[i:end])
                i = end
            elif ch == "/" and sql.startswith("/*", i):
                end = sql.find("*/", i + 2)
                end = n if end < 0 else end + 2
                out.append(sql[i:end])
                i = end
            elif ch in _IDENT_CHARS and not ch.isdigit():
                j = i + 1
                while j < n and sql[j] in _IDENT_CHARS:
                    j += 1
                word = sql[i:j]
                lower = word.lower()
                replaced = self._replace_call(sql, j, lower)
                if replaced is not None:
                    text, j = replaced
                    out.append(text)
                    last_ident = ""
                elif lower in _CURRENT_KEYWORDS:
                    value = _dt.datetime.fromtimestamp(self._now(), _dt.UTC)
                    out.append("'" + value.strftime(_CURRENT_KEYWORDS[lower]) + "'")
                    last_ident = ""
                else:
                    out.append(word)
                    last_ident = lower
                i = j
            elif ch.isdigit():
                j = i + 1
                while j < n and (sql[j] in _IDENT_CHARS or sql[j] == "."):
                    j += 1
                out.append(sql[i:j])
                i, last_ident = j, ""
            else:
                if ch == "(":
                    calls.append(last_ident)
                elif ch == ")" and calls:
                    calls.pop()
                if not ch.isspace():
                    last_ident = ""
                out.append(ch)
                i += 1
        return "".join(out)

    def _replace_call(self, sql: str, j: int, name: str) -> tuple[str, int] | None:
        """``random()`` / ``randomblob(<int>)`` starting after the name at ``j``."""
        if name not in ("random", "randomblob"):
            return None
        k = _skip_space(sql, j)
        if k >= len(sql) or sql[k] != "(":
            return None
        close = sql.find(")", k)
        if close < 0:
            return None
        argument = sql[k + 1 : close].strip()
        if name == "random" and argument == "":
            value = self._random_bits(64)
            value = value - (1 << 64) if value >= 1 << 63 else value  # signed, as SQLite
            return str(value), close + 1
        if name == "randomblob" and argument.isdigit():
            count = max(1, int(argument))
            if count > MAX_RANDOMBLOB_BYTES:
                return None
            blob = self._random_bits(8 * count).to_bytes(count, "big")
            return f"X'{blob.hex()}'", close + 1
        return None

    def _stamp(self) -> str:
        value = _dt.datetime.fromtimestamp(self._now(), _dt.UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"


def _string_end(sql: str, start: int, quote: str) -> int:
    """Index just past the quoted span opening at ``start`` (doubled quotes escape)."""
    i = start + 1
    while True:
        j = sql.find(quote, i)
        if j < 0:
            return len(sql)
        if sql.startswith(quote * 2, j):
            i = j + 2
            continue
        return j + 1


def _skip_space(sql: str, i: int) -> int:
    while i < len(sql) and sql[i].isspace():
        i += 1
    return i
