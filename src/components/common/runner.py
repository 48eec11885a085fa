"""The component runtime: one ``main()`` that gives every server DESIGN.md's contract.

A component is a ``Service`` subclass. It adds its own flags, starts its listeners,
drains in-flight work and closes what it owns; the runner does the rest, identically for
all of them:

1. parse the shared flags plus the component's (argparse exits 2 on a bad one);
2. pick the event loop (uvloop unless ``--loop asyncio``);
3. ``service.start()`` binds the public listener(s), then the admin listener binds;
4. print exactly one JSON *ready* line on stdout with the real bound addresses (port 0
   resolved), which is what the launcher and the tests wait for;
5. on SIGTERM or SIGINT: ``/health`` turns 503, ``service.drain()`` gets up to
   ``--drain-timeout`` seconds to finish in-flight work, ``service.stop()`` flushes and
   fsyncs, and the process exits 0. A second signal skips the rest of the drain.

A start-up failure (port in use, bad data directory) is logged as one JSON line and the
process exits 1, never with a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from typing import ClassVar

import orjson

from .admin import AdminServer, json_response, read_json
from .cli import component_parser, format_address, resolve_shared
from .log import LEVELS, Logger, capture_library_logs
from .metrics import Registry

EXIT_OK = 0
EXIT_START_FAILED = 1


class Runtime:
    """What the runner hands a service: its flags, logger, metrics and admin listener."""

    def __init__(self, args: argparse.Namespace, component: str) -> None:
        self.args = args
        self.component = component
        self.name: str = args.name
        self.log = Logger(component, args.name, args.log_level)
        self.metrics = Registry()
        self.draining = False
        self.admin = AdminServer(self.metrics, self._health, args.admin_token)
        self.service: Service | None = None
        self._stop = asyncio.Event()
        started = self.metrics.gauge(
            f"scalelab_{component}_start_time_seconds", "Unix time the process started"
        )
        started.set(round(time.time(), 3))
        self.admin.register("log-level", self._set_log_level)

    async def _set_log_level(self, request):
        """``POST /admin/log-level {"level": "debug"}``: turn logging up or down live."""
        body = await read_json(request)
        level = body.get("level") if isinstance(body, dict) else None
        if level not in LEVELS:
            return json_response({"error": f"level must be one of {sorted(LEVELS)}"}, 400)
        self.log.threshold = LEVELS[level]
        self.log.info("log_level_changed", new_level=level)
        return {"level": level}

    def request_stop(self) -> None:
        """Begin a graceful stop, as SIGTERM does (used by admin operations and tests)."""
        self._stop.set()

    def _health(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if self.service is None:
            return False, "starting"
        return self.service.health()


class Service:
    """Base class for a scalelab server. Override the hooks; keep I/O in the service."""

    #: Component name as in ``python -m components.<component>`` and metric names.
    component: ClassVar[str] = ""
    default_port: ClassVar[int] = 0
    description: ClassVar[str | None] = None

    def __init__(self, args: argparse.Namespace, runtime: Runtime) -> None:
        self.args = args
        self.runtime = runtime
        self.log = runtime.log
        self.metrics = runtime.metrics

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the component's own flags."""

    @classmethod
    def check_arguments(cls, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Reject flag combinations argparse cannot express, with ``parser.error``."""

    async def start(self) -> dict[str, str]:
        """Bind listeners and return them by role, e.g. ``{"main": "127.0.0.1:40123"}``."""
        raise NotImplementedError

    async def drain(self) -> None:
        """Stop accepting new work and wait for in-flight work (bounded by the runner)."""

    async def stop(self) -> None:
        """Close everything left, flush and fsync what the service owns."""

    def health(self) -> tuple[bool, str]:
        """``(ok, detail)`` for ``GET /health``; override to report an unhealthy state."""
        return True, "ok"


def parse_args(service_cls: type[Service], argv: list[str] | None) -> argparse.Namespace:
    parser = component_parser(
        service_cls.component, service_cls.default_port, service_cls.description
    )
    service_cls.add_arguments(parser)
    args = parser.parse_args(argv)
    resolve_shared(args, service_cls.component)
    service_cls.check_arguments(parser, args)
    return args


async def serve(service_cls: type[Service], args: argparse.Namespace) -> int:
    runtime = Runtime(args, service_cls.component)
    log = runtime.log
    capture_library_logs(log)
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        log.info("signal", signal=signal.Signals(signum).name, count=signals_seen)
        runtime.request_stop()
        if signals_seen > 1 and drain_task is not None:
            drain_task.cancel()

    drain_task: asyncio.Task | None = None
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    service = service_cls(args, runtime)
    try:
        listen = await service.start()
        runtime.service = service
        admin_address = await runtime.admin.start(args.host, args.admin_port)
    except OSError as exc:
        log.error("start_failed", error=str(exc), errno=exc.errno)
        with contextlib.suppress(Exception):
            await service.stop()
        await runtime.admin.stop()
        return EXIT_START_FAILED

    listen = dict(listen)
    listen["admin"] = format_address(admin_address)
    ready = {"event": "ready", "component": service_cls.component, "name": args.name,
             "listen": listen}  # fmt: skip
    sys.stdout.write(orjson.dumps(ready).decode() + "\n")
    sys.stdout.flush()
    log.info("ready", listen=listen, pid=os.getpid(), loop=args.loop)

    await runtime._stop.wait()
    runtime.draining = True
    started = time.monotonic()
    drain_task = asyncio.ensure_future(service.drain())
    try:
        await asyncio.wait_for(drain_task, args.drain_timeout)
        log.info("drained", seconds=round(time.monotonic() - started, 3))
    except (TimeoutError, asyncio.CancelledError):
        log.warning("drain_cut_short", after_seconds=round(time.monotonic() - started, 3))
    await service.stop()
    await runtime.admin.stop()
    log.info("stopped")
    return EXIT_OK


def main(service_cls: type[Service], argv: list[str] | None = None) -> None:
    """Entry point for ``python -m components.<name>``; never returns."""
    args = parse_args(service_cls, argv)
    if args.loop == "uvloop":
        import uvloop

        code = uvloop.run(serve(service_cls, args))
    else:
        code = asyncio.run(serve(service_cls, args))
    sys.exit(code)
