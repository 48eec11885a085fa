"""The load generator's own per-request costs, so they stay small next to aiohttp's.

Per request the engine draws a request kind and a key, renders the path (and body),
and records the answer into three histograms (overall, per kind, last second) and the
per-second timeline; a user with cookies also builds its ``Cookie`` header. Per
scrape the report parses a /metrics page. Each benchmark does 1000 operations per
round, so the mean in µs is the cost per operation in ns.

Run: ``.venv/bin/python -m pytest bench/loadgen --benchmark-only``.
"""

import random

from components.common.metrics import Registry
from loadgen.exposition import parse_exposition
from loadgen.histogram import Histogram
from loadgen.keys import ZipfKeys
from loadgen.profile import load_profile
from loadgen.results import Results
from loadgen.timeline import Timeline

OPS = 1000


def test_histogram_record(benchmark):
    hist = Histogram()
    record = hist.record
    values = [random.Random(1).randrange(50, 500_000) for _ in range(OPS)]

    def run():
        for v in values:
            record(v)

    benchmark(run)
    assert hist.count >= OPS


def test_results_answer(benchmark):
    results = Results()
    answer = results.answer

    def run():
        for i in range(OPS):
            answer("get_user", 200, 1_000 + i, True)

    benchmark(run)
    assert results.requests >= OPS


def test_results_answer_with_the_timeline(benchmark):
    """The same, plus the per-second timeline slot (``loadgen.timeline``)."""
    results = Results()
    results.timeline = Timeline(60.0, 2.0)
    answer = results.answer

    def run():
        for i in range(OPS):
            answer("get_user", 200, 1_000 + i, True, i * 0.05)

    benchmark(run)
    assert results.requests >= OPS


def test_cookie_header_of_a_user_with_a_session(benchmark):
    """What a user with cookies pays per request: filter its jar, build ``Cookie:``."""
    import asyncio

    import aiohttp
    from yarl import URL

    async def build():
        jar = aiohttp.CookieJar(unsafe=True)
        url = URL("http://127.0.0.1:8000/me")
        jar.update_cookies_from_headers(
            ["session=abcdef0123456789; Path=/; HttpOnly", "scalelab_lsn=42; Max-Age=10; Path=/"],
            url,
        )
        return jar, url

    jar, url = asyncio.run(build())

    def run():
        for _ in range(OPS):
            if len(jar):
                cookie = jar.filter_cookies(url)
                "; ".join(f"{m.key}={m.coded_value}" for m in cookie.values())

    benchmark(run)
    assert len(jar.filter_cookies(url)) == 2


def test_zipf_draw(benchmark):
    draw = ZipfKeys(1000, 1.0, random.Random(1)).next

    def run():
        for _ in range(OPS):
            draw()

    benchmark(run)


def test_render_put_user_body(benchmark):
    spec = next(r for r in load_profile("default").requests if r.name == "put_user")
    values = {"key": 17, "seq": 5, "rand": 12345}

    def run():
        for _ in range(OPS):
            spec.path.render(values)
            spec.body.render(values)

    benchmark(run)


def test_histogram_merge_of_a_worker_result(benchmark):
    """What the parent pays per worker per second for the progress line."""
    hist = Histogram()
    for v in range(50, 500_000, 97):
        hist.record(v)
    shipped = hist.to_dict()

    def run():
        Histogram().merge(Histogram.from_dict(shipped))

    benchmark(run)


def test_parse_exposition_of_200_series(benchmark):
    registry = Registry()
    requests = registry.counter("scalelab_web_requests_total", "r", ["route", "status"])
    for i in range(100):
        requests.labels(f"/route/{i}", "200").inc(i)
    hist = registry.histogram("scalelab_web_request_duration_seconds", "d", ["route"])
    for i in range(6):
        hist.labels(f"/route/{i}").observe(0.01)
    text = registry.render()
    parsed = benchmark(parse_exposition, text)
    assert len(parsed.samples) > 200
