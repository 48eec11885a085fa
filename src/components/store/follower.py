"""The replica's side of replication, as asyncio: subscribe, stream, apply, acknowledge.

A replica keeps one long-lived HTTP request open to its primary,
``GET /_replication/stream?last_lsn=N&last_epoch=E...``, and the primary answers with
its redo log from N + 1 on, in the log's own framing (``wal.py``), plus a heartbeat
frame (LSN 0, the primary's durable LSN as payload) whenever it has nothing to send.
The replica decodes frames as they arrive, hands whole records to the same group
committer the primary uses (so they are fsynced in its own log, then applied in LSN
order) and acknowledges the last one with ``POST /_replication/ack``, at most one ack in
flight (``_Acker``): that acknowledgement is what ``--sync-replicas`` waits for.

The answers it may get instead (the decision is ``replication.Node.do_subscribe``):

- 410 "snapshot required": it diverged from the primary, or the primary compacted the
  records it needs. It downloads ``/db/backup``, and the service installs it (a new
  SQLite file, an empty log starting after the snapshot's LSN); then it streams.
- 409: the node it asked is not a primary it may follow (not primary, deposed, or at a
  lower epoch); it waits and asks again, or follows the primary the answer names.

Disconnects are normal (the primary restarts, the network blips): the loop reconnects
with a backoff and resumes from what it holds. With ``--peers``, it also asks the other
nodes every ``PEER_POLL_S`` who is primary at the highest epoch, which is how replicas
(and a deposed primary that comes back) find a newly promoted primary on their own.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

import aiohttp
import orjson

from components.common.backoff import Backoff

from .replication import PeerReport, Role
from .wal import HEADER_BYTES, MAX_RECORD_BYTES, LogCorrupt, decode_record

if TYPE_CHECKING:
    from .server import StoreService

#: A replica that heard nothing for this long drops the connection and reconnects.
STREAM_IDLE_TIMEOUT_S = 3.0
RECONNECT_DELAY_S = 0.1
RECONNECT_MAX_DELAY_S = 2.0
#: How long promotion or repointing waits for the old stream to wind down.
STOP_FOLLOWING_S = 2.0
#: How often a node with ``--peers`` asks them who is primary, and how long it waits.
PEER_POLL_S = 0.5
PEER_TIMEOUT_S = 1.0
ACK_TIMEOUT_S = 5.0


class Follower:
    """Streams the primary's log into this node while it is a replica."""

    def __init__(self, service: StoreService, peers: list[str]) -> None:
        self.service = service
        self.peers = peers
        self._task: asyncio.Task | None = None
        self._peer_task: asyncio.Task | None = None
        self._generation = 0

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Begin (or keep) following ``node.primary``; idempotent."""
        if self._task is None or self._task.done():
            self._generation += 1
            self._task = asyncio.ensure_future(self._follow(self._generation))

    async def stop(self) -> None:
        """Stop following; returns once the stream has wound down (bounded)."""
        task, self._task = self._task, None
        self._generation += 1  # the loop checks it: a swallowed cancel still stops it
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_FOLLOWING_S)

    def watch_peers(self) -> None:
        if self.peers and self._peer_task is None:
            self._peer_task = asyncio.ensure_future(self._watch_peers())

    async def close(self) -> None:
        if self._peer_task is not None:
            self._peer_task.cancel()
            self._peer_task = None
        await self.stop()

    # -- peers ------------------------------------------------------------------------

    async def check_peers(self) -> None:
        """Ask every peer for its status and follow a newer primary if there is one."""
        service = self.service
        reports = await asyncio.gather(*(self._peer_report(p) for p in self.peers))
        choice = service.node.do_peer_reports([r for r in reports if r is not None])
        if choice is None:
            return
        primary, epoch = choice
        was = service.node.role.value
        await self.stop()
        service.node.repoint(primary, epoch)
        await service.save_state()
        service.log.warning("following_newer_primary", primary=primary, epoch=epoch, was=was)
        if service.serving:  # before the listener is up, start() begins following
            self.start()

    async def _peer_report(self, peer: str) -> PeerReport | None:
        try:
            async with self.service.session.get(
                f"http://{peer}/status", timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
            ) as response:
                mine = (await response.json())["scalelab"]
            return PeerReport(mine["api_addr"], Role(mine["role"]), int(mine["epoch"]),
                              bool(mine["writable"]))  # fmt: skip
        except (aiohttp.ClientError, TimeoutError, KeyError, TypeError, ValueError):
            return None

    async def _watch_peers(self) -> None:
        while True:
            await asyncio.sleep(PEER_POLL_S)
            await self.check_peers()

    # -- the stream -------------------------------------------------------------------

    async def _follow(self, generation: int) -> None:
        """Stream from the primary until told to stop: reconnect (backing off while it
        is away), resync by snapshot when told to."""
        node = self.service.node
        backoff = Backoff(RECONNECT_DELAY_S, RECONNECT_MAX_DELAY_S)
        failures = 0
        while node.role is Role.REPLICA and generation == self._generation:
            try:
                await self._follow_once()
                backoff.reset()
                failures = 0
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, ConnectionError, LogCorrupt,
                    ValueError, OSError) as exc:  # fmt: skip
                failures += 1
                if failures == 1 or failures % 20 == 0:  # log the loss, not every retry
                    self.service.log.info("replication_stream_lost", primary=node.primary,
                                          error=str(exc) or type(exc).__name__,
                                          attempts=failures)  # fmt: skip
            await asyncio.sleep(backoff.next())

    async def _follow_once(self) -> None:
        service = self.service
        node = service.node
        primary = node.primary
        if primary is None:
            return
        last_lsn, last_epoch = await service.position()
        params = {"name": node.name, "api": service.api_addr, "epoch": str(node.epoch),
                  "last_lsn": str(last_lsn), "last_epoch": str(last_epoch)}  # fmt: skip
        url = f"http://{primary}/_replication/stream"
        headers = service.cluster_headers()
        async with service.session.get(url, params=params, headers=headers) as response:
            if response.status == 410:
                reason = (await response.json())["reason"]
                await self._install_snapshot(primary, reason)
                return
            if response.status != 200:
                doc = await response.json(content_type=None)
                service.log.warning("subscription_refused", primary=primary, answer=doc)
                if isinstance(doc, dict) and doc.get("primary"):
                    node.primary = doc["primary"]
                await asyncio.sleep(RECONNECT_DELAY_S * 4)
                return
            stream_epoch = int(response.headers.get("X-Scalelab-Epoch", "0"))
            if not node.do_records(stream_epoch, time.monotonic()):
                service.log.warning("stream_refused", stream_epoch=stream_epoch,
                                    epoch=node.epoch)  # fmt: skip
                await asyncio.sleep(RECONNECT_DELAY_S * 4)
                return
            await service.save_state()
            service.log.info("following", primary=primary, from_lsn=last_lsn + 1,
                             epoch=stream_epoch)  # fmt: skip
            await self._consume(response, stream_epoch)

    async def _consume(self, response: aiohttp.ClientResponse, stream_epoch: int) -> None:
        service = self.service
        node = service.node
        buffer = bytearray()
        acker = _Acker(service)
        try:
            while True:
                chunk = await asyncio.wait_for(response.content.readany(), STREAM_IDLE_TIMEOUT_S)
                if not chunk:
                    return
                buffer += chunk
                records, offset = [], 0
                while True:
                    record, end = decode_record(buffer, offset)
                    if record is None:
                        break
                    offset = end
                    if record.lsn == 0:
                        try:
                            last = int(orjson.loads(record.payload)["last_lsn"])
                        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                            raise LogCorrupt("malformed heartbeat") from None
                        node.do_heartbeat(record.epoch, last, time.monotonic())
                    else:
                        records.append(record)
                del buffer[:offset]
                if len(buffer) > HEADER_BYTES + MAX_RECORD_BYTES:
                    raise LogCorrupt("stream buffer overflow")
                if records:
                    if not node.do_records(stream_epoch, time.monotonic()):
                        return  # promoted or repointed meanwhile: this stream is stale
                    node.primary_last_lsn = max(node.primary_last_lsn, records[-1].lsn)
                    await service.committer.submit_records(records)
                    acker.send(records[-1].lsn)
        finally:
            acker.close()

    async def _install_snapshot(self, primary: str, reason: str) -> None:
        """Download the primary's database and have the service install it."""
        service = self.service
        service.log.warning("installing_snapshot", primary=primary, reason=reason)
        path = os.path.join(service.data_dir, "snapshot.incoming")
        async with service.session.get(f"http://{primary}/db/backup") as response:
            if response.status != 200:
                raise ValueError(f"backup from {primary} answered {response.status}")
            epoch = int(response.headers.get("X-Scalelab-Epoch", "0"))
            with open(path, "wb") as fh:
                async for chunk in response.content.iter_chunked(256 * 1024):
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        await service.install_snapshot(path, epoch)


class _Acker:
    """Sends the newest applied LSN to the primary; at most one ack in flight, so a fast
    stream coalesces many records into one ack."""

    def __init__(self, service: StoreService) -> None:
        self.service = service
        self.target = 0
        self.sent = 0
        self._task: asyncio.Task | None = None

    def send(self, lsn: int) -> None:
        self.target = max(self.target, lsn)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        service = self.service
        while self.sent < self.target and service.node.primary:
            lsn = self.target
            body = {"name": service.node.name, "epoch": service.node.epoch, "lsn": lsn}
            try:
                async with service.session.post(
                    f"http://{service.node.primary}/_replication/ack", json=body,
                    headers=service.cluster_headers(),
                    timeout=aiohttp.ClientTimeout(total=ACK_TIMEOUT_S),
                ) as response:  # fmt: skip
                    await response.read()
            except (aiohttp.ClientError, TimeoutError):
                return  # the stream notices a dead primary; the next records ack again
            self.sent = lsn

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
