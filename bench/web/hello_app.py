"""The baseline for ``compare_hello.py``: the barest aiohttp.web app, on uvloop.

``GET /`` answers ``Hello, World!``; no middleware, no access log. Whatever our web tier
costs beyond this is the price of routing a real API, metrics, admission and the cache.
Prints a ready line like a component's, ``{"event": "ready", "listen": {"main": "HOST:PORT"}}``,
on stdout once bound (port 0 = any).
"""

import asyncio
import sys

import orjson
import uvloop
from aiohttp import web

BODY = b"Hello, World!"


async def hello(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="text/plain")


async def serve(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()
    sys.stdout.write(
        orjson.dumps({"event": "ready", "listen": {"main": f"{bound[0]}:{bound[1]}"}}).decode()
        + "\n"
    )
    sys.stdout.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    uvloop.run(serve("127.0.0.1", port))
