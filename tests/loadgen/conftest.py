"""A small aiohttp server for the load generator's tests, run in a background thread.

It counts every request it handles (the figure a closed-loop run must match), can stall
its whole event loop once for a set time after a set number of requests (what an open
loop must not hide), and serves ``/metrics`` in the Prometheus text format with a
hit/miss counter pair and a db-queries counter, driven by the keys it is asked for.
"""

from __future__ import annotations

import asyncio
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
