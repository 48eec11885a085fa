"""A fill: one origin response being received, stored at its end, and read by many meanwhile.

A cache that waits for the whole body before answering makes the first client of a large
object wait for all of it, and every request collapsed behind it wait as long. Varnish
and nginx (``proxy_cache_lock`` aside) instead *stream* a fill: the bytes go to the
requesting client as they arrive from the origin, and requests for the same object that
arrive meanwhile read the same growing body from its start. This module is that growing
body, without sockets: the task reading the origin ``append``s pieces and finally
``finish``es (or ``fail``s); each client answer is a ``Reader`` that ``take``s the pieces
it has not sent yet and waits for more with ``more``.

While the response may still be stored, every piece is kept (the store needs them, and a
late reader starts from the first byte); that is bounded by ``--max-object-mb``. When
the body outgrows it (or was declared larger from the start) the fill turns into a
*shared pass-through*: nothing is stored, pieces every reader has taken are dropped, and
the origin is read only while the readers' backlog is below ``PASS_BACKLOG_BYTES``, so
the slowest reader sets the pace and memory stays bounded however large the object. A
reader that arrives after pieces were dropped cannot join (``join`` returns None) and
fetches for itself; the server stops offering the fill to new requests when it turns,
so that only happens to a reader racing the switch.

A fill is shared only between requests that could have shared the stored response (the
caller checks ``Vary``): a response that may not be stored at all (``private``,
``no-store``) is never a fill that others read.
"""

from __future__ import annotations

import asyncio

#: Bytes taken from the origin but not yet by every reader, in a pass-through.
PASS_BACKLOG_BYTES = 1024 * 1024

OPEN, DONE, BROKEN = "open", "done", "broken"


class Reader:
    """One answer being written from a fill: the index of its next piece."""

    __slots__ = ("at",)

    def __init__(self, at: int) -> None:
        self.at = at


class Fill:
    """The growing body of one origin response (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, storing: bool) -> None:
        self.loop = loop
        #: Still bound for the store (every piece kept); False: a pass-through.
        self.storing = storing
        self.state = OPEN
        #: The declared body length (Content-Length), or None (chunked or close-delimited).
        self.length: int | None = None
        self.pieces: list[bytes] = []
        #: Absolute index of ``pieces[0]``: pieces before it were dropped (pass-through).
        self.base = 0
        self.size = 0
        self.readers: list[Reader] = []
        self._more: asyncio.Future | None = None
        self._space: asyncio.Future | None = None
        #: Resolved when the fill is settled: finished, failed or turned pass-through.
        self.settled: asyncio.Future = loop.create_future()
        if not storing:
            self.settled.set_result(OPEN)  # a pass-through from the start

    # -- the origin side ---------------------------------------------------------------

    def append(self, data: bytes) -> None:
        self.pieces.append(data)
        self.size += len(data)
        self._notify()

    def stop_storing(self) -> None:
        """Turn into a pass-through (the body outgrew the store's object limit)."""
        if self.storing:
            self.storing = False
            self._settle()
            self._drop_taken()

    def finish(self) -> None:
        self.state = DONE
        self._notify()
        self._settle()

    def fail(self) -> None:
        self.state = BROKEN
        self._notify()
        self._settle()

    def body(self) -> bytes:
        """The whole body (only while storing, when no piece was dropped)."""
        return b"".join(self.pieces)

    def backlog(self) -> int:
        """Bytes held that some reader has yet to take."""
        if not self.readers:
            return 0
        first = min(reader.at for reader in self.readers) - self.base
        return sum(len(piece) for piece in self.pieces[max(first, 0) :])

    async def space(self) -> bool:
        """In a pass-through, wait until the readers' backlog is small; False: no readers."""
        while self.readers and self.backlog() > PASS_BACKLOG_BYTES:
            self._space = self.loop.create_future()
            await self._space
        return self.storing or bool(self.readers)

    # -- the client side ---------------------------------------------------------------

    def join(self) -> Reader | None:
        """A reader from the first byte, or None when the first pieces are gone."""
        if self.base:
            return None
        reader = Reader(0)
        self.readers.append(reader)
        return reader

    def leave(self, reader: Reader) -> None:
        if reader in self.readers:
            self.readers.remove(reader)
            self._drop_taken()

    def take(self, reader: Reader) -> list[bytes]:
        """The pieces ``reader`` has not taken yet (possibly none)."""
        new = self.pieces[reader.at - self.base :]
        reader.at = self.base + len(self.pieces)
        if not self.storing:
            self._drop_taken()
        return new

    def more(self, reader: Reader) -> asyncio.Future:
        """A future resolved when ``reader`` has something to take or the fill ended."""
        if self._more is None or self._more.done():
            self._more = self.loop.create_future()
        if self.state != OPEN or reader.at < self.base + len(self.pieces):
            self._more.set_result(None)
        return self._more

    # -- inner -------------------------------------------------------------------------

    def _notify(self) -> None:
        more = self._more
        if more is not None and not more.done():
            more.set_result(None)

    def _settle(self) -> None:
        if not self.settled.done():
            self.settled.set_result(self.state)

    def _drop_taken(self) -> None:
        if self.storing:
            return
        if self.readers:
            first = min(reader.at for reader in self.readers)
        else:
            first = self.base + len(self.pieces)
        drop = first - self.base
        if drop > 0:
            del self.pieces[:drop]
            self.base = first
        space = self._space
        if space is not None and not space.done() and self.backlog() <= PASS_BACKLOG_BYTES:
            space.set_result(None)
