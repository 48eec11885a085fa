"""µs of Python per proxied request: the balancer's own logic, with the sockets faked.

Run: ``.venv/bin/python -m pytest bench/lb --benchmark-only``. ``FakeTransport`` stands in
for uvloop's transports, so what is measured is exactly the per-request work of
``components.lb.server`` (parse the request, pick, rewrite, pool, parse the response,
rewrite, metrics), not syscalls or the event loop. Each round proxies 1000 keep-alive
requests over one client connection and one pooled backend connection, so the mean in
ms equals µs per request. The first test repeats one request and one response, as wrk
and a busy keep-alive backend do, so both parsers recall the previous head; the second
gives every request its own target and every response its own ``Date``, so nothing is
recalled: the cost for traffic that never repeats itself. Compare with the CPU per request that ``compare_haproxy.py``
measures with real sockets: the difference is the event loop and the kernel.
"""

import asyncio

from components.common.runner import Runtime, parse_args
from components.lb.proxy import BackendConnection, ClientConnection
from components.lb.server import LoadBalancer

OPS = 1000
REQUEST = (
    b"GET /users/42 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\nConnection: keep-alive\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 10:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 19\r\nConnection: keep-alive\r\n\r\n"
    b"hello from backend\n"
)


class FakeTransport(asyncio.Transport):
    def __init__(self, peer=("192.0.2.1", 40000)) -> None:
        super().__init__()
        self.peer = peer
        self.written = 0

    def write(self, data) -> None:
        self.written += len(data)

    def get_extra_info(self, name, default=None):
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def make_proxy(loop) -> LoadBalancer:
    args = parse_args(LoadBalancer, ["--backend", "10.0.0.1:80", "--backend", "10.0.0.2:80"])
    proxy = LoadBalancer(args, Runtime(args, "lb"))
    proxy.setup(loop)
    for backend in proxy.balancer.backends:  # one warm keep-alive connection each
        conn = BackendConnection(proxy, backend)
        conn.connection_made(FakeTransport())
        # Straight into the idle list (what ``pool.put`` does), so that this helper works
        # with the ``pool.put`` of any revision ``ab_python_cost.py --base`` compares.
        proxy.pool.idle.setdefault(backend, []).append(conn)
    return proxy


def test_proxy_request_python_cost(benchmark):
    loop = asyncio.new_event_loop()
    proxy = make_proxy(loop)
    client = ClientConnection(proxy)
    transport = FakeTransport()
    client.connection_made(transport)

    def run():
        for _ in range(OPS):
            client.data_received(REQUEST)
            conn = client.conn
            conn.data_received(RESPONSE)

    benchmark(run)
    assert client.conn is None and client.request is None  # every exchange completed
    assert transport.written >= OPS * len(b"hello from backend\n")
    loop.close()


def test_proxy_request_python_cost_no_repeated_heads(benchmark):
    loop = asyncio.new_event_loop()
    proxy = make_proxy(loop)
    client = ClientConnection(proxy)
    transport = FakeTransport()
    client.connection_made(transport)
    # Alternate two variants of each: a head differs from the one just before it.
    requests = [REQUEST.replace(b"/users/42", b"/users/%d" % i) for i in range(2)]
    responses = [RESPONSE.replace(b"10:00:00", b"10:00:0%d" % i) for i in range(2)]

    def run():
        for i in range(OPS):
            client.data_received(requests[i & 1])
            client.conn.data_received(responses[i & 1])

    benchmark(run)
    assert client.conn is None and client.request is None
    assert transport.written >= OPS * len(b"hello from backend\n")
    loop.close()
