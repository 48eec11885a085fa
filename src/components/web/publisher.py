"""Publishing jobs from the web tier: one long-lived queue connection, every wait bounded.

``POST /photos`` must not answer 202 before the job is safe: the reply waits for the
queue's ``INSERTED`` (beanstalkd protocol.txt, "put"), which a queue run with ``-b DIR
-f 0`` sends only after the job is fsynced to its binlog. Everything else about
publishing is about not making users wait on a queue that is not there:

- one connection per web process, opened on first use and kept: ``put`` is pipelined on
  it (``queue.client.QueueClient`` matches replies to requests in order), so concurrent
  requests share it instead of paying a TCP handshake and a ``use`` each;
- every step is bounded by ``timeout_s``: connecting, and the ``put`` itself. A queue
  that does not answer in time costs one request that long, then the connection is
  dropped (a late ``INSERTED`` may still arrive for it: the outcome of that put is
  unknown, which the caller reports);
- after a failure the connection is re-opened no sooner than a backoff that doubles per
  failure (``Reconnect``, capped at ``RECONNECT_MAX_S`` and jittered, so the web servers
  that lost one queue do not all come back to it at once); until then ``publish`` fails
  at once. A queue that is down therefore costs a fast 503 with ``Retry-After``, not a
  connection attempt per request, and never a hang;
- concurrent requests that find no connection share one connection attempt.

Errors are ``QueueUnavailable``: the web tier answers 503. A reply other than
``INSERTED`` (``DRAINING``, ``OUT_OF_MEMORY``, ``JOB_TOO_BIG``) is one too; the
connection stays, since the queue answered.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from components.common.backoff import Backoff
from components.queue.client import CommandError, QueueClient

RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 2.0
DEFAULT_TIMEOUT_S = 2.0
#: beanstalkd's default priority (protocol.txt: 0 is most urgent, 2**32-1 least).
DEFAULT_PRIORITY = 1024


class QueueUnavailable(Exception):
    """The job was not published (or its outcome is unknown); worth retrying later."""


class Reconnect:
    """When the next connection attempt may start: ``Backoff``'s pauses, clock passed in."""

    def __init__(self, min_s: float = RECONNECT_MIN_S, max_s: float = RECONNECT_MAX_S,
                 rng: Callable[[], float] | None = random.random) -> None:  # fmt: skip
        self.backoff = Backoff(min_s, max_s, rng)
        self.delay_s = 0.0  # the pause in force; none before a failure: connect at once
        self.not_before = 0.0

    def may_try(self, now: float) -> bool:
        return now >= self.not_before

    def failed(self, now: float) -> None:
        self.delay_s = self.backoff.next()
        self.not_before = now + self.delay_s

    def succeeded(self) -> None:
        self.backoff.reset()
        self.delay_s = 0.0
        self.not_before = 0.0


class JobPublisher:
    def __init__(self, host: str, port: int, tube: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 ttr_s: int = 60, clock: Callable[[], float] = time.monotonic,
                 connect: Callable[..., Awaitable[QueueClient]] = QueueClient.connect) -> None:  # fmt: skip
        self.host, self.port, self.tube = host, port, tube
        self.timeout_s = timeout_s
        self.ttr_s = ttr_s
        self.reconnect = Reconnect()
        self._clock = clock
        self._connect = connect
        self._client: QueueClient | None = None
        self._connecting: asyncio.Future | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def publish(self, body: bytes, priority: int = DEFAULT_PRIORITY) -> int:
        """Put ``body`` on the tube; the job id once the queue acknowledged it."""
        client = await self._connection()
        try:
            return await asyncio.wait_for(client.put(body, priority, 0, self.ttr_s),
                                          self.timeout_s)  # fmt: skip
        except CommandError as exc:
            raise QueueUnavailable(f"queue refused the job: {exc.word}") from None
        except (TimeoutError, ConnectionError, OSError) as exc:
            self._lost(client)
            raise QueueUnavailable(f"queue did not acknowledge the job: {exc!r}") from None

    async def _connection(self) -> QueueClient:
        if self._client is not None and self._client.connected:
            return self._client
        if self._connecting is None:
            if not self.reconnect.may_try(self._clock()):
                raise QueueUnavailable("queue unreachable (waiting to reconnect)")
            self._connecting = asyncio.ensure_future(self._open())
        # shield: one caller giving up (its client went away) must not cancel the attempt
        # the others share.
        return await asyncio.shield(self._connecting)

    async def _open(self) -> QueueClient:
        client = None
        try:
            client = await self._connect(self.host, self.port, timeout_s=self.timeout_s)
            if self.tube != "default":
                await asyncio.wait_for(client.use(self.tube), self.timeout_s)
        except (TimeoutError, ConnectionError, OSError, CommandError) as exc:
            if client is not None:
                client.close()
            self.reconnect.failed(self._clock())
            raise QueueUnavailable(f"queue unreachable: {exc!r}") from None
        finally:
            self._connecting = None
        self.reconnect.succeeded()
        self._client = client
        return client

    def _lost(self, client: QueueClient) -> None:
        client.close()
        if self._client is client:
            self._client = None
        self.reconnect.failed(self._clock())

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._client is not None:
            self._client.close()
            self._client = None
