"""The admin listener: health, metrics and operator actions, apart from the public port.

Real deployments keep health checks, metrics scraping and operator actions off the port
that users reach (HAProxy's stats socket, memcached's separate stats, Kubernetes probes
on a side port). So does every scalelab server:

- ``GET /health``: 200 ``{"status": "ok"}`` while serving; 503 while draining or when the
  component reports itself unhealthy, so a load balancer stops sending before we stop;
- ``GET /metrics``: the Prometheus text exposition format (see ``metrics.py``);
- ``POST /admin/<op>`` (and ``GET`` where a component registers one): component actions
  such as purge, promote or reshard. With ``--admin-token T`` they require
  ``Authorization: Bearer T``, else 401.

The admin port is not a hot path, so it uses aiohttp.web for clarity rather than a codec
of our own.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from .metrics import CONTENT_TYPE, Registry

#: Largest admin request body accepted; admin operations carry small JSON documents.
MAX_ADMIN_BODY_BYTES = 1 << 20

AdminHandler = Callable[[web.Request], Awaitable[Any]]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


class AdminServer:
    def __init__(
        self,
        registry: Registry,
        health: Callable[[], tuple[bool, str]],
        token: str | None = None,
    ) -> None:
        self.registry = registry
        self._health = health
        self._token = token
        self._ops: dict[tuple[str, str], AdminHandler] = {}
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    def register(self, op: str, handler: AdminHandler, method: str = "POST") -> None:
        """Serve ``handler`` at ``METHOD /admin/<op>``.

        The handler gets the aiohttp request and returns either a ``web.Response`` or a
        JSON-serialisable value (sent as 200 application/json). Raise
        ``web.HTTPException`` subclasses for errors.
        """
        self._ops[(method.upper(), op)] = handler

    async def start(self, host: str, port: int) -> tuple[str, int]:
        app = web.Application(client_max_size=MAX_ADMIN_BODY_BYTES)
        app.router.add_get("/health", self._get_health)
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_route("*", "/admin/{op:.+}", self._admin_op)
        self._runner, self.address = await serve_app(app, host, port)
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _get_health(self, request: web.Request) -> web.Response:
        ok, detail = self._health()
        return json_response({"status": "ok" if ok else detail}, status=200 if ok else 503)

    async def _get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.registry.render().encode(), headers={"Content-Type": CONTENT_TYPE}
        )

    def _authorised(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode(), self._token.encode()
        )

    async def _admin_op(self, request: web.Request) -> web.StreamResponse:
        # Authenticate before anything else, so an anonymous caller learns nothing,
        # not even which operations exist.
        if not self._authorised(request):
            return json_response({"error": "admin token required"}, status=401)
        op = request.match_info["op"]
        handler = self._ops.get((request.method, op))
        if handler is None:
            if any(name == op for _, name in self._ops):
                return json_response({"error": f"method {request.method} not allowed"}, 405)
            return json_response({"error": f"unknown admin operation {op!r}"}, 404)
        result = await handler(request)
        if isinstance(result, web.StreamResponse):
            return result
        return json_response(result)


async def read_json(request: web.Request) -> Any:
    """The request's JSON body (``{}`` when empty), or 400 with a clear message."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(
            text=orjson.dumps({"error": f"invalid JSON: {exc}"}).decode(),
            content_type="application/json",
        ) from None


async def serve_app(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, tuple]:
    """Serve a small aiohttp app (an admin or status listener) on ``host:port``.

    Returns its runner (``cleanup()`` stops it) and the address it bound (port 0 picks a
    free one). No access log and no signal handlers: the runner owns those.
    """
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    server = site._server  # aiohttp keeps the asyncio Server here
    return runner, server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
