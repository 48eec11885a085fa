"""The redo log: framing, torn and corrupt tails, appends, reads from an LSN, cutting."""

import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.store.wal import (
    HEADER,
    HEADER_BYTES,
    MAX_RECORD_BYTES,
    Batch,
    LogCorrupt,
    RedoLog,
    decode_batch,
    decode_record,
    encode_batch,
    encode_record,
    scan,
)


def frames(count, start=1, epoch=1, size=10):
    return [(epoch, lsn, encode_record(epoch, lsn, bytes([lsn % 256]) * size))
            for lsn in range(start, start + count)]  # fmt: skip


def log_bytes(count, **kw):
    return b"".join(f for _, _, f in frames(count, **kw))


def test_record_layout_is_length_crc_epoch_lsn_payload():
    frame = encode_record(2, 7, b"abc")
    length, crc, epoch, lsn = HEADER.unpack_from(frame)
    assert (length, epoch, lsn) == (3, 2, 7)
    assert crc == zlib.crc32(b"abc", zlib.crc32((2).to_bytes(8, "big") + (7).to_bytes(8, "big")))
    assert frame[HEADER_BYTES:] == b"abc"
    assert len(frame) == 24 + 3


def test_decode_reports_incomplete_record_as_none():
    frame = encode_record(1, 1, b"payload")
    for cut in range(len(frame)):
        assert decode_record(frame[:cut]) == (None, 0)


def test_oversized_length_is_corrupt_not_a_huge_allocation():
    frame = HEADER.pack(MAX_RECORD_BYTES + 1, 0, 1, 1)
    with pytest.raises(LogCorrupt):
        decode_record(frame)


@given(st.lists(st.binary(max_size=64), min_size=1, max_size=20), st.data())
@settings(max_examples=200, deadline=None)
def test_scan_of_truncated_log_keeps_exactly_the_whole_records(payloads, data):
    blob = b"".join(encode_record(1, i + 1, p) for i, p in enumerate(payloads))
    cut = data.draw(st.integers(0, len(blob)))
    result = scan(blob[:cut])
    boundaries = [0]
    for p in payloads:
        boundaries.append(boundaries[-1] + HEADER_BYTES + len(p))
    whole = max(i for i, b in enumerate(boundaries) if b <= cut)
    assert len(result.records) == whole
    assert result.valid_bytes == boundaries[whole]
    assert [r.payload for _, r in result.records] == payloads[:whole]


@given(st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=10), st.data())
@settings(max_examples=200, deadline=None)
def test_a_flipped_bit_cuts_the_log_at_that_record(payloads, data):
    blob = bytearray(b"".join(encode_record(1, i + 1, p) for i, p in enumerate(payloads)))
    position = data.draw(st.integers(0, len(blob) - 1))
    blob[position] ^= 1 << data.draw(st.integers(0, 7))
    result = scan(bytes(blob))
    starts = [0]
    for p in payloads:
        starts.append(starts[-1] + HEADER_BYTES + len(p))
    damaged = max(i for i, s in enumerate(starts[:-1]) if s <= position)
    assert len(result.records) == damaged
    assert result.problem is not None


@given(st.integers(1, 8), st.integers(1, 3))
@settings(max_examples=30, deadline=None)
def test_zero_filled_pages_after_the_last_record_are_cut(count, pages):
    blob = log_bytes(count) + bytes(4096 * pages)
    result = scan(blob)
    assert len(result.records) == count
    assert result.valid_bytes == len(log_bytes(count))
    assert result.problem


def test_scan_rejects_an_lsn_gap_and_an_epoch_going_down():
    gap = encode_record(1, 1, b"a") + encode_record(1, 3, b"b")
    assert len(scan(gap).records) == 1
    down = encode_record(2, 1, b"a") + encode_record(1, 2, b"b")
    assert len(scan(down).records) == 1


def test_open_cuts_a_torn_tail_and_appends_after_it(tmp_path):
    path = str(tmp_path / "redo.log")
    with open(path, "wb") as fh:
        fh.write(log_bytes(3) + encode_record(1, 4, b"torn away")[:-2])
    log = RedoLog(path)
    assert log.cut_on_open and log.last_lsn == 3
    assert os.path.getsize(path) == len(log_bytes(3))
    log.append(frames(1, start=4))
    log.sync()
    log.close()
    again = RedoLog(path)
    assert again.cut_on_open is None
    assert [r.lsn for r in again.records_after(0)] == [1, 2, 3, 4]


def test_append_refuses_a_gap(tmp_path):
    log = RedoLog(str(tmp_path / "redo.log"))
    log.append(frames(2))
    with pytest.raises(LogCorrupt):
        log.append(frames(1, start=4))


def test_read_from_returns_whole_records_and_the_last_lsn(tmp_path):
    log = RedoLog(str(tmp_path / "redo.log"))
    log.append(frames(100, size=100))
    data, last = log.read_from(10, max_bytes=1000)
    records = scan(data, after_lsn=9).records
    assert [r.lsn for _, r in records] == list(range(10, last + 1))
    assert len(data) <= 1000 + HEADER_BYTES + 100
    assert last < 100
    assert log.read_from(101) == (b"", 100)
    whole, last = log.read_from(1, max_bytes=1 << 20)
    assert last == 100 and whole == log_bytes(100, size=100)


def test_truncate_after_drops_the_divergent_suffix(tmp_path):
    path = str(tmp_path / "redo.log")
    log = RedoLog(path)
    log.append(frames(5))
    assert log.truncate_after(3) == 2
    assert log.last_lsn == 3
    log.append(frames(1, start=4, epoch=2))
    log.close()
    reopened = RedoLog(path)
    assert [(r.lsn, r.epoch) for r in reopened.records_after(0)] == [
        (1, 1), (2, 1), (3, 1), (4, 2)
    ]  # fmt: skip


def test_compact_keeps_later_records_and_their_offsets(tmp_path):
    path = str(tmp_path / "redo.log")
    log = RedoLog(path)
    log.append(frames(10))
    assert log.compact(6) == 6
    assert log.first_lsn == 7 and log.last_lsn == 10
    assert log.epoch_of(8) == 1 and log.epoch_of(6) is None
    log.append(frames(1, start=11))
    assert [r.lsn for r in log.records_after(0)] == [7, 8, 9, 10, 11]
    log.close()
    assert [r.lsn for r in RedoLog(path).records_after(0)] == [7, 8, 9, 10, 11]


def test_reset_empties_the_log_for_a_snapshot(tmp_path):
    log = RedoLog(str(tmp_path / "redo.log"))
    log.append(frames(3))
    log.reset()
    assert (log.first_lsn, log.last_lsn, log.size) == (0, 0, 0)
    log.append(frames(2, start=50))
    assert [r.lsn for r in log.records_after(0)] == [50, 51]


def test_batch_codec_round_trips_and_rejects_garbage():
    batch = Batch((("INSERT INTO t VALUES(?)", [1]), ("SELECT :a", {"a": "x"}), ("X", None)), True)
    assert decode_batch(encode_batch(batch)) == batch
    for garbage in (b"", b"[]", b'{"s": 1, "t": true}', b"\xff"):
        with pytest.raises(LogCorrupt):
            decode_batch(garbage)


@given(st.lists(st.integers(0, 300), min_size=1, max_size=40), st.data())
@settings(max_examples=100, deadline=None)
def test_read_from_always_returns_whole_consecutive_records(sizes, data):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        log = RedoLog(f"{tmp}/redo.log")
        log.append([(1, i + 1, encode_record(1, i + 1, b"p" * n)) for i, n in enumerate(sizes)])
        lsn = data.draw(st.integers(1, len(sizes)))
        max_bytes = data.draw(st.integers(1, 4000))
        chunk, last = log.read_from(lsn, max_bytes)
        records = [r for _, r in scan(chunk, after_lsn=lsn - 1).records]
        assert [r.lsn for r in records] == list(range(lsn, last + 1))
        assert scan(chunk).valid_bytes == len(chunk)
        # every record but the last starts within max_bytes of the chunk's start
        assert len(chunk) - (HEADER_BYTES + len(records[-1].payload)) < max_bytes
        log.close()
