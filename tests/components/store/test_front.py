"""The lean HTTP/1.1 front (front.py) on a real node, byte by byte over raw sockets: answers
in request order, hand-off to aiohttp on the same connection, framing errors, closing."""

import json
import socket

import pytest

import harness
from components.common.http1 import Data, EndOfMessage, Parser, Response

INSERT = b'[["INSERT INTO f(v) VALUES(?)", "x"]]'


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = harness.start("store", "--data-dir", str(tmp_path_factory.mktemp("front")))
    harness.http(
        "POST", proc.url() + "/db/execute", b'["CREATE TABLE f (id INTEGER PRIMARY KEY, v)"]'
    )
    yield proc
    proc.stop(timeout_s=5)


def request(method, target, body=b"", extra=b""):
    head = b"%s %s HTTP/1.1\r\nHost: t\r\n%s" % (method, target, extra)
    if body and b"chunked" not in extra:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def exchange(proc, data, methods, sock=None):
    """Send ``data`` (several requests at once: pipelined) and read one answer per method:
    [(status, headers, body)] in order; the socket is returned for more."""
    sock = sock or socket.create_connection(proc.address(), timeout=harness.DEADLINE_S)
    sock.sendall(data)
    parser = Parser(response=True)
    for method in methods:
        parser.expect_response(method)
    answers, current = [], None
    while len(answers) < len(methods):
        chunk = sock.recv(65536)
        if not chunk:
            parser.feed_eof()
        parser.feed(chunk)
        while True:
            event = parser.next_event()
            if isinstance(event, Response):
                current = [event.status, event, b""]
            elif isinstance(event, Data):
                current[2] += event.data
            elif isinstance(event, EndOfMessage):
                answers.append(tuple(current))
            else:
                break
        if not chunk:
            break
    return answers, sock


def test_pipelined_requests_are_answered_in_order_and_read_their_own_writes(node):
    data = (request(b"POST", b"/db/execute", INSERT)
            + request(b"GET", b"/db/query?q=SELECT%20count(*)%20FROM%20f")
            + request(b"POST", b"/db/execute", INSERT))  # fmt: skip
    answers, sock = exchange(node, data, [b"POST", b"GET", b"POST"])
    sock.close()
    first, read, second = (json.loads(body) for _, _, body in answers)
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert second["lsn"] == first["lsn"] + 1
    # the read was served after the first write's answer: it sees it, not the second
    assert read["lsn"] == first["lsn"]
    assert read["results"][0]["values"][0][0] == first["results"][0]["last_insert_id"]
    assert answers[0][1].get(b"x-scalelab-lsn") == str(first["lsn"]).encode()


def test_other_routes_hand_the_connection_to_aiohttp_which_keeps_serving_it(node):
    data = (request(b"POST", b"/db/execute", INSERT) + request(b"GET", b"/status")
            + request(b"POST", b"/db/execute", INSERT))  # fmt: skip
    answers, sock = exchange(node, data, [b"POST", b"GET", b"POST"])
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert json.loads(answers[1][2])["scalelab"]["role"] == "primary"
    assert b"Server" not in dict(answers[0][1].headers) and answers[2][1].get(b"server")
    more, _ = exchange(node, request(b"GET", b"/db/query?q=SELECT%201"), [b"GET"], sock)
    assert more[0][0] == 200  # still aiohttp, still the same connection
    sock.close()


def test_chunked_bodies_go_to_aiohttp(node):
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(INSERT), INSERT)
    data = request(b"POST", b"/db/execute", body, b"Transfer-Encoding: chunked\r\n")
    answers, sock = exchange(node, data, [b"POST"])
    sock.close()
    assert answers[0][0] == 200 and json.loads(answers[0][2])["results"][0]["rows_affected"] == 1


def test_bad_framing_on_a_fast_route_is_400_and_closes(node):
    data = b"POST /db/execute HTTP/1.1\r\nHost: t\r\nContent-Length: 12x\r\n\r\n"
    answers, sock = exchange(node, data, [b"POST"])
    assert answers[0][0] == 400
    assert sock.recv(1) == b""  # closed
    sock.close()


def test_bad_json_is_rqlites_400(node):
    answers, sock = exchange(node, request(b"POST", b"/db/execute", b"[not json"), [b"POST"])
    sock.close()
    assert answers[0][0] == 400 and b"invalid JSON" in answers[0][2]


def test_connection_close_and_http_1_0_are_honoured(node):
    data = request(b"POST", b"/db/execute", INSERT, b"Connection: close\r\n")
    answers, sock = exchange(node, data, [b"POST"])
    assert answers[0][0] == 200 and answers[0][1].get(b"connection") == b"close"
    assert sock.recv(1) == b""
    sock.close()
    answers, sock = exchange(node, b"GET /db/query?q=SELECT%202 HTTP/1.0\r\n\r\n", [b"GET"])
    assert answers[0][0] == 200 and json.loads(answers[0][2])["results"][0]["values"] == [[2]]
    assert sock.recv(1) == b""
    sock.close()


def test_a_head_arriving_byte_by_byte_is_still_served(node):
    sock = socket.create_connection(node.address(), timeout=harness.DEADLINE_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = request(b"POST", b"/db/execute", INSERT)
    for i in range(len(data) - 1):
        sock.send(data[i : i + 1])
    answers, sock = exchange(node, data[-1:], [b"POST"], sock)
    sock.close()
    assert answers[0][0] == 200


def test_a_repeated_head_with_new_bodies_serves_each_body(node):
    bodies = [b'[["INSERT INTO f(v) VALUES(?)", "%d"]]' % digit for digit in range(3)]
    data = b"".join(request(b"POST", b"/db/execute", body) for body in bodies)
    data += request(b"POST", b"/db/query", b'["SELECT v FROM f ORDER BY id DESC LIMIT 3"]')
    answers, sock = exchange(node, data, [b"POST"] * 4)
    sock.close()
    assert [status for status, _, _ in answers] == [200] * 4
    assert json.loads(answers[3][2])["results"][0]["values"] == [["2"], ["1"], ["0"]]
