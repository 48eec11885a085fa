"""The web tier's asyncio shell: aiohttp.web routes wired to storage, cache and sessions.

Everything interesting is elsewhere and swappable: the documents (``protocol.py``), the
database (``storage.py``), the cache (``cache.py``) and the cache-aside policy over both
(``repository.py``), sessions (``sessions.py``), static assets (``static.py``) and the
capacity model (``components.common.admission``). This module only parses flags, builds those from
them, and maps HTTP requests onto them.

Routes (the chapter's API)::

    GET    /users/{id}      the user document             200 | 404
    POST   /users           create from a JSON body       201 + Location | 400 | 413 | 422
    PUT    /users/{id}      replace (full document)       200 | 404 | 400 | 413 | 422
    DELETE /users/{id}      delete                        204 | 404
    POST   /login           {"id": N} -> session cookie   200 | 401 | 422
    GET    /me              the session's user            200 | 401
    POST   /logout          end the session               204
    GET    /static/{path}   assets with validators        200 | 304 | 404
    GET    /health          200, 503 while draining (also on the admin port)

    POST   /photos                  publish a photo job   202 + Location | 400 | 503
    GET    /photos/{id}             its state (photos.py) 200 | 404
    GET    /photos/{id}/thumbnail   the stored result     200 | 304 | 404 (not done yet)
    PUT    /photos/{id}/thumbnail   a worker stores it    200 | 400 | 404 | 409 | 411 | 413
    POST   /photos/{id}/failure     a worker gave up      200 | 404

The photo routes need ``--queue HOST:PORT`` (the queued stage); without it they answer
503 naming the missing flag. ``POST /photos`` records the photo as pending, publishes
its job (``publisher.py``: one long-lived connection, bounded waits) and answers 202 only
after the queue acknowledged the put; a queue that is down or silent costs a 503 with
``Retry-After`` (the photo is then marked failed, "not queued"), never a hang. The
thumbnail ``PUT`` is idempotent, so the queue's at-least-once delivery is harmless, and
its body is bounded by the size the job implies (at most ``photo.MAX_THUMBNAIL_BYTES``),
read past aiohttp's ``--max-body-bytes`` bound, which is for JSON documents. The two
routes workers call are for workers only: with ``--worker-token T`` they require
``Authorization: Bearer T`` (401 otherwise), as a real deployment would put them on an
internal listener or behind service credentials. ``POST /admin/photos-republish`` (on
the admin port) publishes again the jobs of photos stuck pending, e.g. after a queue
without ``-b`` lost them: safe, since storing is idempotent.

Every error is JSON, ``{"error": "..."}`` plus ``"field"`` for a 422. One middleware
does the per-request bookkeeping: admission (503 + ``Retry-After`` over capacity, see
``components.common.admission``), the emulated service time, the in-flight gauge used by the drain, and
the request counter and latency histogram labelled by *route pattern* (``/users/{id}``),
never the raw path, so metric cardinality stays bounded whatever clients send.

Connections are bounded too (``--max-connections``): aiohttp has no such limit, so we
create the listening socket ourselves around aiohttp's protocol factory
(``runner.server``) and answer a connection beyond the bound with one canned 503 and a
close, the way a server that has run out of workers sheds load before parsing anything.

Drain (SIGTERM): close the listening socket, answer requests still arriving on open
keep-alive connections with ``Connection: close``, and wait until no request is in
flight; then ``stop`` closes idle connections, the cache and the database.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import hmac
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import orjson
from aiohttp import web

from components.common import Service, admission
from components.common.admin import json_response as admin_json
from components.common.admin import read_json as admin_read_json
from components.common.cli import format_address, host_port, non_negative_float, non_negative_int
from components.worker import photo

from .cache import open_cache
from .consistency import COOKIE_MAX_AGE_S, LAST_WRITE_LSN, parse_position
from .consistency import COOKIE_NAME as LSN_COOKIE
from .photos import StoreOutcome, bounded_error, photo_document, photo_location
from .protocol import (
    ApiError,
    ValidationError,
    error_body,
    parse_login,
    parse_user,
    user_document,
    user_id_from_text,
)
from .publisher import JobPublisher, QueueUnavailable
from .repository import RepositoryMetrics, UserRepository
from .sessions import COOKIE_NAME, SessionsUnavailable, open_sessions, parse_sessions_spec
from .static import DEFAULT_ROOT, StaticFiles, etag_matches, is_not_modified
from .storage import SYNCHRONOUS_MODES, DatabaseUnavailable, open_store, parse_db_spec

DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_CACHE_SPEC = "local:64"
#: Route label for requests that matched no route (404s from the router, 405s).
UNMATCHED_ROUTE = "unmatched"
HEALTH_ROUTE = "/health"
#: How long ``stop`` lets aiohttp wait for handlers; the drain has already waited.
SHUTDOWN_TIMEOUT_S = 1.0

JSON = "application/json"
DEFAULT_MAX_CONNECTIONS = 1024
_REFUSAL_BODY = b'{"error":"too many connections, retry later"}'
#: The whole answer to a connection beyond ``--max-connections``, sent before reading.
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
    % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)
#: User documents are one user's data and change on any write: a browser may keep them but
#: must revalidate, and a shared cache (the edge, a CDN) must not store them (RFC 9111
#: §5.2.2.7 ``private``), so an edge in front of the site passes the API through.
USER_DOCUMENT_HEADERS = {"Cache-Control": "private, no-cache"}
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
#: The answer to a thumbnail store that did not succeed, by outcome (photos.StoreOutcome);
#: STORED and UNCHANGED are both 200, which is what makes a redelivered job harmless.
STORE_REFUSALS = {
    StoreOutcome.MISSING: (404, "no such photo"),
    StoreOutcome.WRONG_SIZE: (400, "thumbnail is not the size the job implies"),
    StoreOutcome.CONFLICT: (409, "photo already done with a different thumbnail"),
}
#: The publisher retries the queue within its backoff cap (publisher.RECONNECT_MAX_S).
QUEUE_RETRY_AFTER = {"Retry-After": "1"}
THUMBNAIL_CACHE_CONTROL = "public, max-age=31536000, immutable"
#: ``/admin/photos-republish`` defaults: how old a pending photo must be, and how many at once.
REPUBLISH_AGE_S = 300
MAX_REPUBLISH_PHOTOS = 1000
NO_QUEUE = "photo processing needs a queue: start the web tier with --queue HOST:PORT"


def _db_spec(text: str) -> str:
    try:
        parse_db_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _cache_spec(text: str) -> str:
    try:
        open_cache(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


class RefuseConnection(asyncio.Protocol):
    """What a connection over the bound gets: one 503, then the socket is closed."""

    def connection_made(self, transport) -> None:
        transport.write(REFUSAL)
        transport.close()


def json_error(status: int, message: str, field: str | None = None, headers=None) -> web.Response:
    return web.Response(
        body=error_body(message, field), status=status, content_type=JSON, headers=headers
    )


class WebService(Service):
    component = "web"
    default_port = 8000
    description = "The web tier: the chapter's user API on aiohttp, with database, cache, sessions."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("web tier")
        group.add_argument(
            "--db",
            type=_db_spec,
            default=None,
            help="database: sqlite:PATH (default: <data-dir>/<name>.db, or a temporary file)"
            " or store:HOST:PORT[,HOST:PORT...] (the store tier: primary and replicas)",
        )
        group.add_argument("--db-timeout-s", type=non_negative_float, default=5.0,
                           help="deadline of one call to the store tier (0: none)")  # fmt: skip
        group.add_argument("--sqlite-synchronous", choices=SYNCHRONOUS_MODES, default="full",
                           help="SQLite fsync policy: full fsyncs every commit")  # fmt: skip
        group.add_argument("--seed-users", type=non_negative_int, default=1000,
                           help="make sure users 1..N exist (deterministic data)")  # fmt: skip
        group.add_argument("--cache", type=_cache_spec, default=DEFAULT_CACHE_SPEC,
                           help="cache: local:MB (in-process LRU), memcached:HOST:PORT,..."
                           " (the shared cache tier) or none")  # fmt: skip
        group.add_argument("--cache-ttl-s", type=non_negative_float, default=60.0,
                           help="TTL of cached user documents (0: cache nothing)")  # fmt: skip
        group.add_argument("--max-body-bytes", type=non_negative_int,
                           default=DEFAULT_MAX_BODY_BYTES, help="largest request body (413 above)")  # fmt: skip
        group.add_argument("--sessions", default="memory", metavar="SPEC",
                           help="where sessions live: memory (this process), cache (the "
                           "--cache memcached nodes) or memcached:HOST:PORT,... (shared "
                           "storage: any web server serves any session)")  # fmt: skip
        group.add_argument("--session-ttl-s", type=non_negative_float, default=3600.0,
                           help="idle time after which a session expires")  # fmt: skip
        group.add_argument("--max-sessions", type=non_negative_int, default=100_000,
                           help="sessions kept in memory (least recently used dropped)")  # fmt: skip
        group.add_argument("--static-dir", default=str(DEFAULT_ROOT),
                           help="directory served under /static/")  # fmt: skip
        group.add_argument("--static-max-age-s", type=non_negative_int, default=3600,
                           help="Cache-Control max-age of static assets")  # fmt: skip
        group.add_argument("--queue", type=host_port, default=None,
                           help="queue HOST:PORT for photo jobs (without it /photos is 503)")  # fmt: skip
        group.add_argument("--queue-tube", default="photos", help="tube photo jobs go to")
        group.add_argument("--queue-timeout-s", type=non_negative_float, default=2.0,
                           help="bound on connecting to the queue and on one put")  # fmt: skip
        group.add_argument("--photo-ttr-s", type=non_negative_int, default=60,
                           help="time-to-run of a photo job (the queue's TTR)")  # fmt: skip
        group.add_argument("--worker-token", default=None,
                           help="required as 'Authorization: Bearer T' on the routes workers "
                                "call (PUT .../thumbnail, POST .../failure)")  # fmt: skip
        admission.add_arguments(parser, unit="requests")
        group.add_argument("--max-connections", type=non_negative_int,
                           default=DEFAULT_MAX_CONNECTIONS,
                           help="open client connections; beyond it a 503 and close")  # fmt: skip

    @classmethod
    def check_arguments(cls, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if args.session_ttl_s <= 0:
            parser.error("--session-ttl-s must be > 0")
        if args.max_sessions < 1:
            parser.error("--max-sessions must be >= 1")
        try:
            parse_sessions_spec(args.sessions, args.cache)
        except ValueError as exc:
            parser.error(f"--sessions: {exc}")
        if not Path(args.static_dir).is_dir():
            parser.error(f"--static-dir {args.static_dir!r} is not a directory")
        if args.queue_timeout_s <= 0:
            parser.error("--queue-timeout-s must be > 0")

    def __init__(self, args, runtime) -> None:
        super().__init__(args, runtime)
        self.store = None
        self.cache = None
        self.sessions = None
        self.publisher: JobPublisher | None = None
        self.runner: web.AppRunner | None = None
        self.listener: asyncio.Server | None = None
        self.refused_connections = None
        self.draining = False
        self.inflight = 0
        self._idle: asyncio.Future | None = None
        self._temp_dir: str | None = None
        self._request_children: dict[tuple[str, str, int], object] = {}
        self._duration_children: dict[str, object] = {}

    # -- lifecycle ---------------------------------------------------------------------

    def _db_spec(self) -> str:
        if self.args.db:
            return self.args.db
        if self.args.data_dir:
            return f"sqlite:{Path(self.args.data_dir) / (self.args.name + '.db')}"
        self._temp_dir = tempfile.mkdtemp(prefix=f"scalelab-{self.args.name}-")
        return f"sqlite:{Path(self._temp_dir) / 'web.db'}"

    async def start(self) -> dict[str, str]:
        args = self.args
        spec = self._db_spec()
        try:
            self.store = await open_store(spec, sqlite_synchronous=args.sqlite_synchronous,
                                          db_timeout_s=args.db_timeout_s or None)  # fmt: skip
            started = time.monotonic()
            written = await self.store.seed(args.seed_users)
        except (sqlite3.Error, ValueError, DatabaseUnavailable) as exc:
            # The runner turns OSError into a clean "start_failed" log line and exit 1.
            raise OSError(f"cannot open database {spec}: {exc}") from exc
        self.log.info("database_ready", db=spec, seed_users=args.seed_users, seeded_now=written,
                      seconds=round(time.monotonic() - started, 3))  # fmt: skip
        self.cache = open_cache(args.cache)
        self.sessions = open_sessions(args.sessions, args.cache, args.session_ttl_s,
                                      args.max_sessions)  # fmt: skip
        self.static = StaticFiles(args.static_dir)
        self.static_headers = {"Cache-Control": f"public, max-age={args.static_max_age_s}"}
        self.admission = admission.Admission.from_args(args)
        self.retry_after = self.admission.retry_after
        self._register_metrics()
        self.repository = UserRepository(
            self.store,
            self.cache,
            args.cache_ttl_s,
            RepositoryMetrics.from_counters(
                self.db_queries, self.cache_hits, self.cache_misses, self.cache_errors
            ),
        )
        self.runtime.admin.register("cache-clear", self._admin_cache_clear)
        self.runtime.admin.register("photos-republish", self._admin_photos_republish)
        if args.queue is not None:
            host, port = args.queue
            self.publisher = JobPublisher(host, port, args.queue_tube,
                                          timeout_s=args.queue_timeout_s, ttr_s=args.photo_ttr_s)  # fmt: skip

        app = web.Application(client_max_size=args.max_body_bytes,
                              middlewares=[self._make_middleware()])  # fmt: skip
        app.router.add_get("/users/{id}", self.get_user)
        app.router.add_put("/users/{id}", self.put_user)
        app.router.add_delete("/users/{id}", self.delete_user)
        app.router.add_post("/users", self.post_user)
        app.router.add_post("/login", self.login)
        app.router.add_get("/me", self.me)
        app.router.add_post("/logout", self.logout)
        app.router.add_get("/static/{path:.+}", self.get_static)
        app.router.add_post("/photos", self.post_photo)
        app.router.add_get("/photos/{id}", self.get_photo)
        app.router.add_get("/photos/{id}/thumbnail", self.get_thumbnail)
        app.router.add_put("/photos/{id}/thumbnail", self.put_thumbnail)
        app.router.add_post("/photos/{id}/failure", self.post_failure)
        app.router.add_get(HEALTH_ROUTE, self.get_health)
        app.router.add_get("/", self.index)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                    shutdown_timeout=SHUTDOWN_TIMEOUT_S)  # fmt: skip
        await self.runner.setup()
        loop = asyncio.get_running_loop()
        self.listener = await loop.create_server(
            self._protocol_for_new_connection, args.host, args.port, reuse_address=True
        )
        return {"main": format_address(self.listener.sockets[0].getsockname())}

    def _protocol_for_new_connection(self) -> asyncio.BaseProtocol:
        # aiohttp's factory of one RequestHandler per connection. A handler joins
        # ``connections`` in connection_made, just after this call, so a burst accepted in
        # one loop iteration may overshoot the bound by that burst: bounded all the same.
        server = self.runner.server
        if len(server.connections) >= self.args.max_connections:
            self.refused_connections.inc()
            return RefuseConnection()
        return server()

    async def drain(self) -> None:
        self.draining = True
        if self.listener is not None:
            self.listener.close()  # stop accepting; open connections stay
            self.listener = None
        if self.inflight:
            self._idle = asyncio.get_running_loop().create_future()
            await self._idle

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.runner is not None:
            await self.runner.cleanup()  # closes idle keep-alive connections
            self.runner = None
        if self.cache is not None:
            await self.cache.close()
        if self.sessions is not None:
            await self.sessions.close()
        if self.publisher is not None:
            await self.publisher.close()
        if self.store is not None:
            await self.store.close()
            self.store = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    def health(self) -> tuple[bool, str]:
        return True, "ok"

    # -- metrics and the per-request middleware ----------------------------------------

    def _register_metrics(self) -> None:
        m = self.metrics
        self.requests = m.counter("scalelab_web_requests_total", "HTTP requests answered",
                                  ["route", "method", "status"])  # fmt: skip
        self.durations = m.histogram("scalelab_web_request_duration_seconds",
                                     "Time from routing to response, by route", ["route"])  # fmt: skip
        self.db_queries = m.counter("scalelab_web_db_queries_total", "Database queries", ["kind"])
        self.cache_hits = m.counter(
            "scalelab_web_cache_hits_total", "User lookups the cache answered"
        )
        self.cache_misses = m.counter(
            "scalelab_web_cache_misses_total", "User lookups the cache missed"
        )
        self.session_errors = m.counter(
            "scalelab_web_session_store_errors_total",
            "Requests answered 503: the shared session store could not answer",
        )
        self.cache_errors = m.counter(
            "scalelab_web_cache_errors_total", "Cache calls that failed (served from the database)"
        )
        self.inflight_gauge = m.gauge(
            "scalelab_web_inflight_requests", "Requests being handled now"
        )
        self.inflight_gauge.set_function(lambda: self.inflight)
        self.rejected = m.counter(
            "scalelab_web_rejected_total", "Requests refused over capacity (503)"
        )
        m.gauge("scalelab_web_queued_requests", "Requests waiting for a worker").set_function(
            lambda: self.admission.gate.queued
        )
        m.gauge("scalelab_web_sessions", "Sessions held in this process").set_function(
            lambda: self.sessions.count() or 0
        )
        self.db_errors = m.counter(
            "scalelab_web_db_unavailable_total", "Requests answered 503: the database could not"
        )
        m.gauge(
            "scalelab_web_cache_nodes_down", "Cache tier nodes taken off the ring"
        ).set_function(lambda: self.cache.stats().get("nodes_down", 0))
        m.gauge("scalelab_web_cache_used_bytes", "Bytes held by the in-process cache").set_function(
            lambda: self.cache.stats().get("used_bytes", 0)
        )
        self.refused_connections = m.counter(
            "scalelab_web_refused_connections_total", "Connections refused over --max-connections"
        )
        m.gauge("scalelab_web_connections", "Open client connections").set_function(
            lambda: len(self.runner.server.connections) if self.runner and self.runner.server else 0
        )
        for kind in ("read", "write"):
            self.db_queries.labels(kind)
        self.photos_published = m.counter(
            "scalelab_web_photos_published_total", "Photo jobs the queue acknowledged"
        )
        self.publish_errors = m.counter(
            "scalelab_web_photo_publish_errors_total", "Photo jobs not published (answered 503)"
        )
        self.photos_republished = m.counter(
            "scalelab_web_photos_republished_total", "Jobs of stuck pending photos published again"
        )
        stored = m.counter("scalelab_web_thumbnails_stored_total",
                           "Thumbnail stores by outcome (unchanged: a redelivered job)",
                           ["outcome"])  # fmt: skip
        self.thumbnails_stored = {outcome: stored.labels(str(outcome)) for outcome in StoreOutcome}
        m.gauge(
            "scalelab_web_queue_connected", "1 while the queue connection is open"
        ).set_function(lambda: int(self.publisher is not None and self.publisher.connected))

    def _count(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in KNOWN_METHODS:
            method = "other"  # any token is a valid method; labels must stay bounded
        key = (route, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, method, status)
        child.inc()
        duration = self._duration_children.get(route)
        if duration is None:
            duration = self._duration_children[route] = self.durations.labels(route)
        duration.observe(seconds)

    def _make_middleware(self):
        capacity = self.admission
        gated = capacity.enabled  # no limit, no service time: skip its coroutine (hot path)
        perf_counter = time.perf_counter
        # Read-your-writes (consistency.py) only matters for a replicated database.
        tracks_lsn = self.args.db is not None and self.args.db.startswith("store:")

        @web.middleware
        async def bookkeeping(request: web.Request, handler) -> web.StreamResponse:
            started = perf_counter()
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else UNMATCHED_ROUTE
            self.inflight += 1
            if tracks_lsn:
                seen = parse_position(request.cookies.get(LSN_COOKIE))
                LAST_WRITE_LSN.set(seen)
            try:
                if route == HEALTH_ROUTE or not gated:
                    response = await handler(request)
                elif not await capacity.admit():  # a worker held for the service time, or full
                    self.rejected.inc()
                    response = json_error(
                        503, "over capacity, retry later", headers=self.retry_after
                    )
                else:
                    try:
                        response = await handler(request)
                    finally:
                        capacity.release()
            except ApiError as exc:
                response = json_error(exc.status, exc.message, exc.field)
            except ValidationError as exc:
                response = json_error(422, exc.message, exc.field)
            except DatabaseUnavailable:
                # A failover in progress, or the store down: worth retrying, not a bug.
                self.db_errors.inc()
                response = json_error(503, "database unavailable, retry later",
                                      headers=self.retry_after)  # fmt: skip
            except SessionsUnavailable:
                # The shared session store did not answer within its deadline: we cannot
                # tell a logged-in user from a stranger, so neither 200 nor 401 is true.
                self.session_errors.inc()
                response = json_error(503, "session store unavailable, retry later",
                                      headers=self.retry_after)  # fmt: skip
            except web.HTTPException as exc:
                # The router's 404 and 405, aiohttp's 413: same JSON shape as our own errors.
                headers = {k: exc.headers[k] for k in ("Allow", "Location") if k in exc.headers}
                response = json_error(exc.status, exc.reason.lower(), headers=headers)
            except Exception as exc:
                self.log.error("handler_failed", route=route, method=request.method,
                               error=repr(exc))  # fmt: skip
                response = json_error(500, "internal error")
            finally:
                self.inflight -= 1
                if self._idle is not None and self.inflight == 0 and not self._idle.done():
                    self._idle.set_result(None)
            if self.draining:
                response.force_close()
            if tracks_lsn and (lsn := LAST_WRITE_LSN.get()) > seen:
                response.set_cookie(LSN_COOKIE, str(lsn), max_age=COOKIE_MAX_AGE_S, path="/",
                                    httponly=True, samesite="Lax")  # fmt: skip
            self._count(route, request.method, response.status, perf_counter() - started)
            return response

        return bookkeeping

    # -- handlers ----------------------------------------------------------------------

    async def read_json(self, request: web.Request):
        """The body as JSON: 413 over the bound, 400 when empty or not JSON."""
        length = request.content_length
        if length is not None and length > self.args.max_body_bytes:
            raise ApiError(413, f"body larger than {self.args.max_body_bytes} bytes")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, f"body larger than {self.args.max_body_bytes} bytes") from None
        if not raw.strip():
            raise ApiError(400, "empty body: expected a JSON object")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"invalid JSON: {exc}") from None

    @staticmethod
    def _path_id(request: web.Request) -> int:
        user_id = user_id_from_text(request.match_info["id"])
        if user_id is None:
            raise ApiError(404, "no such user")
        return user_id

    async def get_user(self, request: web.Request) -> web.Response:
        body = await self.repository.get_json(self._path_id(request))
        if body is None:
            raise ApiError(404, "no such user")
        return web.Response(body=body, content_type=JSON, headers=USER_DOCUMENT_HEADERS)

    async def post_user(self, request: web.Request) -> web.Response:
        user = parse_user(await self.read_json(request))
        user_id = await self.repository.create(user)
        return web.Response(body=orjson.dumps(user_document(user_id, user)), status=201,
                            content_type=JSON, headers={"Location": f"/users/{user_id}"})  # fmt: skip

    async def put_user(self, request: web.Request) -> web.Response:
        user_id = self._path_id(request)
        user = parse_user(await self.read_json(request), path_id=user_id)
        if not await self.repository.replace(user_id, user):
            raise ApiError(404, "no such user")
        return web.Response(body=orjson.dumps(user_document(user_id, user)), content_type=JSON)

    async def delete_user(self, request: web.Request) -> web.Response:
        if not await self.repository.delete(self._path_id(request)):
            raise ApiError(404, "no such user")
        return web.Response(status=204)

    async def login(self, request: web.Request) -> web.Response:
        user_id = parse_login(await self.read_json(request))
        body = await self.repository.get_json(user_id)
        if body is None:
            raise ApiError(401, "unknown user", "id")
        token = await self.sessions.create(user_id)
        response = web.Response(body=body, content_type=JSON)
        # No Max-Age: a browser-session cookie; the server-side sliding TTL decides expiry.
        response.set_cookie(COOKIE_NAME, token, path="/", httponly=True, samesite="Lax")
        return response

    async def me(self, request: web.Request) -> web.Response:
        token = request.cookies.get(COOKIE_NAME)
        user_id = await self.sessions.user_for(token) if token else None
        if user_id is None:
            raise ApiError(401, "not logged in")
        body = await self.repository.get_json(user_id)
        if body is None:  # the user was deleted since logging in
            await self.sessions.delete(token)
            raise ApiError(401, "not logged in")
        return web.Response(body=body, content_type=JSON, headers=USER_DOCUMENT_HEADERS)

    async def logout(self, request: web.Request) -> web.Response:
        token = request.cookies.get(COOKIE_NAME)
        if token:
            await self.sessions.delete(token)
        response = web.Response(status=204)
        response.del_cookie(COOKIE_NAME, path="/")
        return response

    async def get_static(self, request: web.Request) -> web.Response:
        asset = self.static.lookup(request.match_info["path"])
        if asset is None:
            raise ApiError(404, "no such asset")
        headers = {**self.static_headers, "ETag": asset.etag, "Last-Modified": asset.last_modified}
        if is_not_modified(request.headers.get("If-None-Match"),
                           request.headers.get("If-Modified-Since"), asset.etag, asset.mtime_s):  # fmt: skip
            return web.Response(status=304, headers=headers)
        charset = "utf-8" if asset.content_type.startswith("text/") else None
        return web.Response(body=asset.content, content_type=asset.content_type,
                            charset=charset, headers=headers)  # fmt: skip

    # -- photos (photos.py) ---------------------------------------------------------------

    def _photo_id(self, request: web.Request) -> int:
        if self.publisher is None:
            raise ApiError(503, NO_QUEUE)
        photo_id = user_id_from_text(request.match_info["id"])  # the same 1..2**63-1 ids
        if photo_id is None:
            raise ApiError(404, "no such photo")
        return photo_id

    async def post_photo(self, request: web.Request) -> web.Response:
        if self.publisher is None:
            raise ApiError(503, NO_QUEUE)
        doc = await self.read_json(request)
        try:
            if isinstance(doc, dict) and "photo" in doc:
                raise photo.BadJob("photo is assigned by the server")
            job = photo.job_from_doc(doc)
        except photo.BadJob as exc:
            raise ApiError(400, str(exc)) from None
        photo_id = await self.store.create_photo(job)
        try:
            job_id = await self._publish(dataclasses.replace(job, photo=photo_id))
        except QueueUnavailable as exc:
            # Not queued, so no worker will ever finish it; if the outcome was unknown (a
            # timeout) and the job did land, a worker's store still makes it done.
            await self.store.fail_photo(photo_id, bounded_error(f"not queued: {exc}"))
            self.log.warning("photo_not_published", photo=photo_id, error=str(exc))
            return json_error(503, "queue unavailable, retry later", headers=QUEUE_RETRY_AFTER)
        location = photo_location(photo_id)
        return web.Response(body=orjson.dumps({"id": photo_id, "state": "pending", "job": job_id,
                                               "location": location}),
                            status=202, content_type=JSON, headers={"Location": location})  # fmt: skip

    async def _publish(self, job: photo.PhotoJob) -> int:
        try:
            job_id = await self.publisher.publish(photo.encode_job(job))
        except QueueUnavailable:
            self.publish_errors.inc()
            raise
        self.photos_published.inc()
        return job_id

    async def _admin_photos_republish(self, request: web.Request):
        """``POST /admin/photos-republish {"older_than_s": 60, "limit": 1000}``: publish
        again the jobs of photos still pending that long after they were created (see
        ``photos.py``: safe, because storing a result is idempotent)."""
        if self.publisher is None:
            return json_error(503, NO_QUEUE)
        body = await admin_read_json(request)
        body = body if isinstance(body, dict) else {}
        older_than_s = body.get("older_than_s", REPUBLISH_AGE_S)
        limit = body.get("limit", MAX_REPUBLISH_PHOTOS)
        if not isinstance(older_than_s, int | float) or isinstance(older_than_s, bool) \
                or not 0 <= older_than_s < float("inf"):  # fmt: skip
            return json_error(400, "older_than_s must be a number >= 0")
        if not isinstance(limit, int) or isinstance(limit, bool) \
                or not 1 <= limit <= MAX_REPUBLISH_PHOTOS:  # fmt: skip
            return json_error(400, f"limit must be 1..{MAX_REPUBLISH_PHOTOS}")
        try:
            stuck = await self.store.pending_photos(time.time() - older_than_s, limit)
        except DatabaseUnavailable:
            return json_error(503, "database unavailable, retry later")
        republished = 0
        error = None
        for found in stuck:  # one at a time: an operator's action, not a hot path
            try:
                await self._publish(found.job)
            except QueueUnavailable as exc:
                error = f"queue unavailable: {exc}"
                break
            republished += 1
            self.photos_republished.inc()
        self.log.info("photos_republished", count=republished, pending=len(stuck), error=error)
        answer = {"republished": republished, "pending": len(stuck)}
        return answer if error is None else admin_json({**answer, "error": error}, 503)

    async def get_photo(self, request: web.Request) -> web.Response:
        found = await self.store.get_photo(self._photo_id(request))
        if found is None:
            raise ApiError(404, "no such photo")
        return web.Response(body=orjson.dumps(photo_document(found)), content_type=JSON,
                            headers=USER_DOCUMENT_HEADERS)  # fmt: skip

    async def get_thumbnail(self, request: web.Request) -> web.Response:
        found = await self.store.get_thumbnail(self._photo_id(request))
        if found is None:
            raise ApiError(404, "no thumbnail (no such photo, or not processed yet)")
        thumbnail, digest = found
        # A done photo's thumbnail never changes (photos.py refuses other bytes), so its
        # digest is a strong validator and a cache may keep it for good (RFC 8246).
        headers = {"ETag": f'"{digest}"', "Cache-Control": THUMBNAIL_CACHE_CONTROL}
        if etag_matches(request.headers.get("If-None-Match", ""), headers["ETag"]):
            return web.Response(status=304, headers=headers)
        return web.Response(body=thumbnail, content_type="application/octet-stream",
                            headers=headers)  # fmt: skip

    def _check_worker(self, request: web.Request) -> None:
        """Only workers store results: with ``--worker-token``, they must show it."""
        token = self.args.worker_token
        if token is None:
            return
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credential.strip().encode(), token.encode()
        ):
            raise ApiError(401, "worker token required")

    async def put_thumbnail(self, request: web.Request) -> web.Response:
        photo_id = self._photo_id(request)
        self._check_worker(request)
        length = request.content_length
        if length is None:
            raise ApiError(411, "Content-Length required")
        if length > photo.MAX_THUMBNAIL_BYTES:
            raise ApiError(413, f"thumbnail larger than {photo.MAX_THUMBNAIL_BYTES} bytes")
        try:
            # Read straight from the stream: request.read() is bound by --max-body-bytes.
            thumbnail = await request.content.readexactly(length)
        except asyncio.IncompleteReadError:
            raise ApiError(400, "body shorter than its Content-Length") from None
        digest = hashlib.sha256(thumbnail).hexdigest()
        outcome = await self.store.store_thumbnail(photo_id, thumbnail, digest)
        self.thumbnails_stored[outcome].inc()
        if outcome in STORE_REFUSALS:
            raise ApiError(*STORE_REFUSALS[outcome])
        return web.Response(body=orjson.dumps({"id": photo_id, "state": "done", "digest": digest,
                                               "outcome": str(outcome)}),
                            content_type=JSON)  # fmt: skip

    async def post_failure(self, request: web.Request) -> web.Response:
        photo_id = self._photo_id(request)
        self._check_worker(request)
        doc = await self.read_json(request)
        error = doc.get("error") if isinstance(doc, dict) else None
        if not isinstance(error, str) or not error.strip():
            raise ApiError(400, 'expected {"error": "why the job failed"}')
        found = await self.store.fail_photo(photo_id, bounded_error(error))
        if found is None:
            raise ApiError(404, "no such photo")
        return web.Response(body=orjson.dumps(photo_document(found)), content_type=JSON)

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/static/index.html"})

    async def get_health(self, request: web.Request) -> web.Response:
        ok, detail = (False, "draining") if self.draining else self.health()
        return web.Response(body=orjson.dumps({"status": "ok" if ok else detail}),
                            status=200 if ok else 503, content_type=JSON)  # fmt: skip

    async def _admin_cache_clear(self, request: web.Request):
        """``POST /admin/cache-clear``: empty the cache (to measure a cold start)."""
        await self.cache.clear()
        self.log.info("cache_cleared")
        return {"cleared": True}
