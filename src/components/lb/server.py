"""``python -m components.lb``: the load balancer as a component.

This module is the shell around the exchange (``proxy.py``), the policy
(``balancer.py``), the keep-alive pool (``pool.py``) and the active checks
(``health.py``): it parses the flags, binds the public listener, exposes the pool as a
live admin API (``GET/POST /admin/backends``, ``DELETE /admin/backends/{addr}``,
``POST /admin/backends/{addr}/drain``) and the per-backend metrics, sweeps timeouts for
all connections with one timer (``TICK_S``) instead of one timer each (the same tick
logs the balancer entering or leaving panic, ``--panic-threshold``), and on SIGTERM
stops accepting, lets every exchange in flight finish (their answers say
``Connection: close``) and closes idle connections.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from urllib.parse import unquote

from aiohttp import web

from components.common import Service
from components.common.admin import json_response, read_json
from components.common.cli import format_address, host_port, non_negative_float

from .balancer import (
    ALGORITHMS,
    DEFAULT_PANIC_THRESHOLD_PCT,
    DOWN,
    DRAINING,
    Backend,
    Balancer,
)
from .health import HealthChecker
from .pool import BackendPool
from .proxy import CONNECTING, ClientConnection, Outbox

#: Resolution of the timeout sweep.
TICK_S = 0.25


def backend_spec(text: str) -> tuple[str, int]:
    """``HOST:PORT[,weight=N]`` for ``--backend``."""
    address, _, options = text.partition(",")
    host, port = host_port(address)
    weight = 1
    if options:
        key, _, value = options.partition("=")
        if key != "weight" or not value.isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(f"expected weight=N (N >= 1), got {options!r}")
        weight = int(value)
    return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}"), weight


class LoadBalancer(Service):
    """``python -m components.lb``: an HTTP/1.1 reverse proxy over a live backend pool."""

    component = "lb"
    default_port = 8080
    description = "HTTP/1.1 load balancer (reverse proxy) with health checks and live backends"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("load balancer")
        group.add_argument("--backend", type=backend_spec, action="append", default=[],
                           metavar="HOST:PORT[,weight=N]", help="a backend (repeatable)")  # fmt: skip
        group.add_argument("--algorithm", choices=ALGORITHMS, default="round_robin")
        group.add_argument("--max-connections", type=int, default=10_000,
                           help="client connections; more are answered 503 and closed")  # fmt: skip
        group.add_argument("--connect-timeout", type=non_negative_float, default=3.0,
                           help="seconds to connect to a backend before trying another")  # fmt: skip
        group.add_argument("--first-byte-timeout", type=non_negative_float, default=30.0,
                           help="seconds from a sent request to its first response byte (504)")  # fmt: skip
        group.add_argument("--idle-timeout", type=non_negative_float, default=60.0,
                           help="seconds a connection may sit silent (client or pooled)")  # fmt: skip
        group.add_argument("--health-interval", type=non_negative_float, default=2.0,
                           help="seconds between active checks (0: off)")  # fmt: skip
        group.add_argument("--health-path", default="/health", help="path the checks GET")
        group.add_argument("--health-timeout", type=non_negative_float, default=1.0)
        group.add_argument("--rise", type=int, default=2,
                           help="passed checks in a row that bring a backend up")  # fmt: skip
        group.add_argument("--fall", type=int, default=3,
                           help="failed checks in a row that take a backend down")  # fmt: skip
        group.add_argument("--max-fails", type=int, default=3,
                           help="consecutive errors that eject a backend (0: never)")  # fmt: skip
        group.add_argument("--cooldown", type=non_negative_float, default=10.0,
                           help="seconds an ejected backend stays out")  # fmt: skip
        group.add_argument("--panic-threshold", type=non_negative_float,
                           default=DEFAULT_PANIC_THRESHOLD_PCT, metavar="PCT",
                           help="below this %% of non-draining backends healthy, ignore "
                                "health and use them all, as Envoy does (default %(default)s: "
                                "one of two down is still routed around; 0: never, answer "
                                "503 when none is healthy)")  # fmt: skip

    @classmethod
    def check_arguments(cls, parser, args) -> None:
        if args.max_connections < 1:
            parser.error("--max-connections must be >= 1")
        if args.rise < 1 or args.fall < 1:
            parser.error("--rise and --fall must be >= 1")
        if args.max_fails < 0:
            parser.error("--max-fails must be >= 0")
        if args.panic_threshold > 100:
            parser.error("--panic-threshold is a percentage (0..100)")

    async def start(self) -> dict[str, str]:
        self.setup(asyncio.get_running_loop())
        args = self.args
        self.server = await self.loop.create_server(
            lambda: ClientConnection(self), args.host, args.port, reuse_address=True, backlog=1024
        )
        self.sweeper = asyncio.ensure_future(self.sweep())
        self.checker = HealthChecker(self)
        self.checker.start()
        return {"main": format_address(self.server.sockets[0].getsockname())}

    def setup(self, loop: asyncio.AbstractEventLoop) -> None:
        """Everything but the sockets: pool, metrics, admin operations (benchmarks use it)."""
        args = self.args
        self.loop = loop
        # The deadlines, the sweep and health share this clock. time.monotonic is what
        # asyncio's loop.time returns, minus a Python-level call (it runs ~8x a request).
        self.now = time.monotonic
        self.via_name = args.name.encode()
        self.draining = False
        self.outbox = Outbox(loop)
        self.clients: set[ClientConnection] = set()
        self.balancer = Balancer(
            args.algorithm, rise=args.rise, fall=args.fall,
            max_fails=args.max_fails, cooldown_s=args.cooldown,
            panic_threshold_pct=args.panic_threshold,
        )  # fmt: skip
        # Whether the balancer was last seen in panic (the sweep logs the changes).
        self.panic = False
        self.pool = BackendPool(self)
        m = self.metrics
        self.requests = m.counter("scalelab_lb_requests_total", "Requests proxied",
                                  ["backend", "status"])  # fmt: skip
        self.duration = m.histogram("scalelab_lb_request_duration_seconds",
                                    "Request time through the proxy", ["backend"])  # fmt: skip
        self.errors = m.counter("scalelab_lb_backend_errors_total",
                                "Backend connect failures, resets, timeouts, bad responses",
                                ["backend", "kind"])  # fmt: skip
        self.up_gauge = m.gauge("scalelab_lb_backend_up", "1 if the backend takes requests",
                                ["backend"])  # fmt: skip
        self.active_gauge = m.gauge("scalelab_lb_backend_active_connections",
                                    "Requests in flight to the backend", ["backend"])  # fmt: skip
        self.idle_gauge = m.gauge("scalelab_lb_backend_idle_connections",
                                  "Keep-alive connections pooled", ["backend"])  # fmt: skip
        m.gauge("scalelab_lb_client_connections", "Open client connections").set_function(
            lambda: len(self.clients)
        )
        m.gauge("scalelab_lb_panic",
                "1 while too few backends are healthy and health is ignored").set_function(
            lambda: 1 if self.balancer.panicking(self.now()) else 0
        )  # fmt: skip
        self.retries = m.counter("scalelab_lb_retries_total", "Requests retried on another backend")
        self.rejected = m.counter("scalelab_lb_rejected_total",
                                  "Requests answered by the proxy itself", ["reason"])  # fmt: skip
        # (backend, status) -> its request counter and its backend's duration histogram.
        self._children: dict[tuple[str, int], tuple] = {}
        for address, weight in args.backend:
            self.add_backend(address, weight)
        admin = self.runtime.admin
        admin.register("backends", self.admin_list, "GET")
        admin.register("backends", self.admin_add, "POST")

    # -- the pool, live ----------------------------------------------------------------

    def add_backend(self, address: str, weight: int = 1) -> Backend:
        backend = self.balancer.add(address, weight)
        now = self.now
        self.up_gauge.labels(backend=address).set_function(
            lambda: 1 if backend.eligible(now()) and not backend.removed else 0
        )
        self.active_gauge.labels(backend=address).set_function(lambda: backend.active)
        self.idle_gauge.labels(backend=address).set_function(lambda: self.pool.count(backend))
        admin = self.runtime.admin
        admin.register(f"backends/{address}", self.admin_remove, "DELETE")
        admin.register(f"backends/{address}/drain", self.admin_drain, "POST")
        self.log.info("backend_added", backend=address, weight=weight)
        return backend

    def remove_backend(self, address: str) -> Backend | None:
        backend = self.balancer.remove(address)
        if backend is not None:
            self.pool.close_backend(backend)
            for gauge in (self.up_gauge, self.active_gauge, self.idle_gauge):
                gauge.remove(address)
            self.log.info("backend_removed", backend=address, in_flight=backend.active)
        return backend

    def record(self, backend: Backend, status: int, seconds: float) -> None:
        key = (backend.address, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(backend.address, str(status)),
                self.duration.labels(backend.address),
            )
        requests, duration = children
        requests.inc()
        duration.observe(seconds)

    # -- admin API -----------------------------------------------------------------------

    async def admin_list(self, request: web.Request):
        now = self.now()
        listing = []
        for backend in self.balancer.backends:
            entry = backend.describe(now)
            entry["idle_connections"] = self.pool.count(backend)
            listing.append(entry)
        return {
            "algorithm": self.balancer.algorithm,
            "panic": self.balancer.panicking(now),
            "panic_threshold_pct": self.balancer.panic_threshold_pct,
            "backends": listing,
        }

    async def admin_add(self, request: web.Request):
        body = await read_json(request)
        address = body.get("address") if isinstance(body, dict) else None
        weight = body.get("weight", 1) if isinstance(body, dict) else 1
        try:
            address, weight = backend_spec(f"{address},weight={weight}")
        except (argparse.ArgumentTypeError, TypeError):
            return json_response({"error": 'expected {"address": "HOST:PORT", "weight": N}'}, 400)
        backend = self.add_backend(address, weight)
        return json_response(backend.describe(self.now()), 201)

    def _address_from_path(self, request: web.Request) -> str:
        op = request.match_info["op"]  # backends/<addr>[/drain]
        return unquote(op.split("/", 2)[1])

    async def admin_remove(self, request: web.Request):
        address = self._address_from_path(request)
        backend = self.remove_backend(address)
        if backend is None:
            return json_response({"error": f"no backend {address}"}, 404)
        return {"removed": address, "in_flight": backend.active}

    async def admin_drain(self, request: web.Request):
        address = self._address_from_path(request)
        backend = self.balancer.drain(address)
        if backend is None:
            return json_response({"error": f"no backend {address}"}, 404)
        self.pool.close_backend(backend)
        self.log.info("backend_draining", backend=address, in_flight=backend.active)
        return backend.describe(self.now())

    # -- lifecycle -----------------------------------------------------------------------

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = self.now()
            for client in [c for c in self.clients if c.deadline < now]:
                if client.phase != CONNECTING:
                    client.timed_out(now)
            self.pool.sweep(now)
            self.check_panic(now)

    def check_panic(self, now: float) -> None:
        """Log entering and leaving panic (checked each sweep tick, not per request)."""
        panic = self.balancer.panicking(now)
        if panic != self.panic:
            self.panic = panic
            healthy = sum(1 for b in self.balancer.backends if b.eligible(now))
            serving = sum(1 for b in self.balancer.backends if b.state != DRAINING)
            log = self.log.warning if panic else self.log.info
            log("panic_entered" if panic else "panic_left", healthy=healthy, serving=serving,
                threshold_pct=self.balancer.panic_threshold_pct)  # fmt: skip

    async def drain(self) -> None:
        self.draining = True
        self.server.close()
        for client in list(self.clients):
            if client.request is None and client.parser.idle:
                client.close()
        while self.clients:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if hasattr(self, "sweeper"):
            self.sweeper.cancel()
            await self.checker.stop()
            self.server.close()
            for client in list(self.clients):
                client.close()
            for backend in list(self.balancer.backends):
                self.pool.close_backend(backend)

    def backend_state_changed(self, backend: Backend, state: str) -> None:
        log = self.log.warning if state == DOWN else self.log.info
        log("backend_" + state, backend=backend.address)
        if state == DOWN:
            self.pool.close_backend(backend)
