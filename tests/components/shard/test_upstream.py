"""The router's upstream connections, against a scripted HTTP server on loopback."""

import asyncio
import socket

import aiohttp
import pytest

from components.shard import upstream
from components.shard.upstream import Group, GroupDown, OutcomeUnknown

OK = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Scalelab-Lsn: 7\r\n"
      b"Content-Length: 14\r\n\r\n{\"results\":[]}")  # fmt: skip


async def serve(answer: bytes, close_after: bool = False):
    """A server answering every request with ``answer``; counts connections."""
    seen = {"connections": 0, "requests": 0}

    async def handle(reader, writer):
        seen["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                seen["requests"] += 1
                writer.write(answer)
                await writer.drain()
                if close_after:
                    writer.close()
                    return
        except asyncio.IncompleteReadError:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}", seen


async def test_answers_pass_through_and_connections_are_reused():
    server, node, seen = await serve(OK)
    async with aiohttp.ClientSession() as session:
        group = Group("g", (node,), session)
        for _ in range(3):
            reply = await group._request(node, "POST", "/db/query", b"")
            assert (reply.status, reply.body, reply.lsn) == (200, b'{"results":[]}', "7")
        assert seen == {"connections": 1, "requests": 3}
        group.close()
    server.close()


async def test_connection_closed_mid_answer_is_outcome_unknown():
    server, node, _ = await serve(OK[:60], close_after=True)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(OutcomeUnknown):
            await Group("g", (node,), session)._request(node, "POST", "/db/execute", b"[]")
    server.close()


async def test_refused_connection_is_group_down():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with aiohttp.ClientSession() as session:
        with pytest.raises(GroupDown):
            await Group("g", (f"127.0.0.1:{port}",), session)._request(
                f"127.0.0.1:{port}", "POST", "/db/execute", b"[]")  # fmt: skip


async def test_oversized_answer_is_refused(monkeypatch):
    monkeypatch.setattr(upstream, "MAX_REPLY_BYTES", 10)
    server, node, _ = await serve(OK)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(OutcomeUnknown, match="over 10 bytes"):
            await Group("g", (node,), session)._request(node, "POST", "/db/query", b"")
    server.close()


def test_change_feed_of_a_real_store_token_and_compaction(spawn, tmp_path):
    """``Group.changes`` against a store: records after an LSN with the admin token; 401
    without it (not retryable); 410 once the log is compacted past it (retryable)."""
    store = spawn("store", "--data-dir", str(tmp_path / "s"), "--admin-token", "sesame")
    node, admin = store.listen["main"], store.listen["admin"]

    async def scenario():
        async with aiohttp.ClientSession() as session:
            group = Group("g", (node,), session, (admin,), "sesame")
            for i in range(3):
                reply = await group.send("POST", "/db/execute", (
                    b'["CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY)", '
                    b'["INSERT INTO t (id) VALUES (?)", %d]]' % i))  # fmt: skip
                assert reply.status == 200
            doc = await group.changes(0, 1000)
            statements = [s for c in doc["changes"] for s in c["statements"]]
            assert ["INSERT INTO t (id) VALUES (?)", 2] in statements
            assert doc["lsn"] == doc["changes"][-1]["lsn"]
            with pytest.raises(upstream.FeedGone, match="401") as denied:
                await Group("g", (node,), session, (admin,), None).changes(0, 10)
            assert not denied.value.retry
            async with session.post(f"http://{admin}/admin/checkpoint",
                                    headers={"Authorization": "Bearer sesame"}) as r:  # fmt: skip
                assert r.status == 200
            with pytest.raises(upstream.FeedGone, match="410") as gone:
                await group.changes(0, 10)
            assert gone.value.retry
            group.close()

    asyncio.run(scenario())
