"""The router's asyncio shell: rqlite's HTTP API in front, shard groups of stores behind.

Requests are read and answered with the store's own code (``components.store.protocol``:
the same request parsing, bounds and answer shapes), so pyrqlite and the web tier talk to
the router exactly as to one store. For each request ``router.py`` makes a plan; a
request for one group is passed through whole (the group's answer goes back byte for
byte, with its ``X-Scalelab-Lsn``); statements over several groups run on each of them
in parallel and ``merge.py`` builds the one answer a single database would give. A
refused request is answered like a failed statement (``{"results": [{"error": ...}]}``,
HTTP 200, as rqlite reports SQL errors), so clients raise it as they would a SQL error.

The listener is the store's fast front (``components.store.front``): ``/db/execute`` and
``/db/query`` are read on the shared HTTP/1.1 codec and answered with one write, without
aiohttp's per-request objects (the router's CPU per point read fell by about half);
every other route, and anything the front declines, is handed to aiohttp on the same
connection, with the same answers (``_serve`` is one code path for both).

Routes: ``/db/execute``, ``/db/query`` (GET and POST), ``/db/request``, ``/status``
(rqlite's keys plus ``scalelab``: the routing map with its version, every group's
primary, the hottest keys per table, the last resharding's progress, and the
``writable``/``epoch``/``api_addr`` a store primary reports, so the store's own client
takes the router for the one primary), ``/readyz``, ``/nodes``. Admin: ``GET
/admin/map``, ``POST /admin/reshard`` (``resharder.py``).

Read-your-writes: a write's ``X-Scalelab-Lsn`` is a position in its group's log only, so
a read that brings one (``min_lsn``) is read at each group's primary instead of waiting
for a replica to reach a number from another log (``_read_your_writes_at_primary``).

Statements on sharded tables pass a gate, the resharder's ``Fence``: while a resharding
holds its write fence over some groups, statements touching those groups wait (up to
``FENCE_WAIT_S``, then 503) and are planned again with the new map; the resharding waits
for those already in flight before its last catch-up. A fan-out to a group that still
holds old copies of moved rows is rewritten to leave them out
(``Resharder.excluding_old_copies``). Load is shed past ``MAX_INFLIGHT_REQUESTS`` with a
503 rather than queued without bound.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import orjson
from aiohttp import web

from components.common import Service
from components.common.admin import read_json
from components.common.cli import format_address
from components.store import protocol
from components.store.database import Changes, Failure, Rows
from components.store.front import JSON, TEXT, Answer, ApiProtocol, Deferred
from components.store.protocol import BadRequest, Options

from . import config as shard_config
from .ids import Snowflake
from .merge import MergeError, merge_changes, merge_rows
from .resharder import FENCE_WAIT_S, Resharder
from .router import Plan, Refused, Router, Step, is_read
from .upstream import LSN_HEADER, Group, GroupDown, OutcomeUnknown

#: Upstream connections per store node at most (further requests wait for one).
MAX_UPSTREAM_CONNECTIONS_PER_NODE = 64
#: Requests in flight at most; more are answered 503 at once (backpressure).
MAX_INFLIGHT_REQUESTS = 2048
#: Heaviest keys per table shown in /status (candidates for a group of their own).
HOT_KEYS_SHOWN = 10
#: Distinct query strings whose parsed flags the fast front remembers.
QUERY_CACHE_ENTRIES = 256


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
        self._requests = 0
        self.resharder = Resharder(self.config, self.groups, self.router, self.log,
                                   self.metrics, self.args.data_dir,
                                   self.args.reshard_catchup)  # fmt: skip
        self.fence = self.resharder.fence
        if self.args.data_dir is None:
            self.log.warning("no_data_dir", note="resharding moves will not survive a restart")
        await self.resharder.start()  # before any request: the map must be settled
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
        # The listener is the store's fast front (components.store.front): each
        # connection starts there and is handed to aiohttp's handler when needed.
        self._fast_query: dict[bytes, tuple[Options, list[tuple[str, str]]]] = {}
        self._front_connections: set[ApiProtocol] = set()
        self._front_open = True
        aiohttp_protocol = self._runner.server
        assert aiohttp_protocol is not None
        self._listener = await asyncio.get_running_loop().create_server(
            lambda: ApiProtocol(self.serve_fast, aiohttp_protocol, self._front_connections,
                                accepting=self._front_open),
            self.args.host, self.args.port, reuse_address=True)  # fmt: skip
        self.runtime.admin.register("map", self.admin_map, method="GET")
        self.runtime.admin.register("reshard", self.admin_reshard)
        self.log.info("routing_map", **self.router.map.describe())
        return {"main": format_address(self._listener.sockets[0].getsockname())}

    def _close_front(self) -> None:
        self._front_open = False  # a connection accepted from the backlog now is closed
        self._listener.close()
        for connection in list(self._front_connections):
            connection.close_when_idle()

    async def drain(self) -> None:
        self._close_front()
        await self._runner.cleanup()  # waits for aiohttp's in-flight handlers
        while any(c.busy for c in self._front_connections):  # the front's, likewise
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self.resharder.stop()
        self._close_front()
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
        self.m_fenced = m.counter("scalelab_shard_fenced_requests_total",
                                  "Requests held behind a resharding's write fence")  # fmt: skip

    # -- the data API -----------------------------------------------------------------

    # aiohttp's handlers: /db/request, and whatever the fast front hands over.

    async def handle_execute(self, request: web.Request) -> web.StreamResponse:
        return await self._aiohttp(request, write=True)

    async def handle_query(self, request: web.Request) -> web.StreamResponse:
        return await self._aiohttp(request, write=False)

    async def handle_request(self, request: web.Request) -> web.StreamResponse:
        return await self._aiohttp(request, write=None)

    async def _aiohttp(self, request: web.Request, write: bool | None) -> web.StreamResponse:
        try:
            options = protocol.parse_options(request.query)
        except BadRequest as exc:
            return web.Response(text=str(exc), status=400)
        body = b"" if request.method == "GET" else await request.read()
        status, content_type, extra, data = await self._serve(
            request.method, request.path, list(request.query.items()), options, body, write)  # fmt: skip
        headers = {"Content-Type": content_type.decode()}
        for line in extra.decode().splitlines():  # "Name: value" lines (the LSN's)
            name, _, value = line.partition(":")
            headers[name] = value.strip()
        return web.Response(body=data, status=status, headers=headers)

    # The fast front (components.store.front): /db/execute and /db/query on the shared
    # HTTP/1.1 codec, without aiohttp's per-request machinery.

    def serve_fast(self, route: str, request, body: bytes) -> Deferred | None:
        """Serve ``route`` ("execute" or "query"); None hands it to aiohttp."""
        path, _, query = request.target.partition(b"?")
        parsed = self._fast_query.get(query)
        if parsed is None:
            try:
                text = query.decode()
                parsed = (protocol.parse_options(text),
                          parse_qsl(text, keep_blank_values=True, max_num_fields=64))  # fmt: skip
            except (BadRequest, UnicodeDecodeError, ValueError):
                return None  # aiohttp answers a malformed query string
            if len(self._fast_query) >= QUERY_CACHE_ENTRIES:
                self._fast_query.clear()
            self._fast_query[query] = parsed
        options, pairs = parsed
        task = asyncio.ensure_future(self._serve(request.method.decode(), path.decode(), pairs,
                                                 options, body, route == "execute"))  # fmt: skip
        return Deferred(task, _task_answer)

    async def _serve(self, method: str, path: str, pairs: list[tuple[str, str]],
                     options: Options, body: bytes, write: bool | None) -> Answer:  # fmt: skip
        if self._requests >= MAX_INFLIGHT_REQUESTS:  # shed load rather than queue forever
            return _json({"error": f"router overloaded: {self._requests} requests in flight"},
                         503)  # fmt: skip
        self._requests += 1
        try:
            return await self._serve_one(method, path, pairs, options, body, write)
        finally:
            self._requests -= 1

    async def _serve_one(self, method: str, path: str, pairs: list[tuple[str, str]],
                         options: Options, body: bytes, write: bool | None) -> Answer:  # fmt: skip
        started = time.perf_counter()
        try:
            if method == "GET" or (write is False and options.q is not None):
                statements = protocol.single_statement(options.q or "")
            else:
                statements = protocol.parse_statements(body)
        except BadRequest as exc:
            return 400, TEXT, b"", str(exc).encode()
        if write is None:
            write = not all(is_read(sql) for sql, _ in statements)
        if options.min_lsn is not None and not write:
            pairs, options = _read_your_writes_at_primary(pairs, options)
        deadline = time.monotonic() + FENCE_WAIT_S
        while True:
            try:
                plan = self.router.plan(statements, write=write, transaction=options.transaction)
            except Refused as exc:
                self.m_refused.inc()
                self.log.info("refused", reason=str(exc))
                return _refusal(str(exc), exc.index, len(statements), options)
            touched = {g for step in plan.steps if step.sharded for g in step.groups}
            if not touched & self.fence.groups:
                break
            # A resharding is switching these groups' map: wait, then plan again.
            self.m_fenced.inc()
            try:
                await asyncio.wait_for(self.fence.open.wait(), deadline - time.monotonic())
            except TimeoutError:
                return _json({"error": "resharding in progress: write fence still up"}, 503)
        if options.queue and plan.single is None:
            return _refusal("queued writes (?queue) must stay on one group: the router "
                            "cannot report a sequence number for several", 0, len(statements),
                            options)  # fmt: skip
        if plan.generated_ids:
            self.m_ids.inc(plan.generated_ids)
        self.fence.enter(touched)
        try:
            if plan.single is not None:
                response = await self._forward(path, pairs, plan, options, write)
            else:
                response = await self._scatter(plan, options, write, started)
        except GroupDown as exc:
            return _json({"error": str(exc)}, 503)
        except OutcomeUnknown as exc:
            return _json({"error": str(exc)}, 502)
        finally:
            if touched:
                self.fence.leave(touched)
        self.m_duration.observe(time.perf_counter() - started)
        return response

    async def _forward(self, path: str, pairs: list[tuple[str, str]], plan: Plan,
                       options: Options, write: bool) -> Answer:  # fmt: skip
        """The whole request to one group, its answer passed through."""
        group = self.groups[plan.single]  # type: ignore[index]
        self.m_queries.labels(group.name).inc(len(plan.steps))
        # Always as a POST with the (maybe rewritten: generated ids) statements in the
        # body; ``q`` is dropped from the query string, every other flag passes through.
        flags = [(k, v) for k, v in pairs if k != "q"]
        target = path + ("?" + urlencode(flags) if flags else "")
        to_primary = write or options.level != "none"
        try:
            reply = await group.send("POST", target, _encode(plan.steps), to_primary=to_primary)
        except (GroupDown, OutcomeUnknown):
            self.m_errors.labels(group.name).inc()
            raise
        extra = f"{LSN_HEADER}: {reply.lsn}\r\n".encode() if reply.lsn else b""
        return reply.status, (reply.content_type or "application/json").encode(), extra, reply.body

    async def _scatter(self, plan: Plan, options: Options, write: bool,
                       started: float) -> Answer:  # fmt: skip
        """Statement by statement; each over its groups in parallel, then merged."""
        results: list[Any] = []
        for step in plan.steps:
            results.append(await self._run_step(step, options, write))
        doc_results = [protocol.result_json(_as_result(r), options) for r in results]
        doc: dict[str, Any] = {"results": doc_results}
        if options.timings:
            doc["time"] = time.perf_counter() - started
        return 200, JSON, b"", protocol.dumps(doc, options.pretty)

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
        bodies = {
            name: None if sql is None else _encode_statement(sql, step.params)
            for name, sql in self.resharder.excluding_old_copies(step).items()
        } if step.fan_out else {}  # fmt: skip

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

    # -- status -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "map": self.router.map.describe(),
            **self.resharder.status(),
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
        # ``writable``, ``epoch`` and ``api_addr`` as a store primary reports them: a store
        # client looking for the primary finds the router, where every write goes.
        node = {"writable": True, "epoch": 0, "role": "router",
                "api_addr": format_address(self._listener.sockets[0].getsockname())}  # fmt: skip
        doc = {"http": {"bind_addr": request.host}, "store": {"node_id": self.runtime.name},
               "scalelab": {**self.status(), **node}}  # fmt: skip
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

    # -- resharding (resharder.py) ---------------------------------------------------

    async def admin_reshard(self, request: web.Request):
        """``POST /admin/reshard``: see ``Resharder.reshard``."""
        status, doc = await self.resharder.reshard(await read_json(request))
        return web.json_response(doc, status=status)


def _read_your_writes_at_primary(
    pairs: list[tuple[str, str]], options: Options
) -> tuple[list[tuple[str, str]], Options]:
    """A read's ``min_lsn`` made into a read at each group's primary.

    The position a client holds came from one group's log (the group of its last write,
    passed back in ``X-Scalelab-Lsn``); another group's log is not comparable, and a
    replica there may never reach that number. A group's primary holds every write it
    acknowledged, so reading there keeps read-your-writes on every group, at the price of
    the replicas for such reads.
    """
    level = "weak" if options.level == "none" else options.level
    pairs = [(k, v) for k, v in pairs if k not in ("min_lsn", "level")] + [("level", level)]
    return pairs, dataclasses.replace(options, min_lsn=None, level=level)


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


def _refusal(message: str, index: int, count: int, options: Options) -> Answer:
    results = [
        {"error": message if i == index else
         f"not run: statement {index} of this request was refused by the shard router"}
        for i in range(count)
    ]  # fmt: skip
    return 200, JSON, b"", protocol.dumps({"results": results}, options.pretty)


def _json(doc: Any, status: int = 200) -> Answer:
    return status, JSON, b"", orjson.dumps(doc)


def _task_answer(task: asyncio.Future) -> Answer:
    """The fast front's answer from a finished request task (a bug is a 500, not a
    connection left waiting)."""
    if task.cancelled():
        return _json({"error": "request cancelled (router stopping)"}, 503)
    exc = task.exception()
    if exc is not None:
        return _json({"error": f"router error: {exc!r}"}, 500)
    return task.result()
