"""The edge's client side without sockets: whatever bytes arrive, it answers or closes.

A ``ClientConnection`` is fed arbitrary and malformed input through a fake transport;
it must never raise, must answer framing errors with the codec's status and close, and
must answer hits inline byte for byte, pipelined, in order.
"""

from __future__ import annotations

import asyncio
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from components.common.runner import Runtime, parse_args
from components.edge.httpcache import Entry, format_http_date
from components.edge.server import ClientConnection, Edge


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data) -> None:
        assert not self.closed, "write after close"
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name, default=None):
        return default

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass


def make_edge():
    args = parse_args(Edge, ["--origin", "127.0.0.1:9", "--log-level", "error"])
    loop = asyncio.new_event_loop()
    edge = Edge(args, Runtime(args, "edge"))
    edge.setup(loop)
    now = time.time()
    headers = [(b"Date", format_http_date(now)), (b"Cache-Control", b"max-age=600")]
    edge.store.put(Entry.from_response(b"a", b"/x", 200, b"OK", headers, b"body", now, now,
                                       [], 86400.0))  # fmt: skip
    return edge, loop


def connect(edge):
    conn = ClientConnection(edge)
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport


def test_pipelined_hits_are_answered_inline_in_order():
    edge, loop = make_edge()
    conn, transport = connect(edge)
    conn.data_received(
        b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n" * 2 + b"HEAD /x HTTP/1.1\r\nHost: A\r\n\r\n"
    )
    answers = bytes(transport.out).split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert len(answers) == 3 and not transport.closed
    assert answers[0].endswith(b"\r\n\r\nbody") and answers[2].endswith(b"\r\n\r\n")
    assert b"X-Cache: HIT\r\n" in answers[2]
    loop.close()


def test_connection_close_is_honoured_after_the_answer():
    edge, loop = make_edge()
    conn, transport = connect(edge)
    conn.data_received(
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /x HTTP/1.1\r\n"
    )
    assert transport.out.count(b"HTTP/1.1 200") == 1 and b"Connection: close" in transport.out
    assert transport.closed
    loop.close()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=6),
       st.sampled_from([b"", b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"]))  # fmt: skip
def test_arbitrary_bytes_never_raise_and_errors_close(pieces, prefix):
    edge, loop = make_edge()
    try:
        conn, transport = connect(edge)
        for piece in [prefix, *pieces]:
            if transport.closed:
                break
            conn.data_received(piece)
        conn.eof_received()
        out = bytes(transport.out)
        if out:
            assert out.startswith(b"HTTP/1.1 ")
        for status in (b"400", b"414", b"431", b"501", b"505"):
            if b"HTTP/1.1 " + status in out:
                assert transport.closed
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.close()


def test_http10_clients_keep_alive_only_when_they_ask():
    edge, loop = make_edge()
    conn, transport = connect(edge)
    conn.data_received(b"GET /x HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
    assert b"Connection: keep-alive\r\n" in transport.out and not transport.closed
    conn.data_received(b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n")
    assert transport.out.count(b"HTTP/1.1 200") == 2 and b"Connection: close" in transport.out
    assert transport.closed
    loop.close()
