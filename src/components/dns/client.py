"""An asyncio stub resolver: how the load generator's users find the site.

A stub resolver asks one server and trusts its answer (RFC 1034 §5.3.1): no recursion
of its own. This one does what the journey needs from it:

- UDP first, one socket per resolver, queries matched to replies by random ID *and*
  question (so a stray or spoofed datagram is ignored, RFC 5452 §4); retries on timeout;
- TCP when the reply comes back truncated (TC=1), as RFC 7766 §5 asks;
- a cache that respects TTLs: an answer lives for the smallest TTL in it; a negative
  answer (NXDOMAIN or NODATA) for the SOA's negative TTL, RFC 2308 §5; the clock is
  passed in so tests control time;
- an optional Client Subnet (RFC 7871): a resolver built with ``ecs="10.1.0.0/24"``
  asks as a user in that subnet, which is how a load generator plays users in a region.

The cache is bounded (oldest entries leave first); it keys on name and type only, so
one resolver plays one client subnet.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from .protocol import (
    ECS_FAMILY_IPV4,
    ECS_FAMILY_IPV6,
    FormatError,
    HeaderError,
    Rcode,
    Response,
    RRType,
    encode_query,
    name_from_text,
    parse_response,
)

TIMEOUT_S = 2.0
RETRIES = 2
CACHE_ENTRIES = 4096
_SOA_MINIMUM = struct.Struct("!I")


class ResolveError(Exception):
    """The name could not be resolved: an error rcode, or no answer in time."""

    def __init__(self, message: str, rcode: int | None = None) -> None:
        super().__init__(message)
        self.rcode = rcode


@dataclass(slots=True)
class Answer:
    addresses: list[str]  # A/AAAA as text; other types: empty, see ``records``
    ttl: int
    rcode: int
    response: Response
    from_cache: bool = False


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    def datagram_received(self, data: bytes, addr) -> None:
        self.resolver._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable: fail whoever is waiting rather than letting them time out.
        for future in self.resolver._pending.values():
            if not future.done():
                future.set_exception(ResolveError(f"UDP error: {exc}"))


class Resolver:
    def __init__(
        self,
        server: tuple[str, int],
        *,
        timeout_s: float = TIMEOUT_S,
        retries: int = RETRIES,
        ecs: str | None = None,
        cache_entries: int = CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self.retries = retries
        self.clock = clock
        self.cache_entries = cache_entries
        self._cache: dict[tuple[bytes, int], tuple[float, Answer]] = {}
        self._pending: dict[tuple[int, bytes, int], asyncio.Future] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._ecs = None
        if ecs is not None:
            network = ipaddress.ip_network(ecs, strict=False)
            octets = (network.prefixlen + 7) // 8
            family = ECS_FAMILY_IPV4 if network.version == 4 else ECS_FAMILY_IPV6
            self._ecs = (family, network.prefixlen, network.network_address.packed[:octets])

    async def resolve(self, name: str, rtype: str | int = "A") -> Answer:
        """The answer for ``name``, from the cache while its TTL lasts.

        Raises ``ResolveError`` for NXDOMAIN, SERVFAIL, REFUSED and timeouts; an empty
        ``addresses`` list means NODATA.
        """
        qname = name_from_text(name if name.endswith(".") else name + ".").lower()
        qtype = rtype if isinstance(rtype, int) else RRType[rtype.upper()].value
        key = (qname, qtype)
        cached = self._cache.get(key)
        now = self.clock()
        if cached is not None and cached[0] > now:
            answer = cached[1]
            if answer.rcode != Rcode.NOERROR:
                raise ResolveError(f"{name}: {Rcode(answer.rcode).name} (cached)", answer.rcode)
            return Answer(answer.addresses, int(cached[0] - now), answer.rcode,
                          answer.response, from_cache=True)  # fmt: skip
        response = await self.query(qname, qtype)
        answer = self._answer(response, qtype)
        if answer.rcode in (Rcode.NOERROR, Rcode.NXDOMAIN) and answer.ttl > 0:
            if len(self._cache) >= self.cache_entries:
                self._cache.pop(next(iter(self._cache)))  # the oldest entry leaves
            self._cache[key] = (now + answer.ttl, answer)
        if answer.rcode != Rcode.NOERROR:
            raise ResolveError(f"{name}: {Rcode(answer.rcode).name}", answer.rcode)
        return answer

    def _answer(self, response: Response, qtype: int) -> Answer:
        records = [r for r in response.answer if r.rtype == qtype]
        addresses = [str(ipaddress.ip_address(r.rdata)) for r in records
                     if r.rtype in (RRType.A, RRType.AAAA)]  # fmt: skip
        if response.answer:
            ttl = min(r.ttl for r in response.answer)
        else:
            # RFC 2308 §5: a negative answer is cached for min(SOA TTL, SOA MINIMUM).
            soas = [r for r in response.authority if r.rtype == RRType.SOA]
            ttl = min(soas[0].ttl, _SOA_MINIMUM.unpack(soas[0].rdata[-4:])[0]) if soas else 0
        return Answer(addresses, ttl, response.rcode, response)

    async def query(self, qname: bytes, qtype: int) -> Response:
        """One query, no cache: UDP with retries, then TCP if the reply was truncated."""
        response = None
        for _attempt in range(self.retries + 1):
            try:
                response = await self._udp(qname, qtype)
                break
            except TimeoutError:
                continue
        if response is None:
            raise ResolveError(f"no answer from {self.server} after {self.retries + 1} tries")
        if response.truncated:
            response = await self._tcp(qname, qtype)
        return response

    async def _udp(self, qname: bytes, qtype: int) -> Response:
        loop = asyncio.get_running_loop()
        if self._transport is None:
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), remote_addr=self.server
            )
        msg_id = secrets.randbits(16)
        while (msg_id, qname, qtype) in self._pending:
            msg_id = secrets.randbits(16)
        key = (msg_id, qname, qtype)
        future = loop.create_future()
        self._pending[key] = future
        try:
            self._transport.sendto(encode_query(msg_id, qname, qtype, ecs=self._ecs))
            return await asyncio.wait_for(future, self.timeout_s)
        finally:
            self._pending.pop(key, None)

    def _on_datagram(self, data: bytes, addr) -> None:
        try:
            response = parse_response(data)
        except (HeaderError, FormatError):
            return  # not a reply we can read: ignore it, the query will time out or match
        future = self._pending.get((response.id, response.qname, response.qtype))
        if future is not None and not future.done():
            future.set_result(response)

    async def _tcp(self, qname: bytes, qtype: int) -> Response:
        msg_id = secrets.randbits(16)
        wire = encode_query(msg_id, qname, qtype, ecs=self._ecs, payload=65535)
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_connection(*self.server)
                try:
                    writer.write(len(wire).to_bytes(2, "big") + wire)
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    data = await reader.readexactly(size)
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            raise ResolveError(f"TCP query to {self.server} failed: {exc!r}") from None
        try:
            response = parse_response(data)
        except (HeaderError, FormatError) as exc:
            raise ResolveError(f"unreadable TCP reply: {exc}") from None
        if response.id != msg_id or response.qname != qname:
            raise ResolveError("TCP reply does not match the query")
        return response

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> Resolver:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()
