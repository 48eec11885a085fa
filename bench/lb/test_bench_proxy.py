"""µs of Python per proxied request: the balancer's own logic, with the sockets faked.

Run: ``.venv/bin/python -m pytest bench/lb --benchmark-only``. ``FakeTransport`` stands in
for uvloop's transports, so what is measured is exactly the per-request work of
``components.lb.server`` (parse the request, pick, rewrite, pool, parse the response,
rewrite, metrics), not syscalls. The event loop is shaped as under load: ``CLIENTS``
keep-alive clients each send a request in one round of the loop, the pooled backend
connections answer in the next, and each round ends the way a real one does (its
``call_soon`` callbacks run, among them the ``Outbox`` sending the round's writes).
Each benchmark round proxies 1000 requests, so the mean in ms equals µs per request.
The first test repeats one request and one response, as wrk and a busy keep-alive
backend do, so both parsers recall the previous head; the second gives every request
its own target and every response its own ``Date``, so nothing is recalled: the cost
for traffic that never repeats itself. Compare with the CPU per request that
``compare_haproxy.py`` measures with real sockets: the difference is the kernel, uvloop
and the poll itself.
"""

import asyncio

from components.common.runner import Runtime, parse_args
from components.lb.proxy import BackendConnection, ClientConnection
from components.lb.server import LoadBalancer

OPS = 1000
#: Clients in flight at once (one request each per round), as ``wrk -c50``.
CLIENTS = 50
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
    for backend in proxy.balancer.backends:  # enough warm keep-alive connections each
        for _ in range(CLIENTS):
            conn = BackendConnection(proxy, backend)
            conn.connection_made(FakeTransport())
            # Straight into the idle list (what ``pool.put`` does), so that this helper
            # works with the ``pool.put`` of any revision ``ab_python_cost.py`` compares.
            proxy.pool.idle.setdefault(backend, []).append(conn)
    return proxy


def make_clients(proxy: LoadBalancer) -> list[ClientConnection]:
    clients = []
    for i in range(CLIENTS):
        client = ClientConnection(proxy)
        client.connection_made(FakeTransport(("192.0.2.1", 40000 + i)))
        clients.append(client)
    return clients


def run_one_round(loop: asyncio.AbstractEventLoop) -> None:
    """One round of the event loop: the ``call_soon`` callbacks scheduled so far run.

    (``stop`` then ``run_forever`` is asyncio's public way to run exactly one round.)
    """
    loop.stop()
    loop.run_forever()


def proxy_requests(proxy, clients, count: int, requests=(REQUEST,), responses=(RESPONSE,)):
    """``count`` exchanges, ``len(clients)`` per pair of rounds; heads taken in turn."""
    loop = proxy.loop
    served = 0
    turn = 0
    while served < count:
        batch = clients[: count - served]
        request, response = requests[turn % len(requests)], responses[turn % len(responses)]
        for client in batch:
            client.data_received(request)
        run_one_round(loop)
        for client in batch:
            client.conn.data_received(response)
        run_one_round(loop)
        served += len(batch)
        turn += 1


def check_all_answered(clients) -> None:
    assert all(c.conn is None and c.request is None for c in clients)  # exchanges completed
    assert all(c.transport.written >= len(b"hello from backend\n") for c in clients)


def test_proxy_request_python_cost(benchmark):
    loop = asyncio.new_event_loop()
    proxy = make_proxy(loop)
    clients = make_clients(proxy)
    benchmark(proxy_requests, proxy, clients, OPS)
    check_all_answered(clients)
    loop.close()


def test_proxy_request_python_cost_no_repeated_heads(benchmark):
    loop = asyncio.new_event_loop()
    proxy = make_proxy(loop)
    clients = make_clients(proxy)
    # Alternate two variants of each: a head differs from the one just before it.
    requests = [REQUEST.replace(b"/users/42", b"/users/%d" % i) for i in range(2)]
    responses = [RESPONSE.replace(b"10:00:00", b"10:00:0%d" % i) for i in range(2)]
    benchmark(proxy_requests, proxy, clients, OPS, requests, responses)
    check_all_answered(clients)
    loop.close()
