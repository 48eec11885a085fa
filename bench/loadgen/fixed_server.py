"""A fixed-response HTTP/1.1 server: the fastest answer Python can give, for ceilings.

Every request gets the same 200 response with a 3-byte body; keep-alive and pipelining
work (a read burst may hold several requests; they are answered with one write). It
exists so the load generator's ceiling is measured against a server that is not the
bottleneck when nginx is not installed; ``compare_wrk.py`` prefers nginx.

Run: ``python bench/loadgen/fixed_server.py [--port 0]``; once bound it prints a ready
line shaped like a component's, ``{"event": "ready", "listen": {"main": "127.0.0.1:PORT"}}``,
so ``topologies.process.launch`` starts it. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import uvloop

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n"
MAX_BUFFER_BYTES = 64 * 1024


class FixedResponse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        # Requests carry no body here (GET): each ends at an empty line.
        count = buffer.count(b"\r\n\r\n")
        if count:
            self.transport.write(RESPONSE * count)
            buffer = buffer[buffer.rfind(b"\r\n\r\n") + 4 :]
        if len(buffer) > MAX_BUFFER_BYTES:
            self.transport.close()
            return
        self.buffer = buffer


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FixedResponse, "127.0.0.1", port, backlog=1024)
    host, bound = server.sockets[0].getsockname()[:2]
    ready = {"event": "ready", "component": "fixed", "listen": {"main": f"{host}:{bound}"}}
    print(json.dumps(ready), flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        uvloop.run(serve(args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
