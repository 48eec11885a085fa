"""A minimal line-echo service used to test the runtime contract in isolation.

``SLOW <seconds>`` holds the reply that long, so a test can put work in flight and check
that SIGTERM drains it (and that ``/health`` says 503 meanwhile).
"""

from __future__ import annotations

import asyncio

from components.common import Service, main
from components.common.cli import format_address


class EchoProtocol(asyncio.Protocol):
    def __init__(self, service: EchoService) -> None:
        self.service = service
        self.buffer = b""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\n")
            self.service.lines.inc()
            if line.startswith(b"SLOW "):
                task = asyncio.ensure_future(self._slow(float(line[5:]), line))
                self.service.inflight.add(task)
                task.add_done_callback(self.service.inflight.discard)
            else:
                self.transport.write(line + b"\n")

    async def _slow(self, seconds: float, line: bytes) -> None:
        await asyncio.sleep(seconds)
        self.transport.write(line + b"\n")


class EchoService(Service):
    component = "echo"
    default_port = 0

    async def start(self):
        self.inflight: set[asyncio.Task] = set()
        self.lines = self.metrics.counter("scalelab_echo_lines_total", "Lines echoed")
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: EchoProtocol(self), self.args.host, self.args.port
        )
        return {"main": format_address(self.server.sockets[0].getsockname())}

    async def drain(self):
        self.server.close()
        while self.inflight:
            await asyncio.gather(*list(self.inflight))

    async def stop(self):
        self.server.close()


if __name__ == "__main__":
    main(EchoService)
