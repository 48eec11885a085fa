"""The edge as a real process in front of a real (scripted) origin, driven by curl and aiohttp.

Each test owns a path on the shared origin (``ScriptedOrigin``, an aiohttp server in a
thread that counts the requests reaching it), so one edge process serves the module;
tests that kill the origin or need other flags start their own. Names cite the RFC
section each test is about.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest

import harness
from components.edge.httpcache import format_http_date

# importlib import mode: the helper next to this file is not importable by default.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from scripted_origin import Route, ScriptedOrigin  # noqa: E402


@pytest.fixture(scope="module")
def origin():
    server = ScriptedOrigin()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def edge(origin):
    proc = harness.start("edge", "--origin", origin.address, "--memory-mb", "16")
    yield proc
    proc.stop(timeout_s=5)


def curl(edge, path, *args, method=None):
    """(status, lowercase headers, body) of one curl call."""
    cmd = ["curl", "-s", "-i", "--max-time", "10", "-H", "Expect:"]
    if method == "HEAD":
        cmd.append("-I")
    elif method:
        cmd += ["-X", method]
    for arg in args:
        cmd += ["-H", arg] if ":" in arg else [arg]
    raw = subprocess.run([*cmd, edge.url("main") + path], capture_output=True, check=True).stdout
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    return int(lines[0].split()[1]), headers, body


def admin(edge, op, body):
    return harness.http("POST", edge.url("admin") + "/admin/" + op, json.dumps(body).encode())


def metric(edge, name: str, **labels) -> float:
    _, _, text = harness.http("GET", edge.url("admin") + "/metrics")
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.decode().splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def cached(**cc) -> Route:
    return Route(headers={"Cache-Control": ", ".join(f"{k.replace('_', '-')}={v}" if v is not True
                                                     else k.replace("_", "-")
                                                     for k, v in cc.items())})  # fmt: skip


# -- RFC 9111 §4: hits do not reach the origin -------------------------------------------------


def test_4_a_fresh_hit_does_not_reach_the_origin(origin, edge):
    origin.routes["/hit"] = Route(headers={"Cache-Control": "max-age=60"}, body=b"payload")
    status, headers, body = curl(edge, "/hit")
    assert (status, headers["x-cache"], body) == (200, "MISS", b"payload")
    for _ in range(3):
        status, headers, body = curl(edge, "/hit")
        assert (status, headers["x-cache"], body) == (200, "HIT", b"payload")
        assert int(headers["age"]) >= 0 and headers["via"] == "1.1 edge"
    assert origin.hits["/hit"] == 1
    assert metric(edge, "scalelab_edge_requests_total", result="hit") >= 3


@pytest.mark.parametrize(
    "name,headers",
    [
        ("s-maxage", {"Cache-Control": "s-maxage=60"}),
        ("max-age", {"Cache-Control": "max-age=60"}),
        ("expires", {"Expires": format_http_date(time.time() + 600).decode()}),
        ("heuristic", {"Last-Modified": format_http_date(time.time() - 86400).decode()}),
        ("public", {"Cache-Control": "public",
                    "Last-Modified": format_http_date(time.time() - 86400).decode()}),
    ],
)  # fmt: skip
def test_4_2_1_each_freshness_source_makes_a_hit(origin, edge, name, headers):
    path = f"/fresh/{name}"
    origin.routes[path] = Route(headers=headers, body=name.encode())
    assert curl(edge, path)[1]["x-cache"] == "MISS"
    assert curl(edge, path)[1]["x-cache"] == "HIT"
    assert origin.hits[path] == 1


@pytest.mark.parametrize(
    "name,headers,request_fields",
    [
        ("no-store", {"Cache-Control": "no-store, max-age=60"}, ()),
        ("private", {"Cache-Control": "private, max-age=60"}, ()),
        ("no-lifetime-302", {"Location": "/x"}, ()),
        ("authorization", {"Cache-Control": "max-age=60"}, ("Authorization: Bearer t",)),
        ("request-no-store", {"Cache-Control": "max-age=60"}, ("Cache-Control: no-store",)),
        ("vary-star", {"Cache-Control": "max-age=60", "Vary": "*"}, ()),
    ],
)
def test_3_what_may_not_be_stored_always_reaches_the_origin(origin, edge, name, headers,
                                                            request_fields):  # fmt: skip
    path = f"/nostore/{name}"
    origin.routes[path] = Route(status=302 if "302" in name else 200, headers=headers)
    for _ in range(2):
        assert curl(edge, path, *request_fields)[1]["x-cache"] == "MISS"
    assert origin.hits[path] == 2


# -- §4.3 validation --------------------------------------------------------------------------


def test_4_3_stale_response_is_revalidated_with_if_none_match_and_304_merged(origin, edge):
    origin.routes["/reval"] = Route(headers={"Cache-Control": "max-age=0"}, body=b"v1 body",
                                    etag='"v1"', headers_304={"X-Refreshed": "yes"})  # fmt: skip
    assert curl(edge, "/reval")[1]["x-cache"] == "MISS"
    status, headers, body = curl(edge, "/reval")
    assert (status, headers["x-cache"], body) == (200, "REVALIDATED", b"v1 body")
    assert headers["x-refreshed"] == "yes"  # §3.2: the 304's fields update the stored ones
    assert origin.hits["/reval"] == 2
    assert origin.seen["/reval"][1]["If-None-Match"] == '"v1"'


def test_4_3_1_last_modified_validates_with_if_modified_since(origin, edge):
    lm = format_http_date(time.time() - 3600).decode()
    origin.routes["/ims"] = Route(headers={"Cache-Control": "max-age=0"}, last_modified=lm)
    curl(edge, "/ims")
    assert curl(edge, "/ims")[1]["x-cache"] == "REVALIDATED"
    assert origin.seen["/ims"][1]["If-Modified-Since"] == lm


def test_4_3_a_changed_representation_replaces_the_stored_one(origin, edge):
    origin.routes["/changed"] = Route(headers={"Cache-Control": "max-age=0"}, body=b"old",
                                      etag='"1"')  # fmt: skip
    curl(edge, "/changed")
    origin.routes["/changed"] = Route(headers={"Cache-Control": "max-age=60"}, body=b"new",
                                      etag='"2"')  # fmt: skip
    assert curl(edge, "/changed")[2] == b"new"
    assert curl(edge, "/changed")[1]["x-cache"] == "HIT"


def test_5_2_2_4_no_cache_response_is_validated_on_every_use(origin, edge):
    origin.routes["/nocache"] = Route(headers={"Cache-Control": "no-cache, max-age=60"},
                                      etag='"n"')  # fmt: skip
    curl(edge, "/nocache")
    assert curl(edge, "/nocache")[1]["x-cache"] == "REVALIDATED"
    assert curl(edge, "/nocache")[1]["x-cache"] == "REVALIDATED"
    assert origin.hits["/nocache"] == 3


# -- §5.2.1 request directives ----------------------------------------------------------------


def test_5_2_1_request_directives(origin, edge):
    origin.routes["/req"] = Route(headers={"Cache-Control": "max-age=60"}, etag='"r"')
    assert curl(edge, "/req", "Cache-Control: only-if-cached")[0] == 504  # §5.2.1.7
    assert origin.hits["/req"] == 0
    curl(edge, "/req")
    assert curl(edge, "/req", "Cache-Control: only-if-cached")[1]["x-cache"] == "HIT"
    assert curl(edge, "/req", "Cache-Control: no-cache")[1]["x-cache"] == "REVALIDATED"
    assert curl(edge, "/req", "Pragma: no-cache")[1]["x-cache"] == "REVALIDATED"  # §5.4
    assert curl(edge, "/req", "Cache-Control: max-age=0")[1]["x-cache"] == "REVALIDATED"
    assert curl(edge, "/req", "Cache-Control: min-fresh=3600")[1]["x-cache"] == "REVALIDATED"
    assert curl(edge, "/req", "Cache-Control: max-age=3600")[1]["x-cache"] == "HIT"
    assert origin.hits["/req"] == 5


def test_5_2_1_2_max_stale_lets_the_client_take_a_stale_copy(origin, edge):
    origin.routes["/maxstale"] = Route(headers={"Cache-Control": "max-age=0"}, etag='"m"')
    curl(edge, "/maxstale")
    status, headers, _ = curl(edge, "/maxstale", "Cache-Control: max-stale")
    assert (status, headers["x-cache"]) == (200, "STALE")
    assert origin.hits["/maxstale"] == 1


# -- §4.1 Vary -------------------------------------------------------------------------------


async def test_4_1_vary_keeps_one_variant_per_request_field_value(origin, edge):
    origin.routes["/vary"] = Route(headers={"Cache-Control": "max-age=60", "Vary": "X-Lang"})
    async with aiohttp.ClientSession() as session:
        url = edge.url("main") + "/vary"
        for lang, expected in (("en", "MISS"), ("fr", "MISS"), ("en", "HIT"), ("fr", "HIT"),
                               ("en", "HIT")):  # fmt: skip
            async with session.get(url, headers={"X-Lang": lang}) as response:
                assert response.headers["X-Cache"] == expected, lang
        async with session.get(url) as response:  # no X-Lang at all: a third variant
            assert response.headers["X-Cache"] == "MISS"
    assert origin.hits["/vary"] == 3


# -- HEAD, conditionals and ranges answered from the store ------------------------------------


def test_head_is_answered_from_the_stored_get(origin, edge):
    origin.routes["/head"] = Route(headers={"Cache-Control": "max-age=60"}, body=b"x" * 1234)
    status, headers, body = curl(edge, "/head", method="HEAD")  # a miss fetches the GET
    assert (status, headers["content-length"], body) == (200, "1234", b"")
    status, headers, body = curl(edge, "/head", method="HEAD")
    assert (headers["x-cache"], headers["content-length"], body) == ("HIT", "1234", b"")
    assert curl(edge, "/head")[2] == b"x" * 1234
    assert origin.hits["/head"] == 1
    assert origin.seen["/head"][0]["_method"] == "GET"


def test_clients_conditional_requests_get_304_from_the_cache(origin, edge):
    lm = format_http_date(time.time() - 3600).decode()
    origin.routes["/cond"] = Route(headers={"Cache-Control": "max-age=60"}, etag='"c1"',
                                   last_modified=lm)  # fmt: skip
    # The miss fetches and stores the full 200, then answers the client's condition.
    status, headers, _ = curl(edge, "/cond", 'If-None-Match: "c1"')
    assert (status, headers["x-cache"]) == (304, "MISS")
    status, headers, body = curl(edge, "/cond", 'If-None-Match: "c1"')
    assert (status, headers["etag"], body) == (304, '"c1"', b"")
    assert curl(edge, "/cond", 'If-None-Match: "other"')[0] == 200
    assert curl(edge, "/cond", f"If-Modified-Since: {lm}")[0] == 304
    assert origin.hits["/cond"] == 1
    assert "If-None-Match" not in origin.seen["/cond"][0]


def test_ranges_are_served_from_the_stored_full_response(origin, edge):
    origin.routes["/range"] = Route(headers={"Cache-Control": "max-age=60"},
                                    body=bytes(range(256)), etag='"r1"')  # fmt: skip
    status, headers, body = curl(edge, "/range", "Range: bytes=10-19")
    assert (status, headers["content-range"], body) == (
        206,
        "bytes 10-19/256",
        bytes(range(10, 20)),
    )
    assert curl(edge, "/range", "Range: bytes=-6")[2] == bytes(range(250, 256))
    status, headers, body = curl(edge, "/range", "Range: bytes=300-")
    assert (status, headers["content-range"]) == (416, "bytes */256")
    assert curl(edge, "/range", "Range: bytes=0-1", 'If-Range: "old"')[0] == 200
    assert origin.hits["/range"] == 1
    assert "Range" not in origin.seen["/range"][0]


def test_chunked_origin_responses_are_stored_with_a_length(origin, edge):
    origin.routes["/chunked"] = Route(headers={"Cache-Control": "max-age=60"}, body=b"c" * 5000,
                                      chunked=True)  # fmt: skip
    assert curl(edge, "/chunked")[2] == b"c" * 5000
    status, headers, body = curl(edge, "/chunked")
    assert (headers["x-cache"], headers["content-length"], body) == ("HIT", "5000", b"c" * 5000)


# -- collapsing ------------------------------------------------------------------------------


async def test_100_concurrent_misses_make_one_origin_request(origin, edge):
    origin.routes["/collapse"] = Route(headers={"Cache-Control": "max-age=60"}, body=b"once",
                                       delay_s=0.3)  # fmt: skip
    url = edge.url("main") + "/collapse"
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one():
            async with session.get(url) as response:
                return response.status, await response.read()

        results = await asyncio.gather(*(one() for _ in range(100)))
    assert results == [(200, b"once")] * 100
    assert origin.hits["/collapse"] == 1
    assert metric(edge, "scalelab_edge_collapsed_total") >= 1


# -- §4.4 invalidation and purge ---------------------------------------------------------------


def test_4_4_unsafe_methods_invalidate_target_and_location(origin, edge):
    for path in ("/inv/item", "/inv/list"):
        origin.routes[path] = Route(headers={"Cache-Control": "max-age=60"})
        curl(edge, path)
        assert curl(edge, path)[1]["x-cache"] == "HIT"
    origin.routes["/inv/item"].headers["Location"] = "/inv/list"
    status, headers, _ = curl(edge, "/inv/item", "-d", "a=1", method="POST")
    assert status == 200 and origin.seen["/inv/item"][-1]["_body"] == b"a=1"
    assert curl(edge, "/inv/item")[1]["x-cache"] == "MISS"
    assert curl(edge, "/inv/list")[1]["x-cache"] == "MISS"


def test_4_4_failed_unsafe_requests_do_not_invalidate(origin, edge):
    origin.routes["/inv/fail"] = Route(headers={"Cache-Control": "max-age=60"})
    curl(edge, "/inv/fail")
    origin.routes["/inv/fail"] = Route(status=403, headers={"Cache-Control": "no-store"})
    assert curl(edge, "/inv/fail", method="DELETE")[0] == 403
    assert curl(edge, "/inv/fail")[1]["x-cache"] == "HIT"


def test_purge_by_url_prefix_and_surrogate_key(origin, edge):
    paths = {"/p/a": "red", "/p/b": "red blue", "/p/c": "", "/q/d": "blue"}
    for path, keys in paths.items():
        fields = {"Cache-Control": "max-age=60"}
        if keys:
            fields["Surrogate-Key"] = keys
        origin.routes[path] = Route(headers=fields)
        curl(edge, path)
    assert admin(edge, "purge", {"key": "red"})[2] == b'{"purged":2,"by":"key"}'
    assert curl(edge, "/p/a")[1]["x-cache"] == "MISS"
    assert curl(edge, "/q/d")[1]["x-cache"] == "HIT"
    assert json.loads(admin(edge, "purge", {"url": "/q/d"})[2])["purged"] == 1
    assert curl(edge, "/q/d")[1]["x-cache"] == "MISS"
    assert json.loads(admin(edge, "purge", {"prefix": "/p/"})[2])["purged"] == 2  # /p/a, /p/c
    assert curl(edge, "/p/c")[1]["x-cache"] == "MISS"
    assert admin(edge, "purge", {"nothing": 1})[0] == 400
    assert "surrogate-key" not in curl(edge, "/p/b")[1]


# -- RFC 5861 ----------------------------------------------------------------------------------


def test_rfc5861_3_stale_while_revalidate_answers_at_once_and_refreshes(origin, edge):
    origin.routes["/swr"] = Route(headers={"Cache-Control": "max-age=0, stale-while-revalidate=60"},
                                  etag='"s"', delay_s=0.2)  # fmt: skip
    curl(edge, "/swr")
    assert curl(edge, "/swr")[1]["x-cache"] == "STALE"
    harness.wait_until_sync(lambda: origin.hits["/swr"] == 2, what="background revalidation")
    assert origin.seen["/swr"][1]["If-None-Match"] == '"s"'


def test_rfc5861_4_stale_if_error_on_origin_5xx(origin, edge):
    origin.routes["/sie"] = Route(headers={"Cache-Control": "max-age=0, stale-if-error=60"},
                                  body=b"good")  # fmt: skip
    curl(edge, "/sie")
    origin.routes["/sie"] = Route(status=503, body=b"down", headers={"Cache-Control": "no-store"})
    status, headers, body = curl(edge, "/sie")
    assert (status, headers["x-cache"], body) == (200, "STALE", b"good")
    origin.routes["/sie-none"] = Route(headers={"Cache-Control": "max-age=0"}, body=b"good")
    curl(edge, "/sie-none")
    origin.routes["/sie-none"] = Route(status=503, body=b"down", headers={})
    assert curl(edge, "/sie-none")[:3:2] == (503, b"down")


def test_rfc5861_4_stale_if_error_with_the_origin_killed():
    origin = ScriptedOrigin()
    origin.start()
    edge = harness.start("edge", "--origin", origin.address, "--connect-timeout", "1")
    try:
        origin.routes["/k"] = Route(headers={"Cache-Control": "max-age=0, stale-if-error=600"},
                                    body=b"kept")  # fmt: skip
        origin.routes["/gone"] = Route(headers={"Cache-Control": "max-age=0"}, body=b"gone")
        curl(edge, "/k")
        curl(edge, "/gone")
        origin.stop()
        status, headers, body = curl(edge, "/k")
        assert (status, headers["x-cache"], body) == (200, "STALE", b"kept")
        assert curl(edge, "/gone")[0] == 502
        assert curl(edge, "/k", "Cache-Control: no-cache")[0] == 502
    finally:
        edge.stop(timeout_s=5)
        origin.close()


# -- storage bounds ----------------------------------------------------------------------------


def test_big_objects_stream_through_and_memory_stays_bounded():
    origin = ScriptedOrigin()
    origin.start()
    edge = harness.start("edge", "--origin", origin.address, "--memory-mb", "1",
                         "--max-object-mb", "0.25")  # fmt: skip
    try:
        big = bytes(range(256)) * 2048  # 512 KiB
        origin.routes["/big"] = Route(headers={"Cache-Control": "max-age=60"}, body=big)
        origin.routes["/bigchunked"] = Route(headers={"Cache-Control": "max-age=60"}, body=big,
                                             chunked=True)  # fmt: skip
        for path in ("/big", "/big", "/bigchunked", "/bigchunked"):
            status, headers, body = curl(edge, path)
            assert (status, headers["x-cache"], body == big) == (200, "MISS", True), path
        assert origin.hits["/big"] == 2 and origin.hits["/bigchunked"] == 2
        medium = b"m" * 200_000
        for i in range(20):
            origin.routes[f"/m{i}"] = Route(headers={"Cache-Control": "max-age=60"}, body=medium)
            assert curl(edge, f"/m{i}")[2] == medium
        assert metric(edge, "scalelab_edge_stored_bytes") <= 1024 * 1024
        assert metric(edge, "scalelab_edge_evictions_total") >= 15
        assert curl(edge, "/m19")[1]["x-cache"] == "HIT"
        assert curl(edge, "/m0")[1]["x-cache"] == "MISS"
    finally:
        edge.stop(timeout_s=5)
        origin.close()


# -- framing: the shared codec's rules at the edge's door --------------------------------------


def raw_exchange(edge, data: bytes) -> bytes:
    host, port = edge.address("main")
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            chunks.append(piece)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "request_bytes,status",
    [
        (b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
         b"\r\n0\r\n\r\n", b"400"),
        (b"GET /s HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", b"400"),
        (b"GET /s HTTP/1.1\r\n\r\n", b"400"),
        (b"GET /s HTTP/1.1\r\nHost: a\r\n X: folded\r\n\r\n", b"400"),
        (b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", b"501"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", b"414"),
    ],
)  # fmt: skip
def test_bad_framing_is_refused_with_the_rfc_status(edge, request_bytes, status):
    answer = raw_exchange(edge, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]


def test_pipelined_requests_are_answered_in_order(origin, edge):
    origin.routes["/pipe1"] = Route(headers={"Cache-Control": "max-age=60"}, body=b"one")
    origin.routes["/pipe2"] = Route(headers={"Cache-Control": "max-age=60"}, body=b"two",
                                    delay_s=0.1)  # fmt: skip
    curl(edge, "/pipe1")
    answer = raw_exchange(
        edge,
        b"GET /pipe2 HTTP/1.1\r\nHost: a\r\n\r\nGET /pipe1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /pipe2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    bodies = [part.rsplit(b"\r\n", 1)[-1] for part in answer.split(b"HTTP/1.1 200 OK")[1:]]
    assert [b[-3:] for b in bodies] == [b"two", b"one", b"two"]


async def test_waiting_requests_share_a_fill_that_is_stale_on_arrival(origin, edge):
    origin.routes["/collapse0"] = Route(headers={"Cache-Control": "max-age=0"}, body=b"zero",
                                        delay_s=0.3)  # fmt: skip
    url = edge.url("main") + "/collapse0"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:

        async def one():
            async with session.get(url) as response:
                return await response.read()

        assert await asyncio.gather(*(one() for _ in range(50))) == [b"zero"] * 50
    assert origin.hits["/collapse0"] == 1


def test_expect_100_continue_is_answered_before_the_body(origin, edge):
    origin.routes["/upload"] = Route(status=201, headers={"Cache-Control": "no-store"})
    host, port = edge.address("main")
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")  # fmt: skip
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        assert sock.recv(100).startswith(b"HTTP/1.1 201 Created")
    assert origin.seen["/upload"][-1]["_body"] == b"hello"


@pytest.fixture(scope="module")
def raw_origin_edge():
    from scripted_origin import RawOrigin

    origin = RawOrigin(b"")
    edge = harness.start("edge", "--origin", origin.address)
    yield origin, edge
    edge.stop(timeout_s=5)
    origin.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        # A body broken before the client was sent any of it: still a proper 502.
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
)
def test_a_broken_origin_response_is_502_and_never_stored(raw_origin_edge, answer):
    origin, edge = raw_origin_edge
    origin.answer = answer
    for _ in range(2):
        status, headers, _ = curl(edge, "/broken")
        assert status == 502, headers
    assert metric(edge, "scalelab_edge_objects") == 0


def test_a_body_broken_after_bytes_were_streamed_is_cut_short_and_never_stored(
    raw_origin_edge,
):
    # The head and "short" reach the client while the origin holds the connection; then
    # the origin closes 95 bytes early. No 502 can follow bytes already sent: the client
    # must see an incomplete answer (its connection closed before Content-Length).
    origin, edge = raw_origin_edge
    origin.answer = (
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\nshort"
    )
    before = origin.hits
    try:
        for _ in range(2):
            origin.hold = threading.Event()
            with socket.create_connection(edge.address("main"), timeout=10) as sock:
                sock.sendall(b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n")
                got = b""
                while not got.endswith(b"short"):
                    piece = sock.recv(65536)
                    assert piece, got
                    got += piece
                assert got.startswith(b"HTTP/1.1 200 ") and b"Content-Length: 100" in got
                origin.hold.set()
                assert sock.recv(65536) == b""  # closed, 95 bytes short
    finally:
        origin.hold = None
    assert origin.hits == before + 2  # never stored: both reached the origin
    assert metric(edge, "scalelab_edge_objects") == 0


def test_a_dead_origin_is_failed_over_to_the_next(origin):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"  # closed again: connections are refused
    edge = harness.start("edge", "--origin", dead, "--origin", origin.address)
    try:
        for i in range(4):
            origin.routes[f"/failover/{i}"] = Route(headers={"Cache-Control": "max-age=60"})
            assert curl(edge, f"/failover/{i}")[0] == 200
        assert (
            metric(edge, "scalelab_edge_origin_requests_total", origin=dead, outcome="error") >= 1
        )
        assert metric(edge, "scalelab_edge_origin_requests_total", origin=origin.address,
                      outcome="ok") == 4  # fmt: skip
    finally:
        edge.stop(timeout_s=5)


def test_a_known_uncacheable_url_is_passed_with_the_clients_own_conditionals(origin, edge):
    origin.routes["/hfp"] = Route(headers={"Cache-Control": "no-store"}, etag='"p"')
    assert curl(edge, "/hfp", 'If-None-Match: "p"')[0] == 200  # a fill: conditionals dropped
    assert "If-None-Match" not in origin.seen["/hfp"][0]
    status, headers, _ = curl(edge, "/hfp", 'If-None-Match: "p"')  # now passed as it is
    assert status == 304 and origin.seen["/hfp"][1]["If-None-Match"] == '"p"'
    assert metric(edge, "scalelab_edge_requests_total", result="pass") >= 2
    # A purge forgets the verdict: the next request may fill (and store) again.
    origin.routes["/hfp"] = Route(headers={"Cache-Control": "max-age=60"})
    admin(edge, "purge", {"url": "/hfp"})
    curl(edge, "/hfp")
    assert curl(edge, "/hfp")[1]["x-cache"] == "HIT"


async def test_sigterm_lets_an_in_flight_fill_finish(origin):
    origin.routes["/slowfill"] = Route(headers={"Cache-Control": "max-age=60"}, body=b"late",
                                       delay_s=0.5)  # fmt: skip
    edge = harness.start("edge", "--origin", origin.address)
    async with aiohttp.ClientSession() as session:

        async def fetch():
            async with session.get(edge.url("main") + "/slowfill") as response:
                return response.status, response.headers.get("Connection"), await response.read()

        pending = asyncio.ensure_future(fetch())
        await harness.wait_until(lambda: origin.hits["/slowfill"] == 1, what="fill started")
        edge.signal(signal.SIGTERM)
        assert await pending == (200, "close", b"late")
    assert await asyncio.to_thread(edge.stop, 5) == 0


def test_absolute_form_shares_the_entry_and_connect_is_refused(origin, edge):
    origin.routes["/absolute"] = Route(headers={"Cache-Control": "max-age=60"}, body=b"abs")
    host = edge.listen["main"]
    assert curl(edge, "/absolute")[1]["x-cache"] == "MISS"
    answer = raw_exchange(edge, b"GET http://%s/absolute HTTP/1.1\r\nHost: %s\r\n"
                          b"Connection: close\r\n\r\n" % (host.encode(), host.encode()))  # fmt: skip
    assert b"X-Cache: HIT\r\n" in answer and answer.endswith(b"\r\n\r\nabs")
    answer = raw_exchange(edge, b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 501 ")


@pytest.mark.parametrize("directive", ["must-revalidate", "proxy-revalidate", "s-maxage=0"])
def test_4_2_4_revalidate_directives_forbid_stale_even_on_error(origin, edge, directive):
    path = f"/mustreval/{directive}"
    origin.routes[path] = Route(
        headers={"Cache-Control": f"max-age=0, {directive}, stale-if-error=600"}, body=b"old"
    )
    curl(edge, path)
    origin.routes[path] = Route(status=503, body=b"down", headers={"Cache-Control": "no-store"})
    status, headers, body = curl(edge, path, "Cache-Control: max-stale")
    assert (status, body) == (503, b"down")
