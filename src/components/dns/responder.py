"""From query bytes to reply bytes: the whole answering path, with no sockets.

``Responder.respond(data, client, udp)`` is what the server calls for every datagram
and every TCP frame. It composes the three layers below it:

- ``protocol.parse_query``: a header we cannot read gets no reply (we could not echo
  its ID); anything else malformed gets FORMERR;
- the decisions about the query as a whole, in RFC order: unknown opcode -> NOTIMP
  (RFC 1035 §4.1.1); EDNS version above 0 -> BADVERS (RFC 6891 §6.1.3); a class other
  than IN, or a zone transfer -> REFUSED;
- ``Catalog.lookup`` for the sections, with ``Geo`` answering the names that have
  rules, located by the Client Subnet option (RFC 7871) or else the source address.

Then the reply is encoded: the question echoed as the client sent it (its case kept),
names compressed, an OPT record when the query had one (our payload size, the DO bit
copied as RFC 3225 asks, the Client Subnet option returned with its scope). A UDP reply
larger than the client can take (512 bytes without EDNS, else the smaller of its
advertised size and ours) is replaced by an empty one with TC=1, which tells the client
to ask again over TCP (RFC 1035 §4.2.1, RFC 7766); the TCP reply is complete.
"""

from __future__ import annotations

import struct

from .geo import Geo, GeoAnswer, packed_address
from .protocol import (
    CLASS_IN,
    FLAG_AA,
    FLAG_QR,
    FLAG_RD,
    FLAG_TC,
    MAX_MESSAGE_BYTES,
    MAX_UDP_PLAIN_BYTES,
    OPCODE_MASK,
    OPTION_ECS,
    FormatError,
    HeaderError,
    MessageWriter,
    Opcode,
    Query,
    Rcode,
    RRType,
    encode_opt,
    encode_option,
    format_error_reply,
    pack_header,
    parse_query,
    write_record,
)
from .zone import Answer, Catalog

_ID_FLAGS = struct.Struct("!HH")
_FLAGS = struct.Struct("!H")

#: Our advertised EDNS payload: the DNS flag day 2020 value, safe from IP fragmentation.
DEFAULT_UDP_PAYLOAD_BYTES = 1232
#: Encoded replies kept for static answers; the table is cleared when it fills.
REPLY_CACHE_ENTRIES = 8192
#: Longest query used as an exact-bytes cache key (a typical query is 30-80 bytes).
MAX_EXACT_KEY_BYTES = 512


class Reply:
    """The reply bytes plus what the server counts in its metrics."""

    __slots__ = ("wire", "qtype", "rcode", "region", "target", "truncated")

    def __init__(self, wire: bytes, qtype: int, rcode: int, region: str | None = None,
                 target: str | None = None, truncated: bool = False) -> None:  # fmt: skip
        self.wire = wire
        self.qtype = qtype
        self.rcode = rcode
        self.region = region
        self.target = target
        self.truncated = truncated


class Responder:
    def __init__(
        self,
        catalog: Catalog,
        geo: Geo | None = None,
        udp_payload: int = DEFAULT_UDP_PAYLOAD_BYTES,
    ) -> None:
        self.catalog = catalog
        self.geo = geo
        self.udp_payload = max(udp_payload, MAX_UDP_PLAIN_BYTES)
        # Static answers (no geo rule involved) depend only on this key, so their encoded
        # form is kept: header flags without RD, the four counts, and everything after
        # the question. Compression pointers into the question stay valid because the
        # same lower-cased name has the same length whatever its case. A reload builds a
        # new Responder, so the cache never outlives the zones it was built from.
        self._cache: dict[tuple, tuple[int, bytes, bytes, int, bool]] = {}
        # One step earlier still: a query whose bytes (all but the ID) were seen before
        # gets the same reply bytes, without even being parsed. Resolvers and load tools
        # repeat queries byte for byte, so this is the common case. Keys are bounded in
        # size and number; per transport, since the size limit differs.
        self._exact: tuple[dict[bytes, tuple], dict[bytes, tuple]] = ({}, {})
        # The same for geo answers that carry a Client Subnet: the bytes fix everything
        # but the target (health and the weighted pick decide that per query), so they
        # remember where the rule is asked, and the reply comes from the per-target
        # encoding cache after one ``geo.answer`` call: no parsing, no zone walk. Without
        # ECS the source address decides the region, so those take the full path.
        self._geo_exact: tuple[dict[bytes, tuple], dict[bytes, tuple]] = ({}, {})

    def respond(self, data: bytes, client: str | None, udp: bool) -> Reply | None:
        """Answer one message; None means "send nothing" (unreadable header, a response).

        ``client`` is the source address as text (geo rules use it when the query has no
        Client Subnet option); it is converted only if a geo rule needs it.
        """
        exact = self._exact[udp]
        if len(data) <= MAX_EXACT_KEY_BYTES:
            hit = exact.get(data[2:])
            if hit is not None:
                return Reply(data[:2] + hit[0], hit[1], hit[2], None, None, hit[3])
            hit = self._geo_exact[udp].get(data[2:])
            if hit is not None:
                name, address, key, question, qtype = hit
                found = self.geo.answer(name, address)
                cached = self._cache.get((key, (found.target,))) if found is not None else None
                if cached is not None:
                    flags, counts, tail, rcode, truncated = cached
                    flags = _FLAGS.pack(flags | (data[2] << 8 & FLAG_RD))
                    wire = data[:2] + flags + counts + question + tail
                    return Reply(wire, qtype, rcode, found.region, found.target, truncated)
                # A target not encoded yet (it just came back, say): the full path. The
                # pick above is not repeated there, so the split is unchanged.
                return self._respond(data, client, udp, found)
        return self._respond(data, client, udp)

    def _respond(self, data: bytes, client: str | None, udp: bool,
                 picked: GeoAnswer | None = None) -> Reply | None:  # fmt: skip
        """The full path: parse, decide, look up, encode. ``picked`` is a geo answer
        already chosen for this query by the fast path, to use instead of picking again."""
        exact = self._exact[udp]
        try:
            query = parse_query(data)
        except HeaderError:
            return None
        except FormatError:
            return Reply(format_error_reply(data), 0, Rcode.FORMERR)
        if query.opcode != Opcode.QUERY:
            return self._bare(query, Rcode.NOTIMP)
        if query.edns and query.edns_version != 0:
            return self._bare(query, Rcode.BADVERS)
        qtype = query.qtype
        if qtype == RRType.OPT:
            return self._bare(query, Rcode.FORMERR)  # OPT is never a question (RFC 6891 §6.1.1)
        if query.qclass != CLASS_IN or qtype in (RRType.AXFR, RRType.IXFR):
            return self._bare(query, Rcode.REFUSED)

        limit = (min(query.edns_payload, self.udp_payload) if query.edns else MAX_UDP_PLAIN_BYTES
                 ) if udp else MAX_MESSAGE_BYTES  # fmt: skip
        key = (query.qname, qtype, query.edns, limit, query.edns_do, query.ecs)
        cached = self._cache.get(key)
        if cached is not None:
            flags, counts, tail, rcode, truncated = cached
            header = _ID_FLAGS.pack(query.id, flags | (query.flags & FLAG_RD))
            wire = header + counts + query.question + tail
            self._remember_exact(exact, data, wire, qtype, rcode, truncated)
            return Reply(wire, qtype, rcode, None, None, truncated)

        geo = self.geo
        used: list = []
        asked: list = []  # (name, address) of each geo rule consulted
        dynamic = None
        if geo is not None:

            def dynamic(name: bytes, rtype: int):
                ecs = query.ecs
                if ecs is None:
                    address = packed_address(client) if client else None
                elif ecs.source_prefix:
                    address = ecs.packed
                else:
                    address = None  # RFC 7871 §7.1.2: /0 asks us not to use any address
                nonlocal picked
                if picked is not None:
                    found, picked = picked, None
                else:
                    found = geo.answer(name, address)
                if found is None or found.rrset.rtype != rtype:
                    return None
                used.append(found)
                asked.append((name, address))
                return found.rrset

        answer = self.catalog.lookup(query.qname, qtype, dynamic)
        if used:
            # A geo answer is fixed by the query key plus the targets picked: the scope
            # comes from the Client Subnet, which is part of the key. So its encoding
            # is cached too, under that longer key (never in the exact-bytes cache,
            # since the same bytes may get another target next time).
            last = used[-1]
            key = (key, tuple(found.target for found in used))
            cached = self._cache.get(key)
            if cached is not None:
                flags, counts, tail, rcode, truncated = cached
                header = _ID_FLAGS.pack(query.id, flags | (query.flags & FLAG_RD))
                self._remember_geo(udp, data, query, asked, key[0])
                return Reply(header + counts + query.question + tail, qtype, rcode,
                             last.region, last.target, truncated)  # fmt: skip
        scope = used[-1].scope if used else 0
        wire = self._encode(query, answer, scope)
        if len(wire) > limit and answer.additional and answer.authoritative:
            # Additional data is a courtesy: drop it before truncating (RFC 2181 §9).
            # A referral's glue is not optional, so referrals keep theirs.
            answer.additional = []
            wire = self._encode(query, answer, scope)
        truncated = len(wire) > limit
        if truncated:
            wire = self._encode(query, Answer(rcode=answer.rcode), scope, truncated=True,
                                authoritative=answer.authoritative)  # fmt: skip
        if len(self._cache) >= REPLY_CACHE_ENTRIES:
            self._cache.clear()
        flags = _ID_FLAGS.unpack_from(wire)[1] & ~FLAG_RD
        self._cache[key] = (flags, wire[4:12], wire[12 + len(query.question) :], answer.rcode,
                            truncated)  # fmt: skip
        if used:
            self._remember_geo(udp, data, query, asked, key[0])
            return Reply(wire, qtype, answer.rcode, last.region, last.target, truncated)
        self._remember_exact(exact, data, wire, qtype, answer.rcode, truncated)
        return Reply(wire, qtype, answer.rcode, None, None, truncated)

    def _remember_geo(self, udp: bool, data: bytes, query: Query, asked: list,
                      key: tuple) -> None:  # fmt: skip
        """Let these bytes skip to the per-target encodings next time (see __init__)."""
        if len(asked) != 1 or query.ecs is None or len(data) > MAX_EXACT_KEY_BYTES:
            return
        table = self._geo_exact[udp]
        if len(table) >= REPLY_CACHE_ENTRIES:
            table.clear()
        name, address = asked[0]
        table[data[2:]] = (name, address, key, query.question, query.qtype)

    @staticmethod
    def _remember_exact(exact: dict, data: bytes, wire: bytes, qtype: int, rcode: int,
                        truncated: bool) -> None:  # fmt: skip
        if len(data) > MAX_EXACT_KEY_BYTES:
            return
        if len(exact) >= REPLY_CACHE_ENTRIES:
            exact.clear()
        exact[data[2:]] = (wire[2:], qtype, rcode, truncated)

    def _flags(self, query: Query, rcode: int, authoritative: bool, truncated: bool) -> int:
        flags = FLAG_QR | (query.flags & (OPCODE_MASK | FLAG_RD)) | (rcode & 0xF)
        if authoritative:
            flags |= FLAG_AA
        if truncated:
            flags |= FLAG_TC
        return flags

    def _opt(self, query: Query, rcode: int, scope: int) -> bytes:
        options = b""
        if query.ecs is not None:
            options = encode_option(OPTION_ECS, query.ecs.encode(scope))
        return encode_opt(self.udp_payload, rcode, query.edns_do, options)

    def _bare(self, query: Query, rcode: int) -> Reply:
        """Header, question and (if the query had one) OPT: for the error rcodes."""
        opt = self._opt(query, rcode, 0) if query.edns else b""
        header = pack_header(query.id, self._flags(query, rcode, False, False),
                             1 if query.question else 0, 0, 0, 1 if opt else 0)  # fmt: skip
        return Reply(header + query.question + opt, query.qtype, rcode)

    def _encode(self, query: Query, answer: Answer, scope: int, truncated: bool = False,
                authoritative: bool | None = None) -> bytes:  # fmt: skip
        writer = MessageWriter()
        buf = writer.buf
        aa = answer.authoritative if authoritative is None else authoritative
        buf += pack_header(query.id, self._flags(query, answer.rcode, aa, truncated), 1, 0, 0, 0)
        buf += query.question
        writer.remember(query.question[:-4], 12)
        counts = []
        for section in (answer.answer, answer.authority, answer.additional):
            count = 0
            for rrset in section:
                for rdata in rrset.rdatas:
                    write_record(writer, rrset.name, rrset.rtype, rrset.ttl, rdata)
                    count += 1
            counts.append(count)
        if query.edns:
            buf += self._opt(query, answer.rcode, scope)
            counts[2] += 1
        buf[6:12] = pack_header(0, 0, 0, *counts)[6:]
        return bytes(buf)
