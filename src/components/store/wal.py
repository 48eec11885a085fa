"""The redo log: every acknowledged write, framed, checksummed and fsynced before the reply.

SQLite is the store's *state*; this log is its *history*. A write batch is first appended
here as one record, the record is fsynced, and only then is the batch applied to SQLite
and the client answered. That order is what makes three things work:

- **Durability.** After ``kill -9`` (or a power cut), every acknowledged batch is in the
  log. SQLite runs in WAL mode with ``synchronous=NORMAL`` and may lose its last commits
  on power loss; it does not matter, because the batch's LSN is written *inside* the
  batch's SQLite transaction (see ``database.py``), so recovery knows exactly which
  records SQLite lacks and replays those, no more and no fewer.
- **Replication.** A replica is the same state machine fed the same records in the same
  order. The bytes a replica streams are the bytes of this file.
- **Group commit.** ``append`` only writes; ``sync`` is one ``fsync`` for everything
  appended since the last one. The server collects every batch that arrived while the
  previous fsync ran and pays for them with a single fsync (see ``commit.py``).

The record format (all integers big-endian)::

    +-----------+-----------+-----------+-----------+-----------------+
    | length u32| crc32 u32 | epoch u64 |  lsn u64  | payload (length)|
    +-----------+-----------+-----------+-----------+-----------------+

``crc32`` (zlib's CRC-32) covers epoch, lsn and payload. A scan accepts a record only if
its length is within bounds, its CRC matches and its LSN is exactly the previous LSN + 1
with an epoch that never goes down. The first record that fails is the *tail*: a torn
write (the process died mid-``write``), a flipped bit or a zero-filled page the file
system left after a crash. Everything from there on is cut (``ftruncate`` + fsync), which
is safe because nothing after a bad record was ever acknowledged: acknowledgement waits
for the fsync that covers the record, and records are written in order.

The *epoch* is the primary's term, raised by every promotion; records carry it so that a
replica can refuse a deposed primary and find where an old primary's log diverged
(Kafka's leader epochs, KIP-101; Raft's terms).

What this refuses: records over ``MAX_RECORD_BYTES``, gaps in LSNs, and payloads it
cannot decode (the batch codec at the bottom). Compaction after a snapshot rewrites the
file from a later LSN (``compact``); the in-memory index (8 bytes per record) maps an LSN
to its offset for replicas that stream from the middle.
"""

from __future__ import annotations

import os
import struct
import zlib
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

import orjson

#: Header: payload length, CRC-32 of (epoch, lsn, payload), epoch, LSN.
HEADER = struct.Struct(">IIQQ")
HEADER_BYTES = HEADER.size
_CRC_PART = struct.Struct(">QQ")

#: A batch is bounded by the API's body limit; this leaves room and rejects garbage lengths.
MAX_RECORD_BYTES = 16 * 1024 * 1024


class LogCorrupt(Exception):
    """A record that cannot be trusted: bad length, bad CRC or an LSN out of sequence."""


@dataclass(frozen=True, slots=True)
class Record:
    epoch: int
    lsn: int
    payload: bytes


def encode_record(epoch: int, lsn: int, payload: bytes) -> bytes:
    """One framed record, ready to be appended or streamed."""
    if len(payload) > MAX_RECORD_BYTES:
        raise ValueError(f"record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
    crc = zlib.crc32(payload, zlib.crc32(_CRC_PART.pack(epoch, lsn)))
    return HEADER.pack(len(payload), crc, epoch, lsn) + payload


def decode_record(buf: bytes | memoryview, offset: int = 0) -> tuple[Record | None, int]:
    """Decode the record at ``offset``: ``(record, next_offset)``.

    ``(None, offset)`` means "incomplete, need more bytes" (a stream) or "torn" (a file).
    Raises ``LogCorrupt`` for a record that is complete but wrong.
    """
    end_header = offset + HEADER_BYTES
    if len(buf) < end_header:
        return None, offset
    length, crc, epoch, lsn = HEADER.unpack_from(buf, offset)
    if length > MAX_RECORD_BYTES:
        raise LogCorrupt(f"record length {length} at offset {offset} exceeds the limit")
    end = end_header + length
    if len(buf) < end:
        return None, offset
    payload = bytes(buf[end_header:end])
    if zlib.crc32(payload, zlib.crc32(_CRC_PART.pack(epoch, lsn))) != crc:
        raise LogCorrupt(f"CRC mismatch at offset {offset} (lsn {lsn})")
    return Record(epoch, lsn, payload), end


@dataclass(slots=True)
class ScanResult:
    """What a scan of a log file found: the valid records and where the valid part ends."""

    records: list[tuple[int, Record]]  # (offset, record)
    valid_bytes: int
    total_bytes: int
    problem: str | None  # None: clean; else why the tail was rejected


def scan(buf: bytes | memoryview, after_lsn: int | None = None) -> ScanResult:
    """Walk records from the start, stopping at the first torn or corrupt one."""
    records: list[tuple[int, Record]] = []
    offset = 0
    expected = None if after_lsn is None else after_lsn + 1
    last_epoch = 0
    problem = None
    while offset < len(buf):
        try:
            record, end = decode_record(buf, offset)
        except LogCorrupt as exc:
            problem = str(exc)
            break
        if record is None:
            problem = f"torn record at offset {offset}"
            break
        if expected is not None and record.lsn != expected:
            problem = f"lsn {record.lsn} at offset {offset}, expected {expected}"
            break
        if record.epoch < last_epoch:
            problem = f"epoch went down to {record.epoch} at lsn {record.lsn}"
            break
        records.append((offset, record))
        expected = record.lsn + 1
        last_epoch = record.epoch
        offset = end
    return ScanResult(records, offset, len(buf), problem)


class RedoLog:
    """The log file: open (scan, cut a bad tail), append, sync, read from an LSN, cut.

    Blocking file I/O: the server calls it from one dedicated thread, so the event loop
    never waits on the disk and the methods need no lock.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        with open(path, "rb") as fh:
            data = fh.read()
        result = scan(data)
        #: Why the tail was cut on open (None when the file was clean); the server logs it.
        self.cut_on_open: str | None = None
        if result.problem is not None:
            self.cut_on_open = (
                f"{result.problem}; cut {result.total_bytes - result.valid_bytes} bytes"
            )
            os.ftruncate(self._fd, result.valid_bytes)
            os.fsync(self._fd)
        self._offsets = array("Q", (off for off, _ in result.records))
        self.first_lsn = result.records[0][1].lsn if result.records else 0
        self.last_lsn = result.records[-1][1].lsn if result.records else 0
        self.last_epoch = result.records[-1][1].epoch if result.records else 0
        self.size = result.valid_bytes
        self.synced_lsn = self.last_lsn
        os.lseek(self._fd, self.size, os.SEEK_SET)

    # -- writing ------------------------------------------------------------------------

    def append(self, frames: list[tuple[int, int, bytes]]) -> None:
        """Append encoded records ``(epoch, lsn, frame)`` in LSN order, with one write and
        no fsync (``sync`` makes them durable)."""
        if not frames:
            return
        offset = self.size
        for epoch, lsn, frame in frames:
            if self.last_lsn and lsn != self.last_lsn + 1:
                raise LogCorrupt(f"append of lsn {lsn} after {self.last_lsn}")
            if epoch < self.last_epoch:
                raise LogCorrupt(f"append of epoch {epoch} after {self.last_epoch}")
            if not self._offsets:
                self.first_lsn = lsn
            self._offsets.append(offset)
            offset += len(frame)
            self.last_lsn, self.last_epoch = lsn, epoch
        view = memoryview(b"".join(frame for _, _, frame in frames))
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size = offset

    def sync(self) -> None:
        """One fsync covering everything appended so far (group commit's single fsync)."""
        os.fsync(self._fd)
        self.synced_lsn = self.last_lsn

    # -- reading ------------------------------------------------------------------------

    def offset_of(self, lsn: int) -> int | None:
        """File offset of record ``lsn``, or None if it is not in the log."""
        if not self._offsets or lsn < self.first_lsn or lsn > self.last_lsn:
            return None
        return self._offsets[lsn - self.first_lsn]

    def read_from(
        self, lsn: int, max_bytes: int = 1 << 20, max_records: int | None = None
    ) -> tuple[bytes, int]:
        """Raw frames of whole records from ``lsn`` on, and the LSN of the last one: every
        record that starts within ``max_bytes`` of the first (so at least one), at most
        ``max_records`` of them. ``(b"", lsn - 1)`` when ``lsn`` is not in the log."""
        start = self.offset_of(lsn)
        if start is None:
            return b"", lsn - 1
        # The last record to send: the one before the first record starting at or past
        # start + max_bytes (at least the record at ``lsn`` itself). Offsets are sorted.
        first_index = lsn - self.first_lsn
        stop_index = bisect_left(self._offsets, start + max_bytes, first_index + 1)
        if max_records is not None:
            stop_index = min(stop_index, first_index + max(1, max_records))
        if stop_index >= len(self._offsets):
            last, end = self.last_lsn, self.size
        else:
            last, end = self.first_lsn + stop_index - 1, self._offsets[stop_index]
        return os.pread(self._fd, end - start, start), last

    def records_after(self, lsn: int) -> list[Record]:
        """Decoded records with LSN > ``lsn`` (recovery's replay list)."""
        first = max(lsn + 1, self.first_lsn)
        start = self.offset_of(first)
        if start is None:
            return []
        data = os.pread(self._fd, self.size - start, start)
        return [record for _, record in scan(data).records]

    def epoch_of(self, lsn: int) -> int | None:
        """The epoch of record ``lsn``, or None if it is not in the log."""
        start = self.offset_of(lsn)
        if start is None:
            return None
        _, _, epoch, _ = HEADER.unpack(os.pread(self._fd, HEADER_BYTES, start))
        return epoch

    # -- cutting ------------------------------------------------------------------------

    def truncate_after(self, lsn: int) -> int:
        """Drop every record with LSN > ``lsn`` (a deposed primary's divergent suffix).
        Returns how many records were dropped."""
        if lsn >= self.last_lsn:
            return 0
        if lsn < self.first_lsn:
            keep_bytes, keep = 0, 0
        else:
            keep = lsn - self.first_lsn + 1
            keep_bytes = self._offsets[keep] if keep < len(self._offsets) else self.size
        dropped = len(self._offsets) - keep
        del self._offsets[keep:]
        os.ftruncate(self._fd, keep_bytes)
        os.fsync(self._fd)
        os.lseek(self._fd, keep_bytes, os.SEEK_SET)
        self.size = keep_bytes
        if self._offsets:
            self.last_lsn = lsn
            self.last_epoch = self.epoch_of(lsn) or 0
        else:
            self.first_lsn = self.last_lsn = self.last_epoch = 0
        self.synced_lsn = self.last_lsn
        return dropped

    def reset(self) -> None:
        """Empty the log (after installing a snapshot that covers all of it)."""
        if self._offsets:
            self.truncate_after(self.first_lsn - 1)
        self.first_lsn = self.last_lsn = self.last_epoch = 0
        self.synced_lsn = 0

    def compact(self, upto_lsn: int) -> int:
        """Drop records with LSN <= ``upto_lsn`` (they are in a checkpointed SQLite file):
        the rest is copied to a new file that atomically replaces this one. Returns the
        number of records dropped."""
        if not self._offsets or upto_lsn < self.first_lsn:
            return 0
        upto_lsn = min(upto_lsn, self.last_lsn)
        drop = upto_lsn - self.first_lsn + 1
        start = self._offsets[drop] if drop < len(self._offsets) else self.size
        tail = os.pread(self._fd, self.size - start, start)
        tmp = self.path + ".compact"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, tail)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        _fsync_dir(os.path.dirname(self.path) or ".")
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR)
        self._offsets = array("Q", (off - start for off in self._offsets[drop:]))
        self.size -= start
        os.lseek(self._fd, self.size, os.SEEK_SET)
        if self._offsets:
            self.first_lsn = upto_lsn + 1
        else:
            self.first_lsn = 0
            self.last_lsn = self.last_epoch = 0
        return drop

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _fsync_dir(path: str) -> None:
    """fsync a directory so a rename in it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the payload: one execute batch ----------------------------------------------------

Params = list[Any] | dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Batch:
    """What one record carries: the statements of one execute request, already rewritten
    to be deterministic, and whether the client asked for all-or-nothing."""

    statements: tuple[tuple[str, Params], ...]
    transaction: bool


def encode_batch(batch: Batch) -> bytes:
    # orjson writes the (sql, params) tuples as JSON arrays: no copies into lists.
    return orjson.dumps({"t": batch.transaction, "s": batch.statements})


def decode_batch(payload: bytes) -> Batch:
    try:
        doc = orjson.loads(payload)
        statements = tuple((str(sql), params) for sql, params in doc["s"])
        return Batch(statements, bool(doc["t"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise LogCorrupt(f"undecodable batch payload: {exc}") from None
