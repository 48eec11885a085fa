"""The failover controller: notices a dead primary and promotes the best replica, once.

The store (``components.store``) replicates from one primary to its replicas but elects
nobody: promotion is an outside decision. This small process makes it, the way
orchestrators such as MySQL's Orchestrator or PostgreSQL's Patroni do for a primary and
its replicas (without their consensus store: one controller, on one machine):

1. **Watch.** Every ``--interval-s`` it asks each store node for ``GET /admin/status``
   (role, ``writable``, ``epoch``, ``applied_lsn``, whom it follows) with a short deadline.
2. **Decide** (``FailoverPolicy``, pure: reports in, actions out). When no node is a
   reachable writable primary for ``--misses`` checks in a row, it promotes the
   reachable replica with the highest applied LSN (the one that lost the fewest writes;
   with ``--sync-replicas 1`` on the primary, an acknowledged write is on at least one
   replica, and the most advanced replica has it) at an epoch above every epoch it has
   seen. The epoch is the fence: the store refuses records and subscriptions from a
   lower epoch, so an old primary's late writes cannot reach the new timeline.
3. **Repoint** every other reachable node to the new primary at the new epoch, and keep
   doing so on every check: a replica that was down during the failover, or the old
   primary when it comes back (restarted, or resumed after a SIGSTOP, believing it is
   still primary at the old epoch), is made a replica of the newest primary as soon as
   it answers a check.

Never two primaries: the controller promotes only while it sees *no* writable primary,
and only once per failure (after a promotion it waits for the promoted node to report
itself writable before it counts misses again). A paused primary that resumes is, for
at most one check interval, a second writable node at a lower epoch; the controller then
repoints it. What no controller can close alone is a write that a web server sends to
that old primary in that interval: with ``--sync-replicas`` no replica acknowledges it
(they follow the new primary), so it waits for the store's ``--sync-timeout``, by which
time the controller has repointed the node; but the store then falls back to
asynchronous commit (MySQL's semi-sync does the same), so a write that outlives the
repoint would be acknowledged and later discarded. The store's ``--peers`` closes the
same gap from the node's side; a lease on the primary role would close it for good.
The check deadline (``--check-timeout-s``) is the other guard: a primary slow to answer
is not dead, and mistaking it for dead is what makes the interval happen at all.

How the web tier learns of the new primary: through the store itself, not through this
controller. The web tier's store client sends writes to the writable node with the
highest epoch it finds in the nodes' ``/status``, and rediscovers it whenever a write
is refused or its primary cannot be reached; reads go to any live node meanwhile. So the
controller needs no registry and no admin call into the web tier, and a web server
started after a failover finds the right primary by itself.

The controller's own view is served on its main port (``GET /status``) and as metrics
(checks by node and outcome, promotions, repoints, the current epoch).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from components.common import Service, main
from components.common.admin import serve_app
from components.common.cli import format_address, non_negative_float

DEFAULT_INTERVAL_S = 0.5
DEFAULT_MISSES = 3
DEFAULT_TIMEOUT_S = 0.4
MAX_EVENTS = 200


# -- the decision, pure ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    """What one node said about itself (a subset of the store's status)."""

    node: str  # the address the controller reaches it at (its admin address)
    api_addr: str
    role: str
    writable: bool
    epoch: int
    applied_lsn: int
    primary: str | None  # the API address it follows (itself when primary)

    @classmethod
    def from_status(cls, node: str, status: dict[str, Any]) -> Report:
        return cls(node, str(status["api_addr"]), str(status["role"]), bool(status["writable"]),
                   int(status["epoch"]), int(status["applied_lsn"]), status.get("primary"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Promote:
    node: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Repoint:
    node: str
    primary: str  # API address of the primary to follow
    epoch: int


@dataclass
class FailoverPolicy:
    """Given each check's reports (None: no answer), what to do. See the module essay."""

    misses_allowed: int = DEFAULT_MISSES
    missed: int = 0  # consecutive checks without a reachable writable primary
    primary: str | None = None  # the node believed primary now
    epoch: int = 0  # the highest epoch seen
    promoting: str | None = None  # a promotion was sent; wait to see it take effect
    promoted_at: int = 0  # ``missed`` when it was sent

    def observe(self, reports: dict[str, Report | None]) -> list[Promote | Repoint]:
        live = [r for r in reports.values() if r is not None]
        self.epoch = max([self.epoch, *(r.epoch for r in live)])
        writable = [r for r in live if r.writable]
        if writable:
            best = max(writable, key=lambda r: (r.epoch, r.node))
            self.primary, self.missed, self.promoting = best.node, 0, None
            return [Repoint(r.node, best.api_addr, best.epoch) for r in live
                    if r is not best and _needs_repoint(r, best)]  # fmt: skip
        self.missed += 1
        if self.promoting is not None and self.missed - self.promoted_at >= self.misses_allowed:
            self.promoting = None  # the promoted node never showed up as primary: choose again
        if self.promoting is not None or self.missed < self.misses_allowed:
            return []
        replicas = [r for r in live if r.role == "replica"]
        if not replicas:
            return []
        # The most advanced replica; ties go to the first node in the list, deterministically.
        order = {node: i for i, node in enumerate(reports)}
        chosen = max(replicas, key=lambda r: (r.applied_lsn, -order[r.node]))
        self.epoch += 1
        self.promoting, self.promoted_at = chosen.node, self.missed
        return [Promote(chosen.node, self.epoch)]

    def promotion_failed(self) -> None:
        """The promote call did not take: allow another choice on a later check."""
        self.promoting = None


def _needs_repoint(report: Report, primary: Report) -> bool:
    if report.writable:  # an old primary at a lower epoch (equal epochs: see the essay)
        return report.epoch < primary.epoch
    return report.primary != primary.api_addr or report.epoch < primary.epoch


# -- the process --------------------------------------------------------------------------


def node_list(text: str) -> list[str]:
    nodes = [n.strip() for n in text.split(",") if n.strip()]
    for node in nodes:
        host, sep, port = node.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {node!r}")
    if not nodes:
        raise argparse.ArgumentTypeError("at least one node is needed")
    return nodes


class FailoverService(Service):
    component = "failover"
    default_port = 0
    description = "Watches the store nodes and promotes the most advanced replica on failure"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("failover")
        group.add_argument("--nodes", type=node_list, required=True, metavar="HOST:PORT,...",
                           help="the store nodes' ADMIN addresses (they serve /admin/status)")  # fmt: skip
        group.add_argument("--interval-s", type=non_negative_float, default=DEFAULT_INTERVAL_S,
                           help="seconds between checks")  # fmt: skip
        group.add_argument("--misses", type=int, default=DEFAULT_MISSES,
                           help="checks without a primary before a promotion")  # fmt: skip
        group.add_argument("--check-timeout-s", type=non_negative_float, default=DEFAULT_TIMEOUT_S,
                           help="deadline of one status check")  # fmt: skip
        group.add_argument("--store-admin-token", default=None,
                           help="the store nodes' --admin-token, if they have one")  # fmt: skip

    @classmethod
    def check_arguments(cls, parser, args) -> None:
        if args.misses < 1:
            parser.error("--misses must be >= 1")

    async def start(self) -> dict[str, str]:
        args = self.args
        self.policy = FailoverPolicy(args.misses)
        self.reports: dict[str, Report | None] = dict.fromkeys(args.nodes)
        self.events: list[dict] = []
        headers = {"Authorization": f"Bearer {args.store_admin_token}"} \
            if args.store_admin_token else {}  # fmt: skip
        self.http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=args.check_timeout_s), headers=headers
        )
        m = self.metrics
        self.m_checks = m.counter("scalelab_failover_checks_total", "Status checks",
                                  ["node", "result"])  # fmt: skip
        self.m_promotions = m.counter("scalelab_failover_promotions_total", "Promotions made")
        self.m_repoints = m.counter("scalelab_failover_repoints_total", "Nodes repointed")
        m.gauge("scalelab_failover_epoch", "Highest epoch seen").set_function(
            lambda: self.policy.epoch
        )
        m.gauge("scalelab_failover_missed_checks", "Checks in a row without a primary"
                ).set_function(lambda: self.policy.missed)  # fmt: skip
        app = web.Application()
        app.router.add_get("/status", self.handle_status)
        self.runner, address = await serve_app(app, args.host, args.port)
        self.task = asyncio.create_task(self.watch())
        return {"main": format_address(address)}

    async def watch(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.check_once()
            except Exception as exc:  # one bad round must not end the watch
                self.log.error("check_failed", error=repr(exc))
            await asyncio.sleep(max(0.0, self.args.interval_s - (time.monotonic() - started)))

    async def check_once(self) -> None:
        nodes = self.args.nodes
        answers = await asyncio.gather(*(self._status(n) for n in nodes))
        self.reports = dict(zip(nodes, answers, strict=True))
        for action in self.policy.observe(self.reports):
            if isinstance(action, Promote):
                await self._promote(action)
            else:
                await self._repoint(action)

    async def _status(self, node: str) -> Report | None:
        try:
            async with self.http.get(f"http://{node}/admin/status") as response:
                if response.status != 200:
                    raise ValueError(f"status {response.status}")
                report = Report.from_status(node, orjson.loads(await response.read()))
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
            self.m_checks.labels(node, "miss").inc()
            return None
        self.m_checks.labels(node, "ok").inc()
        return report

    async def _post(self, node: str, op: str, body: dict) -> tuple[int, dict]:
        # Promotion waits for the node's log to be applied: a longer deadline than a check.
        timeout = aiohttp.ClientTimeout(total=max(5.0, self.args.check_timeout_s))
        try:
            async with self.http.post(f"http://{node}/admin/{op}", data=orjson.dumps(body),
                                      timeout=timeout) as response:  # fmt: skip
                return response.status, orjson.loads(await response.read() or b"{}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return 0, {"error": repr(exc)}

    async def _promote(self, action: Promote) -> None:
        code, doc = await self._post(action.node, "promote", {"epoch": action.epoch})
        if code != 200:
            self.policy.promotion_failed()
            self._event("promotion_failed", node=action.node, epoch=action.epoch, code=code,
                        error=str(doc.get("error", ""))[:200])  # fmt: skip
            return
        self.m_promotions.inc()
        self._event("promoted", node=action.node, epoch=action.epoch,
                    api_addr=doc.get("api_addr"), lsn=doc.get("lsn"))  # fmt: skip
        # Repoint the others at once rather than on the next check.
        primary = Report.from_status(action.node, doc)
        for node, report in self.reports.items():
            if report is not None and node != action.node:
                await self._repoint(Repoint(node, primary.api_addr, primary.epoch))

    async def _repoint(self, action: Repoint) -> None:
        code, doc = await self._post(action.node, "repoint",
                                     {"primary": action.primary, "epoch": action.epoch})  # fmt: skip
        if code == 200:
            self.m_repoints.inc()
            self._event("repointed", node=action.node, primary=action.primary, epoch=action.epoch)
        else:
            self._event("repoint_failed", node=action.node, code=code,
                        error=str(doc.get("error", ""))[:200])  # fmt: skip

    def _event(self, event: str, **fields) -> None:
        self.log.warning(event, **fields)
        self.events.append({"ts": round(time.time(), 3), "event": event, **fields})
        del self.events[:-MAX_EVENTS]

    async def handle_status(self, request: web.Request) -> web.Response:
        doc = {
            "primary": self.policy.primary,
            "epoch": self.policy.epoch,
            "missed": self.policy.missed,
            "promoting": self.policy.promoting,
            "nodes": {
                node: None
                if r is None
                else {
                    "api_addr": r.api_addr,
                    "role": r.role,
                    "writable": r.writable,
                    "epoch": r.epoch,
                    "applied_lsn": r.applied_lsn,
                }  # fmt: skip
                for node, r in self.reports.items()
            },
            "events": self.events,
        }
        return web.json_response(doc, dumps=lambda d: orjson.dumps(d).decode())

    async def drain(self) -> None:
        self.task.cancel()

    async def stop(self) -> None:
        self.task.cancel()
        await self.http.close()
        await self.runner.cleanup()

    def health(self) -> tuple[bool, str]:
        return True, "ok"


if __name__ == "__main__":
    main(FailoverService)
