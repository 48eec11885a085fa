"""The web API over real HTTP: a real aiohttp client against a real server process.

Most tests share one server (module scope) and use user ids of their own, so they stay
independent; tests that need special flags or restarts start their own.
"""

import asyncio
import signal

import aiohttp
import orjson
import pytest
import yarl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import harness
from components.common.runner import parse_args
from components.web.protocol import encode_user
from components.web.seed import seed_user
from components.web.server import WebService

SEED = 200
NEW_USER = {
    "firstName": "Jane",
    "lastName": "Doe",
    "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA",
                "postalCode": "02134"},
    "phoneNumbers": [{"type": "mobile", "number": "617 555-0100"}],
}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = tmp_path_factory.mktemp("web") / "app.db"
    proc = harness.start("web", "--db", f"sqlite:{db}", "--seed-users", str(SEED),
                         "--cache", "local:8", "--max-body-bytes", "4096")  # fmt: skip
    yield proc
    proc.stop(timeout_s=5)


@pytest.fixture
async def client():
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


def metrics(proc) -> dict[tuple, float]:
    """Every sample of the server's /metrics as {(name, sorted labels): value}."""
    _, _, body = harness.http("GET", proc.url("admin") + "/metrics")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(proc, name, **labels) -> float:
    return metrics(proc).get((name, tuple(sorted(labels.items()))), 0)


# -- users -----------------------------------------------------------------------------


async def test_get_user_returns_the_chapters_document(server, client):
    async with client.get(server.url() + "/users/7") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.read() == encode_user(7, seed_user(7))


@pytest.mark.parametrize("path", ["/users/999999", "/users/0", "/users/abc", "/users/-1",
                                  "/users/99999999999999999999999999"])  # fmt: skip
async def test_unknown_user_is_404_json(server, client, path):
    async with client.get(server.url() + path) as response:
        assert response.status == 404
        assert (await response.json())["error"] == "no such user"


async def test_create_then_read_back(server, client):
    async with client.post(server.url() + "/users", json=NEW_USER) as response:
        assert response.status == 201
        created = await response.json()
        assert response.headers["Location"] == f"/users/{created['id']}"
    assert created["id"] > SEED
    async with client.get(server.url() + response.headers["Location"]) as response:
        assert await response.json() == created
        assert created == {"id": created["id"], **NEW_USER}


async def test_replace_then_delete(server, client):
    url = server.url() + "/users/11"
    replacement = {**NEW_USER, "firstName": "Replaced"}
    async with client.put(url, json=replacement) as response:
        assert response.status == 200
        assert (await response.json())["firstName"] == "Replaced"
    async with client.get(url) as response:
        assert (await response.json())["firstName"] == "Replaced"
    async with client.delete(url) as response:
        assert response.status == 204
    async with client.get(url) as response:
        assert response.status == 404
    async with client.delete(url) as response:
        assert response.status == 404
    async with client.put(url, json=NEW_USER) as response:
        assert response.status == 404


@pytest.mark.parametrize("body", [b"{not json", b'{"firstName": "A",', b"", b"\xff\xfe"])
async def test_invalid_json_is_400(server, client, body):
    headers = {"Content-Type": "application/json"}
    async with client.post(server.url() + "/users", data=body, headers=headers) as response:
        assert response.status == 400
        assert "error" in await response.json()


@pytest.mark.parametrize(
    ("doc", "field"),
    [({k: v for k, v in NEW_USER.items() if k != "lastName"}, "lastName"),
     ({**NEW_USER, "address": {"city": "Boston"}}, "address.streetAddress"),
     ({**NEW_USER, "phoneNumbers": [{"type": "home"}]}, "phoneNumbers[0].number"),
     ({**NEW_USER, "id": 5}, "id"),
     ([NEW_USER], "body")],
)  # fmt: skip
async def test_missing_or_bad_fields_are_422_naming_the_field(server, client, doc, field):
    async with client.post(server.url() + "/users", json=doc) as response:
        assert response.status == 422
        assert (await response.json())["field"] == field


async def test_put_with_a_different_id_in_the_body_is_422(server, client):
    async with client.put(server.url() + "/users/12", json={**NEW_USER, "id": 13}) as response:
        assert response.status == 422
        assert (await response.json())["field"] == "id"


async def test_body_over_the_bound_is_413(server, client):
    huge = {**NEW_USER, "firstName": "x" * 10_000}
    async with client.post(server.url() + "/users", json=huge) as response:
        assert response.status == 413
        assert "error" in await response.json()


async def test_chunked_body_over_the_bound_is_413(server, client):
    async def chunks():
        for _ in range(10):
            yield b" " * 1000

    async with client.post(server.url() + "/users", data=chunks()) as response:
        assert response.status == 413


async def test_wrong_method_is_405_json_with_allow(server, client):
    async with client.patch(server.url() + "/users/1", json={}) as response:
        assert response.status == 405
        assert "GET" in response.headers["Allow"]
        assert "error" in await response.json()


# -- sessions --------------------------------------------------------------------------


async def test_login_me_logout(server, client):
    async with client.get(server.url() + "/me") as response:
        assert response.status == 401
    async with client.post(server.url() + "/login", json={"id": 21}) as response:
        assert response.status == 200
        cookie = response.cookies["scalelab_session"]
        assert cookie["httponly"] and cookie.value
    async with client.get(server.url() + "/me") as response:
        assert response.status == 200
        assert (await response.json())["id"] == 21
    async with client.post(server.url() + "/logout") as response:
        assert response.status == 204
    async with client.get(server.url() + "/me") as response:
        assert response.status == 401


async def test_a_forged_session_cookie_is_401(server, client):
    headers = {"Cookie": "scalelab_session=forged-token"}
    async with client.get(server.url() + "/me", headers=headers) as response:
        assert response.status == 401


async def test_sessions_are_bounded_oldest_dropped_first(spawn):
    proc = spawn("web", "--seed-users", "3", "--max-sessions", "2")
    clients = [aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) for _ in range(3)]
    try:
        for user_id, session in enumerate(clients, start=1):
            async with session.post(proc.url() + "/login", json={"id": user_id}) as response:
                assert response.status == 200
        statuses = []
        for session in clients:
            async with session.get(proc.url() + "/me") as response:
                statuses.append(response.status)
        assert statuses == [401, 200, 200]
        assert metric(proc, "scalelab_web_sessions") == 2
    finally:
        for session in clients:
            await session.close()


@pytest.mark.parametrize(("body", "status"), [({"id": 999999}, 401), ({}, 422),
                                              ({"id": "3"}, 422)])  # fmt: skip
async def test_login_refusals(server, client, body, status):
    async with client.post(server.url() + "/login", json=body) as response:
        assert response.status == status
        assert "scalelab_session" not in response.cookies


# -- static assets ---------------------------------------------------------------------


async def test_static_asset_carries_validators(server, client):
    async with client.get(server.url() + "/static/app.css") as response:
        assert response.status == 200
        assert response.content_type == "text/css"
        assert response.headers["Cache-Control"] == "public, max-age=3600"
        assert response.headers["ETag"].startswith('"')
        assert response.headers["Last-Modified"].endswith("GMT")
        assert b"font-family" in await response.read()


async def test_if_none_match_gives_304_without_body(server, client):
    url = server.url() + "/static/app.js"
    async with client.get(url) as response:
        etag = response.headers["ETag"]
    async with client.get(url, headers={"If-None-Match": f'"nope", {etag}'}) as response:
        assert response.status == 304
        assert response.headers["ETag"] == etag
        assert await response.read() == b""
    async with client.get(url, headers={"If-None-Match": '"nope"'}) as response:
        assert response.status == 200


async def test_if_modified_since_gives_304_unless_if_none_match_differs(server, client):
    url = server.url() + "/static/logo.svg"
    async with client.get(url) as response:
        last_modified = response.headers["Last-Modified"]
    async with client.get(url, headers={"If-Modified-Since": last_modified}) as response:
        assert response.status == 304
    headers = {"If-Modified-Since": last_modified, "If-None-Match": '"other"'}
    async with client.get(url, headers=headers) as response:
        assert response.status == 200


@pytest.mark.parametrize("raw_path", ["/static/%2e%2e/server.py", "/static/..%2fserver.py",
                                      "/static/%2e%2e/%2e%2e/__init__.py", "/static/nope.css",
                                      "/static/"])  # fmt: skip
async def test_no_path_traversal_out_of_the_static_dir(server, client, raw_path):
    url = yarl.URL(server.url() + raw_path, encoded=True)
    async with client.get(url) as response:
        assert response.status == 404
        assert b"import" not in await response.read()


async def test_public_health(server, client):
    async with client.get(server.url() + "/health") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}


# -- metrics ---------------------------------------------------------------------------


async def test_cache_hit_miss_and_invalidation_show_in_metrics(server, client):
    url = server.url() + "/users/42"
    before = metrics(server)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return metrics(server).get(key, 0) - before.get(key, 0)

    for _ in range(3):
        async with client.get(url) as response:
            assert response.status == 200
    assert delta("scalelab_web_cache_misses_total") == 1
    assert delta("scalelab_web_cache_hits_total") == 2
    assert delta("scalelab_web_db_queries_total", kind="read") == 1
    async with client.put(url, json={**NEW_USER, "lastName": "Fresh"}) as response:
        assert response.status == 200
    assert delta("scalelab_web_db_queries_total", kind="write") == 1
    async with client.get(url) as response:
        assert (await response.json())["lastName"] == "Fresh"  # not the stale cached copy
    assert delta("scalelab_web_cache_misses_total") == 2
    assert delta("scalelab_web_db_queries_total", kind="read") == 2


async def test_requests_are_counted_by_route_pattern_not_raw_path(server, client):
    for user_id in (100, 101, 999999):
        async with client.get(server.url() + f"/users/{user_id}"):
            pass
    samples = metrics(server)
    routes = {dict(labels).get("route") for (name, labels) in samples
              if name == "scalelab_web_requests_total"}  # fmt: skip
    assert "/users/{id}" in routes
    assert not any(route and route.startswith("/users/1") for route in routes)
    assert metric(server, "scalelab_web_requests_total", route="/users/{id}", method="GET",
                  status="404") >= 1  # fmt: skip
    assert metric(server, "scalelab_web_request_duration_seconds_count", route="/users/{id}") >= 3


# -- capacity, restart, drain ------------------------------------------------------------


async def test_over_capacity_is_503_with_retry_after(spawn, client):
    proc = spawn("web", "--seed-users", "3", "--max-concurrency", "1", "--max-queue", "1",
                 "--service-time-ms", "1000", "--retry-after-s", "2")  # fmt: skip
    url = proc.url() + "/users/1"

    async def get():
        async with client.get(url) as response:
            return response.status, dict(response.headers)

    first = asyncio.ensure_future(get())
    await harness.wait_until(lambda: metric(proc, "scalelab_web_inflight_requests") >= 1,
                             what="first request in service")  # fmt: skip
    second = asyncio.ensure_future(get())
    await harness.wait_until(lambda: metric(proc, "scalelab_web_queued_requests") == 1,
                             what="second request queued")  # fmt: skip
    status, headers = await get()
    assert status == 503
    assert headers["Retry-After"] == "2"
    assert (await first)[0] == 200 and (await second)[0] == 200
    assert metric(proc, "scalelab_web_rejected_total") == 1
    async with client.get(proc.url() + "/health") as response:  # never queued or refused
        assert response.status == 200


async def test_connections_beyond_the_bound_get_503_and_close(spawn, client):
    import socket

    proc = spawn("web", "--seed-users", "2", "--max-connections", "2")
    held = [socket.create_connection(proc.address(), timeout=5) for _ in range(2)]
    try:
        await harness.wait_until(lambda: metric(proc, "scalelab_web_connections") == 2,
                                 what="two connections open")  # fmt: skip
        extra = socket.create_connection(proc.address(), timeout=5)
        reply = await asyncio.to_thread(extra.recv, 4096)
        extra.close()
        assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"Retry-After: 1" in reply
        assert metric(proc, "scalelab_web_refused_connections_total") == 1
        held.pop().close()
        await harness.wait_until(lambda: metric(proc, "scalelab_web_connections") == 1,
                                 what="a connection freed")  # fmt: skip
        async with client.get(proc.url() + "/users/2") as response:
            assert response.status == 200
    finally:
        for sock in held:
            sock.close()


async def test_restart_keeps_written_data(spawn, client, tmp_path):
    flags = ("--db", f"sqlite:{tmp_path / 'app.db'}", "--seed-users", "20")
    proc = spawn("web", *flags)
    async with client.post(proc.url() + "/users", json=NEW_USER) as response:
        created = await response.json()
    async with client.put(proc.url() + "/users/3", json={**NEW_USER, "firstName": "Kept"}):
        pass
    async with client.delete(proc.url() + "/users/4") as response:
        assert response.status == 204
    assert proc.stop() == 0

    again = spawn("web", *flags)
    async with client.get(again.url() + f"/users/{created['id']}") as response:
        assert await response.json() == created
    async with client.get(again.url() + "/users/3") as response:
        assert (await response.json())["firstName"] == "Kept"
    async with client.get(again.url() + "/users/4") as response:
        assert response.status == 404  # re-seeding did not resurrect it
    async with client.get(again.url() + "/users/5") as response:
        assert await response.read() == encode_user(5, seed_user(5))


async def test_sigterm_finishes_in_flight_requests_and_exits_zero(spawn, client):
    proc = spawn("web", "--seed-users", "2", "--service-time-ms", "800", "--drain-timeout", "5")
    request = asyncio.ensure_future(client.get(proc.url() + "/users/2"))
    await harness.wait_until(lambda: metric(proc, "scalelab_web_inflight_requests") >= 1,
                             what="request in flight")  # fmt: skip
    proc.signal(signal.SIGTERM)
    response = await request
    assert response.status == 200
    assert response.headers.get("Connection", "").lower() == "close"
    assert await response.read() == encode_user(2, seed_user(2))
    response.release()
    assert await asyncio.to_thread(proc.popen.wait, 10) == 0


async def test_no_cache_sends_every_read_to_the_database(spawn, client):
    proc = spawn("web", "--seed-users", "5", "--cache", "none")
    for _ in range(3):
        async with client.get(proc.url() + "/users/5") as response:
            assert response.status == 200
    assert metric(proc, "scalelab_web_db_queries_total", kind="read") == 3
    assert metric(proc, "scalelab_web_cache_hits_total") == 0


async def test_cache_clear_admin_operation(server, client):
    async with client.get(server.url() + "/users/150"):
        pass
    async with client.post(server.url("admin") + "/admin/cache-clear") as response:
        assert response.status == 200
    misses = metric(server, "scalelab_web_cache_misses_total")
    async with client.get(server.url() + "/users/150"):
        pass
    assert metric(server, "scalelab_web_cache_misses_total") == misses + 1


async def test_head_and_root_redirect(server, client):
    async with client.head(server.url() + "/static/index.html") as response:
        assert response.status == 200
        assert response.headers["ETag"]
        assert await response.read() == b""
    async with client.get(server.url() + "/", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/static/index.html"
    async with client.get(server.url() + "/") as response:
        assert b"scalelab" in await response.read()


async def test_unknown_methods_share_one_metric_label(server, client):
    for method in ("PROPFIND", "MKCOL"):
        async with client.request(method, server.url() + "/users/1") as response:
            assert response.status == 405
    labels = {dict(k[1]).get("method") for k in metrics(server)
              if k[0] == "scalelab_web_requests_total"}  # fmt: skip
    assert "other" in labels and "PROPFIND" not in labels and "MKCOL" not in labels


async def test_spin_service_time_serves_requests(spawn, client):
    proc = spawn("web", "--seed-users", "3", "--service-time-ms", "20", "--service-mode", "spin")
    for user_id in (1, 2, 3):
        async with client.get(proc.url() + f"/users/{user_id}") as response:
            assert response.status == 200
    count = metric(proc, "scalelab_web_request_duration_seconds_count", route="/users/{id}")
    assert count == 3


async def test_default_database_lives_in_the_data_dir(spawn, client, tmp_path):
    proc = spawn("web", "--data-dir", str(tmp_path), "--name", "web-7", "--seed-users", "2")
    async with client.get(proc.url() + "/users/2") as response:
        assert response.status == 200
    assert (tmp_path / "web-7.db").exists()


async def test_without_db_or_data_dir_a_temporary_database_is_removed_at_stop(spawn, client):
    import json
    from pathlib import Path

    proc = spawn("web", "--seed-users", "2")
    async with client.get(proc.url() + "/users/1") as response:
        assert response.status == 200
    events = [json.loads(line) for line in proc.log_tail(50).splitlines()]
    db_path = Path(
        next(e["db"] for e in events if e["event"] == "database_ready")[len("sqlite:") :]
    )
    assert db_path.exists()
    assert proc.stop() == 0
    assert not db_path.exists()


def test_an_unusable_database_fails_the_start_cleanly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(harness.process.StartError) as error:
        harness.start("web", "--db", f"sqlite:{blocker}/app.db", log_path=tmp_path / "web.log")
    assert "exited with code 1" in str(error.value)
    assert "start_failed" in str(error.value) and "Traceback" not in str(error.value)


@pytest.mark.parametrize(
    "flags",
    [("--static-dir", "/no/such/dir"), ("--db", "mysql:x"), ("--cache", "local:0"),
     ("--service-mode", "nap"), ("--seed-users", "-1"), ("--session-ttl-s", "0")],
)  # fmt: skip
def test_bad_flags_exit_two_with_usage(flags, capsys):
    # In-process: the contract suite already proves a real process exits 2 on a bad flag.
    with pytest.raises(SystemExit) as exit_info:
        parse_args(WebService, list(flags))
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_the_documented_command_line_parses():
    args = parse_args(WebService, ["--db", "sqlite:/path/app.db", "--cache", "local:64",
                                   "--seed-users", "1000"])  # fmt: skip
    assert (args.port, args.admin_port, args.db) == (8000, 18000, "sqlite:/path/app.db")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)  # orjson encodes up to 64 bits
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "firstName",
                    "lastName",
                    "address",
                    "phoneNumbers",
                    "id",
                    "city",
                    "type",
                    "number",
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),  # fmt: skip
    max_leaves=15,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.one_of(json_values.map(orjson.dumps), st.binary(max_size=200)),
       path=st.sampled_from(["/users", "/users/3", "/login"]))  # fmt: skip
def test_arbitrary_bodies_get_a_clear_4xx_or_success_never_a_500(server, body, path):
    method = "PUT" if path == "/users/3" else "POST"
    status, headers, reply = harness.http(method, server.url() + path, body,
                                          {"Content-Type": "application/json"})  # fmt: skip
    assert status in (200, 201, 400, 401, 413, 422), (status, reply)
    assert headers["Content-Type"].startswith("application/json")
    if status >= 400:
        assert "error" in orjson.loads(reply)
