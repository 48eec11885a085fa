"""A TCP relay for launcher tests: it proves that ``{name}`` references are wired.

``--upstream HOST:PORT`` is where every accepted connection is piped to. Started behind
an echo service with ``--upstream {echo-1}``, a line sent to the relay comes back only if
the launcher resolved the reference to the echo server's real (port 0) address.
"""

from __future__ import annotations

import asyncio

from components.common import Service, main
from components.common.cli import format_address, host_port


class RelayService(Service):
    component = "relay"

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--upstream", type=host_port, required=True)

    async def start(self):
        self.connections = self.metrics.counter(
            "scalelab_relay_connections_total", "Connections relayed"
        )
        self.server = await asyncio.start_server(self._relay, self.args.host, self.args.port)
        return {"main": format_address(self.server.sockets[0].getsockname())}

    async def _relay(self, reader, writer) -> None:
        self.connections.inc()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.args.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def stop(self):
        self.server.close()


async def _pipe(reader, writer) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


if __name__ == "__main__":
    main(RelayService)
