"""The router's asyncio shell: rqlite's HTTP API in front, shard groups of stores behind.

Requests are read and answered with the store's own code (``components.store.protocol``:
the same request parsing, bounds and answer shapes), so pyrqlite and the web tier talk to
the router exactly as to one store. For each request ``router.py`` makes a plan; a
request for one group is passed through whole (the group's answer goes back byte for
byte, with its ``X-Scalelab-Lsn``); statements over several groups run on each of them
in parallel and ``merge.py`` builds the one answer a single database would give. A
refused request is answered like a failed statement (``{"results": [{"error": ...}]}``,
HTTP 200, as rqlite reports SQL errors), so clients raise it as they would a SQL error.

Routes: ``/db/execute``, ``/db/query`` (GET and POST), ``/db/request``, ``/status``
(rqlite's keys plus ``scalelab``: the routing map with its version, every group's
primary, the hottest keys per table, the last resharding's progress), ``/readyz``,
``/nodes``. Admin: ``GET /admin/map``, ``POST /admin/reshard`` (``reshard.py``).

Statements on sharded tables pass a gate: while a resharding holds its write fence
over some groups, statements touching those groups wait (up to ``FENCE_WAIT_S``, then
503) and are planned again with the new map; the resharding waits for those already in
flight before its last catch-up. ``Catchup`` (at the end) drives the catch-up from the
sources' change feeds (``GET /admin/changes`` on each store's admin listener, with
``store_admin_token``); ``--reshard-catchup reread`` turns it off, to compare fences.
Load is shed past ``MAX_INFLIGHT_REQUESTS`` with a 503 rather than queued without bound.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import time
from collections import Counter
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from aiohttp import web

from components.common import Service
from components.common.admin import read_json
from components.common.cli import format_address
from components.store import protocol
from components.store.database import Changes, Failure, Rows
from components.store.protocol import BadRequest, Options

from . import config as shard_config
from .catchup import Changed, changed_keys
from .ids import Snowflake
from .merge import MergeError, merge_changes, merge_rows
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
from .router import Plan, Refused, Router, Step, is_read
from .sqlscan import scan
from .upstream import LSN_HEADER, FeedGone, Group, GroupDown, OutcomeUnknown

#: Upstream connections per store node at most (further requests wait for one).
MAX_UPSTREAM_CONNECTIONS_PER_NODE = 64
#: Requests in flight at most; more are answered 503 at once (backpressure).
MAX_INFLIGHT_REQUESTS = 2048
#: Heaviest keys per table shown in /status (candidates for a group of their own).
HOT_KEYS_SHOWN = 10
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


class ShardService(Service):
    component = "shard"
    default_port = 4000
    description = "shard router: rqlite's API over several replicated store groups"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("shard")
        group.add_argument("--shards", required=True, metavar="CONFIG.toml",
                           help="shard groups, sharded tables and strategy (see config.py)")  # fmt: skip
        group.add_argument("--reshard-catchup", choices=("changes", "reread"), default="changes",
                           help="how a resharding catches its copy up: from the sources' "
                           "change feeds (short fence), or by reading every moving row "
                           "again under the fence")  # fmt: skip

    async def start(self) -> dict[str, str]:
        try:
            self.config = shard_config.load(self.args.shards)
        except shard_config.ConfigError as exc:
            raise OSError(0, f"bad --shards file: {exc}") from None
        self.router = Router(self.config, Snowflake(self.config.worker_id,
                                                    lambda: time.time_ns() // 1_000_000))  # fmt: skip
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0,
                                           limit_per_host=MAX_UPSTREAM_CONNECTIONS_PER_NODE),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )  # fmt: skip
        self.groups = {
            name: Group(name, g.nodes, self.session, g.admin, self.config.store_admin_token)
            for name, g in self.config.groups.items()
        }
        self._cleanup_task: asyncio.Task | None = None
        self._settle_task: asyncio.Task | None = None
        self._fenced_at = 0.0
        self.progress = Progress()
        self._reshard_lock = asyncio.Lock()
        self._open = asyncio.Event()  # set: no fence
        self._open.set()
        self._fence: set[str] = set()  # groups behind the fence (empty: no fence)
        self._inflight: Counter[str] = Counter()  # sharded statements in flight, per group
        self._requests = 0
        self._settled = asyncio.Event()  # pulsed whenever a fenced-group count drops
        self._load_moves()
        if self.args.data_dir is None:
            self.log.warning("no_data_dir", note="resharding moves will not survive a restart")
        if self.switching is not None:  # the last run stopped inside a switch: which side?
            committed = await self._switch_committed(STARTUP_RESOLVE_S)
            if committed is None:
                self._hold_until_settled()
            else:
                self._finish_switch(committed)
        self._setup_metrics()
        app = web.Application(client_max_size=protocol.MAX_BODY_BYTES)
        app.router.add_post("/db/execute", self.handle_execute)
        app.router.add_route("GET", "/db/query", self.handle_query)
        app.router.add_route("POST", "/db/query", self.handle_query)
        app.router.add_post("/db/request", self.handle_request)
        app.router.add_get("/status", self.handle_status)
        app.router.add_get("/readyz", self.handle_readyz)
        app.router.add_get("/nodes", self.handle_nodes)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=self.args.drain_timeout)  # fmt: skip
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.args.host, self.args.port, reuse_address=True)
        await site.start()
        self.runtime.admin.register("map", self.admin_map, method="GET")
        self.runtime.admin.register("reshard", self.admin_reshard)
        self.log.info("routing_map", **self.router.map.describe())
        self._ensure_cleanup()  # old copies left by a move before a restart
        return {"main": format_address(site._server.sockets[0].getsockname())}  # type: ignore[union-attr]

    async def drain(self) -> None:
        await self._runner.cleanup()

    async def stop(self) -> None:
        for task in (self._cleanup_task, self._settle_task):
            if task is not None:
                task.cancel()  # the moves file keeps what is still pending
        await self._runner.cleanup()
        for group in self.groups.values():
            group.close()
        await self.session.close()

    def _setup_metrics(self) -> None:
        m = self.metrics
        self.m_queries = m.counter("scalelab_shard_queries_total",
                                   "Statements sent to each shard group", ["group"])  # fmt: skip
        self.m_fanout = m.counter("scalelab_shard_fanout_queries_total",
                                  "Statements sent to more than one group")  # fmt: skip
        self.m_refused = m.counter("scalelab_shard_refused_total",
                                   "Requests refused (cross-shard or unmergeable)")  # fmt: skip
        self.m_ids = m.counter("scalelab_shard_ids_generated_total",
                               "Snowflake ids generated for inserts")  # fmt: skip
        self.m_errors = m.counter("scalelab_shard_upstream_errors_total",
                                  "Requests a group did not answer", ["group"])  # fmt: skip
        self.m_duration = m.histogram("scalelab_shard_request_duration_seconds",
                                      "Request latency through the router")  # fmt: skip
        m.gauge("scalelab_shard_map_version", "Version of the routing map in use").set_function(
            lambda: self.router.map.version
        )
        self.m_moved = m.counter("scalelab_shard_rows_moved_total", "Rows moved by resharding")
        m.gauge("scalelab_shard_reshard_fenced",
                "1 while a resharding holds its write fence").set_function(
            lambda: 1 if self._fence else 0)  # fmt: skip
        m.gauge("scalelab_shard_cleanup_pending",
                "Groups still holding old copies of moved rows (hidden from fan-outs)"
                ).set_function(lambda: sum(len(g) for g in self.cleanup.values()))  # fmt: skip
        self.m_fence_s = m.gauge("scalelab_shard_reshard_fence_seconds",
                                 "How long the last resharding held its write fence")  # fmt: skip
        self.m_fenced = m.counter("scalelab_shard_fenced_requests_total",
                                  "Requests held behind a resharding's write fence")  # fmt: skip

    # -- the data API -----------------------------------------------------------------

    async def handle_execute(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, write=True)

    async def handle_query(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, write=False)

    async def handle_request(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, write=None)

    async def _serve(self, request: web.Request, write: bool | None) -> web.StreamResponse:
        if self._requests >= MAX_INFLIGHT_REQUESTS:  # shed load rather than queue forever
            return _json({"error": f"router overloaded: {self._requests} requests in flight"},
                         503)  # fmt: skip
        self._requests += 1
        try:
            return await self._serve_one(request, write)
        finally:
            self._requests -= 1

    async def _serve_one(self, request: web.Request, write: bool | None) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            options = protocol.parse_options(request.query)
            if request.method == "GET" or (write is False and options.q is not None):
                statements = protocol.single_statement(options.q or "")
            else:
                statements = protocol.parse_statements(await request.read())
        except BadRequest as exc:
            return web.Response(text=str(exc), status=400)
        if write is None:
            write = not all(is_read(sql) for sql, _ in statements)
        deadline = time.monotonic() + FENCE_WAIT_S
        while True:
            try:
                plan = self.router.plan(statements, write=write, transaction=options.transaction)
            except Refused as exc:
                self.m_refused.inc()
                self.log.info("refused", reason=str(exc))
                return _refusal(str(exc), exc.index, len(statements), options)
            touched = {g for step in plan.steps if step.sharded for g in step.groups}
            if not touched & self._fence:
                break
            # A resharding is switching these groups' map: wait, then plan again.
            self.m_fenced.inc()
            try:
                await asyncio.wait_for(self._open.wait(), deadline - time.monotonic())
            except TimeoutError:
                return _json({"error": "resharding in progress: write fence still up"}, 503)
        if options.queue and plan.single is None:
            return _refusal("queued writes (?queue) must stay on one group: the router "
                            "cannot report a sequence number for several", 0, len(statements),
                            options)  # fmt: skip
        if plan.generated_ids:
            self.m_ids.inc(plan.generated_ids)
        self._inflight.update(touched)
        try:
            if plan.single is not None:
                response = await self._forward(request, plan, options, write)
            else:
                response = await self._scatter(plan, options, write, started)
        except GroupDown as exc:
            return _json({"error": str(exc)}, 503)
        except OutcomeUnknown as exc:
            return _json({"error": str(exc)}, 502)
        finally:
            if touched:
                self._inflight.subtract(touched)
                if self._fence:
                    event, self._settled = self._settled, asyncio.Event()
                    event.set()
        self.m_duration.observe(time.perf_counter() - started)
        return response

    async def _forward(self, request: web.Request, plan: Plan, options: Options,
                       write: bool) -> web.Response:  # fmt: skip
        """The whole request to one group, its answer passed through."""
        group = self.groups[plan.single]  # type: ignore[index]
        self.m_queries.labels(group.name).inc(len(plan.steps))
        # Always as a POST with the (maybe rewritten: generated ids) statements in the
        # body; ``q`` is dropped from the query string, every other flag passes through.
        flags = [(k, v) for k, v in request.query.items() if k != "q"]
        path = request.path + ("?" + urlencode(flags) if flags else "")
        to_primary = write or options.level != "none"
        try:
            reply = await group.send("POST", path, _encode(plan.steps), to_primary=to_primary)
        except (GroupDown, OutcomeUnknown):
            self.m_errors.labels(group.name).inc()
            raise
        headers = {LSN_HEADER: reply.lsn} if reply.lsn else None
        return web.Response(body=reply.body, status=reply.status, headers=headers,
                            content_type=reply.content_type or "application/json")  # fmt: skip

    async def _scatter(self, plan: Plan, options: Options, write: bool,
                       started: float) -> web.Response:  # fmt: skip
        """Statement by statement; each over its groups in parallel, then merged."""
        results: list[Any] = []
        for step in plan.steps:
            results.append(await self._run_step(step, options, write))
        doc_results = [protocol.result_json(_as_result(r), options) for r in results]
        doc: dict[str, Any] = {"results": doc_results}
        if options.timings:
            doc["time"] = time.perf_counter() - started
        return web.Response(body=protocol.dumps(doc, options.pretty),
                            content_type="application/json")  # fmt: skip

    async def _run_step(self, step: Step, options: Options, write: bool) -> dict[str, Any]:
        is_write = write and step.scan.writes
        if step.fan_out:
            self.m_fanout.inc()
        query: dict[str, str] = {}
        if not is_write and options.level != "weak":
            query["level"] = options.level
        if options.freshness_s is not None and not is_write:
            query["freshness"] = f"{options.freshness_s}s"
        path = ("/db/execute" if is_write else "/db/query") + (
            "?" + urlencode(query) if query else ""
        )
        body = _encode([step])
        to_primary = is_write or options.level != "none"
        bodies = self._excluding_old_copies(step) if self.cleanup and step.fan_out else {}

        async def one(name: str) -> dict[str, Any]:
            self.m_queries.labels(name).inc()
            sent = bodies.get(name, body)
            if sent is None:
                return {"error": f"group {name} still holds old copies of moved rows (cleanup "
                        "pending) and this statement cannot be made to leave them out"}  # fmt: skip
            try:
                reply = await self.groups[name].send("POST", path, sent, to_primary=to_primary)
            except GroupDown as exc:
                self.m_errors.labels(name).inc()
                return {"error": str(exc)}
            except OutcomeUnknown as exc:
                self.m_errors.labels(name).inc()
                return {"error": f"outcome unknown: {exc}"}
            try:
                doc = reply.json()
            except orjson.JSONDecodeError:
                return {"error": f"group {name}: {reply.body[:200].decode(errors='replace')}"}
            if reply.status != 200 or "results" not in doc:
                return {"error": f"group {name}: {doc.get('error', reply.status)}"}
            return doc["results"][0]

        names = step.groups
        answers = await asyncio.gather(*(one(n) for n in names))
        if len(names) == 1:
            return answers[0]  # one group's answer is already the whole answer
        if is_write:
            return merge_changes(dict(zip(names, answers, strict=True)))
        failed = [(n, a["error"]) for n, a in zip(names, answers, strict=True) if "error" in a]
        if failed:  # every group's error, each naming its group
            return {"error": "; ".join(e if e.startswith("group ") else f"group {n}: {e}"
                                       for n, e in failed)}  # fmt: skip
        try:
            return merge_rows(list(answers), step.scan, step.params)
        except MergeError as exc:
            return {"error": f"cannot merge across shards: {exc}"}

    def _excluding_old_copies(self, step: Step) -> dict[str, bytes | None]:
        """Per group with a pending cleanup: the step rewritten to leave out the moved
        keys whose old copies the group still holds (None: it cannot be)."""
        table = next((t for t in step.scan.tables if t in self.config.tables), None)
        if not step.sharded or table is None or step.scan.verb not in ("select", "update",
                                                                       "delete"):  # fmt: skip
            return {}  # DDL and the like: no rows to count twice
        sql, params = step.statement
        info = scan(sql)  # the text sent may differ from the client's (avg rewritten)
        out: dict[str, bytes | None] = {}
        for name in step.groups:
            moves = [self.moves[i] for i, held in self.cleanup.items() if name in held]
            if moves:
                rewritten = without_moved(sql, info, self.config.tables[table], moves)
                out[name] = None if rewritten is None else _encode_statement(rewritten, params)
        return out

    # -- status -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "map": self.router.map.describe(),
            "reshard": dataclasses.asdict(self.progress),
            "cleanup_pending": {
                name: [self.moves[i].describe() for i, held in self.cleanup.items() if name in held]
                for name in sorted({g for held in self.cleanup.values() for g in held})
            },  # fmt: skip
            "home": self.config.home,
            "hot_keys": {
                table: [
                    {"key": k, "count": c, "at_least": g, "group": self.router.map.group_for(k)}
                    for k, c, g in sketch.top(HOT_KEYS_SHOWN)
                ]
                for table, sketch in self.router.hot.items()
            },  # fmt: skip
            "tables": self.config.tables,
            "groups": {
                name: {"nodes": g.nodes, "primary": g.primary, "epoch": g.epoch}
                for name, g in self.groups.items()
            },
        }

    async def handle_status(self, request: web.Request) -> web.Response:
        doc = {"http": {"bind_addr": request.host}, "store": {"node_id": self.runtime.name},
               "scalelab": self.status()}  # fmt: skip
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    async def admin_map(self, request: web.Request):
        return self.status()

    async def handle_readyz(self, request: web.Request) -> web.Response:
        """Ready when every group has a primary that answers."""
        missing = []
        for name, group in self.groups.items():
            try:
                await group.discover()
            except GroupDown:
                missing.append(name)
        if missing:
            return web.Response(text=f"[+]node ok\n[-]groups without primary: {missing}\n",
                                status=503)  # fmt: skip
        return web.Response(text="[+]node ok\n[+]leader ok\n[+]store ok\n")

    async def handle_nodes(self, request: web.Request) -> web.Response:
        nodes = {
            f"{name}/{node}": {"api_addr": f"http://{node}", "addr": node,
                               "leader": node == g.primary, "group": name}
            for name, g in self.groups.items() for node in g.nodes
        }  # fmt: skip
        return web.Response(body=orjson.dumps(nodes), content_type="application/json")

    # -- resharding ---------------------------------------------------------------------

    def _map_path(self) -> str | None:
        return os.path.join(self.args.data_dir, "moves.json") if self.args.data_dir else None

    def _load_moves(self) -> None:
        """Replay the moves of earlier reshardings (the map must survive a restart), and
        their pending cleanups (``"cleanup": [groups still holding old copies]``)."""
        self.moves: list[Move] = []
        #: Move index -> groups still holding old copies of its rows.
        self.cleanup: dict[int, set[str]] = {}
        #: A move whose switch was sent to its target, with its sources, until it is
        #: known whether the switch committed (``_switch_committed``).
        self.switching: tuple[Move, list[str]] | None = None
        path = self._map_path()
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

    def _save_moves(self) -> None:
        path = self._map_path()
        if path is None:
            return
        os.makedirs(self.args.data_dir, exist_ok=True)
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

    async def admin_reshard(self, request: web.Request):
        """``POST /admin/reshard {"key": K, "to": "g2"}`` or ``{"low": A, "high": B,
        "to": "g2"}``: move a hot key or a key range, online (see reshard.py)."""
        try:
            move = parse_move(await read_json(request), list(self.groups))
        except ReshardError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if self._reshard_lock.locked() or self.switching is not None:
            return web.json_response({"error": "a resharding is already running"}, status=409)
        if self.cleanup:
            held = sorted({g for groups in self.cleanup.values() for g in groups})
            return web.json_response(
                {"error": f"groups {held} still hold old copies of an earlier move (cleanup "
                 "pending, retried in the background); a new move waits for it"}, status=409)  # fmt: skip
        async with self._reshard_lock:
            self.progress = Progress("copying", move.describe())
            try:
                index = await self._reshard(move)
            except (ReshardError, GroupDown, OutcomeUnknown) as exc:
                self.progress.state, self.progress.error = "failed", str(exc)
                self.log.error("reshard_failed", error=str(exc), **move.describe())
                return web.json_response(dataclasses.asdict(self.progress), status=500)
            finally:
                if self.switching is not None:
                    self._hold_until_settled()  # the fence stays up (see _switch_committed)
                else:
                    self._lift_fence()
            self.progress.state = "cleaning_up"
            await self._delete_old_copies(index)
        self.log.info("resharded", version=self.router.map.version, **move.describe())
        return dataclasses.asdict(self.progress)

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
        await catchup.choose(self.args.reshard_catchup)
        # 2. catch up unfenced from the change feeds, until what is left is small
        if catchup.mode == "changes":
            p.state = "catching_up"
            await catchup.unfenced()
        # 3. fence: hold new statements on the groups involved, let those in flight finish
        self._fence = {move.to, *(g.name for g in froms)}
        self._open.clear()
        self._fenced_at = time.perf_counter()
        p.state = "fenced"
        deadline = time.monotonic() + FENCE_WAIT_S
        while any(self._inflight[g] > 0 for g in self._fence):
            try:
                await asyncio.wait_for(self._settled.wait(), deadline - time.monotonic())
            except TimeoutError:
                raise ReshardError("statements in flight did not finish within the fence") from None
        phases = p.fence_phases_ms
        mark = self._fenced_at

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
        self._save_moves()
        try:
            await self._run(target, live, transaction=True)
        except (ReshardError, GroupDown, OutcomeUnknown) as exc:
            committed = await self._switch_committed(SWITCH_RESOLVE_S)
            if committed is None:
                raise ReshardError(f"the switch's outcome on group {move.to} is unknown "
                                   f"({exc}); writes to {sorted(self._fence)} stay fenced "
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
        if self._fence:  # how long statements were held: the cost users saw
            self.progress.fence_s = round(time.perf_counter() - self._fenced_at, 4)
            self.m_fence_s.set(self.progress.fence_s)
        self._fence = set()
        self._open.set()

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
        self._save_moves()
        self.log.info("reshard_switch_settled", committed=committed, **move.describe())
        return index

    def _hold_until_settled(self) -> None:
        """A switch whose outcome is unknown: no statement may touch the groups involved
        (a write could land on the wrong side) until the target tells. Consistency over
        availability, for those groups only; the rest of the map is served."""
        assert self.switching is not None
        move, froms = self.switching
        if not self._fence:
            self._fenced_at = time.perf_counter()
        self._fence = {move.to, *froms}
        self._open.clear()
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
        self._save_moves()
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
        pause = CLEANUP_RETRY_FIRST_S
        while self.cleanup:
            await asyncio.sleep(pause)
            pause = min(pause * 2, CLEANUP_RETRY_MAX_S)
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
                self._save_moves()
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

    def __init__(self, service: ShardService, move: Move, froms: list[Group], target: Group,
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


def _encode(steps: list[Step]) -> bytes:
    return orjson.dumps([protocol.statement_json(*step.statement) for step in steps])


def _encode_statement(sql: str, params: Any) -> bytes:
    return orjson.dumps([protocol.statement_json(sql, params)])


def _as_result(doc: dict[str, Any]):
    if "error" in doc:
        return Failure(doc["error"], doc.get("time", 0.0))
    if "columns" in doc:
        return Rows(doc["columns"], doc.get("types", []), doc.get("values", []))
    return Changes(doc.get("last_insert_id", 0), doc.get("rows_affected", 0))


def _refusal(message: str, index: int, count: int, options: Options) -> web.Response:
    results = [
        {"error": message if i == index else
         f"not run: statement {index} of this request was refused by the shard router"}
        for i in range(count)
    ]  # fmt: skip
    return web.Response(body=protocol.dumps({"results": results}, options.pretty),
                        content_type="application/json")  # fmt: skip


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")
