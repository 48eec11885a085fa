"""Keep-alive connections to each backend, kept warm between requests.

Opening a TCP connection costs a round trip and, on the backend, an accept and a new
protocol object; HTTP/1.1 persistence (RFC 9112 §9.3) lets one connection carry request
after request. So, as nginx's ``upstream keepalive`` and HAProxy's ``http-reuse``, the
balancer returns a backend connection to a per-backend pool once its exchange is complete
(and only then: a connection with a half-read response or stray bytes is closed, never
reused), and takes the most recently used one for the next request to that backend.
The pool is bounded per backend (``MAX_IDLE_PER_BACKEND``), idle connections are closed
after ``--idle-timeout`` (before the backend's own keep-alive timeout would close them
under us), and a backend that is removed, drained or marked down loses its pool at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .balancer import DRAINING, Backend

if TYPE_CHECKING:
    from .proxy import BackendConnection
    from .server import LoadBalancer

#: Idle keep-alive connections kept per backend.
MAX_IDLE_PER_BACKEND = 256


class BackendPool:
    """Idle keep-alive connections per backend, most recently used first."""

    def __init__(self, proxy: LoadBalancer) -> None:
        self.proxy = proxy
        self.idle: dict[Backend, list[BackendConnection]] = {}

    def take(self, backend: Backend) -> BackendConnection | None:
        conns = self.idle.get(backend)
        while conns:
            conn = conns.pop()
            if not conn.closed:
                return conn
        return None

    def put(self, conn: BackendConnection, now: float) -> None:
        backend = conn.backend
        conns = self.idle.get(backend)
        if conns is None:  # (not setdefault: it would build a list on every call)
            conns = self.idle[backend] = []
        # A backend marked down keeps the connection: it just answered on it, and in
        # panic down backends still serve. Draining or removed ones take no new requests.
        if backend.removed or backend.state == DRAINING or len(conns) >= MAX_IDLE_PER_BACKEND:
            conn.close()
            return
        conn.deadline = now + self.proxy.args.idle_timeout
        # The last client may have paused it; idle, it must read to notice a close.
        conn.transport.resume_reading()
        conns.append(conn)

    def discard(self, conn: BackendConnection) -> None:
        conns = self.idle.get(conn.backend)
        if conns and conn in conns:
            conns.remove(conn)

    def close_backend(self, backend: Backend) -> None:
        for conn in self.idle.pop(backend, []):
            conn.close()

    def sweep(self, now: float) -> None:
        for conns in self.idle.values():
            for conn in [c for c in conns if c.deadline < now]:
                conns.remove(conn)
                conn.close()

    def count(self, backend: Backend) -> int:
        return len(self.idle.get(backend, ()))
