"""The asyncio shell of the DNS server: UDP and TCP on one port, probes, admin, metrics.

DNS runs over both transports on the same port number (RFC 1035 §4.2, RFC 7766 makes
TCP mandatory): UDP for nearly everything, TCP when a reply was truncated or a client
prefers it. Each UDP datagram is one query, answered by one ``sendto``. On TCP every
message carries a two-byte length prefix (RFC 1035 §4.2.2) and a client may send
several queries on one connection without waiting (RFC 7766 §6.2.1.1); the replies of
one read burst go out in one write, in order.

What the server bounds: TCP connections (``--max-tcp-connections``; past it a new one is
closed at once), idle TCP time (``--tcp-idle-timeout``, RFC 7766 §6.2.3), and buffered
output (when the client stops reading we stop reading it: ``pause_writing`` pauses the
socket's reads). A TCP frame is at most 65535 bytes by construction, so the input buffer
holds at most one partial frame plus one read.

Geo targets are probed with ``GET`` on their health URL every ``interval_s``; the pure
``HealthBook`` turns results into state changes. ``POST /admin/reload`` reloads zones
and rules together and swaps them in one assignment, so a query sees either the old set
or the new one, never half; a file that fails to load leaves the old set serving.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import socket
import time

import aiohttp
from aiohttp import web

from components.common import Service
from components.common.admin import json_response, read_json
from components.common.cli import format_address, non_negative_float

from .geo import Geo, GeoError, HealthBook, load_rules
from .protocol import Rcode, RRType, name_to_text, type_name
from .responder import DEFAULT_UDP_PAYLOAD_BYTES, Responder
from .zone import Catalog, ZoneError, load_zone

DEFAULT_PORT = 5353
TCP_IDLE_TIMEOUT_S = 10.0
MAX_TCP_CONNECTIONS = 256
HEALTH_TICK_S = 0.1
UDP_RECEIVE_BUFFER_BYTES = 1 << 20
BIND_ATTEMPTS = 10  # port 0: UDP picks a port, TCP may find it taken; pick again
_KNOWN_TYPES = frozenset(t.value for t in RRType)


class LoadError(ValueError):
    """Zones or rules that cannot be served (the message names the file)."""


def build_responder(zone_paths: list[str], rules_path: str | None, udp_payload: int,
                    previous: Responder | None = None) -> Responder:  # fmt: skip
    """Load every zone and the rules into a new Responder; raise LoadError on any fault.

    Health state is carried over from ``previous`` for targets that keep their name.
    """
    try:
        catalog = Catalog(load_zone(path) for path in zone_paths)
        geo = None
        if rules_path:
            rules = load_rules(rules_path)
            for name, rule in rules.names.items():
                catalog.add_dynamic(name, rule.rtype)
            old_book = previous.geo.health if previous and previous.geo else None
            geo = Geo(rules, HealthBook(rules, old_book))
    except (ZoneError, GeoError) as exc:
        raise LoadError(str(exc)) from None
    return Responder(catalog, geo, udp_payload)


def _grow_receive_buffer(sock) -> None:
    """Ask for a bigger UDP receive buffer than Linux's default 208 KiB.

    One socket receives every client's queries; a burst (a resolver's retries, a load
    tool opening with hundreds in flight) larger than the buffer is dropped by the kernel
    before we see it, and the clients time out. NSD asks for 1 MiB too. The kernel caps
    the request at net.core.rmem_max, which is fine: this is a hint, not a requirement.
    """
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER_BYTES)


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, service: DnsService) -> None:
        self.service = service
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        wire = self.service.answer(data, addr[0], True)
        if wire is not None:
            self.transport.sendto(wire, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a client that went away: nothing to do.
        pass


class TcpProtocol(asyncio.Protocol):
    def __init__(self, service: DnsService) -> None:
        self.service = service
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.last_activity = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        service = self.service
        if len(service.connections) >= service.args.max_tcp_connections or service.draining:
            service.tcp_rejected.inc()
            transport.abort()
            return
        service.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else None
        loop = asyncio.get_running_loop()
        self.last_activity = loop.time()
        self.timer = loop.call_later(service.args.tcp_idle_timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        # A bytearray, appended to in place: a client trickling a 64 KiB frame one byte
        # at a time costs linear work, not quadratic copying.
        buffer = self.buffer
        buffer += data
        out = []
        answer = self.service.answer
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            length = (buffer[pos] << 8) | buffer[pos + 1]
            end = pos + 2 + length
            if end > size:
                break
            wire = answer(bytes(buffer[pos + 2 : end]), self.peer, False)
            pos = end
            if wire is None:
                # Not even a DNS header: this is not a DNS client; hang up (RFC 7766 §6.2.4
                # lets a server close a connection it cannot make sense of).
                self.transport.close()
                break
            out.append(len(wire).to_bytes(2, "big"))
            out.append(wire)
        if pos:
            del buffer[:pos]
        if out:
            self.transport.write(b"".join(out))
        self.last_activity = asyncio.get_running_loop().time()

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        idle_for = loop.time() - self.last_activity
        timeout = self.service.args.tcp_idle_timeout
        if idle_for >= timeout:
            self.service.tcp_idle_closed.inc()
            self.transport.close()
        else:
            self.timer = loop.call_later(timeout - idle_for, self._check_idle)

    def pause_writing(self) -> None:
        self.transport.pause_reading()  # the client is not reading: stop reading it

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        self.service.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()


class DnsService(Service):
    component = "dns"
    default_port = DEFAULT_PORT
    description = "Authoritative DNS over UDP and TCP with geo rules, weights and failover."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("dns")
        group.add_argument("--zone", action="append", required=True, metavar="FILE",
                           help="RFC 1035 master file (repeat for more zones)")  # fmt: skip
        group.add_argument("--geo", metavar="RULES.toml", default=None, help="geo rules file")
        group.add_argument("--udp-payload", type=int, default=DEFAULT_UDP_PAYLOAD_BYTES,
                           help="EDNS UDP payload size we advertise and send up to")  # fmt: skip
        group.add_argument("--max-tcp-connections", type=int, default=MAX_TCP_CONNECTIONS)
        group.add_argument("--tcp-idle-timeout", type=non_negative_float, default=TCP_IDLE_TIMEOUT_S,
                           help="seconds before an idle TCP connection is closed")  # fmt: skip

    @classmethod
    def check_arguments(cls, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if not 512 <= args.udp_payload <= 65535:
            parser.error("--udp-payload must be 512..65535")
        if args.max_tcp_connections < 1:
            parser.error("--max-tcp-connections must be at least 1")
        # Load now so a bad zone stops the start with its file and line (exit 2).
        try:
            args.responder = build_responder(args.zone, args.geo, args.udp_payload)
        except LoadError as exc:
            parser.error(str(exc))

    async def start(self) -> dict[str, str]:
        self.responder: Responder = self.args.responder
        self.connections: set[TcpProtocol] = set()
        self.draining = False
        self._checks: set[asyncio.Task] = set()
        self._setup_metrics()
        loop = asyncio.get_running_loop()
        self.udp_transport, self.tcp_server = await self._bind(loop)
        self.session = aiohttp.ClientSession()
        self.prober = asyncio.ensure_future(self._probe_forever())
        admin = self.runtime.admin
        admin.register("reload", self._admin_reload)
        admin.register("health", self._admin_health)
        admin.register("rules", self._admin_rules, method="GET")
        self._log_loaded()
        return {"main": format_address(self.udp_transport.get_extra_info("sockname"))}

    async def _bind(self, loop):
        host, port = self.args.host, self.args.port
        for attempt in range(BIND_ATTEMPTS):
            udp, _ = await loop.create_datagram_endpoint(
                lambda: UdpProtocol(self), local_addr=(host, port)
            )
            _grow_receive_buffer(udp.get_extra_info("socket"))
            bound = udp.get_extra_info("sockname")[1]
            try:
                tcp = await loop.create_server(lambda: TcpProtocol(self), host, bound, backlog=512)
            except OSError as exc:
                udp.close()
                if port != 0 or exc.errno != errno.EADDRINUSE or attempt == BIND_ATTEMPTS - 1:
                    raise
                continue
            return udp, tcp
        raise OSError(errno.EADDRINUSE, "no port free for both UDP and TCP")

    def _setup_metrics(self) -> None:
        m = self.metrics
        self.queries = m.counter("scalelab_dns_queries_total", "Queries answered",
                                 ["transport", "qtype", "rcode", "region"])  # fmt: skip
        self.dropped = m.counter("scalelab_dns_dropped_total", "Messages left unanswered")
        self.truncated = m.counter("scalelab_dns_truncated_total", "UDP replies sent with TC=1")
        self.geo_answers = m.counter("scalelab_dns_geo_answers_total", "Geo answers per target",
                                     ["target"])  # fmt: skip
        self.tcp_rejected = m.counter("scalelab_dns_tcp_rejected_total",
                                      "TCP connections refused at the limit")  # fmt: skip
        self.tcp_idle_closed = m.counter("scalelab_dns_tcp_idle_closed_total",
                                         "TCP connections closed for idleness")  # fmt: skip
        m.gauge("scalelab_dns_tcp_connections", "Open TCP connections").set_function(
            lambda: len(self.connections)
        )
        self.checks = m.counter("scalelab_dns_health_checks_total", "Target health checks",
                                ["target", "result"])  # fmt: skip
        self.target_healthy = m.gauge("scalelab_dns_target_healthy",
                                      "1 if the target is answered", ["target"])  # fmt: skip
        self._query_children: dict[tuple, object] = {}
        self._geo_children: dict[str, object] = {}
        self._refresh_target_gauges()

    def _refresh_target_gauges(self) -> None:
        geo = self.responder.geo
        if geo is None:
            return
        for name in geo.rules.targets:
            book = geo.health
            self.target_healthy.labels(name).set_function(
                lambda n=name, b=book: 1 if n in b.states and b.healthy(n) else 0
            )

    def answer(self, data: bytes, peer: str | None, udp: bool) -> bytes | None:
        """The hot path: one message in, reply bytes out (or None), counted."""
        reply = self.responder.respond(data, peer, udp)
        if reply is None:
            self.dropped.inc()
            return None
        key = (udp, reply.qtype, reply.rcode, reply.region)
        child = self._query_children.get(key)
        if child is None:
            if len(self._query_children) > 4096:
                self._query_children.clear()  # bounded: label sets are re-fetched
            # Only the types we know get their own label: a stranger sending every
            # qtype from 0 to 65535 must not create 65536 time series.
            qtype = type_name(reply.qtype) if reply.qtype in _KNOWN_TYPES else "other"
            child = self._query_children[key] = self.queries.labels(
                "udp" if udp else "tcp", qtype, Rcode(reply.rcode).name,
                reply.region or "none")  # fmt: skip
        child.inc()
        if reply.target is not None:
            target_child = self._geo_children.get(reply.target)
            if target_child is None:
                target_child = self._geo_children[reply.target] = self.geo_answers.labels(
                    reply.target
                )
            target_child.inc()
        if reply.truncated:
            self.truncated.inc()
        return reply.wire

    # -- health probes ------------------------------------------------------------------

    async def _probe_forever(self) -> None:
        while True:
            geo = self.responder.geo
            if geo is not None:
                book = geo.health
                for target, url in book.due(time.monotonic()):
                    task = asyncio.ensure_future(self._probe(book, target, url))
                    self._checks.add(task)
                    task.add_done_callback(self._checks.discard)
            await asyncio.sleep(HEALTH_TICK_S)

    async def _probe(self, book: HealthBook, target: str, url: str) -> None:
        error = None
        try:
            timeout = aiohttp.ClientTimeout(total=book.settings.timeout_s)
            async with self.session.get(url, timeout=timeout, allow_redirects=False) as resp:
                ok = 200 <= resp.status < 400  # HAProxy's httpchk: 2xx and 3xx pass
                if not ok:
                    error = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            ok = False
            error = f"{type(exc).__name__}: {exc}"[:200]
        self.checks.labels(target, "ok" if ok else "fail").inc()
        changed = book.report(target, ok, time.monotonic(), error)
        if changed is not None:
            self.log.warning("target_" + ("up" if changed else "down"), target=target,
                             error=error)  # fmt: skip

    # -- admin --------------------------------------------------------------------------

    def _log_loaded(self) -> None:
        catalog = self.responder.catalog
        zones = {name_to_text(z.origin): z.serial for z in catalog.zones.values()}
        geo = self.responder.geo
        self.log.info("loaded", zones=zones, geo_names=len(geo.rules.names) if geo else 0)

    async def _admin_reload(self, request: web.Request):
        try:
            new = build_responder(self.args.zone, self.args.geo, self.args.udp_payload,
                                  previous=self.responder)  # fmt: skip
        except LoadError as exc:
            self.log.error("reload_failed", error=str(exc))
            return json_response({"error": str(exc)}, 400)
        self.responder = new  # one assignment: queries see all old or all new
        self._refresh_target_gauges()
        self._log_loaded()
        zones = {name_to_text(z.origin): z.serial for z in new.catalog.zones.values()}
        return {"reloaded": True, "zones": zones}

    async def _admin_health(self, request: web.Request):
        body = await read_json(request)
        geo = self.responder.geo
        if geo is None:
            return json_response({"error": "no geo rules loaded"}, 409)
        target = body.get("target") if isinstance(body, dict) else None
        state = body.get("state") if isinstance(body, dict) else None
        states = {"up": True, "down": False, "auto": None}
        if state not in states:
            return json_response({"error": "state must be 'up', 'down' or 'auto'"}, 400)
        try:
            geo.health.force(target, states[state])
        except KeyError:
            return json_response({"error": f"unknown target {target!r}"}, 404)
        self.log.info("target_forced", target=target, state=state)
        return {"target": target, "state": state, "healthy": geo.health.healthy(target)}

    async def _admin_rules(self, request: web.Request):
        responder = self.responder
        zones = {
            name_to_text(z.origin): {"source": z.source, "serial": z.serial}
            for z in responder.catalog.zones.values()
        }
        geo = responder.geo
        return {
            "zones": zones,
            "rules": geo.rules.describe() if geo else None,
            "health": geo.health.describe() if geo else {},
        }

    # -- lifecycle ----------------------------------------------------------------------

    async def drain(self) -> None:
        # Queries are answered synchronously, so nothing is in flight between events:
        # stop taking TCP connections and let open ones finish what they have read.
        self.draining = True
        self.tcp_server.close()
        for conn in list(self.connections):
            if conn.transport is not None and not conn.buffer:
                conn.transport.close()

    async def stop(self) -> None:
        prober = getattr(self, "prober", None)
        if prober is not None:
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober
        for task in list(getattr(self, "_checks", ())):
            task.cancel()
        if getattr(self, "session", None) is not None:
            await self.session.close()
        if getattr(self, "udp_transport", None) is not None:
            self.udp_transport.close()
        if getattr(self, "tcp_server", None) is not None:
            self.tcp_server.close()
        for conn in list(getattr(self, "connections", ())):
            if conn.transport is not None:
                conn.transport.abort()
