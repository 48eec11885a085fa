"""The outbox: a round's writes leave together at the end of the round, in order."""

from __future__ import annotations

import asyncio

import pytest

from components.lb.proxy import OUTBOX_MAX_BYTES, Outbox


class Recording(asyncio.Transport):
    def __init__(self, log: list) -> None:
        super().__init__()
        self.log = log
        self.closing = False

    def write(self, data) -> None:
        self.log.append((self, data))

    def is_closing(self) -> bool:
        return self.closing


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()  # not running: the tests turn it round by round
    yield loop
    loop.close()


def one_round(loop: asyncio.AbstractEventLoop) -> None:
    loop.stop()  # asyncio's public way to run exactly one round
    loop.run_forever()


def test_writes_wait_for_the_end_of_the_round_and_keep_their_order(loop):
    outbox, log = Outbox(loop), []
    a, b = Recording(log), Recording(log)
    outbox.write(a, b"1")
    outbox.write(b, b"x")
    outbox.write(a, b"2")
    assert log == []  # nothing yet: the round is not over
    one_round(loop)
    assert log == [(a, b"1"), (b, b"x"), (a, b"2")]
    outbox.write(a, b"3")  # the next round schedules its own flush
    one_round(loop)
    assert log[-1] == (a, b"3") and not outbox.pending


def test_flush_sends_at_once_and_the_scheduled_flush_then_finds_nothing(loop):
    outbox, log = Outbox(loop), []
    a = Recording(log)
    outbox.write(a, b"answer")
    outbox.flush()  # what a connection about to close does
    assert log == [(a, b"answer")]
    one_round(loop)
    assert log == [(a, b"answer")]  # not sent twice


def test_a_transport_closed_meanwhile_gets_nothing(loop):
    outbox, log = Outbox(loop), []
    gone, alive = Recording(log), Recording(log)
    outbox.write(gone, b"lost")
    outbox.write(alive, b"kept")
    gone.closing = True  # the peer reset it before the round ended
    one_round(loop)
    assert log == [(alive, b"kept")]


def test_a_burst_past_the_bound_is_sent_at_once_so_flow_control_sees_it(loop):
    outbox, log = Outbox(loop), []
    a = Recording(log)
    piece = b"x" * (OUTBOX_MAX_BYTES // 4)
    for _ in range(4):
        outbox.write(a, piece)
    assert log == []  # at the bound, still held
    outbox.write(a, b"y")
    assert [data for _, data in log] == [piece] * 4 + [b"y"] and outbox.size == 0
    outbox.write(a, b"z")  # the round goes on: held again
    one_round(loop)
    assert log[-1] == (a, b"z")
