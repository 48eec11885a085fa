"""The state machine: one SQLite file, batches applied in LSN order, reads on other handles.

SQLite does the SQL; this module decides *how* it is driven so that the redo log
(``wal.py``) and the file can never disagree:

- **One batch, one transaction, LSN inside.** ``apply(lsn, epoch, batch)`` runs the
  batch in one ``BEGIN IMMEDIATE ... COMMIT`` and, in the same transaction, sets
  ``applied_lsn`` in the ``_scalelab_meta`` table (``apply_group`` does the same for the
  batches of one group commit). After any crash the file's
  ``applied_lsn`` names exactly the last batch it holds, so recovery replays the log
  records after it: none twice, none missed. A batch whose statements all fail still
  commits its LSN.
- **rqlite's two modes.** With ``?transaction`` the batch runs in a ``SAVEPOINT`` and the
  first error rolls the whole batch back (results stop at the error). Without it each
  statement stands alone, as in rqlite: a failing one is undone by SQLite itself (a
  statement is atomic, sqlite.org/lang_conflict.html; ``OR FAIL`` keeps what the
  statement did before failing, as rqlite does) and the rest commit. No savepoint is
  needed for that, which saves two statements per write on the hot path.
- **User SQL is fenced by an authorizer.** Statements may not open or end transactions,
  attach files, change pragmas, or touch ``_scalelab_meta``; the store owns those. On
  the read handles every action that would write is denied, which is also how
  ``/db/request`` tells reads from writes (``is_read``: compile under ``EXPLAIN``).
- **Deterministic limits.** A runaway write (a recursive CTE that never ends) is cut by a
  VM-instruction budget, not a timer, so a replica replaying it cuts it at the same
  point. Reads are cut by a deadline.
- **WAL mode, ``synchronous=NORMAL``.** Readers never block the writer. SQLite's own
  commits are not fsynced; the redo log already was, and replay covers the difference.
  ``checkpoint`` makes SQLite durable on its own so the log can be compacted.

Values cross the API as JSON, so results are shaped here into neutral objects
(``Rows``, ``Changes``, ``Failure``) and ``protocol.py`` renders them as rqlite does; blobs
are base64 and a column's type is taken from its values (Python's sqlite3 does not expose
the declared column types rqlite reports; ``integer``/``real``/``text``/``blob`` from the
first non-null value is what pyrqlite needs to convert them; an empty result has ``""``).

Everything here blocks. Three handles, three callers: the write handle on the SQLite
thread, the read handle on the reader thread, and a third read handle for small reads on
the event loop itself (``query_fast``, under a tight instruction budget).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .wal import Batch

META_TABLE = "_scalelab_meta"
#: Rows one statement may return; a bigger result is an error, not an out-of-memory.
MAX_RESULT_ROWS = 100_000
#: Write budget in SQLite VM instructions (checked every ``PROGRESS_STEP``): deterministic.
WRITE_BUDGET_STEPS = 50_000_000
PROGRESS_STEP = 1000
READ_TIMEOUT_S = 5.0
#: Budget of a read on the event loop's thread before it moves to the reader thread.
FAST_READ_STEPS = 20_000
FAST_READ_ROWS = 1000
BUDGET_EXCEEDED = "statement exceeded the store's instruction budget"

_READ_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
_STORE_OWNED_ACTIONS = frozenset(
    {sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT, sqlite3.SQLITE_ATTACH,
     sqlite3.SQLITE_DETACH}
)  # fmt: skip
_TABLE_WRITES = frozenset(
    {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE,
     sqlite3.SQLITE_DROP_TABLE, sqlite3.SQLITE_ALTER_TABLE, sqlite3.SQLITE_CREATE_INDEX,
     sqlite3.SQLITE_CREATE_TRIGGER, sqlite3.SQLITE_DROP_INDEX}
)  # fmt: skip
#: Pragmas that take an argument and still only read (``PRAGMA table_info(t)``).
_READ_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
     "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check"}
)  # fmt: skip
READ_ONLY_ERROR = "attempt to change database via query operation"


@dataclass(slots=True)
class Rows:
    columns: list[str]
    types: list[str]
    values: list[list[Any]]
    time: float = 0.0


@dataclass(slots=True)
class Changes:
    last_insert_id: int
    rows_affected: int
    time: float = 0.0


@dataclass(slots=True)
class Failure:
    error: str
    time: float = 0.0


Result = Rows | Changes | Failure


@dataclass(slots=True)
class _Guard:
    """Authorizer state: on only while user SQL compiles, so the store's own
    BEGIN/SAVEPOINT/meta updates pass."""

    active: bool = False
    read_only: bool = False
    wrote: bool = False
    denied: list[str] = field(default_factory=list)

    def __call__(self, action, arg1, arg2, dbname, source):  # sqlite3 authorizer signature
        if not self.active:
            return sqlite3.SQLITE_OK
        if self.read_only:
            if action in _READ_ACTIONS:
                return sqlite3.SQLITE_OK
            if action == sqlite3.SQLITE_PRAGMA and (arg2 is None or arg1.lower() in _READ_PRAGMAS):
                return sqlite3.SQLITE_OK
            self.wrote = True
            return sqlite3.SQLITE_DENY
        if action in _STORE_OWNED_ACTIONS or action == sqlite3.SQLITE_PRAGMA and arg2 is not None:
            self.denied.append("transaction control, ATTACH and pragma writes are the store's")
            return sqlite3.SQLITE_DENY
        if action in _TABLE_WRITES and arg1 and arg1.lower() == META_TABLE:
            self.denied.append(f"{META_TABLE} belongs to the store")
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK


class Database:
    """The SQLite file of one node. ``apply`` on the writer thread, ``query`` on the reader."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._read_lock = threading.Lock()
        self._fast_lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        # The authorizer only sees statements when they are compiled, and sqlite3 caches
        # compiled statements by their text. Were a client to send the exact text of one
        # of the store's own statements (its meta update, say), the cached, unchecked
        # statement would run. So the store's statements end in a comment with a random
        # tag no client can guess, which makes their texts, and cache keys, unique.
        self._tag = f" -- store {secrets.token_hex(8)}"
        w = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        w.execute("PRAGMA journal_mode=WAL")
        w.execute("PRAGMA synchronous=NORMAL")
        w.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (k TEXT PRIMARY KEY, v INTEGER)")
        meta = dict(w.execute(f"SELECT k, v FROM {META_TABLE}").fetchall())
        self.applied_lsn: int = meta.get("applied_lsn", 0)
        self.applied_epoch: int = meta.get("applied_epoch", 0)
        self._wguard = _Guard()
        w.set_authorizer(self._wguard)
        self._steps = 0
        w.set_progress_handler(self._count_steps, PROGRESS_STEP)
        self._w = w
        r = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        self._rguard = _Guard(read_only=True)
        r.set_authorizer(self._rguard)
        self._read_deadline = 0.0
        r.set_progress_handler(self._read_expired, PROGRESS_STEP)
        self._r = r
        # A third handle for small reads on the caller's (the event loop's) own thread.
        f = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        self._fguard = _Guard(read_only=True)
        f.set_authorizer(self._fguard)
        self._fast_steps = 0
        f.set_progress_handler(self._fast_budget, PROGRESS_STEP)
        self._f = f

    def _count_steps(self) -> int:
        self._steps += 1
        return 1 if self._steps > WRITE_BUDGET_STEPS // PROGRESS_STEP else 0

    def _fast_budget(self) -> int:
        self._fast_steps += 1
        return 1 if self._fast_steps > FAST_READ_STEPS // PROGRESS_STEP else 0

    def _read_expired(self) -> int:
        return 1 if time.monotonic() > self._read_deadline else 0

    # -- writes -------------------------------------------------------------------------

    def apply(self, lsn: int, epoch: int, batch: Batch) -> list[Result]:
        """Run one logged batch in one transaction that also records ``lsn`` (and the
        epoch of the primary that wrote it)."""
        return self.apply_group([(lsn, epoch, batch)])[0]

    def apply_group(self, items: list[tuple[int, int, Batch]]) -> list[list[Result]]:
        """Apply consecutive logged batches ``(lsn, epoch, batch)`` in one SQLite
        transaction and record the last LSN in it.

        This is group commit's second half: the batches that shared one fsync of the log
        also share one SQLite commit. Each batch keeps its own semantics (a
        ``?transaction`` batch is all-or-nothing in its savepoint, the statements of
        another stand alone), readers still never see half a batch (they see whole
        groups), and the results are the ones each batch would get alone, so a replica or
        a recovery that groups the same records differently computes the same thing.
        """
        if not items:
            return []
        if items[0][0] <= self.applied_lsn:
            raise ValueError(f"lsn {items[0][0]} already applied (at {self.applied_lsn})")
        w = self._w
        w.execute("BEGIN IMMEDIATE" + self._tag)
        outcomes: list[list[Result]] = []
        try:
            for _, _, batch in items:
                results, lost = self._run_batch(w, batch)
                if lost:
                    if len(items) > 1:
                        # SQLite rolled the whole transaction back (an interrupt, an I/O
                        # error) and took the group's earlier batches with it. Start over
                        # with one transaction per batch, so that only the guilty batch
                        # fails, exactly as it fails when applied alone.
                        return [self.apply_group([item])[0] for item in items]
                    w.execute("BEGIN IMMEDIATE" + self._tag)  # to record the LSN anyway
                outcomes.append(results)
            lsn, epoch, _ = items[-1]
            w.execute(
                f"INSERT OR REPLACE INTO {META_TABLE} (k, v) VALUES ('applied_lsn', ?), "
                "('applied_epoch', ?)" + self._tag,
                (lsn, epoch),
            )
            w.execute("COMMIT" + self._tag)
        except BaseException:
            if w.in_transaction:
                w.execute("ROLLBACK" + self._tag)
            raise
        self.applied_lsn, self.applied_epoch = lsn, epoch
        return outcomes

    def _run_batch(self, w: sqlite3.Connection, batch: Batch) -> tuple[list[Result], bool]:
        """One batch inside the open transaction: ``(results, transaction_lost)``."""
        atomic = batch.transaction
        if atomic:
            w.execute("SAVEPOINT batch" + self._tag)
        results: list[Result] = []
        for sql, params in batch.statements:
            result = self._run_user(w, self._wguard, sql, params)
            if isinstance(result, Failure) and not w.in_transaction:
                self._rolled_back(results, result)
                return results, True
            results.append(result)
            if atomic and isinstance(result, Failure):
                w.execute("ROLLBACK TO batch" + self._tag)  # rqlite: stop at the error
                break
        if atomic:
            w.execute("RELEASE batch" + self._tag)
        return results, False

    def _rolled_back(self, results: list[Result], failure: Failure) -> Failure:
        for i, earlier in enumerate(results):
            if not isinstance(earlier, Failure):
                results[i] = Failure(f"rolled back: {failure.error}", earlier.time)
        results.append(failure)
        return failure

    def _run_user(self, conn: sqlite3.Connection, guard: _Guard, sql: str, params) -> Result:
        started = time.perf_counter()
        if _first_keyword(sql) in _TRANSACTION_KEYWORDS:
            # The authorizer runs only when a statement is compiled, and the sqlite3
            # module caches compiled statements: the store's own "COMMIT" would be reused
            # unchecked. So transaction control is refused by its first keyword as well.
            return Failure("not authorized: transactions are the store's (use ?transaction)")
        guard.active, guard.wrote = True, False
        guard.denied.clear()
        self._steps = 0
        cursor = None
        try:
            if isinstance(params, list):
                params = tuple(params)
            cursor = conn.execute(sql, params if params is not None else ())
            guard.active = False
            return self._shape(cursor, started)
        except sqlite3.DatabaseError as exc:
            message = str(exc)
            if guard.read_only and guard.wrote:
                message = READ_ONLY_ERROR
            elif guard.denied:
                message = f"{message}: {guard.denied[0]}"
            elif message == "interrupted":
                message = BUDGET_EXCEEDED if not guard.read_only else "query timed out"
            return Failure(message, time.perf_counter() - started)
        except (sqlite3.Error, OverflowError, ValueError, TypeError) as exc:
            return Failure(str(exc), time.perf_counter() - started)
        finally:
            guard.active = False
            if cursor is not None:
                cursor.close()

    def _shape(self, cursor: sqlite3.Cursor, started: float) -> Result:
        if cursor.description is None:
            return Changes(
                cursor.lastrowid or 0, max(cursor.rowcount, 0), time.perf_counter() - started
            )
        columns = [d[0] for d in cursor.description]
        values: list[list[Any]] = []
        while True:
            chunk = cursor.fetchmany(1024)
            if not chunk:
                break
            values.extend(list(row) for row in chunk)
            if len(values) > MAX_RESULT_ROWS:
                return Failure(f"result exceeds {MAX_RESULT_ROWS} rows")
        types = [""] * len(columns)
        for c in range(len(columns)):
            for row in values:
                value = row[c]
                if value is None:
                    continue
                types[c] = _storage_class(value)
                break
        if "blob" in types or any(isinstance(v, bytes) for row in values for v in row):
            for row in values:
                for c, value in enumerate(row):
                    if isinstance(value, bytes):
                        row[c] = base64.b64encode(value).decode()
        return Rows(columns, types, values, time.perf_counter() - started)

    def checkpoint(self) -> tuple[int, int] | None:
        """Copy SQLite's WAL into the database file and fsync it (``synchronous=NORMAL``
        syncs on checkpoint), so everything up to the returned (lsn, epoch) is durable
        in SQLite itself and the redo log may forget it. Runs on the writer thread, so no
        batch is half-applied meanwhile.

        PASSIVE never waits for readers (a long query must not stall every write); if a
        reader pins frames it could not copy, the answer is None and the next checkpoint
        tries again.
        """
        _, wal_frames, copied = self._w.execute(
            "PRAGMA wal_checkpoint(PASSIVE)" + self._tag
        ).fetchone()
        if wal_frames < 0 or copied < wal_frames:
            return None
        return self.applied_lsn, self.applied_epoch

    # -- reads --------------------------------------------------------------------------

    def query(
        self, statements: list[tuple[str, Any]], timeout_s: float = READ_TIMEOUT_S
    ) -> tuple[int, list[Result]]:
        """Run read-only statements on one consistent snapshot (one read transaction):
        ``(lsn, results)``, ``lsn`` being the last batch that snapshot contains."""
        with self._read_lock:
            r = self._r
            self._read_deadline = time.monotonic() + timeout_s
            r.execute("BEGIN" + self._tag)
            try:
                lsn = self._snapshot_lsn(r)
                return lsn, [self._run_user(r, self._rguard, sql, p) for sql, p in statements]
            finally:
                r.execute("ROLLBACK" + self._tag)

    def _snapshot_lsn(self, conn: sqlite3.Connection) -> int:
        """The applied LSN as the open read transaction sees it. SQLite takes a WAL-mode
        read snapshot at a transaction's first read, so this read fixes the snapshot and
        names it: the statements after it read exactly the batches up to this LSN (which
        ``apply_group`` writes inside the same transaction as the batches themselves)."""
        row = conn.execute(
            f"SELECT v FROM {META_TABLE} WHERE k = 'applied_lsn'" + self._tag
        ).fetchone()
        return row[0] if row else 0

    def query_fast(self, statements: list[tuple[str, Any]]) -> tuple[int, list[Result]] | None:
        """Small reads on the calling thread, cut off after ``FAST_READ_STEPS`` SQLite
        instructions or ``FAST_READ_ROWS`` rows: ``(lsn, results)`` from one snapshot as
        ``query``, or None when the read is not small, and the caller runs it on the
        reader thread instead (a read has no side effect, so trying it twice is safe).

        The server calls this on the event loop: a point SELECT costs a few microseconds,
        less than the hop to another thread, and the budget bounds how long the loop can
        be held (about a tenth of a millisecond).
        """
        if not self._fast_lock.acquire(blocking=False):
            return None  # a snapshot is being installed
        try:
            f = self._f
            f.execute("BEGIN" + self._tag)  # one snapshot, named by its LSN
            try:
                lsn = self._snapshot_lsn(f)
                results = []
                for sql, params in statements:
                    self._fast_steps = 0
                    result = self._run_user(f, self._fguard, sql, params)
                    if self._fast_steps > FAST_READ_STEPS // PROGRESS_STEP:
                        return None
                    if isinstance(result, Rows) and len(result.values) > FAST_READ_ROWS:
                        return None
                    results.append(result)
                return lsn, results
            finally:
                f.execute("ROLLBACK" + self._tag)
        finally:
            self._fast_lock.release()

    def is_read(self, sql: str, params: Any) -> bool:
        """Does ``sql`` only read? Compiled (never run) under EXPLAIN with writes denied."""
        with self._read_lock:
            guard = self._rguard
            self._read_deadline = time.monotonic() + READ_TIMEOUT_S
            guard.active, guard.wrote = True, False
            try:
                if isinstance(params, list):
                    params = tuple(params)
                self._r.execute("EXPLAIN " + sql, params if params is not None else ()).close()
            except (sqlite3.Error, OverflowError, ValueError, TypeError):
                pass  # a broken statement: let the read path report its error
            finally:
                guard.active = False
            return not guard.wrote

    # -- files --------------------------------------------------------------------------

    def backup(self, dest_path: str) -> tuple[int, int]:
        """Write a consistent copy of the database to ``dest_path``; returns the
        (lsn, epoch) it contains."""
        src = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        dest = sqlite3.connect(dest_path)
        try:
            src.backup(dest)
            meta = dict(dest.execute(f"SELECT k, v FROM {META_TABLE}").fetchall())
        finally:
            dest.close()
            src.close()
        return meta.get("applied_lsn", 0), meta.get("applied_epoch", 0)

    def dump_sql(self) -> str:
        """The database as a SQL script (``/db/backup?fmt=sql``), without the meta table."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return "\n".join(line for line in conn.iterdump() if META_TABLE not in line) + "\n"
        finally:
            conn.close()

    @staticmethod
    def file_to_sql(path: str) -> str:
        """A SQLite file (an upload to ``/db/load``) as a SQL script."""
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return "\n".join(conn.iterdump()) + "\n"
        finally:
            conn.close()

    def install(self, snapshot_path: str) -> int:
        """Replace this database by a snapshot file (a replica resyncing); returns its LSN."""
        with self._read_lock, self._fast_lock:
            self.close()
            for suffix in ("-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.unlink(self.path + suffix)
            os.replace(snapshot_path, self.path)
            directory = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself must survive a crash
            finally:
                os.close(directory)
            self._open()
        return self.applied_lsn

    def close(self) -> None:
        self._f.close()
        self._r.close()
        self._w.close()


_TRANSACTION_KEYWORDS = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"})


def _first_keyword(sql: str) -> str:
    """The statement's first word, after whitespace and comments, upper-cased."""
    i, n = 0, len(sql)
    while i < n:
        if sql[i].isspace():
            i += 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            break
    j = _ASCII_LETTERS.match(sql, i).end()  # type: ignore[union-attr]  # (matches "")
    while j < n and sql[j].isalpha():  # a non-ASCII letter goes on the word
        j += 1
    return sql[i:j].upper()


_ASCII_LETTERS = re.compile(r"[A-Za-z]*")


def _storage_class(value: Any) -> str:
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "real"
    if isinstance(value, bytes):
        return "blob"
    return "text"
