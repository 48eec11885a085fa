"""Hot paths of the queue without sockets: the parser and the broker core.

Run: ``.venv/bin/python -m pytest bench/queue --benchmark-only -p no:cacheprovider``
"""

from components.queue.broker import Broker
from components.queue.protocol import CommandParser, ReplyParser

BATCH = 100
PUTS = b"put 1024 0 60 64\r\n" + b"x" * 64 + b"\r\n"
CYCLE = PUTS + b"reserve\r\ndelete 12345\r\n"


def test_parse_pipelined_put_reserve_delete(benchmark):
    """One read burst of 100 put+reserve+delete triples, parsed into 300 events."""
    data = CYCLE * BATCH
    parser = CommandParser()

    def run():
        parser.receive_data(data)
        count = 0
        while parser.next_event() is not None:
            count += 1
        return count

    assert benchmark(run) == 3 * BATCH


def test_parse_replies(benchmark):
    data = (b"INSERTED 12345\r\nRESERVED 12345 64\r\n" + b"x" * 64 + b"\r\nDELETED\r\n") * BATCH
    parser = ReplyParser()

    def run():
        parser.receive_data(data)
        count = 0
        while parser.next_reply() is not None:
            count += 1
        return count

    assert benchmark(run) == 3 * BATCH


def test_broker_put_reserve_delete(benchmark):
    """100 jobs through the core: put, reserve, delete (no I/O, no journal)."""
    broker = Broker()
    producer = broker.connect()
    worker = broker.connect()
    body = b"x" * 64

    def run():
        for _ in range(BATCH):
            broker.put(producer, producer.use, 1024, 0, 60, body, 0.0)
        for _ in range(BATCH):
            _, job = broker.reserve(worker, 0.0)
            broker.delete(worker, job.id, 0.0)
        return len(broker.jobs)

    assert benchmark(run) == 0


def test_binlog_records_for_put_and_delete(benchmark):
    """Encoding the two records a job costs the binlog (put, delete), 100 jobs."""
    from components.queue import binlog

    broker = Broker()
    producer = broker.connect()
    jobs = [broker.put(producer, producer.use, 1024, 0, 60, b"x" * 64, 0.0) for _ in range(BATCH)]

    def run():
        return len(b"".join(binlog.encode_full(j) + binlog.encode_delete(j.id) for j in jobs))

    assert benchmark(run) > 0


def test_durable_put_path_without_sockets(benchmark, tmp_path):
    """The sans-IO half of a durable put, 100 of them: the put line and body parsed,
    the job made ready in the broker, its FULL record appended to a real binlog's
    pending batch, and the batch taken (one ``b"".join`` per group commit). The server
    adds the held reply, the write and the fsync hand-off; ab_put_cost.py measures those.
    Each round starts from an empty broker and binlog, so rounds measure the same work."""
    from components.queue.binlog import Binlog
    from components.queue.protocol import Put

    logs: list[Binlog] = []
    data = PUTS * BATCH

    def setup():
        if logs:
            logs.pop().close()
        broker = Broker()
        log = Binlog(str(tmp_path / "binlog"), preallocate_bytes=0)
        log.open(broker)
        logs.append(log)
        return (broker, log), {}

    def run(broker, log):
        producer = broker.connect()
        parser = CommandParser()
        parser.receive_data(data)
        while (event := parser.next_event()) is not None:
            assert type(event) is Put
            broker.put(producer, producer.use, event.pri, event.delay, event.ttr, event.body, 0.0)
        return log.take_batch().records

    try:
        assert benchmark.pedantic(run, setup=setup, rounds=300) == BATCH
    finally:
        for log in logs:
            log.close()
