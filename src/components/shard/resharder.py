"""Online resharding, the asyncio shell: copy, follow the feeds, fence, switch, clean up.

``reshard.py`` holds the pure parts of a move (what moves where, the new map, the
staging mirror, the statement rewrite that hides old copies) and its essay describes
the steps; ``catchup.py`` names the keys a logged statement touched. This module carries
a move out against the shard groups, one at a time (``Resharder.reshard``, behind
``POST /admin/reshard``), and owns what outlives a move:

- the **write fence** (``Fence``), which ``server.py``'s request path passes through:
  statements on sharded tables that touch fenced groups wait for it to lift, and a move
  waits for those already in flight before its last catch-up;
- the **moves file** (``moves.json`` in ``--data-dir``): every move the map is made of,
  the groups still holding old copies of each (``cleanup``), and the intent of a switch
  not yet known to have committed (``switching``); replayed at start, so the map, the
  pending cleanups and an interrupted switch survive a restart;
- the **background tasks**: deleting old copies until the sources take the deletes,
  and asking a target whether an interrupted switch committed.

``Catchup`` drives one move's catch-up from its sources' change feeds. ``/status``
shows ``Progress`` (``reshard.py``) and the pending cleanups; the metrics are rows
moved, the last fence's length, whether a fence is up, and the pending cleanups.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections import Counter
from typing import Any

import orjson

from components.common.backoff import Backoff
from components.common.log import Logger
from components.common.metrics import Registry

from .catchup import Changed, changed_keys
from .config import ShardConfig
from .placement import RoutingMap
from .reshard import (
    MAX_RESHARD_ROWS,
    STAGING_PREFIX,
    Move,
    Progress,
    ReshardError,
    Staged,
    diff_rows,
    ident,
    parse_move,
    sources,
    switched,
    without_moved,
)
from .router import Router, Step
from .sqlscan import scan
from .upstream import FeedGone, Group, GroupDown, OutcomeUnknown

#: Longest a statement waits behind a resharding's write fence before a 503.
FENCE_WAIT_S = 10.0
#: Rows per request while copying (the store takes at most 1000 statements).
COPY_BATCH_ROWS = 500
#: Unfenced rounds of following the change feeds at most, and the number of changed
#: moving keys in a round below which the router takes the fence (the rest is caught up
#: under it, so the fence lasts about one small round).
MAX_CATCHUP_ROUNDS = 20
CATCHUP_SMALL_KEYS = 64
#: Records per change-feed request, and requests per source per round at most.
FEED_PAGE_RECORDS = 1000
MAX_FEED_PAGES = 20
#: Keys read again from a source per request.
REFETCH_BATCH_KEYS = 200
#: How long the router asks a target whether a switch committed, when the switch's
#: answer was lost (during a move) or at start after a stop inside a switch; then
#: between tries while it cannot tell (the groups involved stay fenced meanwhile).
SWITCH_RESOLVE_S = 5.0
STARTUP_RESOLVE_S = 5.0
SWITCH_RETRY_S = 0.2
#: Pauses between background tries to delete a move's old copies from a source group
#: (doubling from the first to the last, then staying there until it succeeds).
CLEANUP_RETRY_FIRST_S = 0.1
CLEANUP_RETRY_MAX_S = 2.0


class Fence:
    """The write fence: which groups it holds, an event set while it is down, and the
    statements on sharded tables in flight per group (``enter``/``leave``)."""

    def __init__(self) -> None:
        self.groups: set[str] = set()  # empty: no fence
        self.open = asyncio.Event()
        self.open.set()
        self.inflight: Counter[str] = Counter()
        self.settled = asyncio.Event()  # pulsed whenever a count drops under a fence
        self.raised_at = 0.0

    def enter(self, groups: set[str]) -> None:
        self.inflight.update(groups)

    def leave(self, groups: set[str]) -> None:
        self.inflight.subtract(groups)
        if self.groups:
            event, self.settled = self.settled, asyncio.Event()
            event.set()


class Resharder:
    """Moves of one router: carried out one at a time, remembered in the moves file."""

    def __init__(self, config: ShardConfig, groups: dict[str, Group], router: Router,
                 log: Logger, metrics: Registry, data_dir: str | None,
                 catchup_mode: str) -> None:  # fmt: skip
        self.config = config
        self.groups = groups
        self.router = router
        self.log = log
        self.data_dir = data_dir
        self.catchup_mode = catchup_mode
        self.fence = Fence()
        self.progress = Progress()
        self._lock = asyncio.Lock()
        self._cleanup_task: asyncio.Task | None = None
        self._settle_task: asyncio.Task | None = None
        self.m_moved = metrics.counter("scalelab_shard_rows_moved_total",
                                       "Rows moved by resharding")  # fmt: skip
        self.m_fence_s = metrics.gauge("scalelab_shard_reshard_fence_seconds",
                                       "How long the last resharding held its write fence")  # fmt: skip
        metrics.gauge("scalelab_shard_reshard_fenced",
                      "1 while a resharding holds its write fence").set_function(
            lambda: 1 if self.fence.groups else 0)  # fmt: skip
        metrics.gauge("scalelab_shard_cleanup_pending",
                      "Groups still holding old copies of moved rows (hidden from fan-outs)"
                      ).set_function(lambda: sum(len(g) for g in self.cleanup.values()))  # fmt: skip
        self._load()

    async def start(self) -> None:
        """Settle a switch the last run stopped inside, and resume pending cleanups."""
        if self.switching is not None:
            committed = await self._switch_committed(STARTUP_RESOLVE_S)
            if committed is None:
                self._hold_until_settled()
            else:
                self._finish_switch(committed)
        self._ensure_cleanup()

    def stop(self) -> None:
        for task in (self._cleanup_task, self._settle_task):
            if task is not None:
                task.cancel()  # the moves file keeps what is still pending

    def status(self) -> dict[str, Any]:
        return {
            "reshard": dataclasses.asdict(self.progress),
            "cleanup_pending": {
                name: [self.moves[i].describe() for i, held in self.cleanup.items()
                       if name in held]
                for name in sorted({g for held in self.cleanup.values() for g in held})
            },
        }  # fmt: skip

    def excluding_old_copies(self, step: Step) -> dict[str, str | None]:
        """Per group of a fan-out step with a pending cleanup: the statement rewritten to
        leave out the moved keys whose old copies the group still holds (None: it
        cannot be). Empty when no group of the step has one."""
        if not self.cleanup or not step.sharded:
            return {}
        table = next((t for t in step.scan.tables if t in self.config.tables), None)
        if table is None or step.scan.verb not in ("select", "update", "delete"):
            return {}  # DDL and the like: no rows to count twice
        sql, _ = step.statement
        info = scan(sql)  # the text sent may differ from the client's (avg rewritten)
        out: dict[str, str | None] = {}
        for name in step.groups:
            moves = [self.moves[i] for i, held in self.cleanup.items() if name in held]
            if moves:
                out[name] = without_moved(sql, info, self.config.tables[table], moves)
        return out

    def _path(self) -> str | None:
        return os.path.join(self.data_dir, "moves.json") if self.data_dir else None

    def _load(self) -> None:
        """Replay the moves of earlier reshardings (the map must survive a restart), and
        their pending cleanups (``"cleanup": [groups still holding old copies]``)."""
        self.moves: list[Move] = []
        #: Move index -> groups still holding old copies of its rows.
        self.cleanup: dict[int, set[str]] = {}
        #: A move whose switch was sent to its target, with its sources, until it is
        #: known whether the switch committed (``_switch_committed``).
        self.switching: tuple[Move, list[str]] | None = None
        path = self._path()
        if path is None or not os.path.exists(path):
            return
        try:
            with open(path) as fh:
                for doc in json.load(fh):
                    move = parse_move(doc, list(self.groups))
                    if "switching" in doc:  # the last entry: an intent, not yet a move
                        froms = doc["switching"]
                        if not isinstance(froms, list) or not set(froms) <= set(self.groups):
                            raise ReshardError(f"bad switching list {froms!r}")
                        self.switching = (move, froms)
                        continue
                    self.router.map = switched(self.router.map, move)
                    held = doc.get("cleanup", [])
                    if not isinstance(held, list) or not set(held) <= set(self.groups):
                        raise ReshardError(f"bad cleanup list {held!r}")
                    if held:
                        self.cleanup[len(self.moves)] = set(held)
                    self.moves.append(move)
        except (ValueError, ReshardError) as exc:  # the runner reports OSError cleanly
            raise OSError(0, f"cannot replay {path} against the configured groups: {exc}") from None

    def _save(self) -> None:
        path = self._path()
        if path is None:
            return
        os.makedirs(self.data_dir, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            entries = [m.describe() | ({"cleanup": sorted(self.cleanup[i])}
                                       if i in self.cleanup else {})
                       for i, m in enumerate(self.moves)]  # fmt: skip
            if self.switching is not None:
                move, froms = self.switching
                entries.append(move.describe() | {"switching": froms})
            json.dump(entries, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    async def reshard(self, doc: Any) -> tuple[int, dict[str, Any]]:
        """``POST /admin/reshard {"key": K, "to": "g2"}`` or ``{"low": A, "high": B,
        "to": "g2"}``: move a hot key or a key range, online. (HTTP status, answer)."""
        try:
            move = parse_move(doc, list(self.groups))
        except ReshardError as exc:
            return 400, {"error": str(exc)}
        if self._lock.locked() or self.switching is not None:
            return 409, {"error": "a resharding is already running"}
        if self.cleanup:
            held = sorted({g for groups in self.cleanup.values() for g in groups})
            return 409, {"error": f"groups {held} still hold old copies of an earlier move "
                         "(cleanup pending, retried in the background); a new move waits "
                         "for it"}  # fmt: skip
        async with self._lock:
            self.progress = Progress("copying", move.describe())
            try:
                index = await self._reshard(move)
            except (ReshardError, GroupDown, OutcomeUnknown) as exc:
                self.progress.state, self.progress.error = "failed", str(exc)
                self.log.error("reshard_failed", error=str(exc), **move.describe())
                return 500, dataclasses.asdict(self.progress)
            finally:
                if self.switching is not None:
                    self._hold_until_settled()  # the fence stays up (see _switch_committed)
                else:
                    self._lift_fence()
            self.progress.state = "cleaning_up"
            await self._delete_old_copies(index)
        self.log.info("resharded", version=self.router.map.version, **move.describe())
        return 200, dataclasses.asdict(self.progress)

    async def _reshard(self, move: Move) -> int:
        """Copy, catch up, fence, switch; the new move's index in ``self.moves`` (whose
        sources' old copies ``_delete_old_copies`` removes once the fence is down)."""
        target = self.groups[move.to]
        froms = [self.groups[g] for g in sources(self.router.map, move, list(self.groups))]
        tables = self.config.tables
        owners = self.router.map  # the placement the rows were written under
        p = self.progress
        # 1. copy, unfenced, into staging tables on the target; note each source's LSN
        staged = Staged(tables)
        for table in tables:
            staging = ident(STAGING_PREFIX + table)
            await self._run(target, [f"DROP TABLE IF EXISTS {staging}",
                                     f"CREATE TABLE {staging} AS SELECT * FROM {ident(table)}"
                                     " WHERE 0"])  # fmt: skip
        positions, _ = await self._resync(froms, target, move, staged)
        p.rows_copied = staged.count
        catchup = Catchup(self, move, froms, target, staged, owners, positions)
        await catchup.choose(self.catchup_mode)
        # 2. catch up unfenced from the change feeds, until what is left is small
        if catchup.mode == "changes":
            p.state = "catching_up"
            await catchup.unfenced()
        # 3. fence: hold new statements on the groups involved, let those in flight finish
        self.fence.groups = {move.to, *(g.name for g in froms)}
        self.fence.open.clear()
        self.fence.raised_at = time.perf_counter()
        p.state = "fenced"
        deadline = time.monotonic() + FENCE_WAIT_S
        while any(self.fence.inflight[g] > 0 for g in self.fence.groups):
            try:
                await asyncio.wait_for(self.fence.settled.wait(), deadline - time.monotonic())
            except TimeoutError:
                raise ReshardError("statements in flight did not finish within the fence") from None
        phases = p.fence_phases_ms
        mark = self.fence.raised_at

        def phase(name: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            phases[name] = round((now - mark) * 1000, 1)
            mark = now

        phase("in_flight")
        # 4. the last changes; or, without a usable feed, every moving row read again
        if catchup.mode == "changes":
            await catchup.fenced()
        if catchup.mode == "reread":
            _, changed = await self._resync(froms, target, move, staged)
            p.rows_caught_up += changed
        p.catchup, p.catchup_note = catchup.mode, catchup.note
        phase("catch_up")
        # 5. switch: staging -> live on the target (one transaction), then the map
        live = []
        for table in tables:
            staging = ident(STAGING_PREFIX + table)
            live += [f"INSERT INTO {ident(table)} SELECT * FROM {staging}",
                     f"DROP TABLE {staging}"]  # fmt: skip
        # The intent is on disk before the switch is sent: a router that stops before
        # it hears the answer asks the target at its next start (_switch_committed).
        self.switching = (move, [g.name for g in froms])
        self._save()
        try:
            await self._run(target, live, transaction=True)
        except (ReshardError, GroupDown, OutcomeUnknown) as exc:
            committed = await self._switch_committed(SWITCH_RESOLVE_S)
            if committed is None:
                raise ReshardError(f"the switch's outcome on group {move.to} is unknown "
                                   f"({exc}); writes to {sorted(self.fence.groups)} stay fenced "
                                   "until it answers") from None  # fmt: skip
            if not committed:
                self._finish_switch(False)
                raise
        phase("switch")
        final = staged.count
        # From here the target holds the truth: roll forward whatever happens. The
        # sources' copies are now old copies: recorded as such (and so hidden from
        # fan-outs, see reshard.py) before the fence lifts, deleted after it, so that
        # deleting them does not hold anyone's writes.
        index = self._finish_switch(True)
        assert index is not None
        phase("switch_map")
        self.m_moved.inc(final)
        self.progress.rows_moved = final
        return index

    def _lift_fence(self) -> None:
        if self.fence.groups:  # how long statements were held: the cost users saw
            self.progress.fence_s = round(time.perf_counter() - self.fence.raised_at, 4)
            self.m_fence_s.set(self.progress.fence_s)
        self.fence.groups = set()
        self.fence.open.set()

    async def _switch_committed(self, wait_s: float) -> bool | None:
        """Did the switch of ``self.switching`` commit on its target? Its transaction
        drops the staging tables, so they are gone exactly when it did. None when the
        target does not say within ``wait_s`` (it is down)."""
        assert self.switching is not None
        target = self.groups[self.switching[0].to]
        if not self.config.tables:
            return True
        name = STAGING_PREFIX + next(iter(self.config.tables))
        body = orjson.dumps([["SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                              "AND name = ?", name]])  # fmt: skip
        deadline = time.monotonic() + wait_s
        while True:
            try:
                reply = await target.send("POST", "/db/query?level=strong", body)
                return not _first_result(reply, target.name).get("values", [[0]])[0][0]
            except (ReshardError, GroupDown, OutcomeUnknown, KeyError, ValueError) as exc:
                if time.monotonic() >= deadline:
                    self.log.warning("reshard_switch_undecided", group=target.name,
                                     error=str(exc))  # fmt: skip
                    return None
                await asyncio.sleep(SWITCH_RETRY_S)

    def _finish_switch(self, committed: bool) -> int | None:
        """Record the outcome of ``self.switching``: the new map and the sources' old
        copies if it committed, nothing if not. The index of the move, if it did."""
        assert self.switching is not None
        move, froms = self.switching
        self.switching = None
        index = None
        if committed:
            index = len(self.moves)
            self.moves.append(move)
            if froms:
                self.cleanup[index] = set(froms)
            self.router.map = switched(self.router.map, move)
        self._save()
        self.log.info("reshard_switch_settled", committed=committed, **move.describe())
        return index

    def _hold_until_settled(self) -> None:
        """A switch whose outcome is unknown: no statement may touch the groups involved
        (a write could land on the wrong side) until the target tells. Consistency over
        availability, for those groups only; the rest of the map is served."""
        assert self.switching is not None
        move, froms = self.switching
        if not self.fence.groups:
            self.fence.raised_at = time.perf_counter()
        self.fence.groups = {move.to, *froms}
        self.fence.open.clear()
        if self._settle_task is None or self._settle_task.done():
            self._settle_task = asyncio.get_running_loop().create_task(self._settle())

    async def _settle(self) -> None:
        while self.switching is not None:
            committed = await self._switch_committed(CLEANUP_RETRY_MAX_S)
            if committed is not None:
                self._finish_switch(committed)
        self._lift_fence()
        self._ensure_cleanup()

    async def _delete_old_copies(self, index: int) -> None:
        """After the fence: delete a move's rows from its sources; any source that does
        not take the deletes is left to the background cleanup."""
        move = self.moves[index]
        held = self.cleanup.get(index, set())
        for name in sorted(held):
            try:
                await self._delete_moved(self.groups[name], move)
            except (ReshardError, GroupDown, OutcomeUnknown) as exc:
                self.log.warning("reshard_cleanup_deferred", group=name, error=str(exc))
                continue
            held.discard(name)
        if held:
            self.progress.state = "cleanup_pending"
            self.progress.error = (f"old copies left on groups {sorted(held)}: hidden from "
                                   "fan-out statements, deletes retried in the background")  # fmt: skip
            self._ensure_cleanup()
            return
        self.cleanup.pop(index, None)
        self._save()
        self.progress.state = "done"

    async def _delete_moved(self, group: Group, move: Move) -> None:
        """Delete a move's rows from a source group, every sharded table at once."""
        deletes = []
        for table, column in self.config.tables.items():
            where, params = move.where(column)
            deletes.append([f"DELETE FROM {ident(table)} WHERE {where}", *params])
        await self._run(group, deletes, transaction=True)

    def _ensure_cleanup(self) -> None:
        if self.cleanup and (self._cleanup_task is None or self._cleanup_task.done()):
            self._cleanup_task = asyncio.get_running_loop().create_task(self._clean_up())

    async def _clean_up(self) -> None:
        """Retry pending deletes until none is left (a source may be down for long)."""
        pauses = Backoff(CLEANUP_RETRY_FIRST_S, CLEANUP_RETRY_MAX_S)
        while self.cleanup:
            await asyncio.sleep(pauses.next())
            done = False
            for index, held in list(self.cleanup.items()):
                for name in sorted(held):
                    try:
                        await self._delete_moved(self.groups[name], self.moves[index])
                    except (ReshardError, GroupDown, OutcomeUnknown) as exc:
                        self.log.debug("reshard_cleanup_retry", group=name, error=str(exc))
                        continue
                    # Only now, with the deletes committed, may fan-outs see the group
                    # whole again.
                    held.discard(name)
                    done = True
                    self.log.info("reshard_cleanup_done", group=name,
                                  **self.moves[index].describe())  # fmt: skip
                if not held:
                    del self.cleanup[index]
            if done:
                self._save()
        if self.progress.state == "cleanup_pending":
            self.progress.state, self.progress.error = "done", ""

    async def _read_moving(self, group: Group, table: str, where: str, params: list):
        """``(columns, rows, lsn)``: the rows of ``table`` matching ``where`` on the
        group's primary, and the LSN of the snapshot they were read from (None when the
        store does not say)."""
        body = orjson.dumps([[f"SELECT * FROM {ident(table)} WHERE {where}", *params]])
        reply = await group.send("POST", "/db/query?level=strong", body)
        result = _first_result(reply, group.name)
        lsn = reply.json().get("lsn")
        return result.get("columns", []), result.get("values", []), (
            lsn if isinstance(lsn, int) else None)  # fmt: skip

    async def _resync(self, froms: list[Group], target: Group, move: Move,
                      staged: Staged) -> tuple[dict[str, int | None], int]:  # fmt: skip
        """Read every moving row from the sources and make staging equal to it (the first
        copy, a fresh start for the feed, or the fenced re-read): each source's LSN, and
        how many rows staging had to change."""
        changed = 0
        positions: dict[str, int | None] = {}
        for table, column in self.config.tables.items():
            where, params = move.where(column)
            rows: list[list[Any]] = []
            for group in froms:
                columns, part, lsn = await self._read_moving(group, table, where, params)
                if columns:
                    staged.columns[table] = columns
                rows += part
                if len(rows) > MAX_RESHARD_ROWS:
                    raise ReshardError(f"more than {MAX_RESHARD_ROWS} rows to move at once")
                known = positions.get(group.name, lsn)  # tables read apart: the oldest
                positions[group.name] = None if lsn is None or known is None else min(known, lsn)
            gone, added = diff_rows(staged.rows(table), rows)
            await self._apply_diff(target, table, gone, added, staged)
            staged.reset(table, rows)
            changed += len(gone) + len(added)
        return positions, changed

    async def _apply_diff(self, target: Group, table: str, gone, added, staged: Staged) -> None:
        staging = ident(STAGING_PREFIX + table)
        cols = staged.columns.get(table, [])
        cond = " AND ".join(f"{ident(c)} IS ?" for c in cols)
        deletes = [[f"DELETE FROM {staging} WHERE rowid = (SELECT rowid FROM {staging} "
                    f"WHERE {cond} LIMIT 1)", *row] for row in gone]  # fmt: skip
        for start in range(0, len(deletes), COPY_BATCH_ROWS):
            await self._run(target, deletes[start : start + COPY_BATCH_ROWS], transaction=True)
        await self._insert(target, staging, cols, [list(r) for r in added])

    async def replace_keys(self, target: Group, table: str, keys: list[Any],
                           rows: list[list[Any]], staged: Staged) -> None:  # fmt: skip
        """On the target, in one transaction: staging's rows of ``keys`` become ``rows``."""
        staging = ident(STAGING_PREFIX + table)
        column = ident(self.config.tables[table])
        marks = ", ".join("?" for _ in keys)
        await self._run(target, [[f"DELETE FROM {staging} WHERE {column} IN ({marks})", *keys]])
        await self._insert(target, staging, staged.columns[table], rows)
        staged.replace(table, keys, rows)

    async def _insert(self, group: Group, table: str, columns: list[str], rows) -> None:
        if not rows:
            return
        names = ", ".join(ident(c) for c in columns)
        marks = ", ".join("?" for _ in columns)
        for start in range(0, len(rows), COPY_BATCH_ROWS):
            batch = rows[start : start + COPY_BATCH_ROWS]
            await self._run(group, [[f"INSERT INTO {table} ({names}) VALUES ({marks})", *row]
                                    for row in batch], transaction=True)  # fmt: skip

    async def _run(self, group: Group, statements: list, transaction: bool = False) -> None:
        path = "/db/execute?transaction" if transaction else "/db/execute"
        reply = await group.send("POST", path, orjson.dumps(statements))
        if reply.status != 200:
            raise ReshardError(f"group {group.name}: HTTP {reply.status}")
        for result in reply.json().get("results", []):
            if "error" in result:
                raise ReshardError(f"group {group.name}: {result['error']}")


class Catchup:
    """One move's catch-up from its sources' change feeds (``catchup.py`` names the keys;
    this reads them again and keeps each source's position). ``mode`` falls back from
    "changes" to "reread" when the feed cannot be used; ``note`` says why."""

    def __init__(self, service: Resharder, move: Move, froms: list[Group], target: Group,
                 staged: Staged, owners: RoutingMap,
                 positions: dict[str, int | None]) -> None:  # fmt: skip
        self.service = service
        self.move = move
        self.froms = froms
        self.target = target
        self.staged = staged
        self.owners = owners
        self.positions = positions
        self.epochs = {g.name: g.epoch for g in froms}
        self.mode, self.note = "changes", ""

    def _fall_back(self, why: str) -> None:
        self.mode, self.note = "reread", why
        self.service.log.info("reshard_catchup_reread", reason=why, **self.move.describe())

    async def choose(self, wanted: str) -> None:
        """Use the feeds only if every source offers one from the copy's LSN and has no
        triggers (a trigger changes rows no logged statement names)."""
        if wanted == "reread":
            return self._fall_back("--reshard-catchup reread")
        if any(lsn is None for lsn in self.positions.values()):
            return self._fall_back("a source's query answers carry no lsn")
        for group in self.froms:
            body = orjson.dumps(["SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"])
            result = _first_result(await group.send("POST", "/db/query?level=strong", body),
                                   group.name)  # fmt: skip
            if result.get("values", [[0]])[0][0]:
                return self._fall_back(f"group {group.name} has triggers")
            try:
                await group.changes(self.positions[group.name] or 0, 1)
            except FeedGone as exc:
                return self._fall_back(str(exc))
        return None

    async def unfenced(self) -> None:
        """Follow the feeds while writes go on, until a round changes few keys."""
        progress = self.service.progress
        for _ in range(MAX_CATCHUP_ROUNDS):
            progress.catchup_rounds += 1
            try:
                changed = await self._tail()
            except FeedGone as exc:
                if not exc.retry:
                    return self._fall_back(str(exc))
                changed = Changed(unknown=str(exc))
            if changed.unknown:  # start again from a fresh copy, still unfenced
                self.note = f"copied again once: {changed.unknown}"
                self.positions, _ = await self.service._resync(
                    self.froms, self.target, self.move, self.staged)  # fmt: skip
                if any(lsn is None for lsn in self.positions.values()):
                    return self._fall_back("a source's query answers carry no lsn")
                continue
            await self._refetch(changed)
            if changed.count <= CATCHUP_SMALL_KEYS:
                return None
        return None  # still busy: the fenced round takes the rest

    async def fenced(self) -> None:
        """Under the fence: the last changes, exactly (or fall back to the re-read)."""
        try:
            changed = await self._tail()
        except FeedGone as exc:
            return self._fall_back(str(exc))
        if changed.unknown:
            return self._fall_back(changed.unknown)
        await self._refetch(changed)
        return None

    async def _tail(self) -> Changed:
        tables = self.service.config.tables
        total = Changed({t: set() for t in tables})
        for group in self.froms:
            if group.epoch != self.epochs[group.name]:
                raise FeedGone(f"group {group.name}'s primary changed during the move", True)
            since = self.positions[group.name] or 0
            for _ in range(MAX_FEED_PAGES):
                doc = await group.changes(since, FEED_PAGE_RECORDS)
                records = doc["changes"]
                part = changed_keys(records, tables, self.move)
                total.statements += part.statements
                total.unknown = total.unknown or part.unknown
                for table, keys in part.keys.items():
                    total.keys[table] |= keys
                if total.count > MAX_RESHARD_ROWS:
                    raise ReshardError(f"more than {MAX_RESHARD_ROWS} keys changed during the "
                                       "move")  # fmt: skip
                last = records[-1].get("lsn") if records else None
                if not isinstance(last, int) or last <= since:
                    break
                since = last
                if since >= doc["lsn"]:
                    break
            self.positions[group.name] = since
        self.service.progress.changes_seen += total.statements
        return total

    async def _refetch(self, changed: Changed) -> None:
        """Read the changed keys' rows again from their owners; replace them in staging."""
        names = {g.name for g in self.froms}
        for table, keys in changed.keys.items():
            by_owner: dict[str, list[Any]] = {}
            for key in keys:
                owner = self.owners.group_for(key)
                if owner in names:  # others (the target's own keys) were never copied
                    by_owner.setdefault(owner, []).append(key)
            column = ident(self.service.config.tables[table])
            for owner, owned in by_owner.items():
                for start in range(0, len(owned), REFETCH_BATCH_KEYS):
                    batch = owned[start : start + REFETCH_BATCH_KEYS]
                    where = f"{column} IN ({', '.join('?' for _ in batch)})"
                    columns, rows, _ = await self.service._read_moving(
                        self.service.groups[owner], table, where, batch)  # fmt: skip
                    if columns:
                        self.staged.columns[table] = columns
                    await self.service.replace_keys(self.target, table, batch, rows,
                                                    self.staged)  # fmt: skip
                    self.service.progress.keys_refetched += len(batch)


def _first_result(reply, name: str) -> dict[str, Any]:
    if reply.status != 200:
        raise ReshardError(f"group {name}: HTTP {reply.status}")
    result = reply.json()["results"][0]
    if "error" in result:
        raise ReshardError(f"group {name}: {result['error']}")
    return result
