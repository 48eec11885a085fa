"""A small aiohttp server for the load generator's tests, run in a background thread.

It counts every request it handles (the figure a closed-loop run must match), can stall
its whole event loop once for a set time after a set number of requests (what an open
loop must not hide), and serves ``/metrics`` in the Prometheus text format with a
hit/miss counter pair and a db-queries counter, driven by the keys it is asked for.

For cookies it has sessions as the web tier has them (``POST /login`` with ``{"id": N}``
sets one, ``GET /me`` answers 401 without it) and ``/chain``: a request without a
``chain-*`` cookie opens a new chain ``A`` and gets ``chain-A=1``; a request with
``chain-A=k`` must carry the *latest* value set for ``A`` (else it is counted ``stale``)
and gets ``chain-A=k+1``; a request carrying two chains holds another user's cookie
(``leaked``). One user per chain, one request in flight per user: a jar shared by
users, or none, breaks the counts.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from aiohttp import web


class TestServer:
    def __init__(self) -> None:
        self.requests = 0
        self.hits = 0
        self.misses = 0
        self.db_queries = 0
        self.stall_after: int | None = None  # stall on the request with this number
        self.stall_s = 0.0
        self.stalled = False
        self.status = 200
        self.port = 0
        self.sessions: dict[str, int] = {}  # session token -> user id
        self.me = {200: 0, 401: 0}
        self.chains: dict[int, int] = {}  # chain -> latest step set
        self.chain_returns: dict[int, int] = {}  # chain -> requests that carried it
        self.stale = 0
        self.leaked = 0
        self.most_cookies = 0  # most cookies any request carried (/crumbs)
        self.landings = {True: 0, False: 0}  # /landing requests with / without "bounced"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.stall_after is not None and self.requests >= self.stall_after and not self.stalled:
            self.stalled = True
            time.sleep(self.stall_s)  # blocks the whole server, as a GC pause or a lock would
        await request.read()
        key = request.match_info.get("key")
        if key is not None:
            if int(key) % 4 == 0:
                self.misses += 1
                self.db_queries += 1
            else:
                self.hits += 1
        return web.Response(status=self.status, text="ok")

    async def _login(self, request: web.Request) -> web.Response:
        self.requests += 1
        user = json.loads(await request.read())["id"]
        token = f"t{len(self.sessions) + 1}"
        self.sessions[token] = user
        response = web.Response(text="ok")
        response.set_cookie("session", token, path="/", httponly=True)
        return response

    async def _me(self, request: web.Request) -> web.Response:
        self.requests += 1
        status = 200 if request.cookies.get("session") in self.sessions else 401
        self.me[status] += 1
        return web.Response(status=status, text="me")

    async def _chain(self, request: web.Request) -> web.Response:
        self.requests += 1
        carried = {k: v for k, v in request.cookies.items() if k.startswith("chain-")}
        if len(carried) > 1:
            self.leaked += 1  # this user holds another user's cookie
            return web.Response(text="leaked")
        if not carried:
            chain, step = len(self.chains) + 1, 0
        else:
            ((name, value),) = carried.items()
            chain, step = int(name[6:]), int(value)
            self.chain_returns[chain] = self.chain_returns.get(chain, 0) + 1
            if self.chains.get(chain) != step:
                self.stale += 1
        self.chains[chain] = step + 1
        response = web.Response(text="ok")
        response.set_cookie(f"chain-{chain}", str(step + 1), path="/")
        return response

    async def _crumbs(self, request: web.Request) -> web.Response:
        """Sets a cookie with a new name on every answer: a jar that never stops growing."""
        self.requests += 1
        self.most_cookies = max(self.most_cookies, len(request.cookies))
        response = web.Response(text="ok")
        response.set_cookie(f"crumb{self.requests}", "x", path="/")
        return response

    async def _bounce(self, request: web.Request) -> web.Response:
        """A redirect that sets a cookie, as a login form's 303 does."""
        self.requests += 1
        response = web.Response(status=303, headers={"Location": "/landing"})
        response.set_cookie("bounced", "1", path="/")
        return response

    async def _landing(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.landings["bounced" in request.cookies] += 1
        return web.Response(text="ok")

    async def _metrics(self, request: web.Request) -> web.Response:
        text = (
            "# HELP test_cache_hits_total Cache hits\n"
            "# TYPE test_cache_hits_total counter\n"
            f"test_cache_hits_total {self.hits}\n"
            "# TYPE test_cache_misses_total counter\n"
            f"test_cache_misses_total {self.misses}\n"
            "# TYPE scalelab_web_db_queries_total counter\n"
            f'scalelab_web_db_queries_total{{op="select"}} {self.db_queries}\n'
            "# TYPE test_requests_total counter\n"
            f"test_requests_total {self.requests}\n"
        )
        return web.Response(text=text, content_type="text/plain")

    def start(self) -> None:
        ready = threading.Event()

        async def serve() -> None:
            app = web.Application()
            app.router.add_get("/metrics", self._metrics)
            app.router.add_post("/login", self._login)
            app.router.add_get("/me", self._me)
            app.router.add_get("/chain", self._chain)
            app.router.add_get("/crumbs", self._crumbs)
            app.router.add_get("/bounce", self._bounce)
            app.router.add_get("/landing", self._landing)
            app.router.add_route("*", "/users/{key}", self._handle)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="test-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("test server did not start")

    def stop(self) -> None:
        assert self._loop is not None and self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def server():
    srv = TestServer()
    srv.start()
    yield srv
    srv.stop()
