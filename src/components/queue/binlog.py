"""The binlog: an append-only log of job state changes that lets the queue survive a crash.

beanstalkd's ``-b DIR`` writes every job's creation and state change to log files and
replays them at start-up. This is the same idea with our own record format:

    file   = MAGIC, frame*, zero bytes (preallocated, not yet written)
    frame  = u32 payload length, u32 CRC-32 of payload, payload = record+
    record = FULL    op=1 id pri delay ttr state deadline created tube body  (put, snapshot)
             UPDATE  op=2 id pri delay state deadline                      (release, bury, kick)
             DELETE  op=3 id
             NEXT_ID op=4 next-id                                          (start of a segment)

Why the pieces are there:

- *Length + CRC per frame, one frame per group commit.* A crash can leave half a frame
  at the end of the file (a torn write), or garbage after it. Replay stops at the first
  frame that is short, whose CRC does not match, or whose records do not exactly fill
  it, and everything after it is cut; it is never fatal. A group commit's records go
  out as one frame: they are acknowledged together, after the fsync that covers the
  whole frame (``-f 0``), so a torn frame only ever holds records nobody was told about,
  and cutting all of it loses nothing promised. (One CRC and one header per group
  instead of per record took ~0.4 µs off a durable put; snapshots still frame each
  record alone, and replay reads both, so older logs of one record per frame replay
  unchanged.) Records carry their own lengths, so a frame needs no index.
- *Reserves are not logged.* protocol.txt's restart semantics bring reserved jobs back
  ready, so reserve, touch and TTR expiry need no record; that keeps the log to about
  two records per job (put, delete).
- *Deadlines are wall-clock seconds,* so a delayed job keeps its deadline across a
  restart.
- *Preallocated segments, fdatasync.* A segment is zero-filled ahead of the records
  (``preallocate_bytes`` at a time) and records overwrite the zeros with ``pwrite``.
  Appending would change the file's size on every group commit, and making a size
  change durable costs an inode write on top of the data: overwriting blocks that are
  already allocated and on disk lets ``fdatasync`` write the data pages alone (on this
  machine's ext4 about 140 µs instead of 240 per commit, and a quarter less CPU). Replay
  reads the zeros as the end of the log: a zero length is never a record, and a zero
  tail is not a torn one. The fill is written on the loop thread, past every record, so
  it never races a record write; the ``fdatasync`` after it carries the new size.
- *Compaction by snapshot.* History grows without bound, live jobs do not. When the log
  is larger than twice the live jobs' records (and than ``compact_min_bytes``), the
  queue writes a snapshot (FULL records of the live jobs only) to a new segment under a
  temporary name, fsyncs it, renames it into place, fsyncs the directory, then deletes
  the older segments oldest first. Every crash point leaves a replayable suffix of
  segments: a partial snapshot is never visible, and deleting oldest first means a
  ``DELETE`` is never lost while the ``FULL`` it cancels survives. A restart also
  compacts, so restarts do not pile up segments.

Group commit lives in the server (it owns the event loop and the fsync threads); this
module gives it the pieces: ``take_batch`` (pending records, or a snapshot when the log
is bloated), ``write_batch`` (append to the file, or swap in a snapshot), ``sync`` and
``complete``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import zlib
from dataclasses import dataclass, field

from .broker import BURIED, DELAYED, READY, RESERVED, Broker, Job

MAGIC = b"SLBQLOG1"
SEGMENT_PREFIX = "binlog."
TMP_SUFFIX = ".tmp"
#: Do not compact logs smaller than this: snapshots of tiny logs are wasted work.
DEFAULT_COMPACT_MIN_BYTES = 8 << 20
#: Zero-fill segments this far ahead of the records (0: plain appends). One fill every
#: ~10,000 small records; disk use is the live log plus at most this much.
DEFAULT_PREALLOCATE_BYTES = 1 << 20
#: fdatasync where the OS has it (Linux); fsync elsewhere.
_datasync = getattr(os, "fdatasync", os.fsync)

_HEADER = struct.Struct("<II")
_FULL = struct.Struct("<BQIIIBddBI")  # op id pri delay ttr state deadline created tubelen bodylen
_UPDATE = struct.Struct("<BQIIBd")  # op id pri delay state deadline
_DELETE = struct.Struct("<BQ")
_NEXT_ID = struct.Struct("<BQ")
OP_FULL, OP_UPDATE, OP_DELETE, OP_NEXT_ID = 1, 2, 3, 4
_STATE_CODE = {READY: 0, DELAYED: 1, BURIED: 2, RESERVED: 0}  # reserved is logged as ready
_CODE_STATE = {0: READY, 1: DELAYED, 2: BURIED}
#: Bytes a FULL record takes besides the tube name and body.
FULL_OVERHEAD = _HEADER.size + _FULL.size


#: Largest frame payload a group commit writes; a bigger batch (``-f MS`` with large
#: jobs) is split into several frames, so the u32 length can never overflow.
MAX_FRAME_BYTES = 16 << 20


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _full_head(job: Job, tube: bytes) -> bytes:
    """A FULL record's fixed part; the tube name and body follow it as they are."""
    return _FULL.pack(OP_FULL, job.id, job.pri, job.delay, job.ttr, _STATE_CODE[job.state],
                      job.deadline_at, job.created_at, len(tube), len(job.body))  # fmt: skip


def _update(job: Job) -> bytes:
    return _UPDATE.pack(
        OP_UPDATE, job.id, job.pri, job.delay, _STATE_CODE[job.state], job.deadline_at
    )


# Each record in a frame of its own: snapshots, and tests that build logs by hand.
def encode_full(job: Job) -> bytes:
    tube = job.tube.name_bytes
    return _frame(b"".join((_full_head(job, tube), tube, job.body)))


def encode_update(job: Job) -> bytes:
    return _frame(_update(job))


def encode_delete(job_id: int) -> bytes:
    return _frame(_DELETE.pack(OP_DELETE, job_id))


def encode_next_id(next_id: int) -> bytes:
    return _frame(_NEXT_ID.pack(OP_NEXT_ID, next_id))


def encode_frames(pieces: list[bytes]) -> bytes:
    """A group commit's records (as pieces) framed: one frame unless it is huge."""
    payload = b"".join(pieces)
    if len(payload) <= MAX_FRAME_BYTES:
        return _frame(payload)
    # Rare (-f MS and big jobs): split between records, which _split_records finds.
    return b"".join(_frame(part) for part in _split_records(payload, MAX_FRAME_BYTES))


def _split_records(payload: bytes, limit: int) -> list[bytes]:
    parts, start, at = [], 0, 0
    while at < len(payload):
        size = _record_size(payload, at)
        if at + size - start > limit and at > start:
            parts.append(payload[start:at])
            start = at
        at += size
    parts.append(payload[start:])
    return parts


def _record_size(payload: bytes, at: int) -> int:
    op = payload[at]
    if op == OP_FULL:
        tube_len, body_len = _FULL.unpack_from(payload, at)[8:]
        return _FULL.size + tube_len + body_len
    return {OP_UPDATE: _UPDATE.size, OP_DELETE: _DELETE.size, OP_NEXT_ID: _NEXT_ID.size}[op]


def full_size(job: Job) -> int:
    return FULL_OVERHEAD + len(job.tube.name) + len(job.body)


class ForeignLogError(OSError):
    """A file named like a segment that is not ours (beanstalkd's own binlog, say).

    An ``OSError``, so the runner reports it as a start-up failure: refusing to start
    beats compacting someone else's log away.
    """


class LogLockedError(OSError):
    """Another process holds this binlog directory: two writers would corrupt it."""


@dataclass
class Recovered:
    """What replay found: live jobs by id (as field lists) and the next id to hand out."""

    jobs: dict[int, list] = field(default_factory=dict)
    next_id: int = 1
    records: int = 0
    torn_bytes: int = 0


def replay(data: bytes, into: Recovered) -> int:
    """Apply one segment's records; returns the length of its intact prefix."""
    if not data.startswith(MAGIC):
        into.torn_bytes += len(data)
        return 0
    pos = len(MAGIC)
    end = len(data)
    jobs = into.jobs
    while pos + _HEADER.size <= end:
        length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        if start + length > end:
            break
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc or not payload:
            break
        records = _decode_frame(payload)
        if records is None:
            break  # it passed its CRC but makes no sense: treat it as the tail
        for record in records:
            op, job_id = record[0], record[1]
            if op == OP_FULL:
                jobs[job_id] = list(record[2:])
                into.next_id = max(into.next_id, job_id + 1)
            elif op == OP_UPDATE:
                job = jobs.get(job_id)
                if job is not None:
                    job[1], job[2], job[5], job[6] = record[2:]
            elif op == OP_DELETE:
                jobs.pop(job_id, None)
            else:  # OP_NEXT_ID
                into.next_id = max(into.next_id, job_id)
        into.records += len(records)
        pos = start + length
    if data.count(0, pos) != end - pos:  # a zero tail is preallocation, not a tear
        into.torn_bytes += end - pos
    return pos


def _decode_frame(payload: bytes) -> list[tuple] | None:
    """A frame's records as ``(op, id, fields...)`` tuples; None unless it holds whole,
    well-formed records and nothing else (a frame applies entirely or not at all)."""
    records: list[tuple] = []
    at, end = 0, len(payload)
    try:
        while at < end:
            op = payload[at]
            if op == OP_FULL:
                (_, job_id, pri, delay, ttr, state, deadline, created, tube_len,
                 body_len) = _FULL.unpack_from(payload, at)  # fmt: skip
                tube_at = at + _FULL.size
                body_at = tube_at + tube_len
                at = body_at + body_len
                if at > end:
                    return None
                tube = payload[tube_at:body_at].decode()
                records.append((op, job_id, tube, pri, delay, ttr, payload[body_at:at],
                                _CODE_STATE[state], deadline, created))  # fmt: skip
            elif op == OP_UPDATE:
                _, job_id, pri, delay, state, deadline = _UPDATE.unpack_from(payload, at)
                records.append((op, job_id, pri, delay, _CODE_STATE[state], deadline))
                at += _UPDATE.size
            elif op in (OP_DELETE, OP_NEXT_ID):
                records.append((op, _DELETE.unpack_from(payload, at)[1]))  # same layout
                at += _DELETE.size
            else:
                return None
    except (struct.error, KeyError, UnicodeDecodeError):
        return None
    return records


@dataclass
class Batch:
    """One group commit: bytes to append, or a snapshot that replaces the log."""

    data: bytes
    seq: int  # every record up to this sequence number is in this batch or before it
    records: int
    snapshot_index: int = 0  # nonzero: write a new segment with this index, drop older


class Binlog:
    """The journal a ``Broker`` writes to; see the module docstring for the format."""

    def __init__(self, directory: str, compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
                 preallocate_bytes: int = DEFAULT_PREALLOCATE_BYTES):  # fmt: skip
        self.directory = directory
        self.compact_min_bytes = compact_min_bytes
        self.preallocate_bytes = preallocate_bytes
        self._offset = 0  # where the next record goes in the current segment
        self._allocated = 0  # the current segment's size: records, then zeros
        self.broker: Broker | None = None
        self._pending: list[bytes] = []  # records not yet in a batch (a FULL is 3 pieces)
        self.appended_seq = 0  # records handed to us
        self._batched_seq = 0  # records taken into a batch
        self.written_seq = 0  # records written to the file (not necessarily fsynced)
        self.unsynced = 0  # records written since the last fsync was started
        self.live_bytes = 0  # size of the FULL records of live jobs
        self.log_bytes = 0  # bytes in segment files
        self.records_written = 0
        self.records_migrated = 0
        self.compactions = 0
        self.index = 0
        self._fd = -1
        self._lock_fd = -1
        self._segments: list[int] = []

    # -- journal interface (called by the broker on the event loop) ---------------------

    def put(self, job: Job) -> None:
        # The hot path of a durable put: _full_head, _append and full_size inlined. The
        # record stays three pieces until the batch joins (and frames) them all at once.
        # (The pending byte count is summed per batch, in needs_compaction, not here.)
        tube = job.tube.name_bytes
        body = job.body
        self._pending += (
            _FULL.pack(OP_FULL, job.id, job.pri, job.delay, job.ttr, _STATE_CODE[job.state],
                       job.deadline_at, job.created_at, len(tube), len(body)),
            tube, body,
        )  # fmt: skip
        self.live_bytes += FULL_OVERHEAD + len(tube) + len(body)
        self.appended_seq += 1

    def update(self, job: Job) -> None:
        self._append(_update(job))

    def delete(self, job: Job) -> None:
        self._append(_DELETE.pack(OP_DELETE, job.id))
        self.live_bytes -= full_size(job)

    def _append(self, record: bytes) -> None:
        self._pending.append(record)
        self.appended_seq += 1

    @property
    def pending(self) -> int:
        return self.appended_seq - self._batched_seq

    # -- opening: replay, restore, compact ------------------------------------------------

    def open(self, broker: Broker) -> Recovered:
        """Replay every segment into ``broker`` and start a fresh snapshot segment.

        Run before serving. Returns what was recovered (the caller logs it).
        """
        self.broker = broker
        os.makedirs(self.directory, exist_ok=True)
        self._lock()
        recovered = Recovered()
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name)
            if name.startswith(SEGMENT_PREFIX) and name.endswith(TMP_SUFFIX):
                os.unlink(path)  # an unfinished snapshot: never made visible
                continue
            index = _segment_index(name)
            if index is None:
                continue
            with open(path, "rb") as fh:
                data = fh.read()
            # Our segments are renamed into place only once their header is written.
            if not data.startswith(MAGIC):
                raise ForeignLogError(f"{path} is not a scalelab queue binlog; not touching it")
            replay(data, recovered)
            self._segments.append(index)
        self._segments.sort()
        for job_id in sorted(recovered.jobs):
            tube, pri, delay, ttr, body, state, deadline, created = recovered.jobs[job_id]
            broker.restore(job_id, tube, pri, delay, ttr, body, state, deadline, created)
        broker.next_id = max(broker.next_id, recovered.next_id)
        broker.journal = self
        self.index = (self._segments[-1] if self._segments else 0) + 1
        batch = self._snapshot_batch()
        self.write_batch(batch, fsync=True)
        self.complete(batch)
        self.unsynced = 0
        return recovered

    def _snapshot_batch(self) -> Batch:
        assert self.broker is not None
        parts = [encode_next_id(self.broker.next_id)]
        live = 0
        for job in self.broker.iter_jobs():
            record = encode_full(job)
            parts.append(record)
            live += len(record)
        self.live_bytes = live
        self._pending.clear()
        self._batched_seq = self.appended_seq
        index = self.index + 1 if self._fd >= 0 else self.index
        return Batch(b"".join(parts), self.appended_seq, len(parts), snapshot_index=index)

    # -- group commit (take on the loop, write in a thread, complete on the loop) --------

    def needs_compaction(self) -> bool:
        size = self.log_bytes + sum(map(len, self._pending))
        return size > self.compact_min_bytes and size > 2 * self.live_bytes

    def take_batch(self) -> Batch | None:
        """Everything appended since the last batch, or a snapshot if the log is bloated."""
        if self.appended_seq == self._batched_seq:
            return None
        if self.needs_compaction():
            return self._snapshot_batch()
        data = encode_frames(self._pending)
        records = self.appended_seq - self._batched_seq
        self._pending.clear()
        self._batched_seq = self.appended_seq
        return Batch(data, self.appended_seq, records)

    def write_batch(self, batch: Batch, fsync: bool) -> None:
        """Worker-thread half: append (or swap in a snapshot) and fsync. Raises OSError."""
        if batch.snapshot_index:
            self._write_snapshot(batch)
            return
        end = self._offset + len(batch.data)
        if end > self._allocated:
            self._allocated = self._preallocate(self._fd, self._allocated, end)
        _write_all(self._fd, batch.data, self._offset)
        self._offset = end
        if fsync:
            _datasync(self._fd)

    def sync(self) -> None:
        """Make what was written durable (group commit, the ``-f MS`` timer, shutdown)."""
        if self._fd >= 0:
            _datasync(self._fd)

    def _preallocate(self, fd: int, start: int, end: int) -> int:
        """Zero-fill ``fd`` from ``start`` past ``end``; returns the new size.

        Only ever past the last record, so it cannot clobber one; a record that does not
        fit is written where it belongs anyway (the file just grows further).
        """
        if not self.preallocate_bytes:
            return max(start, end)
        chunk = self.preallocate_bytes
        size = (end // chunk + 1) * chunk
        fill_from = max(start, end)  # the batch about to be written covers start..end
        _write_all(fd, bytes(size - fill_from), fill_from)
        return size

    def complete(self, batch: Batch) -> None:
        """Loop half: account for a written batch."""
        self.written_seq = batch.seq
        if batch.snapshot_index:
            self.log_bytes = len(MAGIC) + len(batch.data)
            self.records_migrated += batch.records
            self.compactions += 1
        else:
            self.log_bytes += len(batch.data)
        self.records_written += batch.records
        self.unsynced += batch.records

    def _write_snapshot(self, batch: Batch) -> None:
        index = batch.snapshot_index
        final = os.path.join(self.directory, f"{SEGMENT_PREFIX}{index:010d}")
        tmp = final + TMP_SUFFIX
        # Not O_APPEND: Linux pwrite on an O_APPEND file ignores the offset.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            offset = len(MAGIC) + len(batch.data)
            _write_all(fd, MAGIC + batch.data, 0)
            allocated = self._preallocate(fd, offset, offset)
            os.fsync(fd)
            os.rename(tmp, final)
            _fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        old_fd, self._fd = self._fd, fd
        self._offset, self._allocated = offset, allocated
        if old_fd >= 0:
            os.close(old_fd)
        old_segments = [i for i in self._segments if i < index]
        self._segments = [index]
        self.index = index
        for old in sorted(old_segments):  # oldest first: what survives is a suffix
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.directory, f"{SEGMENT_PREFIX}{old:010d}"))
        _fsync_dir(self.directory)

    def _lock(self) -> None:
        """One writer per directory (beanstalkd does the same with its ``lock`` file).

        ``flock`` is released by the kernel when the process dies, even by ``kill -9``,
        so a crash never leaves a stale lock behind.
        """
        fd = os.open(os.path.join(self.directory, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LogLockedError(f"{self.directory} is in use by another queue process") from None
        self._lock_fd = fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def segment_files(self) -> list[str]:
        return [f"{SEGMENT_PREFIX}{i:010d}" for i in self._segments]


def _segment_index(name: str) -> int | None:
    if not name.startswith(SEGMENT_PREFIX):
        return None
    digits = name[len(SEGMENT_PREFIX) :]
    return int(digits) if digits.isdigit() else None


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
