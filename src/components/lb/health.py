"""Active health checks: ``GET /health`` on every backend, every ``--health-interval``.

Passive detection (errors on real traffic) only notices a dead backend by failing
requests on it, and only notices a recovered one by sending it traffic again. Active
checks close both gaps, as HAProxy's ``check`` and nginx Plus's ``health_check`` do:
each interval every backend gets a fresh connection and a ``GET`` of the health path;
a 2xx or 3xx within ``--health-timeout`` is a pass, anything else (refused, reset,
timeout, 5xx, a malformed answer) a failure. The balancer's ``check_result`` applies the
rise/fall counts, so one lost probe does not flap a backend.

Probes use their own short-lived connections, never the keep-alive pool, so a probe
can never be confused with, or queued behind, real traffic. The response is read with
the same HTTP/1.1 parser as everything else, bounded in time and size.
"""

from __future__ import annotations

import asyncio
import contextlib

from components.common.http1 import NEED_DATA, Parser, ProtocolError, Response

#: Bytes of a health answer we read at most (the head is all we need).
MAX_PROBE_BYTES = 64 * 1024


async def probe(address: str, path: str, timeout_s: float) -> bool:
    """One health check: True for a 2xx/3xx answer within ``timeout_s``."""
    host, _, port = address.rpartition(":")
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
            writer.write(
                b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: scalelab-lb\r\n\r\n"
                % (path.encode(), address.encode())
            )
            parser = Parser(response=True)
            parser.expect_response(b"GET")
            received = 0
            while received < MAX_PROBE_BYTES:
                data = await reader.read(16384)
                if not data:
                    parser.feed_eof()
                received += len(data)
                parser.feed(data)
                event = parser.next_event()
                if type(event) is Response:
                    return 200 <= event.status < 400
                if event is not NEED_DATA or not data:
                    return False
            return False
    except (OSError, TimeoutError, ProtocolError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class HealthChecker:
    """Probes every backend each interval and reports results to the balancer."""

    def __init__(self, proxy) -> None:
        self.proxy = proxy
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        if self.proxy.args.health_interval > 0:
            self.task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def run(self) -> None:
        args = self.proxy.args
        while True:
            backends = list(self.proxy.balancer.backends)
            results = await asyncio.gather(
                *(probe(b.address, args.health_path, args.health_timeout) for b in backends)
            )
            balancer = self.proxy.balancer
            now = self.proxy.now()
            for backend, ok in zip(backends, results, strict=True):
                if backend.removed:
                    continue
                change = balancer.check_result(backend, ok, now)
                if change is not None:
                    self.proxy.backend_state_changed(backend, change)
            await asyncio.sleep(args.health_interval)
