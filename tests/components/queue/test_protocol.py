"""The beanstalkd wire format, byte for byte, without sockets (protocol.txt)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.queue import protocol
from components.queue.protocol import (
    MAX_LINE_BYTES,
    Command,
    CommandParser,
    Error,
    Put,
    Reply,
    ReplyParser,
)


def events(data: bytes, parser: CommandParser | None = None, max_job_bytes: int = 100):
    parser = parser or CommandParser(max_job_bytes)
    parser.receive_data(data)
    out = []
    while (event := parser.next_event()) is not None:
        out.append(event)
    return out


def test_put_with_body_and_crlf_is_one_event():
    assert events(b"put 1 2 3 5\r\nhello\r\n") == [Put(1, 2, 3, b"hello")]


def test_put_body_may_contain_crlf_and_nul():
    assert events(b"put 0 0 1 6\r\na\r\n\x00bc\r\n") == [Put(0, 0, 1, b"a\r\n\x00bc")]


def test_empty_body_is_allowed():
    assert events(b"put 0 0 1 0\r\n\r\n") == [Put(0, 0, 1, b"")]


def test_body_not_followed_by_crlf_is_expected_crlf_and_stream_continues():
    assert events(b"put 0 0 1 3\r\nabcXYstats\r\n") == [
        Error(Reply.EXPECTED_CRLF),
        Command("stats"),
    ]


def test_oversized_put_skips_the_body_then_job_too_big():
    body = b"x" * 101
    assert events(b"put 0 0 1 101\r\n" + body + b"\r\nuse a\r\n") == [
        Error(Reply.JOB_TOO_BIG),
        Command("use", ("a",)),
    ]


def test_oversized_put_body_is_skipped_across_many_chunks_without_buffering():
    parser = CommandParser(10)
    parser.receive_data(b"put 0 0 1 5000\r\n")
    assert parser.next_event() is None
    for _ in range(50):
        parser.receive_data(b"y" * 100)
        assert parser.next_event() is None
        assert parser.buffered == 0
    parser.receive_data(b"\r\nquit\r\n")
    assert parser.next_event() == Error(Reply.JOB_TOO_BIG)
    assert parser.next_event() == Command("quit")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"reserve", Command("reserve")),
        (b"reserve-with-timeout 5", Command("reserve-with-timeout", (5,))),
        (b"reserve-job 7", Command("reserve-job", (7,))),
        (b"delete 18446744073709551615", Command("delete", (2**64 - 1,))),
        (b"release 3 10 0", Command("release", (3, 10, 0))),
        (b"bury 3 4294967295", Command("bury", (3, 2**32 - 1))),
        (b"touch 1", Command("touch", (1,))),
        (b"use photos", Command("use", ("photos",))),
        (b"watch a-b+c/d;e.f$g_h(i)", Command("watch", ("a-b+c/d;e.f$g_h(i)",))),
        (b"ignore default", Command("ignore", ("default",))),
        (b"peek 1", Command("peek", (1,))),
        (b"peek-ready", Command("peek-ready")),
        (b"peek-delayed", Command("peek-delayed")),
        (b"peek-buried", Command("peek-buried")),
        (b"kick 10", Command("kick", (10,))),
        (b"kick-job 2", Command("kick-job", (2,))),
        (b"stats-job 2", Command("stats-job", (2,))),
        (b"stats-tube default", Command("stats-tube", ("default",))),
        (b"stats", Command("stats")),
        (b"list-tubes", Command("list-tubes")),
        (b"list-tube-used", Command("list-tube-used")),
        (b"list-tubes-watched", Command("list-tubes-watched")),
        (b"pause-tube photos 30", Command("pause-tube", ("photos", 30))),
        (b"quit", Command("quit")),
        (b"put  1 2 3 0", None),  # runs of spaces before integers are allowed
    ],
)
def test_every_command_parses(line, expected):
    got = events(line + b"\r\n" + (b"\r\n" if line.startswith(b"put") else b""))
    if expected is None:
        assert got == [Put(1, 2, 3, b"")]
    else:
        assert got == [expected]


@pytest.mark.parametrize(
    "line",
    [
        b"put 1 2 3",  # missing argument
        b"put  1 2 3",  # missing argument after a run of spaces
        b"put 1 2 3 4 5",  # extra argument
        b"put -1 0 0 0",  # negative
        b"put 4294967296 0 1 0",  # priority over 2**32-1
        b"put a 0 1 0",
        b"put 1 0 1 0 ",  # trailing space
        b"delete",
        b"delete x",
        b"delete 18446744073709551616",  # over 2**64-1
        b"reserve ",
        b"reserve now",
        b"reserve-with-timeout 2147483648",  # above INT_MAX, as beanstalkd
        b"use -leading-hyphen",
        b"use " + b"t" * 201,  # tube name over 200 bytes
        b"use a b",
        b"use  a",
        b"use",
        b"watch bad*char",
        b"pause-tube photos",
        b"stats-job 1\x00",
        b"kick +5",
    ],
)
def test_malformed_lines_are_bad_format(line):
    assert events(line + b"\r\n") == [Error(Reply.BAD_FORMAT)]


def test_unknown_command():
    assert events(b"frobnicate 1\r\n") == [Error(Reply.UNKNOWN_COMMAND)]
    assert events(b"\r\n") == [Error(Reply.UNKNOWN_COMMAND)]


def test_bare_lf_does_not_end_a_line():
    parser = CommandParser()
    assert events(b"stats\n", parser) == []
    assert events(b"\r\n", parser) == [Error(Reply.UNKNOWN_COMMAND)]


def test_tube_name_of_exactly_200_bytes_is_accepted():
    name = b"t" * 200
    assert events(b"use " + name + b"\r\n") == [Command("use", (name.decode(),))]


def test_line_of_224_bytes_is_accepted_and_225_is_bad_format():
    def put_line(total):  # beanstalkd allows runs of spaces before integers
        return b"put" + b" " * (total - 12) + b"0 0 1 0\r\n"

    assert len(put_line(MAX_LINE_BYTES)) == MAX_LINE_BYTES
    assert events(put_line(MAX_LINE_BYTES) + b"\r\n") == [Put(0, 0, 1, b"")]
    assert events(put_line(MAX_LINE_BYTES + 1) + b"stats\r\n") == [
        Error(Reply.BAD_FORMAT),
        Command("stats"),
    ]


def test_endless_line_is_discarded_with_bounded_buffer_then_bad_format():
    parser = CommandParser()
    for _ in range(100):
        parser.receive_data(b"z" * 1000)
        assert parser.next_event() is None
        assert parser.buffered <= MAX_LINE_BYTES
    parser.receive_data(b"z\r")
    assert parser.next_event() is None
    parser.receive_data(b"\nstats\r\n")
    assert parser.next_event() == Error(Reply.BAD_FORMAT)
    assert parser.next_event() == Command("stats")


def test_pipelined_commands_arrive_in_order():
    data = b"use a\r\nput 0 0 1 1\r\nx\r\nreserve\r\ndelete 1\r\n"
    assert events(data) == [
        Command("use", ("a",)),
        Put(0, 0, 1, b"x"),
        Command("reserve"),
        Command("delete", (1,)),
    ]


@given(st.lists(st.sampled_from([b"put", b" ", b"  ", b"1", b"42", b"-", b"x", b"\t"]), max_size=8))
def test_put_lines_of_any_shape_parse_or_are_bad_format(tokens):
    line = b"".join(tokens)
    got = events(line + b"\r\n")
    assert got and isinstance(got[0], Put | Error | Command)


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
def test_byte_at_a_time_equals_all_at_once(data, chunk):
    stream = b"put 0 0 1 3\r\nabc\r\n" + data + b"\r\nstats\r\n"
    whole = events(stream)
    parser = CommandParser(100)
    pieces = []
    for i in range(0, len(stream), chunk):
        parser.receive_data(stream[i : i + chunk])
        while (event := parser.next_event()) is not None:
            pieces.append(event)
    assert pieces == whole


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash_and_buffer_stays_bounded(data):
    parser = CommandParser(100)
    for i in range(0, len(data), 97):
        parser.receive_data(data[i : i + 97])
        while (event := parser.next_event()) is not None:
            assert isinstance(event, Command | Put | Error)
        # one line plus one body plus one chunk, never more
        assert parser.buffered <= MAX_LINE_BYTES + 102 + 97


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=100),
)
def test_any_valid_put_round_trips(pri, delay, ttr, body):
    line = b"put %d %d %d %d\r\n%s\r\n" % (pri, delay, ttr, len(body), body)
    assert events(line) == [Put(pri, delay, ttr, body)]


@given(st.binary(max_size=100), st.integers(0, 100))
def test_truncated_put_waits_for_more_and_never_emits_a_partial_body(body, cut):
    stream = b"put 0 0 1 %d\r\n%s\r\n" % (len(body), body)
    cut = min(cut, len(stream) - 1)
    assert events(stream[:cut]) == []


def test_a_read_that_is_one_plain_put_is_taken_whole():
    parser = CommandParser(100)
    assert parser.whole_put(b"put 1 2 3 5\r\nhello\r\n") == (1, 2, 3, b"hello")
    assert parser.whole_put(b"put 0 0 1 0\r\n\r\n") == (0, 0, 1, b"")
    assert parser.buffered == 0 and parser.next_event() is None  # nothing was buffered


@pytest.mark.parametrize(
    "data",
    [
        b"put 1 2 3 5\r\nhello\r\nput 1 2 3 5\r\nhello\r\n",  # pipelined: two puts
        b"put 1 2 3 5\r\nhel",  # a partial read
        b"put 1 2 3 5\r\nhelloXY",  # EXPECTED_CRLF is the general path's to report
        b"put 1 2 3 101\r\n" + b"x" * 101 + b"\r\n",  # JOB_TOO_BIG, likewise
        b"put  1 2 3 5\r\nhello\r\n",  # unusual spacing: the general parser judges it
        b"put 1 2 3 5 \r\nhello\r\n",
        b"put 1 2 3 99999999999\r\nhello\r\n",
        b"put 1 2 3 " + b"0" * 220 + b"5\r\nhello\r\n",  # a line over MAX_LINE_BYTES
        b"use x\r\n",
    ],
)
def test_anything_but_one_plain_put_goes_the_general_way(data):
    assert CommandParser(100).whole_put(data) is None


def test_the_put_header_memo_is_bounded_and_answers_as_parsing_does():
    for size in range(protocol.PUT_HEADER_CACHE_SIZE + 10):  # more shapes than it holds
        assert protocol.put_header(b"1 2 3 %d" % size) == (1, 2, 3, size)
    assert protocol.put_header.cache_info().currsize == protocol.PUT_HEADER_CACHE_SIZE
    assert protocol.put_header(b"1 2 3 x") is None  # refusals are remembered as refusals
    assert protocol.put_header(b"1 2 3 x") is None


def test_a_put_behind_buffered_bytes_goes_the_general_way():
    parser = CommandParser(100)
    parser.receive_data(b"put 1 2 3 5\r\nhel")
    assert parser.whole_put(b"put 1 2 3 5\r\nhello\r\n") is None  # it would jump the queue


@settings(max_examples=300)
@given(
    st.lists(st.integers(0, 2**32 + 1), min_size=3, max_size=3),
    st.binary(max_size=120),
    st.binary(max_size=8),
    st.integers(0, 300),
)
def test_whole_put_agrees_with_the_general_parser(fields, body, suffix, cut):
    pri, delay, ttr = fields
    plain = b"put %d %d %d %d\r\n" % (pri, delay, ttr, len(body)) + body + b"\r\n"
    data = (plain + suffix)[:cut] if cut else plain + suffix
    taken = CommandParser(100).whole_put(data)
    if taken is not None:
        assert events(data) == [Put(*taken)]
    if data == plain and max(fields) <= protocol.U32_MAX and len(body) <= 100:
        assert taken == (pri, delay, ttr, body)  # the plain case does take the fast path


def test_reply_formats_are_byte_exact():
    assert protocol.inserted(7) == b"INSERTED 7\r\n"
    assert protocol.buried(7) == b"BURIED 7\r\n"
    assert protocol.reserved(3, b"ab") == b"RESERVED 3 2\r\nab\r\n"
    assert protocol.found(3, b"") == b"FOUND 3 0\r\n\r\n"
    assert protocol.using("photos") == b"USING photos\r\n"
    assert protocol.watching(2) == b"WATCHING 2\r\n"
    assert protocol.kicked(0) == b"KICKED 0\r\n"
    assert protocol.ok(b"---\n- default\n") == b"OK 14\r\n---\n- default\n\r\n"


def test_yaml_documents_match_beanstalkd():
    assert protocol.yaml_list(["default", "a"]) == b"---\n- default\n- a\n"
    data = protocol.yaml_dict([("id", 1), ("tube", protocol.quoted("t")), ("draining", False)])
    assert data == b'---\nid: 1\ntube: "t"\ndraining: false\n'


def test_reply_parser_reads_lines_and_bodies_in_pieces():
    parser = ReplyParser()
    stream = b"INSERTED 5\r\nRESERVED 5 3\r\na\r\n\r\nOK 4\r\n---\n\r\nNOT_FOUND\r\n"
    got = []
    for byte in stream:
        parser.receive_data(bytes([byte]))
        while (reply := parser.next_reply()) is not None:
            got.append(reply)
    assert [(r.word, r.args, r.body) for r in got] == [
        ("INSERTED", (5,), None),
        ("RESERVED", (5,), b"a\r\n"),
        ("OK", (), b"---\n"),
        ("NOT_FOUND", (), None),
    ]


def test_reply_parser_refuses_garbage():
    parser = ReplyParser()
    parser.receive_data(b"RESERVED 1 2\r\nabXY")
    with pytest.raises(protocol.ProtocolViolation):
        parser.next_reply()
    parser = ReplyParser()
    parser.receive_data(b"x" * 2000)
    with pytest.raises(protocol.ProtocolViolation):
        parser.next_reply()
