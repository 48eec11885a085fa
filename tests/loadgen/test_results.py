"""Results: answers and failures classified, warm-up excluded, merge and shipping exact."""

from loadgen.results import Results


def test_answers_are_counted_per_kind_and_status():
    r = Results()
    r.answer("get", 200, 1_000, True)
    r.answer("get", 404, 2_000, True)
    r.answer("put", 503, 3_000, True)
    assert r.requests == 3
    assert r.status == {"get": {200: 1, 404: 1}, "put": {503: 1}}
    assert r.status_totals() == {200: 1, 404: 1, 503: 1}
    assert r.errors == {"http_4xx": {"get": 1}, "http_5xx": {"put": 1}}
    assert r.by_kind["get"].count == 2 and r.latency.max == 3_000
    assert r.failures == 0 and r.error_count == 2


def test_failures_are_counted_by_error_kind_and_not_as_answers():
    r = Results()
    r.failure("get", "timeout", True)
    r.failure("get", "connect", True)
    r.failure("get", "weird", True)
    assert r.requests == 0 and r.failures == 3
    assert r.errors == {"timeout": {"get": 1}, "connect": {"get": 1}, "other": {"get": 1}}


def test_warmup_is_counted_but_never_in_a_figure():
    r = Results()
    r.answer("get", 200, 9_999_999, False)
    r.failure("get", "timeout", False)
    r.answer("get", 500, 10, False)
    assert r.requests == 0 and r.latency.count == 0 and r.errors == {}
    assert (r.warmup_requests, r.warmup_errors) == (2, 2)


def test_interval_sees_everything_and_resets():
    r = Results()
    r.answer("get", 200, 5, False)
    r.answer("get", 500, 7, True)
    r.failure("get", "connect", True)
    first = r.take_interval()
    assert first["histogram"]["count"] == 2 and first["errors"] == 2
    assert r.take_interval()["histogram"]["count"] == 0


def test_merge_and_dict_round_trip_are_exact():
    a, b = Results(), Results()
    a.answer("get", 200, 100, True)
    a.failure("put", "timeout", True)
    a.window_s = 2.0
    b.answer("get", 200, 300, True)
    b.answer("put", 201, 50, True)
    b.answer("get", 200, 1, False)
    b.window_s = 2.5
    merged = Results.from_dict(a.to_dict())
    merged.merge(Results.from_dict(b.to_dict()))
    assert merged.requests == 3 and merged.warmup_requests == 1
    assert merged.status == {"get": {200: 2}, "put": {201: 1}}
    assert merged.errors == {"timeout": {"put": 1}}
    assert merged.latency.max == 300 and merged.window_s == 2.5
