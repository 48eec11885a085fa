"""A small, sans-IO parser for the Prometheus text exposition format (version 0.0.4).

The load generator scrapes every component's ``GET /metrics`` before and after a run
and turns the difference into the tier figures of a report (database queries per
second, cache hit ratio). It must do that against any server that speaks the format, and
without ``prometheus_client`` at run time, so it reads the format itself. The format is
line based (Prometheus docs, "Exposition formats", text-based format):

- ``# HELP <name> <text>`` and ``# TYPE <name> <counter|gauge|histogram|summary|untyped>``
  describe a metric family; other ``#`` lines are comments; blank lines are ignored;
- a sample is ``<name>[{<label>="<value>",...}] <value> [<timestamp_ms>]``; label values
  escape ``\\``, ``\"`` and ``\n``; values may be ``NaN``, ``+Inf`` and ``-Inf``;
- a histogram family ``h`` has samples ``h_bucket{le=...}``, ``h_sum`` and ``h_count``.

What it refuses, with ``ExpositionError`` naming the line: a malformed line, a label
without a quoted value, a value that is not a number, more than ``MAX_SAMPLES`` samples
or ``MAX_EXPOSITION_BYTES`` of text. Timestamps are accepted and ignored (a scrape is
"now"). The result is a plain mapping from (name, labels) to value plus the declared
types, which is all that differencing two scrapes needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Exposition", "ExpositionError", "parse_exposition", "SeriesKey"]

MAX_EXPOSITION_BYTES = 8 << 20
MAX_SAMPLES = 100_000

#: A series: its metric name and its sorted (label, value) pairs.
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}
# Suffixes a sample may add to its family's name (histograms, summaries, OpenMetrics).
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


class ExpositionError(ValueError):
    """Text that is not the Prometheus exposition format; the message names the line."""


@dataclass
class Exposition:
    """One scrape: every sample's value, and the type declared for each family."""

    samples: dict[SeriesKey, float] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)

    def kind(self, name: str) -> str:
        """The declared type of the family a sample name belongs to (or ``untyped``)."""
        kind = self.types.get(name)
        if kind is not None:
            return kind
        for suffix in _SUFFIXES:
            if name.endswith(suffix):
                kind = self.types.get(name[: -len(suffix)])
                if kind is not None:
                    return kind
        return "untyped"

    def value(self, name: str, **labels: str) -> float | None:
        """The value of one series, or None when the scrape does not have it."""
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def total(self, name: str) -> float:
        """The sum of a metric over all its label combinations (0 when absent)."""
        return sum(v for (n, _), v in self.samples.items() if n == name)


def parse_exposition(text: str) -> Exposition:
    """Parse the body of a ``GET /metrics`` response."""
    if len(text) > MAX_EXPOSITION_BYTES:
        raise ExpositionError(f"exposition larger than {MAX_EXPOSITION_BYTES} bytes")
    result = Exposition()
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        if line[0] == "#":
            _parse_comment(line, number, result)
            continue
        key, value = _parse_sample(line, number)
        result.samples[key] = value
        if len(result.samples) > MAX_SAMPLES:
            raise ExpositionError(f"more than {MAX_SAMPLES} samples")
    return result


def _parse_comment(line: str, number: int, result: Exposition) -> None:
    parts = line[1:].split(None, 3)
    if len(parts) >= 2 and parts[0] == "TYPE":
        if len(parts) != 3 or parts[2] not in _TYPES or not _NAME_RE.fullmatch(parts[1]):
            raise ExpositionError(f"line {number}: malformed TYPE line {line[:80]!r}")
        result.types[parts[1]] = parts[2]
    # HELP lines and free comments carry nothing a figure needs.


def _parse_sample(line: str, number: int) -> tuple[SeriesKey, float]:
    match = _NAME_RE.match(line)
    if match is None:
        raise ExpositionError(f"line {number}: expected a metric name, got {line[:80]!r}")
    name = match.group()
    pos = match.end()
    labels: list[tuple[str, str]] = []
    if pos < len(line) and line[pos] == "{":
        pos = _parse_labels(line, pos + 1, number, labels)
    rest = line[pos:].split()
    if not rest or len(rest) > 2 or (pos < len(line) and line[pos] not in " \t"):
        raise ExpositionError(f"line {number}: expected '<name> <value> [timestamp]'")
    try:
        value = float(rest[0])
        if len(rest) == 2:
            int(rest[1])
    except ValueError:
        raise ExpositionError(f"line {number}: not a number: {rest[0][:40]!r}") from None
    labels.sort()
    return (name, tuple(labels)), value


def _parse_labels(line: str, pos: int, number: int, labels: list[tuple[str, str]]) -> int:
    """Parse ``a="x",b="y"}`` from ``pos``; return the index after the closing brace."""
    while True:
        pos = _skip_blanks(line, pos)
        if pos < len(line) and line[pos] == "}":
            return pos + 1
        match = _LABEL_NAME_RE.match(line, pos)
        if match is None:
            raise ExpositionError(f"line {number}: expected a label name at column {pos + 1}")
        pos = _skip_blanks(line, match.end())
        if line[pos : pos + 1] != "=":
            raise ExpositionError(f'line {number}: label {match.group()} needs ="value"')
        pos = _skip_blanks(line, pos + 1)
        if line[pos : pos + 1] != '"':
            raise ExpositionError(f'line {number}: label {match.group()} needs ="value"')
        pos += 1
        value_parts: list[str] = []
        while True:
            end = line.find('"', pos)
            escape = line.find("\\", pos)
            if end < 0:
                raise ExpositionError(f"line {number}: unterminated label value")
            if 0 <= escape < end:
                value_parts.append(line[pos:escape])
                char = line[escape + 1 : escape + 2]
                if char not in _UNESCAPE:
                    raise ExpositionError(f"line {number}: bad escape in label value")
                value_parts.append(_UNESCAPE[char])
                pos = escape + 2
                continue
            value_parts.append(line[pos:end])
            pos = end + 1
            break
        labels.append((match.group(), "".join(value_parts)))
        pos = _skip_blanks(line, pos)
        if pos < len(line) and line[pos] == ",":
            pos += 1
        elif pos >= len(line) or line[pos] != "}":
            raise ExpositionError(f"line {number}: expected ',' or '}}' after a label")


def _skip_blanks(line: str, pos: int) -> int:
    # The Go reference parser allows blanks and tabs around label names, '=' and ','.
    while pos < len(line) and line[pos] in " \t":
        pos += 1
    return pos
