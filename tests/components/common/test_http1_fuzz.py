"""Property tests for the HTTP/1.1 parser: any split, any truncation, any junk.

The properties a proxy's parser must have: the events do not depend on how the bytes
were cut into reads; a truncated message is never reported complete; malformed input
ends in ``ProtocolError`` (never another exception, never an endless loop); and what the
serialisers write parses back to what was meant.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.common.http1 import (
    NEED_DATA,
    Data,
    EndOfMessage,
    Parser,
    ProtocolError,
    Request,
    Response,
    chunk,
    serialize_request_head,
    serialize_response_head,
    serialize_trailers,
)

MESSAGES = [
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world",
    b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;e=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n",
    b"\r\nGET /p1 HTTP/1.1\r\nHost: h\r\n\r\nPUT /p2 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nokGET /p3 HTTP/1.0\r\n\r\n",
]
RESPONSES = [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody", [b"GET"]),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"4\r\nbody\r\n0\r\nX: 1\r\n\r\nHTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n", [b"PUT", b"GET"]),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nHTTP/1.0 200 OK\r\n\r\nuntil close", [b"HEAD", b"GET"]),
]  # fmt: skip


def normalise(evs: list) -> list:
    """Events with adjacent Data merged, so different read splits compare equal."""
    out: list = []
    for event in evs:
        if type(event) is Data and out and type(out[-1]) is Data:
            out[-1] = Data(out[-1].data + event.data)
        elif type(event) is Data and not event.data:
            continue
        else:
            out.append(event)
    return out


def run(
    pieces: list[bytes],
    methods: list[bytes] | None = None,
    eof: bool = True,
    repeat_heads: bool = False,
    whole_bodies: bool = False,
):
    """Feed pieces one by one, draining events after each; (events, error or None).

    ``whole_bodies``: after each final head, ask ``whole_body`` first (as the proxy
    does) and record what it returns as the Data and EndOfMessage it stands for.
    """
    parser = Parser(response=methods is not None, repeat_heads=repeat_heads)
    for method in methods or ():
        parser.expect_response(method)
    evs: list = []
    try:
        for piece in [*pieces, None]:
            if piece is None:
                if not eof:
                    break
                parser.feed_eof()
            else:
                parser.feed(piece)
            for _ in range(100_000):  # an endless loop would be a bug; fail instead
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                evs.append(event)
                if whole_bodies and (type(event) is Request or
                                     (type(event) is Response and event.status >= 200)):  # fmt: skip
                    body = parser.whole_body()
                    if body is not None:
                        evs += [Data(body), EndOfMessage()]
            else:
                raise AssertionError("parser did not stop producing events")
    except ProtocolError as error:
        return normalise(evs), error
    return normalise(evs), None


def test_every_split_point_gives_the_same_events():
    for message in MESSAGES:
        whole, error = run([message])
        assert error is None
        for cut in range(len(message) + 1):
            assert run([message[:cut], message[cut:]]) == (whole, None), (message, cut)


def test_every_split_point_gives_the_same_responses():
    for message, methods in RESPONSES:
        whole, error = run([message], list(methods))
        assert error is None
        for cut in range(len(message) + 1):
            assert run([message[:cut], message[cut:]], list(methods)) == (whole, None)


@st.composite
def cuts(draw, data: bytes) -> list[bytes]:
    points = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


@given(st.data())
def test_any_chunking_of_a_pipeline_gives_the_same_events(data):
    message = b"".join(MESSAGES)
    whole = run([message])
    assert data.draw(cuts(message)) and run(data.draw(cuts(message))) == whole


def test_every_truncation_of_a_message_is_an_error_never_a_complete_message():
    for message in [*MESSAGES[:3], *(m for m, _ in RESPONSES[:1])]:
        methods = [b"GET"] if message.startswith(b"HTTP/") else None
        for cut in range(1, len(message)):
            evs, error = run([message[:cut]], methods)
            assert error is not None, (message, cut)
            assert error.status in (400, 502)
            assert not any(type(e) is EndOfMessage for e in evs), (message, cut)


def test_a_pipeline_cut_between_messages_ends_cleanly():
    first, second = MESSAGES[0], MESSAGES[1]
    evs, error = run([first + second[:10]])
    assert error is not None and sum(type(e) is EndOfMessage for e in evs) == 1
    evs, error = run([first + second])
    assert error is None and sum(type(e) is EndOfMessage for e in evs) == 2


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MESSAGES), st.integers(0, 400), st.binary(min_size=1, max_size=4))
def test_mutated_requests_end_in_events_or_protocol_error(message, position, junk):
    position %= len(message) + 1
    mutated = message[:position] + junk + message[position:]
    evs, _ = run([mutated])
    for event in evs:
        assert type(event) in (Request, Data, EndOfMessage)


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_random_bytes_end_in_events_or_protocol_error(blob):
    run([blob])
    run([blob], [b"GET"])


@given(st.integers(70_000, 200_000), st.sampled_from([b"a", b"X: y\r\n"]))
def test_unbounded_input_is_refused_not_buffered(size, unit):
    parser = Parser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n" if unit != b"a" else b"GET /")
    blob = unit * (size // len(unit))
    try:
        for start in range(0, len(blob), 8192):
            parser.feed(blob[start : start + 8192])
            while parser.next_event() is not NEED_DATA:
                pass
            assert parser.buffered <= 64 * 1024 + 8192
    except ProtocolError as error:
        assert error.status in (400, 414, 431)
    else:
        raise AssertionError("oversized head was accepted")


token = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=20
)
value = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40).map(str.encode)


@given(
    st.lists(st.tuples(token.map(str.encode), value), max_size=20),
    st.lists(st.binary(min_size=1, max_size=300), max_size=6),
    st.booleans(),
)
def test_serialised_requests_parse_back(fields, pieces, chunked):
    fields = [(n, v) for n, v in fields if n.lower() not in
              (b"host", b"content-length", b"transfer-encoding", b"connection", b"expect")]  # fmt: skip
    body = b"".join(pieces)
    framing = [(b"Transfer-Encoding", b"chunked")] if chunked else [
        (b"Content-Length", b"%d" % len(body))]  # fmt: skip
    headers = [(b"Host", b"h"), *fields, *framing]
    wire = serialize_request_head(b"POST", b"/t", headers)
    wire += b"".join(chunk(p) for p in pieces) + serialize_trailers([]) if chunked else body
    evs, error = run([wire])
    assert error is None
    assert evs[0].headers == headers and evs[0].method == b"POST"
    assert b"".join(e.data for e in evs if type(e) is Data) == body
    assert type(evs[-1]) is EndOfMessage


@given(st.integers(200, 599), st.binary(max_size=500))
def test_serialised_responses_parse_back(status, body):
    wire = serialize_response_head(status, [(b"Content-Length", b"%d" % len(body))])
    if status not in (204, 304):  # §6.3: these never carry a body, whatever the length says
        wire += body
    evs, error = run([wire], [b"GET"])
    assert error is None and type(evs[0]) is Response and evs[0].status == status
    if status in (204, 304):
        assert len(evs) == 2
    else:
        assert b"".join(e.data for e in evs if type(e) is Data) == body


def test_endless_empty_lines_between_requests_are_dropped_not_buffered():
    parser = Parser()
    for _ in range(50):
        parser.feed(b"\r\n" * 4096)
        assert parser.next_event() is NEED_DATA
        assert parser.buffered == 0
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert type(parser.next_event()) is Request


# -- repeat_heads: a repeated head is recalled, not parsed, and nothing else changes ------

REPEATED_REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"GET /x HTTP/1.0\r\n\r\n",
    b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",  # 400
    # The same fields under other request lines: only the line is parsed again.
    b"DELETE /b?q=1 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
    b"PUT /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /y HTTP/1.0\r\n\r\n",
    b"GET /y HTTP/1.1\r\n\r\n",  # 400: no Host in 1.1
    b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",  # 400: not a token
    b"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n",  # 400: DEL is a control byte
    b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",  # 400: four parts
    # Lines the walking-URL shortcut leaves to the full parse, whatever its verdict.
    b"PROPFIND /p HTTP/1.1\r\nHost: h\r\n\r\n",  # a token, not a common method
    b"GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n",  # obs-text in the target
    b"GET /\t HTTP/1.1\r\nHost: h\r\n\r\n",  # HTAB in the target
    b"\r\nGET /e HTTP/1.1\r\nHost: h\r\n\r\n",  # an empty line first
    b"GET /v HTTP/2.0\r\nHost: h\r\n\r\n",  # 505
    b"GET  /d HTTP/1.1\r\nHost: h\r\n\r\n",  # 400: two spaces
]
#: (head and body, the method it answers; None for an interim answer)
REPEATED_RESPONSES = [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody", b"GET"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", b"HEAD"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", b"GET"),
    (b"HTTP/1.1 100 Continue\r\n\r\n", None),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", b"GET"),
]


def same_outcome(a, b) -> bool:
    (events_a, error_a), (events_b, error_b) = a, b
    errors = [(e.status, e.detail) if e else None for e in (error_a, error_b)]
    return events_a == events_b and errors[0] == errors[1]


# (Each also asks ``whole_body`` after the heads half the time, as the proxy does: a
# message taken at once must be the message its events describe.)


@settings(max_examples=400)
@given(st.lists(st.sampled_from(REPEATED_REQUESTS + MESSAGES), min_size=1, max_size=8),
       st.booleans(), st.data())  # fmt: skip
def test_repeat_heads_gives_the_same_request_events_as_parsing_every_head(messages, whole, data):
    pieces = data.draw(cuts(b"".join(messages)))
    assert same_outcome(run(pieces, repeat_heads=True, whole_bodies=whole), run(pieces))


@settings(max_examples=400)
@given(st.lists(st.sampled_from(REPEATED_RESPONSES), min_size=1, max_size=8), st.booleans(),
       st.data())  # fmt: skip
def test_repeat_heads_gives_the_same_response_events_as_parsing_every_head(answers, whole, data):
    pieces = data.draw(cuts(b"".join(message for message, _ in answers)))
    methods = [method for _, method in answers if method is not None]
    plain = run(pieces, list(methods))
    assert same_outcome(run(pieces, list(methods), repeat_heads=True, whole_bodies=whole), plain)
