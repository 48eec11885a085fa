"""The DNS wire format (RFC 1035 §4), EDNS0 (RFC 6891) and Client Subnet (RFC 7871).

A DNS message is a 12-byte header (ID, flags, four section counts) followed by the
question section and three sections of resource records (answer, authority,
additional). Names are sequences of length-prefixed labels ending in the zero-length root
label; to save space a name may end in a two-byte *pointer* (top two bits set) to an
earlier occurrence of the same suffix (RFC 1035 §4.1.4, "message compression").

This module is sans-IO: ``parse_query(bytes)`` turns a datagram (or a TCP frame) into a
``Query`` or raises ``FormatError``; ``MessageWriter`` builds a response with name
compression. Nothing here touches a socket or a clock.

Names are kept in *wire format* (``b"\\x03www\\x07example\\x03com\\x00"``): hashable, cheap
to slice, and ``bytes.lower()`` is exactly DNS case folding (RFC 4343: only ASCII A-Z
fold; label lengths never reach 65, so they are untouched). Lower-cased wire names are
the keys of every table; the question is echoed byte for byte, which preserves the
client's case (and so 0x20 randomisation, draft-vixie-dnsext-dns0x20).

What the parser guards against, because every byte comes from a stranger:

- a header shorter than 12 bytes: no answer at all, since we cannot even echo the ID
  (``HeaderError``); everything later is a ``FormatError`` answered with FORMERR;
- counts that promise more than the packet holds (each record needs at least 11 bytes);
- labels that run past the end, names longer than 255 bytes (RFC 1035 §2.3.4);
- compression loops: a pointer must point strictly before the start of the label run
  that contains it, so the runs visited move strictly backwards and must end;
- more than one OPT record, or OPT anywhere but the additional section with the root
  name (RFC 6891 §6.1.1); a malformed Client Subnet option (RFC 7871 §7.1).

What it refuses on purpose: multiple questions (no server implements QDCOUNT > 1; we
answer FORMERR like BIND and Knot) and anything in the answer/authority sections of a
query except what RFC 2136/1996 would put there (we do not implement those opcodes).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

HEADER_BYTES = 12
MAX_NAME_BYTES = 255  # RFC 1035 §2.3.4, including length octets and the root label
MAX_LABEL_BYTES = 63
MAX_UDP_PLAIN_BYTES = 512  # RFC 1035 §4.2.1: without EDNS a UDP reply fits 512 bytes
MAX_MESSAGE_BYTES = 65535  # TCP length prefix is 16 bits (RFC 1035 §4.2.2)
MIN_RR_BYTES = 11  # root name (1) + type, class, ttl, rdlength (10)
EDNS_VERSION = 0

_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_U16 = struct.Struct("!H")
_TWO_U16 = struct.Struct("!HH")

# Header flag bits (RFC 1035 §4.1.1, RFC 4035 §3.1 for AD/CD).
FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080
FLAG_AD = 0x0020
FLAG_CD = 0x0010
OPCODE_SHIFT = 11
OPCODE_MASK = 0x7800
# The DO bit sits in the OPT record's TTL field (RFC 3225).
EDNS_FLAG_DO = 0x8000


class Rcode(enum.IntEnum):
    """Response codes. 0-15 fit the header; higher ones need OPT (RFC 6891 §6.1.3)."""

    NOERROR = 0  #: RFC 1035 §4.1.1
    FORMERR = 1  #: RFC 1035: the server could not interpret the query
    SERVFAIL = 2  #: RFC 1035: a problem with the server
    NXDOMAIN = 3  #: RFC 1035 "Name Error": the name does not exist (authoritative only)
    NOTIMP = 4  #: RFC 1035: the kind of query (opcode) is not supported
    REFUSED = 5  #: RFC 1035: policy; here, a name outside every zone we serve
    BADVERS = 16  #: RFC 6891 §6.1.3: EDNS version we do not implement


class Opcode(enum.IntEnum):
    QUERY = 0  #: RFC 1035, the only opcode we implement
    IQUERY = 1  #: RFC 3425: obsolete
    STATUS = 2  #: RFC 1035
    NOTIFY = 4  #: RFC 1996
    UPDATE = 5  #: RFC 2136


class RRType(enum.IntEnum):
    """Record types this server serves (plus OPT and ANY which only appear in queries)."""

    A = 1  #: RFC 1035 §3.4.1
    NS = 2  #: RFC 1035 §3.3.11
    CNAME = 5  #: RFC 1035 §3.3.1
    SOA = 6  #: RFC 1035 §3.3.13
    PTR = 12  #: RFC 1035 §3.3.12
    HINFO = 13  #: RFC 1035 §3.3.2; RFC 8482 reuses it for minimal ANY answers
    MX = 15  #: RFC 1035 §3.3.9
    TXT = 16  #: RFC 1035 §3.3.14
    AAAA = 28  #: RFC 3596
    SRV = 33  #: RFC 2782
    OPT = 41  #: RFC 6891 pseudo-record
    AXFR = 252  #: RFC 5936 (refused: no zone transfers)
    IXFR = 251  #: RFC 1995 (refused)
    ANY = 255  #: RFC 1035 "*"; answered minimally per RFC 8482
    CAA = 257  #: RFC 8659


CLASS_IN = 1
CLASS_ANY = 255
OPTION_ECS = 8  # RFC 7871 §6
ECS_FAMILY_IPV4 = 1  # IANA address family numbers
ECS_FAMILY_IPV6 = 2
_ECS_FAMILY_BITS = {ECS_FAMILY_IPV4: 32, ECS_FAMILY_IPV6: 128}


class HeaderError(ValueError):
    """Not even a header: the message cannot be answered (no ID to echo)."""


class FormatError(ValueError):
    """The query is malformed; answer FORMERR (RFC 1035 §4.1.1)."""


@dataclass(slots=True, frozen=True)
class ClientSubnet:
    """The EDNS Client Subnet option (RFC 7871 §6): who the resolver is asking for."""

    family: int
    source_prefix: int
    scope_prefix: int
    packed: bytes  # the address padded with zero bits to 4 or 16 bytes

    @property
    def address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.packed)

    def encode(self, scope_prefix: int) -> bytes:
        """The option as we send it back: same family, source and address, our scope."""
        octets = (self.source_prefix + 7) // 8
        return (
            _U16.pack(self.family)
            + bytes((self.source_prefix, scope_prefix))
            + self.packed[:octets]
        )


@dataclass(slots=True)
class Query:
    """What the responder needs from a query; the raw question is kept for echoing."""

    id: int
    flags: int
    opcode: int
    qname: bytes  # wire format, lower-cased (the lookup key)
    qtype: int
    qclass: int
    question: bytes  # the question section as received (name in the client's case)
    edns: bool = False
    edns_version: int = 0
    edns_payload: int = MAX_UDP_PLAIN_BYTES
    edns_do: bool = False
    ecs: ClientSubnet | None = None

    @property
    def rd(self) -> bool:
        return bool(self.flags & FLAG_RD)


def read_header(data: bytes) -> tuple[int, int, int, int, int, int]:
    """``(id, flags, qdcount, ancount, nscount, arcount)`` or ``HeaderError``."""
    if len(data) < HEADER_BYTES:
        raise HeaderError(f"message of {len(data)} bytes is shorter than a header")
    return _HEADER.unpack_from(data)


def read_name(data: bytes, offset: int) -> tuple[bytes, int]:
    """Decode the name at ``offset``: ``(wire name with pointers resolved, next offset)``.

    The returned name keeps the case it had in the message. ``next offset`` is where the
    record continues: just after the first pointer, or after the root label. Runs of
    labels are sliced whole, not label by label: most names have no pointer at all.
    """
    end = len(data)
    pieces: list[bytes] = []
    total = 0
    next_offset = -1
    run = pos = offset
    while True:
        if pos >= end:
            raise FormatError("name runs past the end of the message")
        length = data[pos]
        if length == 0:
            break
        if length < 0x40:
            pos += length + 1
            continue
        if length < 0xC0:
            # 0x40 and 0x80 are the retired extended label types (RFC 6891 §5).
            raise FormatError(f"unsupported label type 0x{length & 0xC0:02x}")
        if pos + 1 >= end:
            raise FormatError("compression pointer cut short")
        target = ((length & 0x3F) << 8) | data[pos + 1]
        # A pointer must go strictly back before the run it belongs to; the runs visited
        # then move strictly backwards, so a loop is impossible.
        if target >= run:
            raise FormatError("compression pointer does not point backwards")
        if next_offset < 0:
            next_offset = pos + 2
        pieces.append(data[run:pos])
        total += pos - run
        if total >= MAX_NAME_BYTES:
            raise FormatError("name longer than 255 bytes")
        run = pos = target
    if next_offset < 0:
        next_offset = pos + 1
    if pieces:
        pieces.append(data[run : pos + 1])
        name = b"".join(pieces)
    else:
        name = data[offset : pos + 1]
    if len(name) > MAX_NAME_BYTES:
        raise FormatError("name longer than 255 bytes")
    return name, next_offset


def parse_query(data: bytes) -> Query:
    """Parse a query. ``HeaderError``: do not answer; ``FormatError``: answer FORMERR.

    When the error is a ``FormatError`` the caller still has the header, and
    ``format_error_reply`` builds the FORMERR from the raw bytes.
    """
    msg_id, flags, qdcount, ancount, nscount, arcount = read_header(data)
    if flags & FLAG_QR:
        # A response sent to us: never answer it, or two servers could echo forever.
        raise HeaderError("message is a response, not a query")
    opcode = (flags & OPCODE_MASK) >> OPCODE_SHIFT
    if qdcount != 1:
        if opcode != Opcode.QUERY and qdcount == 0:
            # NOTIFY/UPDATE without a question still deserve NOTIMP rather than FORMERR.
            return Query(msg_id, flags, opcode, b"\x00", 0, 0, b"")
        raise FormatError(f"expected one question, got {qdcount}")
    size = len(data)
    if (ancount + nscount + arcount) * MIN_RR_BYTES > size - HEADER_BYTES:
        raise FormatError("section counts promise more records than the message holds")
    name, pos = read_name(data, HEADER_BYTES)
    if pos + 4 > size:
        raise FormatError("question cut short")
    qtype, qclass = _TWO_U16.unpack_from(data, pos)
    pos += 4
    # The question is re-encoded from the decoded name (not copied) so that a pointer in
    # it can never be echoed pointing at our own, different, header.
    query = Query(msg_id, flags, opcode, name.lower(), qtype, qclass, name + data[pos - 4 : pos])
    if opcode != Opcode.QUERY:
        return query  # NOTIMP: nothing more we need to understand
    # Answer and authority records are skipped (a query should carry none); only the
    # additional section can hold what we use: OPT.
    for index in range(ancount + nscount + arcount):
        owner, pos = read_name(data, pos)
        if pos + 10 > size:
            raise FormatError("resource record cut short")
        rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, pos)
        pos += 10
        rdata_end = pos + rdlength
        if rdata_end > size:
            raise FormatError("record data runs past the end of the message")
        if rtype == RRType.OPT:
            if index < ancount + nscount:
                raise FormatError("OPT outside the additional section")
            if query.edns:
                raise FormatError("more than one OPT record")  # RFC 6891 §6.1.1
            if owner != b"\x00":
                raise FormatError("OPT owner name is not the root")
            _read_opt(query, data, pos, rdata_end, rclass, ttl)
        pos = rdata_end
    if pos != size:
        raise FormatError("trailing bytes after the last record")
    return query


def _read_opt(query: Query, data: bytes, pos: int, end: int, rclass: int, ttl: int) -> None:
    """RFC 6891 §6.1.2: CLASS is the UDP payload size, TTL holds version and DO."""
    query.edns = True
    # Sizes below 512 are treated as 512 (RFC 6891 §6.2.5).
    query.edns_payload = max(rclass, MAX_UDP_PLAIN_BYTES)
    query.edns_version = (ttl >> 16) & 0xFF
    query.edns_do = bool(ttl & EDNS_FLAG_DO)
    while pos < end:
        if pos + 4 > end:
            raise FormatError("EDNS option header cut short")
        code, length = _TWO_U16.unpack_from(data, pos)
        pos += 4
        if pos + length > end:
            raise FormatError("EDNS option runs past the OPT record")
        if code == OPTION_ECS:
            if query.ecs is not None:
                raise FormatError("more than one Client Subnet option")
            query.ecs = parse_client_subnet(data[pos : pos + length])
        pos += length


def parse_client_subnet(body: bytes, in_query: bool = True) -> ClientSubnet:
    """RFC 7871 §6 and §7.1.2: family, source and scope prefix, truncated address.

    In a query the scope must be 0; in a response it is the server's answer scope.
    """
    if len(body) < 4:
        raise FormatError("Client Subnet option shorter than 4 bytes")
    family = _U16.unpack_from(body)[0]
    source, scope = body[2], body[3]
    bits = _ECS_FAMILY_BITS.get(family)
    if bits is None:
        raise FormatError(f"Client Subnet family {family} is not IPv4 (1) or IPv6 (2)")
    if source > bits:
        raise FormatError(f"Client Subnet source prefix /{source} too long for the family")
    if scope != 0 and in_query:
        raise FormatError("Client Subnet scope prefix must be 0 in a query")
    if scope > bits:
        raise FormatError(f"Client Subnet scope prefix /{scope} too long for the family")
    octets = (source + 7) // 8
    raw = body[4:]
    if len(raw) != octets:
        raise FormatError(f"Client Subnet address has {len(raw)} octets, /{source} needs {octets}")
    padded = raw + bytes(bits // 8 - octets)
    value = int.from_bytes(padded, "big")
    if value & ((1 << (bits - source)) - 1):
        raise FormatError("Client Subnet address has bits set past the source prefix")
    return ClientSubnet(family, source, scope, padded)


def format_error_reply(data: bytes, rcode: int = Rcode.FORMERR) -> bytes:
    """A header-only reply for a query we could not parse (ID, opcode and RD echoed)."""
    msg_id, flags = _TWO_U16.unpack_from(data)
    flags = FLAG_QR | (flags & (OPCODE_MASK | FLAG_RD)) | rcode
    return _HEADER.pack(msg_id, flags, 0, 0, 0, 0)


@dataclass(slots=True)
class Record:
    """One resource record of a parsed message (used by the client for responses)."""

    name: bytes  # lower-cased wire name
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes


@dataclass(slots=True)
class Response:
    id: int
    flags: int
    rcode: int  # extended with the OPT record's upper bits (RFC 6891 §6.1.3)
    qname: bytes
    qtype: int
    answer: list[Record]
    authority: list[Record]
    additional: list[Record]
    ecs: ClientSubnet | None = None

    @property
    def truncated(self) -> bool:
        return bool(self.flags & FLAG_TC)


def parse_response(data: bytes) -> Response:
    """Parse a response (the client's side). Raises HeaderError or FormatError."""
    msg_id, flags, qdcount, ancount, nscount, arcount = read_header(data)
    if not flags & FLAG_QR:
        raise FormatError("not a response")
    if qdcount > 1:
        raise FormatError(f"response with {qdcount} questions")
    if (ancount + nscount + arcount) * MIN_RR_BYTES > len(data) - HEADER_BYTES:
        raise FormatError("section counts promise more records than the message holds")
    pos = HEADER_BYTES
    qname, qtype = b"\x00", 0
    if qdcount:
        qname, pos = read_name(data, pos)
        if pos + 4 > len(data):
            raise FormatError("question cut short")
        qtype = _U16.unpack_from(data, pos)[0]
        pos += 4
    sections: list[list[Record]] = [[], [], []]
    rcode = flags & 0xF
    ecs = None
    for index in range(ancount + nscount + arcount):
        name, pos = read_name(data, pos)
        if pos + 10 > len(data):
            raise FormatError("resource record cut short")
        rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, pos)
        pos += 10
        end = pos + rdlength
        if end > len(data):
            raise FormatError("record data runs past the end of the message")
        if rtype == RRType.OPT:
            rcode |= (ttl >> 24) << 4
            option = pos
            while option + 4 <= end:
                code, length = _TWO_U16.unpack_from(data, option)
                if code == OPTION_ECS:
                    ecs = parse_client_subnet(data[option + 4 : option + 4 + length], False)
                option += 4 + length
        else:
            section = 0 if index < ancount else (1 if index < ancount + nscount else 2)
            sections[section].append(Record(name.lower(), rtype, rclass, ttl, data[pos:end]))
        pos = end
    return Response(msg_id, flags, rcode, qname.lower(), qtype, *sections, ecs=ecs)


def encode_query(msg_id: int, qname: bytes, qtype: int, rd: bool = False,
                 ecs: tuple[int, int, bytes] | None = None,
                 payload: int = 1232) -> bytes:  # fmt: skip
    """A query with EDNS; ``ecs`` is (family, source prefix, address truncated to it)."""
    options = b""
    if ecs is not None:
        family, source, address = ecs
        options = encode_option(OPTION_ECS, _U16.pack(family) + bytes((source, 0)) + address)
    header = _HEADER.pack(msg_id, FLAG_RD if rd else 0, 1, 0, 0, 1)
    return header + qname + _TWO_U16.pack(qtype, CLASS_IN) + encode_opt(payload, 0, False, options)


# -- names ------------------------------------------------------------------------------


def name_from_text(text: str, origin: bytes | None = None) -> bytes:
    """Presentation form to wire form (RFC 1035 §5.1 escapes ``\\X`` and ``\\DDD``).

    A name not ending in an unescaped dot is relative and gets ``origin`` appended;
    ``@`` is the origin itself. Raises ``ValueError`` with a reason.
    """
    if text == "@":
        if origin is None:
            raise ValueError("'@' used before any $ORIGIN")
        return origin
    if text == ".":
        return b"\x00"
    labels: list[bytes] = []
    current = bytearray()
    absolute = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            digits = text[i + 1 : i + 4]
            if len(digits) == 3 and all(c in "0123456789" for c in digits):
                value = int(digits)
                if value > 255:
                    raise ValueError(f"bad escape \\{digits} in {text!r}")
                current.append(value)
                i += 4
                continue
            if i + 1 >= n:
                raise ValueError(f"name {text!r} ends in a backslash")
            current += text[i + 1].encode()
            i += 2
            continue
        if ch == ".":
            if not current:
                raise ValueError(f"empty label in {text!r}")
            labels.append(bytes(current))
            current = bytearray()
            if i == n - 1:
                absolute = True
            i += 1
            continue
        current += ch.encode("utf-8")
        i += 1
    if current:
        labels.append(bytes(current))
    wire = bytearray()
    for label in labels:
        if len(label) > MAX_LABEL_BYTES:
            raise ValueError(f"label longer than 63 bytes in {text!r}")
        wire.append(len(label))
        wire += label
    if absolute:
        wire.append(0)
    else:
        if origin is None:
            raise ValueError(f"relative name {text!r} with no $ORIGIN")
        wire += origin
    if len(wire) > MAX_NAME_BYTES:
        raise ValueError(f"name {text!r} longer than 255 bytes")
    return bytes(wire)


def name_to_text(wire: bytes) -> str:
    """Wire form to presentation form, escaping what needs it; always ends in a dot."""
    if wire == b"\x00":
        return "."
    parts = []
    pos = 0
    while wire[pos]:
        length = wire[pos]
        label = wire[pos + 1 : pos + 1 + length]
        text = []
        for byte in label:
            ch = chr(byte)
            if ch in '.\\"();@$':
                text.append("\\" + ch)
            elif 0x21 <= byte <= 0x7E:
                text.append(ch)
            else:
                text.append(f"\\{byte:03d}")
        parts.append("".join(text))
        pos += 1 + length
    return ".".join(parts) + "."


def label_offsets(wire: bytes) -> list[int]:
    """Offsets of each label in a wire name: each one starts a suffix."""
    offsets = []
    pos = 0
    while wire[pos]:
        offsets.append(pos)
        pos += 1 + wire[pos]
    return offsets


def parent(wire: bytes) -> bytes:
    """The name with its first label removed (the root's parent is the root)."""
    return wire if wire == b"\x00" else wire[1 + wire[0] :]


def is_subdomain(name: bytes, origin: bytes) -> bool:
    """Is ``name`` (lower-cased wire) at or below ``origin`` (lower-cased wire)?"""
    if not name.endswith(origin):
        return False
    if len(name) == len(origin) or origin == b"\x00":
        return True
    # The match must start on a label boundary, not in the middle of a label.
    cut = len(name) - len(origin)
    return cut in label_offsets(name)


# -- writing ----------------------------------------------------------------------------


class MessageWriter:
    """Builds a message, compressing names against the ones already written.

    ``names`` maps a lower-cased wire suffix to the offset where it was written; only
    offsets below 0x4000 can be pointed at (14-bit pointers).
    """

    __slots__ = ("buf", "names")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.names: dict[bytes, int] = {}

    def remember(self, name: bytes, offset: int) -> None:
        """Register a name already in the buffer at ``offset`` (the echoed question)."""
        lower = name.lower()
        pos = 0
        while lower[pos] and offset + pos < 0x4000:
            self.names.setdefault(lower[pos:], offset + pos)
            pos += 1 + lower[pos]

    def name(self, wire: bytes, compress: bool = True) -> None:
        buf = self.buf
        if not compress:
            buf += wire
            return
        lower = wire.lower()
        names = self.names
        pos = 0
        while lower[pos]:
            pointer = names.get(lower[pos:])
            if pointer is not None:
                buf += wire[:pos]
                self._remember_prefix(lower, pos, len(buf) - pos)
                buf += _U16.pack(0xC000 | pointer)
                return
            pos += 1 + lower[pos]
        self._remember_prefix(lower, pos, len(buf))
        buf += wire

    def _remember_prefix(self, lower: bytes, upto: int, start: int) -> None:
        pos = 0
        while pos < upto and start + pos < 0x4000:
            self.names[lower[pos:]] = start + pos
            pos += 1 + lower[pos]


class CompressibleName(bytes):
    """A wire name inside record data that may be compressed (RFC 3597 §4: only the
    RFC 1035 types NS, CNAME, SOA, PTR, MX). Other names (SRV targets) stay plain bytes."""

    __slots__ = ()


def write_record(writer: MessageWriter, owner: bytes, rtype: int, ttl: int, rdata: tuple) -> None:
    """One resource record; ``rdata`` is a tuple of bytes and ``CompressibleName`` parts."""
    writer.name(owner)
    buf = writer.buf
    buf += _RR_FIXED.pack(rtype, CLASS_IN, ttl, 0)
    start = len(buf)
    for part in rdata:
        if type(part) is CompressibleName:
            writer.name(part)
        else:
            buf += part
    buf[start - 2 : start] = _U16.pack(len(buf) - start)


def encode_opt(payload: int, ext_rcode: int = 0, do: bool = False, options: bytes = b"") -> bytes:
    """An OPT pseudo-record (RFC 6891 §6.1.2): root owner, CLASS = our payload size."""
    ttl = ((ext_rcode >> 4) << 24) | (EDNS_VERSION << 16) | (EDNS_FLAG_DO if do else 0)
    return b"\x00" + _RR_FIXED.pack(RRType.OPT, payload, ttl, len(options)) + options


def encode_option(code: int, body: bytes) -> bytes:
    return _TWO_U16.pack(code, len(body)) + body


def pack_header(msg_id: int, flags: int, qd: int, an: int, ns: int, ar: int) -> bytes:
    return _HEADER.pack(msg_id, flags, qd, an, ns, ar)


def type_name(rtype: int) -> str:
    try:
        return RRType(rtype).name
    except ValueError:
        return f"TYPE{rtype}"
