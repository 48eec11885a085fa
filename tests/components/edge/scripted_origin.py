"""A scriptable origin server for the edge's tests: aiohttp in a thread of the test process.

Each test puts a ``Route`` under its own path (status, fields, body, an ETag to validate
against, a delay) and reads back how many requests reached the origin and with which
fields. Running in a thread with its own loop lets one origin serve a whole test module
(the edge process is started once with its port) and lets ``stop()`` / ``start()`` take
the origin down and up again for the stale-if-error tests.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Route:
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: bytes = b"hello"
    #: Answer conditional requests matching this ETag with 304 (plus ``headers_304``).
    etag: str | None = None
    last_modified: str | None = None
    headers_304: dict = field(default_factory=dict)
    delay_s: float = 0.0
    #: Send the body with chunked coding instead of Content-Length.
    chunked: bool = False
    #: With ``chunked``: send the first half, then wait for this event before the rest
    #: (a slow origin whose end the test controls).
    gate: threading.Event | None = None
    #: Wait for this event before answering at all (requests pile up behind a fill).
    head_gate: threading.Event | None = None


class ScriptedOrigin:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = defaultdict(int)
        self.seen: dict[str, list[dict]] = defaultdict(list)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = 0
        self.runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def start(self) -> None:
        self._call(self._start())

    def stop(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        if self.runner is not None:
            self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        await self.runner.cleanup()
        self.runner = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key = request.path_qs
        self.hits[key] += 1
        seen = dict(request.headers)
        seen["_method"] = request.method
        seen["_body"] = await request.read()
        self.seen[key].append(seen)
        route = self.routes.get(key) or self.routes.get(request.path)
        if route is None:
            return web.Response(status=404, text="no route", headers={"Cache-Control": "no-store"})
        if route.delay_s:
            await asyncio.sleep(route.delay_s)
        if route.head_gate is not None:
            await asyncio.get_running_loop().run_in_executor(None, route.head_gate.wait, 10)
        headers = dict(route.headers)
        if route.etag:
            headers["ETag"] = route.etag
        if route.last_modified:
            headers["Last-Modified"] = route.last_modified
        headers.setdefault("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()))
        inm = request.headers.get("If-None-Match")
        ims = request.headers.get("If-Modified-Since")
        if (route.etag and inm == route.etag) or (
            route.last_modified and not inm and ims == route.last_modified
        ):
            headers.update(route.headers_304)
            return web.Response(status=304, headers=headers)
        if route.chunked:
            response = web.StreamResponse(status=route.status, headers=headers)
            response.enable_chunked_encoding()
            await response.prepare(request)
            half = len(route.body) // 2
            await response.write(route.body[:half])
            if route.gate is not None:
                opened = await asyncio.get_running_loop().run_in_executor(None, route.gate.wait, 10)
                if not opened:
                    raise ConnectionResetError("gate never opened")
            await response.write(route.body[half:])
            await response.write_eof()
            return response
        return web.Response(status=route.status, headers=headers, body=route.body)


class RawOrigin:
    """An origin that answers every request with fixed bytes and closes: broken framing."""

    def __init__(self, answer: bytes) -> None:
        import socket

        self.answer = answer
        #: When set to an Event: after the answer, hold the connection open until it is set.
        self.hold: threading.Event | None = None
        self.hits = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(65536)
                    if not piece:
                        break
                    data += piece
                self.hits += 1
                conn.sendall(self.answer)
                if self.hold is not None:
                    self.hold.wait(10)

    def close(self) -> None:
        self.sock.close()
