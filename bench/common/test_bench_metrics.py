"""ns per counter increment and histogram observation: the cost a hot path pays per metric.

Run: ``make bench`` or ``.venv/bin/python -m pytest bench/common --benchmark-only``.
Each benchmark does 1000 operations per round, so the reported mean in µs equals the
cost per operation in ns.
"""

from components.common.metrics import Registry

OPS = 1000


def test_counter_child_inc(benchmark):
    child = Registry().counter("c_total", "c", ["node"]).labels(node="a")
    inc = child.inc

    def run():
        for _ in range(OPS):
            inc()

    benchmark(run)
    assert child.value >= OPS


def test_histogram_observe(benchmark):
    child = Registry().histogram("h_seconds", "h", ["route"]).labels(route="/users")
    observe = child.observe

    def run():
        for _ in range(OPS):
            observe(0.0042)

    benchmark(run)
    assert child.count >= OPS


def test_empty_loop_baseline(benchmark):
    """The loop's own cost, to subtract from the two above."""

    def run():
        for _ in range(OPS):
            pass

    benchmark(run)
