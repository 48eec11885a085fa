"""Hot-path pieces of the web tier, without sockets: what one request costs in our code.

Run: ``.venv/bin/python -m pytest bench/web --benchmark-only``. The side-by-side HTTP
figure against a bare aiohttp app is ``bench/web/compare_hello.py`` (needs wrk).
"""

import orjson

from components.web.lru import LruCache
from components.web.protocol import encode_user, parse_user, user_id_from_text
from components.web.seed import seed_user
from components.web.static import is_not_modified

USER = seed_user(42)
RAW = orjson.dumps(USER)


def test_lru_get_hit(benchmark):
    cache = LruCache(64 << 20)
    for user_id in range(1000):
        cache.set(f"user:{user_id}", encode_user(user_id, seed_user(user_id + 1)), 0.0, 60.0)
    assert benchmark(cache.get, "user:42", 1.0) is not None


def test_lru_set_with_eviction(benchmark):
    cache = LruCache(100_000)
    value = encode_user(1, USER)
    counter = iter(range(10**9))
    benchmark(lambda: cache.set(f"user:{next(counter)}", value, 0.0, 60.0))
    assert cache.used_bytes <= cache.max_bytes


def test_parse_path_id(benchmark):
    assert benchmark(user_id_from_text, "123456") == 123456


def test_decode_and_validate_user_body(benchmark):
    assert benchmark(lambda: parse_user(orjson.loads(RAW)))["lastName"] == USER["lastName"]


def test_encode_user(benchmark):
    assert benchmark(encode_user, 42, USER).startswith(b'{"id":42')


def test_conditional_get_check(benchmark):
    assert benchmark(is_not_modified, 'W/"x", "abc"', None, '"abc"', 1000) is True
