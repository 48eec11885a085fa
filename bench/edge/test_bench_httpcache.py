"""µs of Python per cache hit: the lookup path, alone and behind a faked socket.

Run: ``.venv/bin/python -m pytest bench/edge --benchmark-only``.

- ``test_lookup_decide_render``: ``Store.lookup`` + ``decide`` + ``protocol.render`` for
  one stored small response, the pure core of a hit.
- ``test_hit_through_client_connection``: 1000 keep-alive GETs through
  ``ClientConnection.data_received`` with a ``FakeTransport`` (parse the request with the
  shared codec, look up, decide, render, count, write), so the mean in ms equals µs per
  request. Compare with the CPU per request ``compare_nginx.py`` measures with real
  sockets: the difference is the event loop and the kernel.
"""

import asyncio
import time

from components.common.runner import Runtime, parse_args
from components.edge import protocol
from components.edge.httpcache import Entry, Store, decide, format_http_date
from components.edge.server import ClientConnection, Edge

OPS = 1000
REQUEST = (
    b"GET /static/app.css HTTP/1.1\r\nHost: example.com\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\nConnection: keep-alive\r\n\r\n"
)
ORIGIN_HEADERS = [
    (b"Server", b"nginx/1.22.1"),
    (b"Content-Type", b"text/css"), (b"Cache-Control", b"max-age=600"),
    (b"ETag", b'"5f-2a"'), (b"Last-Modified", b"Mon, 23 Nov 2026 09:00:00 GMT"),
]  # fmt: skip


def stored_entry(now: float) -> Entry:
    return Entry.from_response(b"example.com", b"/static/app.css", 200, b"OK",
                               [(b"Date", format_http_date(now)), *ORIGIN_HEADERS],
                               b"x" * 42, now, now, [], 86400.0)  # fmt: skip


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data) -> None:
        self.written += len(data)

    def get_extra_info(self, name, default=None):
        return ("192.0.2.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass


def test_lookup_decide_render(benchmark):
    now = time.time()
    store = Store(1 << 24, 1 << 20)
    store.put(stored_entry(now))
    headers = [(b"Host", b"example.com"), (b"Accept", b"*/*")]

    def hit():
        entry = store.lookup(b"example.com", b"/static/app.css", headers)
        assert decide(entry, {}, now) == "fresh"
        return protocol.render(entry, entry.current_age(now), b"HIT", b"edge")

    assert benchmark(hit).endswith(b"x" * 42)


def test_hit_through_client_connection(benchmark):
    args = parse_args(Edge, ["--origin", "127.0.0.1:9", "--log-level", "warning"])
    loop = asyncio.new_event_loop()
    edge = Edge(args, Runtime(args, "edge"))
    edge.setup(loop)
    edge.store.put(stored_entry(time.time()))
    conn = ClientConnection(edge)
    transport = FakeTransport()
    conn.connection_made(transport)

    def thousand():
        for _ in range(OPS):
            conn.data_received(REQUEST)

    benchmark(thousand)
    assert transport.written > 0 and edge.result["hit"].get() > 0
    loop.close()
