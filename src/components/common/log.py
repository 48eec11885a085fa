"""Structured logs: one JSON object per line on stderr.

Every process in a topology writes its log to its own file in the run directory; one
JSON object per line means the launcher, the tests and ``jq`` can all read them without
a parser of their own. Each line carries ``ts`` (Unix seconds, float), ``level``,
``component``, ``name`` and ``event`` (a short snake_case verb phrase such as
``backend_down``), then the event's own fields.

Lines below the configured level cost one integer comparison, so debug logging may sit
on warm paths; keep it off the hottest ones all the same.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from typing import IO, Any

import orjson

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Logger:
    def __init__(
        self, component: str, name: str, level: str = "info", stream: IO[str] | None = None
    ) -> None:
        self.component = component
        self.name = name
        self.threshold = LEVELS[level]
        self._stream = stream

    def log(self, level: str, event: str, /, **fields: Any) -> None:
        if LEVELS[level] < self.threshold:
            return
        record = {
            "ts": round(time.time(), 6),
            "level": level,
            "component": self.component,
            "name": self.name,
            "event": event,
        }
        record.update(fields)
        line = orjson.dumps(record, default=str, option=orjson.OPT_NON_STR_KEYS)
        stream = self._stream or sys.stderr
        try:
            stream.write(line.decode() + "\n")
            stream.flush()
        except (OSError, ValueError):
            # A closed or broken stderr (the launcher went away) must not take the server down.
            pass

    def debug(self, event: str, /, **fields: Any) -> None:
        if self.threshold <= 10:
            self.log("debug", event, **fields)

    def info(self, event: str, /, **fields: Any) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, /, **fields: Any) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, /, **fields: Any) -> None:
        self.log("error", event, **fields)


class _StdlibBridge(logging.Handler):
    """Sends records of libraries that use ``logging`` (aiohttp, asyncio) to our JSON log."""

    def __init__(self, logger: Logger) -> None:
        super().__init__()
        self.target = logger

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= logging.ERROR else (
            "warning" if record.levelno >= logging.WARNING else "info")  # fmt: skip
        fields: dict[str, Any] = {"logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        self.target.log(level, "library_log", **fields)

    def formatException(self, exc_info) -> str:  # noqa: N802 - logging's naming
        return "".join(traceback.format_exception(*exc_info))


def capture_library_logs(logger: Logger) -> None:
    """Route warnings and errors logged through ``logging`` into ``logger``'s JSON lines."""
    root = logging.getLogger()
    root.handlers[:] = [_StdlibBridge(logger)]
    root.setLevel(logging.WARNING)
