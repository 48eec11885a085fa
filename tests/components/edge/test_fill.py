"""``components.edge.fill``: the growing body shared by the answers of one fill (no sockets)."""

from __future__ import annotations

import asyncio

from components.edge.fill import BROKEN, DONE, OPEN, PASS_BACKLOG_BYTES, Fill


async def test_while_storing_every_piece_is_kept_and_a_late_reader_starts_at_byte_0():
    loop = asyncio.get_running_loop()
    fill = Fill(loop, storing=True)
    early = fill.join()
    fill.append(b"ab")
    assert fill.take(early) == [b"ab"]
    fill.append(b"cd")
    late = fill.join()
    assert late is not None
    assert fill.take(late) == [b"ab", b"cd"]
    assert fill.take(early) == [b"cd"]
    assert fill.take(early) == []
    fill.finish()
    assert fill.state == DONE and fill.body() == b"abcd"
    assert fill.settled.result() == DONE


async def test_more_resolves_at_once_when_a_reader_is_behind_or_the_fill_ended():
    loop = asyncio.get_running_loop()
    fill = Fill(loop, storing=True)
    reader = fill.join()
    waiting = fill.more(reader)
    assert not waiting.done()
    fill.append(b"x")
    assert waiting.done()
    # A piece that arrived while the reader was busy elsewhere is not missed.
    assert fill.more(reader).done()
    fill.take(reader)
    assert not fill.more(reader).done()
    fill.fail()
    assert fill.more(reader).done() and fill.state == BROKEN


async def test_a_pass_through_drops_what_every_reader_took_and_late_readers_cannot_join():
    loop = asyncio.get_running_loop()
    fill = Fill(loop, storing=True)
    fast, slow = fill.join(), fill.join()
    fill.append(b"1")
    fill.append(b"2")
    fill.take(fast)
    fill.stop_storing()
    assert fill.settled.result() == OPEN  # settled: no longer bound for the store
    assert fill.pieces == [b"1", b"2"]  # the slow reader has taken nothing yet
    assert fill.take(slow) == [b"1", b"2"]
    assert fill.pieces == [] and fill.base == 2
    assert fill.join() is None  # its first bytes are gone
    fill.append(b"3")
    assert fill.take(fast) == [b"3"]
    fill.leave(slow)  # the slowest leaving frees what only it still needed
    assert fill.pieces == []


async def test_a_pass_through_reads_the_origin_only_as_fast_as_its_slowest_reader():
    loop = asyncio.get_running_loop()
    fill = Fill(loop, storing=False)
    reader = fill.join()
    piece = b"x" * (64 * 1024)
    for _ in range(PASS_BACKLOG_BYTES // len(piece) + 1):
        fill.append(piece)
    assert fill.backlog() > PASS_BACKLOG_BYTES
    space = asyncio.ensure_future(fill.space())
    await asyncio.sleep(0)
    assert not space.done()  # the origin side waits
    fill.take(reader)
    assert await asyncio.wait_for(space, 1) is True
    assert fill.backlog() == 0 and fill.pieces == []


async def test_a_pass_through_nobody_reads_any_more_stops():
    loop = asyncio.get_running_loop()
    fill = Fill(loop, storing=False)
    reader = fill.join()
    fill.append(b"y" * (PASS_BACKLOG_BYTES + 1))
    space = asyncio.ensure_future(fill.space())
    await asyncio.sleep(0)
    fill.leave(reader)
    assert await asyncio.wait_for(space, 1) is False
    # While storing, a fill is read to its end even with no reader (it is for the store).
    assert await Fill(loop, storing=True).space() is True
