"""Hot paths of the store without IO: log framing, the batch codec, request parsing, answers.

Run: ``.venv/bin/python -m pytest bench/store --benchmark-only -p no:cacheprovider``.
"""

import os

from components.store import protocol
from components.store.database import Changes, Rows
from components.store.rewrite import Rewriter
from components.store.wal import Batch, RedoLog, encode_batch, encode_record, scan

BATCH = Batch((("INSERT INTO users(name, email, age) VALUES(?, ?, ?)", ["fiona", "f@x.io", 20]),),
              False)  # fmt: skip
PAYLOAD = encode_batch(BATCH)
LOG_1000 = b"".join(encode_record(1, lsn, PAYLOAD) for lsn in range(1, 1001))
BODY = b'[["INSERT INTO users(name, email, age) VALUES(?, ?, ?)", "fiona", "f@x.io", 20]]'
REWRITER = Rewriter(lambda: 1_700_000_000.0, lambda n: 42)


def test_encode_batch_and_record(benchmark):
    benchmark(lambda: encode_record(1, 12345, encode_batch(BATCH)))


def test_scan_1000_records(benchmark):
    result = benchmark(scan, LOG_1000)
    assert len(result.records) == 1000


def test_append_64_records_no_fsync(benchmark, tmp_path):
    log = RedoLog(str(tmp_path / "redo.log"))
    state = {"lsn": 0}

    def append_group():
        frames = []
        for _ in range(64):
            state["lsn"] += 1
            frames.append((1, state["lsn"], encode_record(1, state["lsn"], PAYLOAD)))
        log.append(frames)

    benchmark(append_group)
    log.close()


def test_append_one_record_with_fsync(benchmark, tmp_path):
    log = RedoLog(str(tmp_path / "redo.log"))
    state = {"lsn": 0}

    def append_sync():
        state["lsn"] += 1
        log.append([(1, state["lsn"], encode_record(1, state["lsn"], PAYLOAD))])
        log.sync()

    benchmark.pedantic(append_sync, rounds=50, iterations=1)
    log.close()
    assert os.path.getsize(tmp_path / "redo.log") > 0


def test_parse_execute_request(benchmark):
    benchmark(lambda: protocol.parse_statements(BODY))


def test_parse_options(benchmark):
    benchmark(protocol.parse_options, "transaction&timings&level=none&min_lsn=10")


def test_rewrite_fast_path(benchmark):
    benchmark(REWRITER.rewrite, BATCH.statements[0][0])


def test_rewrite_with_random_and_now(benchmark):
    benchmark(REWRITER.rewrite, "INSERT INTO t VALUES(random(), datetime('now'), ?)")


def test_render_query_answer(benchmark):
    rows = [Rows(["id", "name", "email"], ["integer", "text", "text"],
                 [[i, "fiona", "f@x.io"] for i in range(10)])]  # fmt: skip
    benchmark(protocol.results_body, rows, protocol.Options(), 0.001)


def test_render_execute_answer(benchmark):
    benchmark(protocol.results_body, [Changes(7, 1)], protocol.Options(), 0.001)


def test_render_fast_front_answer(benchmark):
    from components.store.front import JSON, render

    body = protocol.results_body([Changes(7, 1)], protocol.Options(), 0.001, 7)
    benchmark(render, (200, JSON, b"X-Scalelab-Lsn: 7\r\n", body), True)
