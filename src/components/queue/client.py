"""An asyncio beanstalkd client: what the worker, the web tier and the benchmarks use.

One ``QueueClient`` is one connection. Requests are pipelined: each call writes its
command at once and waits for its own reply, and replies are matched to callers in
order (beanstalkd answers a connection's commands strictly in order). It is built on
``protocol.ReplyParser``, so the client and the server share one definition of the
wire format. A blocking ``reserve`` holds the connection's reply stream, exactly as on
the server, so a worker uses one connection per concurrent job.

Errors: a reply that is not the expected one raises ``CommandError`` carrying
beanstalkd's word (``NOT_FOUND``, ``JOB_TOO_BIG``...); a lost connection raises
``ConnectionError`` in every waiting call.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .protocol import ParsedReply, ProtocolViolation, ReplyParser


class CommandError(Exception):
    """The server answered with an error or an unexpected reply."""

    def __init__(self, word: str, command: bytes = b"") -> None:
        super().__init__(f"{word} (for {command[:40]!r})")
        self.word = word


class DeadlineSoon(CommandError):
    """reserve: a job this connection holds is in its last second of TTR."""


class _ClientProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = ReplyParser()
        self.waiters: deque[asyncio.Future] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.receive_data(data)
        try:
            while (reply := self.parser.next_reply()) is not None:
                if not self.waiters:
                    raise ProtocolViolation(f"unsolicited reply {reply.word}")
                future = self.waiters.popleft()
                if not future.done():
                    future.set_result(reply)
        except ProtocolViolation as exc:
            self.connection_lost(exc)
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc) -> None:
        self.lost = ConnectionError(f"queue connection lost: {exc or 'closed'}")
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_exception(self.lost)


class QueueClient:
    def __init__(self, protocol: _ClientProtocol) -> None:
        self._protocol = protocol

    @classmethod
    async def connect(cls, host: str, port: int, timeout_s: float = 5.0) -> QueueClient:
        loop = asyncio.get_running_loop()
        _, protocol = await asyncio.wait_for(
            loop.create_connection(_ClientProtocol, host, port), timeout_s
        )
        return cls(protocol)

    @property
    def connected(self) -> bool:
        return self._protocol.lost is None

    def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()

    def send(self, data: bytes) -> asyncio.Future:
        """Write one request and return the future of its reply (for pipelining)."""
        protocol = self._protocol
        if protocol.lost is not None:
            raise protocol.lost
        future = asyncio.get_running_loop().create_future()
        protocol.waiters.append(future)
        assert protocol.transport is not None
        protocol.transport.write(data)
        return future

    async def _call(self, data: bytes, *expected: str) -> ParsedReply:
        reply = await self.send(data)
        if reply.word not in expected:
            if reply.word == "DEADLINE_SOON":
                raise DeadlineSoon(reply.word, data)
            raise CommandError(reply.word, data)
        return reply

    # -- commands --------------------------------------------------------------------------

    async def put(self, body: bytes, pri: int = 1024, delay: int = 0, ttr: int = 60) -> int:
        request = b"put %d %d %d %d\r\n%s\r\n" % (pri, delay, ttr, len(body), body)
        reply = await self._call(request, "INSERTED")
        return int(reply.args[0])

    async def use(self, tube: str) -> None:
        await self._call(b"use %s\r\n" % tube.encode(), "USING")

    async def watch(self, tube: str) -> int:
        return int((await self._call(b"watch %s\r\n" % tube.encode(), "WATCHING")).args[0])

    async def ignore(self, tube: str) -> int:
        return int((await self._call(b"ignore %s\r\n" % tube.encode(), "WATCHING")).args[0])

    async def reserve(self, timeout: int | None = None) -> tuple[int, bytes] | None:
        """``(id, body)``, or None on TIMED_OUT; raises DeadlineSoon."""
        request = b"reserve\r\n" if timeout is None else b"reserve-with-timeout %d\r\n" % timeout
        reply = await self._call(request, "RESERVED", "TIMED_OUT")
        if reply.word == "TIMED_OUT":
            return None
        assert reply.body is not None
        return int(reply.args[0]), reply.body

    async def delete(self, job_id: int) -> None:
        await self._call(b"delete %d\r\n" % job_id, "DELETED")

    async def release(self, job_id: int, pri: int = 1024, delay: int = 0) -> None:
        await self._call(b"release %d %d %d\r\n" % (job_id, pri, delay), "RELEASED")

    async def bury(self, job_id: int, pri: int = 1024) -> None:
        await self._call(b"bury %d %d\r\n" % (job_id, pri), "BURIED")

    async def touch(self, job_id: int) -> None:
        await self._call(b"touch %d\r\n" % job_id, "TOUCHED")

    async def stats(self) -> dict[str, str]:
        return parse_yaml_dict((await self._call(b"stats\r\n", "OK")).body or b"")

    async def stats_job(self, job_id: int) -> dict[str, str]:
        return parse_yaml_dict((await self._call(b"stats-job %d\r\n" % job_id, "OK")).body or b"")

    async def stats_tube(self, tube: str) -> dict[str, str]:
        reply = await self._call(b"stats-tube %s\r\n" % tube.encode(), "OK")
        return parse_yaml_dict(reply.body or b"")


def parse_yaml_dict(data: bytes) -> dict[str, str]:
    """The flat ``key: value`` YAML of beanstalkd's stats replies (values as strings)."""
    result = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            result[key] = value.strip('"')
    return result
