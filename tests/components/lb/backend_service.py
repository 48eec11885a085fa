"""A small aiohttp web server to put behind the load balancer in tests.

It runs as its own process (``python -m backend_service``) through the component runtime,
so tests get a ready line, port 0 and a real ``kill -9``. Routes:

- ``GET /`` and ``/whoami``: the server's ``--name`` (which backend answered);
- ``GET /health``: 200, or 503 after ``POST /_sick`` (until ``POST /_well``);
- ``POST|PUT /echo``: the request body back, and the request's headers as JSON in
  ``X-Seen-Headers``;
- ``GET /headers``: the request's headers as JSON;
- ``GET /stream?mb=N``: N MiB streamed in 64 KiB pieces, chunked;
- ``GET /etag``: an ETag, 304 when ``If-None-Match`` matches;
- ``GET /slow?s=S``: answers after S seconds;
- ``GET /status/{code}``: an empty answer with that status;
- ``* /reset?on=NAME``: the server named NAME resets the connection without answering;
  others answer 200 with their name;
- ``GET /_stats``: how many requests this server has seen, and their paths.
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from components.common import Service, main
from components.common.cli import format_address

PIECE = b"x" * 65536


class TestBackend(Service):
    component = "testbackend"
    default_port = 0

    async def start(self):
        self.seen: list[str] = []
        self.sick = False
        self.served = self.metrics.counter("scalelab_testbackend_requests_total", "requests")
        app = web.Application(middlewares=[self.count], client_max_size=64 << 20)
        app.router.add_get("/", self.whoami)
        app.router.add_get("/whoami", self.whoami)
        app.router.add_get("/health", self.health_route)
        app.router.add_post("/_sick", self.make_sick)
        app.router.add_post("/_well", self.make_well)
        app.router.add_route("*", "/echo", self.echo)
        app.router.add_get("/headers", self.headers)
        app.router.add_get("/stream", self.stream)
        app.router.add_get("/etag", self.etag)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/status/{code}", self.status)
        app.router.add_get("/_stats", self.stats)
        app.router.add_route("*", "/reset", self.reset)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.args.host, self.args.port)
        await site.start()
        return {"main": format_address(site._server.sockets[0].getsockname())}

    async def stop(self):
        await self.runner.cleanup()

    @web.middleware
    async def count(self, request, handler):
        if request.path not in ("/health", "/_stats", "/_sick", "/_well"):
            self.seen.append(f"{request.method} {request.path_qs}")
            self.served.inc()
        return await handler(request)

    async def whoami(self, request):
        return web.Response(text=self.args.name)

    async def health_route(self, request):
        return web.Response(status=503 if self.sick else 200, text="health")

    async def make_sick(self, request):
        self.sick = True
        return web.Response(text="sick")

    async def make_well(self, request):
        self.sick = False
        return web.Response(text="well")

    async def echo(self, request):
        body = await request.read()
        seen = orjson.dumps({str(k): v for k, v in request.headers.items()}).decode()
        return web.Response(
            body=body, headers={"X-Seen-Headers": seen, "X-Backend": self.args.name}
        )

    async def headers(self, request):
        return web.json_response(
            {
                "headers": [[k, v] for k, v in request.headers.items()],
                "version": str(request.version),
            }
        )

    async def stream(self, request):
        mib = int(request.query.get("mb", "1"))
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(mib * 16):
            await response.write(PIECE)
        await response.write_eof()
        return response

    async def etag(self, request):
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.Response(text="versioned", headers={"ETag": '"v1"'})

    async def slow(self, request):
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.Response(text="slow " + self.args.name)

    async def status(self, request):
        return web.Response(status=int(request.match_info["code"]))

    async def reset(self, request):
        if request.query.get("on") == self.args.name:
            request.transport.abort()
            raise asyncio.CancelledError  # nothing more to say on this connection
        await request.read()
        return web.Response(text=self.args.name)

    async def stats(self, request):
        return web.json_response({"count": len(self.seen), "seen": self.seen})


if __name__ == "__main__":
    main(TestBackend)
