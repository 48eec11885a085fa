"""Zones: RFC 1035 master files in, authoritative answers out.

A zone is the part of the name tree one server is the authority for, written as a
*master file* (RFC 1035 §5): one record per entry, ``owner [ttl] [class] type rdata``,
with ``$ORIGIN`` (what relative names hang from), ``$TTL`` (RFC 2308 §4, the default TTL),
``@`` for the origin, a blank owner meaning "the previous owner", parentheses to
continue an entry over several lines, and ``;`` comments. ``load_zone`` reads one; any
error names the file and the line, because an operator with a broken zone needs exactly
that.

``Catalog.lookup`` is the authoritative algorithm of RFC 1034 §4.3.2, minus recursion:

1. find the zone whose origin is the longest suffix of the name, else REFUSED;
2. a delegation (NS below the apex) on the way down gives a referral, AA clear;
3. the name exists with the type: the answer; with a CNAME: the CNAME, then the lookup
   continues at its target while that stays in our zones (bounded, loop-checked);
4. the name exists without the type: NODATA, i.e. NOERROR with the zone's SOA in the
   authority section; the name does not exist at all: NXDOMAIN with the SOA. Either way
   the SOA's TTL is min(SOA TTL, SOA MINIMUM), the negative-caching TTL of RFC 2308 §3.
   A name with nothing of its own but names below it (an *empty non-terminal*) exists.
5. ANY gets one RRset, not all of them (RFC 8482 §4.1): cheap, and no amplification.

Names may also carry *dynamic* types (the geo rules' answers), computed per query by a
callback; the catalog only knows that the name exists and which types are dynamic.

Wildcards (``*.example.com.``) answer for names that do not exist below the closest
existing ancestor (RFC 4592 §3.3.1), with the owner rewritten to the name asked for.

Types this file does not know are still servable, in the generic form of RFC 3597 §5:
``TYPE65280 \\# 4 0a000001`` (the type by number, ``\\#``, the RDATA length, then the
RDATA in hex). An authoritative server needs no understanding of such data: it stores
the bytes and sends them back, uncompressed (§4). The generic form is accepted for
known types too when their RDATA holds no domain name (A, AAAA, TXT, CAA); for types
with names inside (NS, CNAME, MX, ...) we need the names to follow CNAMEs and add
addresses, so those must be written in their usual form.
Refused on purpose: ``$INCLUDE`` (a zone is one file), classes other than IN, DNSSEC
types (we sign nothing and prove nothing), and meta/query types (RFC 6895 §3.1).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .protocol import (
    CompressibleName,
    Rcode,
    RRType,
    is_subdomain,
    name_from_text,
    name_to_text,
    parent,
    type_name,
)

MAX_TTL_S = 2**31 - 1  # RFC 2181 §8
MAX_CNAME_CHAIN = 8  # links followed before we stop and answer what we have
MAX_CHARACTER_STRING_BYTES = 255  # RFC 1035 §3.3
MAX_ZONE_FILE_BYTES = 64 << 20

_U16 = struct.Struct("!H")
_SOA_TIMES = struct.Struct("!IIIII")
_SRV = struct.Struct("!HHH")
_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CLASSES_REFUSED = {"CH", "CS", "HS", "NONE", "ANY"}


class ZoneError(ValueError):
    """A zone file we will not serve; the message names the file and line."""


@dataclass(slots=True)
class RRset:
    """Records of one name and type. ``name`` keeps the zone file's case for output."""

    name: bytes
    rtype: int
    ttl: int
    rdatas: list[tuple]


@dataclass(slots=True)
class Node:
    rrsets: dict[int, RRset] = field(default_factory=dict)
    dynamic_types: frozenset[int] = frozenset()


@dataclass(slots=True)
class Zone:
    origin: bytes  # lower-cased wire name
    source: str
    soa: RRset
    nodes: dict[bytes, Node]
    existing: set[bytes]  # every name that exists, empty non-terminals included
    cuts: set[bytes]  # names below the apex that own NS records (delegations)

    @property
    def negative_ttl(self) -> int:
        """RFC 2308 §3 and §5: min(SOA TTL, SOA MINIMUM)."""
        minimum = _SOA_TIMES.unpack(self.soa.rdatas[0][2])[4]
        return min(self.soa.ttl, minimum)

    @property
    def serial(self) -> int:
        return _SOA_TIMES.unpack(self.soa.rdatas[0][2])[0]


@dataclass(slots=True)
class Answer:
    """The sections of an authoritative reply, before encoding."""

    rcode: int = Rcode.NOERROR
    authoritative: bool = True
    answer: list[RRset] = field(default_factory=list)
    authority: list[RRset] = field(default_factory=list)
    additional: list[RRset] = field(default_factory=list)
    zone: Zone | None = None


#: Which RDATA part holds the target name whose addresses go in the additional section.
_TARGET_FIELD = {RRType.MX: 1, RRType.NS: 0, RRType.SRV: 1}

#: ``dynamic(name, rtype)``: the RRset for a dynamic type at that name, or None.
DynamicRRsets = Callable[[bytes, int], RRset | None]


class Catalog:
    """Every zone we serve, and the authoritative lookup over them."""

    def __init__(self, zones: Iterable[Zone]) -> None:
        self.zones: dict[bytes, Zone] = {}
        for zone in zones:
            if zone.origin in self.zones:
                raise ZoneError(
                    f"{zone.source}: zone {name_to_text(zone.origin)} already loaded from "
                    f"{self.zones[zone.origin].source}"
                )
            self.zones[zone.origin] = zone

    def find_zone(self, name: bytes) -> Zone | None:
        """The zone with the longest origin that ``name`` is in (the closest enclosing)."""
        zones = self.zones
        while True:
            zone = zones.get(name)
            if zone is not None:
                return zone
            if name == b"\x00":
                return None
            name = name[1 + name[0] :]

    def add_dynamic(self, name: bytes, rtype: int) -> None:
        """Declare that ``name`` answers ``rtype`` from a callback (a geo rule)."""
        name = name.lower()
        zone = self.find_zone(name)
        text = name_to_text(name)
        if zone is None:
            raise ZoneError(f"{text} is not inside any zone we serve")
        node = zone.nodes.get(name)
        if node is None:
            node = zone.nodes[name] = Node()
            _mark_existing(zone.existing, name, zone.origin)
        if RRType.CNAME in node.rrsets:
            raise ZoneError(f"{text} has a CNAME in {zone.source}; it cannot also have rules")
        if rtype in node.rrsets:
            raise ZoneError(
                f"{text} {RRType(rtype).name} is both in {zone.source} and in the rules"
            )
        node.dynamic_types = node.dynamic_types | {rtype}

    def lookup(self, qname: bytes, qtype: int, dynamic: DynamicRRsets | None = None) -> Answer:
        """RFC 1034 §4.3.2 for an authoritative-only server (see the module essay)."""
        zone = self.find_zone(qname)
        if zone is None:
            return Answer(rcode=Rcode.REFUSED, authoritative=False)
        result = Answer(zone=zone)
        seen: set[bytes] = set()
        name = qname
        for _ in range(MAX_CNAME_CHAIN + 1):
            seen.add(name)
            if zone.cuts and self._referral(zone, name, qtype, result):
                return result
            node = zone.nodes.get(name)
            synthesised = False
            if node is None:
                if name in zone.existing:  # an empty non-terminal: NODATA
                    self._negative(zone, result)
                    return result
                node = self._wildcard(zone, name)
                if node is None:
                    result.rcode = Rcode.NXDOMAIN
                    self._negative(zone, result)
                    return result
                synthesised = True
            if qtype == RRType.ANY:
                rrset = self._any(node, name, dynamic)
                if rrset is not None:
                    result.answer.append(_owned_by(rrset, name) if synthesised else rrset)
                else:
                    self._negative(zone, result)
                return result
            rrset = node.rrsets.get(qtype)
            if rrset is not None and synthesised:
                rrset = _owned_by(rrset, name)
            if rrset is None and qtype in node.dynamic_types and dynamic is not None:
                rrset = dynamic(name, qtype)
            if rrset is not None:
                result.answer.append(rrset)
                if qtype in _TARGET_FIELD:
                    self._additional(rrset, result)
                return result
            cname = node.rrsets.get(RRType.CNAME)
            if cname is None:
                self._negative(zone, result)
                return result
            result.answer.append(_owned_by(cname, name) if synthesised else cname)
            target = bytes(cname.rdatas[0][0]).lower()
            next_zone = self.find_zone(target)
            if next_zone is None or target in seen:
                # Out of our zones (the resolver continues from here) or a loop: stop.
                return result
            name, zone = target, next_zone
        return result

    def _additional(self, rrset: RRset, result: Answer) -> None:
        """RFC 1035 §3.3.9, §3.3.11 and RFC 2782: addresses of the MX, NS and SRV targets
        we hold, so the client need not ask again. Static data only; optional, so the
        responder drops them rather than truncate (RFC 2181 §9)."""
        field = _TARGET_FIELD[rrset.rtype]
        seen: set[bytes] = set()
        for rdata in rrset.rdatas:
            target = bytes(rdata[field]).lower()
            if target in seen:
                continue
            seen.add(target)
            zone = self.find_zone(target)
            node = zone.nodes.get(target) if zone is not None else None
            if node is None:
                continue
            for rtype in (RRType.A, RRType.AAAA):
                found = node.rrsets.get(rtype)
                if found is not None:
                    result.additional.append(found)

    @staticmethod
    def _wildcard(zone: Zone, name: bytes) -> Node | None:
        """RFC 4592 §3.3.1: the wildcard child of the closest encloser, if there is one.

        The closest encloser is the longest ancestor of ``name`` that exists (empty
        non-terminals count, which is what stops a wildcard from matching below them).
        """
        encloser = parent(name)
        while encloser not in zone.existing:
            if encloser == zone.origin or encloser == b"\x00":
                return None
            encloser = parent(encloser)
        return zone.nodes.get(b"\x01*" + encloser)

    def _any(self, node: Node, name: bytes, dynamic: DynamicRRsets | None) -> RRset | None:
        for rrset in node.rrsets.values():
            return rrset
        if dynamic is not None:
            for rtype in sorted(node.dynamic_types):
                rrset = dynamic(name, rtype)
                if rrset is not None:
                    return rrset
        return None

    def _referral(self, zone: Zone, name: bytes, qtype: int, result: Answer) -> bool:
        """A delegation at or above ``name`` (below the apex): refer, not authoritative."""
        cut = name
        while cut != zone.origin:
            if cut in zone.cuts:
                ns = zone.nodes[cut].rrsets[RRType.NS]
                result.authoritative = False
                result.authority.append(ns)
                for rdata in ns.rdatas:
                    glue = zone.nodes.get(bytes(rdata[0]).lower())
                    if glue is not None and is_subdomain(bytes(rdata[0]).lower(), cut):
                        for rtype in (RRType.A, RRType.AAAA):
                            if rtype in glue.rrsets:
                                result.additional.append(glue.rrsets[rtype])
                return True
            cut = parent(cut)
        return False

    @staticmethod
    def _negative(zone: Zone, result: Answer) -> None:
        soa = zone.soa
        result.authority.append(RRset(soa.name, soa.rtype, zone.negative_ttl, soa.rdatas))


def _owned_by(rrset: RRset, name: bytes) -> RRset:
    """A wildcard's RRset, synthesised at the name asked for (RFC 4592 §2.1.1)."""
    return RRset(name, rrset.rtype, rrset.ttl, rrset.rdatas)


def _mark_existing(existing: set[bytes], name: bytes, origin: bytes) -> None:
    """Add ``name`` and every ancestor down to the origin (empty non-terminals exist)."""
    while name not in existing:
        existing.add(name)
        if name == origin:
            break
        name = parent(name)


# -- master file reading ----------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    line: int
    blank_owner: bool
    tokens: list[tuple[str, bool]]  # (text, was quoted)


def _entries(text: str, source: str) -> Iterator[_Entry]:
    """Split a master file into entries (RFC 1035 §5.1): parentheses join lines."""
    pos, end, line = 0, len(text), 1
    depth = 0
    tokens: list[tuple[str, bool]] = []
    start_line = 1
    blank_owner = text[:1] in (" ", "\t")
    while pos < end:
        ch = text[pos]
        if ch == "\n":
            line += 1
            pos += 1
            if depth == 0:
                if tokens:
                    yield _Entry(start_line, blank_owner, tokens)
                tokens = []
                start_line = line
                blank_owner = text[pos : pos + 1] in (" ", "\t")
            continue
        if ch in " \t\r":
            pos += 1
        elif ch == ";":
            newline = text.find("\n", pos)
            pos = end if newline < 0 else newline
        elif ch == "(":
            depth += 1
            pos += 1
        elif ch == ")":
            if depth == 0:
                raise ZoneError(f"{source}:{line}: ')' without '('")
            depth -= 1
            pos += 1
        elif ch == '"':
            value, pos = _quoted(text, pos + 1, source, line)
            tokens.append((value, True))
        else:
            start = pos
            while pos < end and text[pos] not in ' \t\r\n;()"':
                pos += 2 if text[pos] == "\\" else 1
            tokens.append((text[start:pos], False))
    if depth:
        raise ZoneError(f"{source}:{start_line}: '(' never closed")
    if tokens:
        yield _Entry(start_line, blank_owner, tokens)


def _quoted(text: str, pos: int, source: str, line: int) -> tuple[str, int]:
    """A quoted string's raw content (escapes kept) and the position after its quote."""
    start = pos
    while pos < len(text):
        ch = text[pos]
        if ch == "\\":
            pos += 2
            continue
        if ch == '"':
            return text[start:pos], pos + 1
        if ch == "\n":
            break
        pos += 1
    raise ZoneError(f"{source}:{line}: unterminated quoted string")


def _unescape(text: str) -> bytes:
    """Decode ``\\X`` and ``\\DDD`` escapes of a character-string (RFC 1035 §5.1)."""
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            digits = text[i + 1 : i + 4]
            if len(digits) == 3 and digits.isascii() and digits.isdigit():
                value = int(digits)
                if value > 255:
                    raise ValueError(f"bad escape \\{digits}")
                out.append(value)
                i += 4
            else:
                out += text[i + 1].encode()
                i += 2
            continue
        out += ch.encode()
        i += 1
    return bytes(out)


def parse_ttl(text: str) -> int:
    """``3600`` or BIND's ``1h30m`` (s, m, h, d, w), at most 2^31-1 (RFC 2181 §8)."""
    if text.isascii() and text.isdigit():
        value = int(text)
    else:
        value, number = 0, ""
        for ch in text.lower():
            if ch.isascii() and ch.isdigit():
                number += ch
            elif ch in _TTL_UNITS and number:
                value += int(number) * _TTL_UNITS[ch]
                number = ""
            else:
                raise ValueError(f"not a TTL: {text!r}")
        if number:
            raise ValueError(f"not a TTL: {text!r} (a number without a unit after a unit)")
    if value > MAX_TTL_S:
        raise ValueError(f"TTL {text} is over 2^31-1 seconds")
    return value


def _looks_like_ttl(token: str) -> bool:
    return bool(token) and token[0].isascii() and token[0].isdigit()


def _u(text: str, bits: int, what: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{what} must be a number, got {text!r}")
    value = int(text)
    if value >= 1 << bits:
        raise ValueError(f"{what} {value} does not fit {bits} bits")
    return value


def _rdata(rtype: int, args: list[tuple[str, bool]], origin: bytes | None) -> tuple:
    """Parse the RDATA of one record into wire parts (bytes and compressible names)."""
    words = [text for text, _ in args]
    if words and words[0] == "\\#" and not args[0][1]:
        return _generic_rdata(rtype, words[1:])

    def expect(count: int) -> None:
        if len(words) != count:
            raise ValueError(
                f"{RRType(rtype).name} takes {count} field(s), got {len(words)}: {' '.join(words)}"
            )

    if rtype == RRType.A:
        expect(1)
        return (ipaddress.IPv4Address(words[0]).packed,)
    if rtype == RRType.AAAA:
        expect(1)
        return (ipaddress.IPv6Address(words[0]).packed,)
    if rtype in (RRType.NS, RRType.CNAME, RRType.PTR):
        expect(1)
        return (CompressibleName(name_from_text(words[0], origin)),)
    if rtype == RRType.MX:
        expect(2)
        preference = _u(words[0], 16, "MX preference")
        return (_U16.pack(preference), CompressibleName(name_from_text(words[1], origin)))
    if rtype == RRType.SOA:
        expect(7)
        mname = CompressibleName(name_from_text(words[0], origin))
        rname = CompressibleName(name_from_text(words[1], origin))
        serial = _u(words[2], 32, "SOA serial")
        times = [parse_ttl(w) for w in words[3:]]
        return (mname, rname, _SOA_TIMES.pack(serial, *times))
    if rtype == RRType.TXT:
        if not words:
            raise ValueError("TXT needs at least one string")
        strings = []
        for word in words:
            raw = _unescape(word)
            if len(raw) > MAX_CHARACTER_STRING_BYTES:
                raise ValueError("TXT string longer than 255 bytes; split it into several")
            strings.append(bytes((len(raw),)) + raw)
        return (b"".join(strings),)
    if rtype == RRType.SRV:
        expect(4)
        fixed = _SRV.pack(
            _u(words[0], 16, "SRV priority"),
            _u(words[1], 16, "SRV weight"),
            _u(words[2], 16, "SRV port"),
        )
        # RFC 2782: the target is not compressed.
        return (fixed, name_from_text(words[3], origin))
    if rtype == RRType.CAA:
        expect(3)
        flags = _u(words[0], 8, "CAA flags")
        tag = words[1]
        if not (1 <= len(tag) <= 15 and tag.isascii() and tag.isalnum()):
            raise ValueError(f"CAA tag must be 1-15 letters or digits, got {tag!r}")
        value = _unescape(words[2])
        return (bytes((flags, len(tag))) + tag.encode().lower() + value,)
    raise ValueError(
        f"{type_name(rtype)} is not a type we know: write its RDATA in the generic form"
        " \\# <length> <hex> (RFC 3597 §5)"
    )


def _generic_rdata(rtype: int, words: list[str]) -> tuple:
    """RFC 3597 §5: ``\\# <length> <hex words>``, kept as opaque bytes."""
    if rtype in _NAMES_INSIDE:
        raise ValueError(
            f"{type_name(rtype)} holds domain names; write it in its usual form, not \\#"
        )
    if not words:
        raise ValueError("\\# needs the RDATA length")
    length = _u(words[0], 16, "RDATA length")
    digits = "".join(words[1:])
    if not (digits.isascii() and all(c in _HEX_DIGITS for c in digits)) or len(digits) % 2:
        raise ValueError("RDATA after \\# <length> must be hexadecimal, two digits a byte")
    raw = bytes.fromhex(digits)
    if len(raw) != length:
        raise ValueError(f"\\# says {length} bytes of RDATA but the hex holds {len(raw)}")
    # A known type's RDATA must still be well formed: the reply would otherwise carry
    # a record its clients cannot read.
    size = _FIXED_RDATA_BYTES.get(rtype)
    if size is not None and length != size:
        raise ValueError(f"{type_name(rtype)} RDATA is {size} bytes, not {length}")
    if rtype == RRType.TXT:
        pos = 0
        while pos < length:
            pos += 1 + raw[pos]
        if length == 0 or pos != length:
            raise ValueError("TXT RDATA must be whole character-strings (a length byte each)")
    if rtype == RRType.CAA and (length < 2 or not 1 <= raw[1] <= min(15, length - 2)):
        raise ValueError("CAA RDATA must be flags, a tag length of 1-15 and the tag")
    return (raw,)


def _record_type(text: str) -> int:
    """A type mnemonic, or ``TYPEnnn`` for any type by number (RFC 3597 §5)."""
    upper = text.upper()
    rtype = _TYPES.get(upper)
    if rtype is not None:
        return rtype
    number = upper[4:]
    if upper.startswith("TYPE") and number.isascii() and number.isdigit():
        rtype = int(number)
        if rtype > 0xFFFF:
            raise ValueError(f"{text}: a type is 16 bits")
        if rtype in _TYPES_REFUSED or 128 <= rtype <= 255:
            why = _TYPES_REFUSED.get(rtype, "a meta or query type, RFC 6895 §3.1")
            raise ValueError(f"{text} cannot be served from a zone ({why})")
        return rtype
    raise ValueError(f"unsupported record type {text!r}")


_NAMES_INSIDE = frozenset((RRType.NS, RRType.CNAME, RRType.SOA, RRType.PTR, RRType.MX,
                           RRType.SRV))  # fmt: skip
_FIXED_RDATA_BYTES = {RRType.A: 4, RRType.AAAA: 16}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_TYPES_REFUSED = {
    0: "reserved",
    RRType.OPT: "OPT is a pseudo-record of EDNS, RFC 6891",
    **dict.fromkeys((43, 46, 47, 48, 50, 51), "DNSSEC: we sign nothing and prove nothing"),
}

_TYPES = {t.name: t.value for t in (RRType.A, RRType.AAAA, RRType.NS, RRType.CNAME, RRType.SOA,
                                     RRType.PTR, RRType.MX, RRType.TXT, RRType.SRV, RRType.CAA)}  # fmt: skip


def load_zone(path: str | Path, origin: str | None = None) -> Zone:
    """Read one master file. The zone's origin is the owner of its SOA (first record)."""
    path = Path(path)
    source = str(path)
    try:
        if path.stat().st_size > MAX_ZONE_FILE_BYTES:
            raise ZoneError(f"{source}: larger than {MAX_ZONE_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ZoneError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ZoneError(f"{source}: not UTF-8 text ({exc.reason})") from None
    return parse_zone(text, source, origin)


def parse_zone(text: str, source: str = "<zone>", origin: str | None = None) -> Zone:
    current_origin = (
        name_from_text(origin if origin.endswith(".") else origin + ".") if origin else None
    )
    default_ttl: int | None = None
    last_ttl: int | None = None
    last_owner: bytes | None = None
    zone_origin: bytes | None = None
    soa: RRset | None = None
    nodes: dict[bytes, Node] = {}
    for entry in _entries(text, source):
        where = f"{source}:{entry.line}"
        tokens = entry.tokens
        first, quoted = tokens[0]
        try:
            if first.startswith("$") and not quoted and not entry.blank_owner:
                directive = first.upper()
                if directive == "$ORIGIN":
                    if len(tokens) != 2:
                        raise ValueError("$ORIGIN takes one name")
                    current_origin = name_from_text(tokens[1][0], current_origin)
                elif directive == "$TTL":
                    if len(tokens) != 2:
                        raise ValueError("$TTL takes one TTL")
                    default_ttl = parse_ttl(tokens[1][0])
                elif directive == "$INCLUDE":
                    raise ValueError("$INCLUDE is not supported: keep a zone in one file")
                else:
                    raise ValueError(f"unknown directive {first}")
                continue
            if entry.blank_owner:
                if last_owner is None:
                    raise ValueError("first record has no owner name")
                owner = last_owner
                rest = tokens
            else:
                owner = name_from_text(first, current_origin)
                rest = tokens[1:]
            ttl: int | None = None
            index = 0
            while index < len(rest) and index < 2:
                word = rest[index][0]
                if _looks_like_ttl(word) and ttl is None:
                    ttl = parse_ttl(word)
                elif word.upper() == "IN":
                    pass
                elif word.upper() in _CLASSES_REFUSED:
                    raise ValueError(f"class {word} not supported: only IN")
                else:
                    break
                index += 1
            if index >= len(rest):
                raise ValueError("record has no type")
            rtype = _record_type(rest[index][0])
            rdata = _rdata(rtype, rest[index + 1 :], current_origin)
            if ttl is None:
                if default_ttl is not None:
                    ttl = default_ttl
                elif last_ttl is not None:
                    ttl = last_ttl  # RFC 1035 §5.1: the last explicit TTL
                elif rtype == RRType.SOA:
                    ttl = _SOA_TIMES.unpack(rdata[2])[4]
                else:
                    raise ValueError("no TTL given and no $TTL before this record")
            else:
                last_ttl = ttl
        except ValueError as exc:
            raise ZoneError(f"{where}: {exc}") from None
        last_owner = owner
        key = owner.lower()
        if zone_origin is None:
            if rtype != RRType.SOA:
                raise ZoneError(f"{where}: the first record must be the zone's SOA")
            zone_origin = key
        elif not is_subdomain(key, zone_origin):
            raise ZoneError(
                f"{where}: {name_to_text(owner)} is outside the zone {name_to_text(zone_origin)}"
            )
        node = nodes.setdefault(key, Node())
        if rtype == RRType.SOA and (key != zone_origin or soa is not None):
            raise ZoneError(f"{where}: only one SOA, at the zone apex")
        if rtype == RRType.CNAME and node.rrsets:
            raise ZoneError(f"{where}: a CNAME cannot sit with other data (RFC 1034 §3.6.2)")
        if rtype != RRType.CNAME and RRType.CNAME in node.rrsets:
            raise ZoneError(f"{where}: {name_to_text(owner)} already has a CNAME")
        rrset = node.rrsets.get(rtype)
        if rrset is None:
            rrset = node.rrsets[rtype] = RRset(owner, rtype, ttl, [])
            if rtype == RRType.SOA:
                soa = rrset
        elif rtype == RRType.CNAME:
            raise ZoneError(f"{where}: a name has at most one CNAME")
        else:
            rrset.ttl = min(rrset.ttl, ttl)  # RFC 2181 §5.2: one TTL per RRset
        if rdata not in rrset.rdatas:  # RFC 2181 §5: an RRset holds no duplicates
            rrset.rdatas.append(rdata)
    if zone_origin is None or soa is None:
        raise ZoneError(f"{source}: no SOA record; a zone starts with its SOA")
    apex = nodes[zone_origin]
    if RRType.NS not in apex.rrsets:
        raise ZoneError(f"{source}: no NS record at the apex {name_to_text(zone_origin)}")
    existing: set[bytes] = set()
    cuts: set[bytes] = set()
    for key, node in nodes.items():
        _mark_existing(existing, key, zone_origin)
        if key != zone_origin and RRType.NS in node.rrsets:
            cuts.add(key)
    return Zone(zone_origin, source, soa, nodes, existing, cuts)
