"""ns per message for the HTTP/1.1 codec and the proxy's head rewriting (sans-IO, no sockets).

Run: ``.venv/bin/python -m pytest bench/lb --benchmark-only``. Each benchmark handles
1000 messages per round, so the reported mean in µs equals the cost per message in ns.
``test_proxy_round_trip`` is everything the balancer does in pure Python for one
request/response pair apart from the event loop: parse the request, write the backend
head, parse the response, write the client head. The ``_repeated`` variants parse the
same pipelines with ``repeat_heads=True`` (what the balancer runs with): every head after
the first is recalled, not parsed, so they give the floor of a repeated message's cost.
The ``walking`` requests have each its own target over the same fields (a crawler,
``compare_haproxy.py --vary-requests``): with ``repeat_heads`` only the request line is
parsed again. The ``whole`` responses read each body with ``whole_body`` after its head,
as the balancer does when an answer arrives in one read.
"""

import pytest

from components.common.http1 import NEED_DATA, Parser
from components.lb.protocol import backend_request_head, client_response_head

OPS = 1000

REQUEST = (
    b"GET /users/12345?fields=name HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-GB,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=4f0c2a9b8e; theme=dark\r\n"
    b"\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 150\r\n"
    b"Connection: keep-alive\r\n"
    b"Cache-Control: max-age=60\r\n"
    b'ETag: "33a64df551425fcc55e4d42a148795d9f25f89d4"\r\n'
    b"\r\n" + b"x" * 150
)
PIPELINE = REQUEST * OPS
WALKING = b"".join(REQUEST.replace(b"/users/12345", b"/users/%d" % i) for i in range(OPS))
RESPONSES = RESPONSE * OPS


def parse_all(parser: Parser) -> int:
    count = 0
    next_event = parser.next_event
    while next_event() is not NEED_DATA:
        count += 1
    return count


REPEAT = pytest.mark.parametrize("repeat_heads", [False, True], ids=["", "repeated"])


@REPEAT
@pytest.mark.parametrize("pipeline", [PIPELINE, WALKING], ids=["typical", "walking"])
def test_parse_request(benchmark, repeat_heads, pipeline):
    def run():
        parser = Parser(repeat_heads=repeat_heads)
        parser.feed(pipeline)
        return parse_all(parser)

    assert benchmark(run) == 2 * OPS  # Request + EndOfMessage each


@REPEAT
@pytest.mark.parametrize("whole", [False, True], ids=["events", "whole"])
def test_parse_response(benchmark, repeat_heads, whole):
    def run():
        parser = Parser(response=True, repeat_heads=repeat_heads)
        for _ in range(OPS):
            parser.expect_response(b"GET")
        parser.feed(RESPONSES)
        if not whole:
            return parse_all(parser)
        bodies = 0
        while parser.next_event() is not NEED_DATA:
            bodies += len(parser.whole_body())
        return bodies

    # Response + Data + EndOfMessage each, or each 150-byte body at once.
    assert benchmark(run) == (150 if whole else 3) * OPS


def test_proxy_round_trip(benchmark):
    def run():
        out = 0
        for _ in range(OPS):
            requests = Parser()
            requests.feed(REQUEST)
            request = requests.next_event()
            requests.next_event()
            out += len(backend_request_head(request, "192.0.2.1", b"lb", b"10.0.0.1:80"))
            responses = Parser(response=True)
            responses.expect_response(request.method)
            responses.feed(RESPONSE)
            response = responses.next_event()
            head, _, _ = client_response_head(
                response, client_version=b"1.1", keep_alive=True, via_name=b"lb"
            )
            out += len(head) + len(responses.next_event().data)
            responses.next_event()
        return out

    assert benchmark(run) > 0
