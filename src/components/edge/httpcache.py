"""A shared HTTP cache (RFC 9111) as pure policy and storage: no sockets, clock passed in.

What it is. The rules a caching proxy applies between "a response arrived from the
origin" and "this stored response may answer that request", and the byte-bounded store
that holds the responses. The asyncio shell (``server.py``) asks four questions, each a
function here, and does the I/O the answer calls for:

1. *May I store this response?* ``storable`` (RFC 9111 §3): a method and status the
   cache understands, no ``no-store``, no ``private`` (we are a *shared* cache), a request
   with ``Authorization`` only when the response says ``public``, ``s-maxage`` or
   ``must-revalidate`` (§3.5), and something that gives it a lifetime: an explicit
   ``max-age``/``s-maxage``/``Expires``/``public``, or a status code that is heuristically
   cacheable (RFC 9110 §15.1).
2. *For how long is it fresh, and how old is it?* ``freshness_lifetime`` (§4.2.1:
   ``s-maxage`` over ``max-age`` over ``Expires - Date``, else a heuristic of 10% of the
   time since ``Last-Modified``, capped, §4.2.2) and ``Entry.current_age`` (§4.2.3: the
   larger of the apparent age and the corrected ``Age`` value, plus the time spent in the
   cache). The age is sent with every answer from the cache (``Age``, §5.1).
3. *May this stored response answer this request now?* ``decide``: fresh responses are
   served; stale ones are revalidated, unless the client allows staleness
   (``max-stale``) or the origin allowed it (RFC 5861 ``stale-while-revalidate``); the
   request can demand more (``max-age``, ``min-fresh``, ``no-cache``); the response can
   forbid staleness (``must-revalidate``, ``proxy-revalidate``, ``s-maxage``, §4.2.4) and
   require validation on every use (``no-cache``, §5.2.2.4). ``stale_if_error`` is the
   same question asked after the origin failed (RFC 5861 §4).
4. *Which stored response is it?* ``Store.lookup``: the primary key is the host and
   target; ``Vary`` adds a secondary key made of the named request fields' values
   (§4.1), normalised so that insignificant whitespace does not split the cache.

A ``304 Not Modified`` from the origin freshens the stored response in place
(``Entry.freshen``, §3.2 and §4.3.4): its fields replace the stored ones, except the
framing fields, and the clock readings restart. Clients' own conditional requests
(``If-None-Match``, ``If-Modified-Since``, RFC 9110 §13) and ``Range`` requests
(RFC 9110 §14) are evaluated against the stored response by ``conditional_304`` and
``select_range``.

Storage is a byte-bounded LRU (``Store``): every stored response is charged its body plus
its header bytes plus a fixed overhead, and the least recently used responses are evicted
until a new one fits. Secondary indexes for surrogate keys (``Surrogate-Key``, a
Fastly/Varnish convention) and for the variants of a URL make purges cheap.

Where this differs from a browser cache: it is shared, so ``private`` is never stored and
``s-maxage`` wins; responses with ``Set-Cookie`` are stored only when the origin says
``public`` or ``s-maxage`` (a conservative choice Varnish also makes, RFC 9111 §7.3 warns
about personalised content in shared caches).
"""

from __future__ import annotations

import email.utils
from collections import OrderedDict
from dataclasses import dataclass, field

Headers = list[tuple[bytes, bytes]]

#: RFC 9110 §15.1: status codes whose responses are heuristically cacheable.
HEURISTIC_STATUS = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
#: Status codes we store at all (206 is excluded: we store full responses only).
STORABLE_STATUS = HEURISTIC_STATUS | frozenset({302, 303, 307, 400, 403, 500, 502, 503, 504})
#: RFC 9111 §4.2.2: a heuristic lifetime is a fraction of the Last-Modified age.
HEURISTIC_FRACTION = 0.1
#: RFC 9111 §1.2.2: delta-seconds beyond 2**31 are treated as 2**31.
MAX_DELTA = 2**31
#: Bytes charged per entry beyond its header and body bytes (objects, indexes).
ENTRY_OVERHEAD = 256
#: Most variants (distinct Vary secondary keys) kept for one URL.
MAX_VARIANTS = 32

#: Hop-by-hop fields (RFC 9110 §7.6.1) and framing fields never stored with a response.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te",
                        b"transfer-encoding", b"upgrade", b"trailer",
                        b"proxy-authenticate", b"proxy-authorization"})  # fmt: skip
#: Fields a 304 must not overwrite in the stored response (§3.2): the stored body's framing.
NOT_UPDATED = HOP_BY_HOP | {b"content-length", b"content-range"}
#: Fields the cache writes itself on every answer (dropped from what is stored).
OWN_FIELDS = frozenset({b"age", b"x-cache", b"content-length", b"surrogate-key"})

# Outcomes of ``decide``.
FRESH = "fresh"  # serve as it is
STALE_OK = "stale"  # serve stale, the client allowed it (max-stale)
STALE_REVALIDATE = "swr"  # serve stale and revalidate in the background (RFC 5861)
VALIDATE = "validate"  # ask the origin first (conditional request if possible)


# -- directives ---------------------------------------------------------------------------


def parse_directives(values: list[bytes] | bytes | None) -> dict[bytes, bytes | None]:
    """Cache-Control (RFC 9111 §5.2) as ``{lowercase name: value or None}``.

    Lists may span several field lines; quoted-string values are unquoted (commas inside
    quotes do not split); the first occurrence of a directive wins (§4.2.1 allows it).
    Garbage is kept as whatever directive name it spells, which matches nothing.
    """
    if values is None:
        return {}
    text = values if isinstance(values, bytes) else b",".join(values)
    result: dict[bytes, bytes | None] = {}
    pos, n = 0, len(text)
    while pos < n:
        comma = text.find(b",", pos)
        eq = text.find(b"=", pos)
        if eq < 0 or (0 <= comma < eq):
            end = n if comma < 0 else comma
            name = text[pos:end].strip(b" \t").lower()
            if name and name not in result:
                result[name] = None
            pos = end + 1
            continue
        name = text[pos:eq].strip(b" \t").lower()
        pos = eq + 1
        while pos < n and text[pos] in b" \t":
            pos += 1
        if pos < n and text[pos] == 0x22:  # quoted-string, with backslash escapes
            pos += 1
            out = bytearray()
            while pos < n and text[pos] != 0x22:
                if text[pos] == 0x5C and pos + 1 < n:
                    pos += 1
                out.append(text[pos])
                pos += 1
            value = bytes(out)
            comma = text.find(b",", pos)
            pos = n if comma < 0 else comma + 1
        else:
            end = n if comma < 0 else comma
            value = text[pos:end].strip(b" \t")
            pos = end + 1
        if name and name not in result:
            result[name] = value
    return result


def delta_seconds(value: bytes | None) -> int | None:
    """``1*DIGIT`` (§1.2.2), capped at 2**31; None if absent or not a number."""
    if value is None or not value or not value.isdigit():
        return None
    return min(int(value), MAX_DELTA) if len(value) < 12 else MAX_DELTA


def http_date(value: bytes | None) -> float | None:
    """An HTTP-date (RFC 9110 §5.6.7, all three formats) as Unix seconds, or None."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(value.decode("latin-1"))
    except (ValueError, TypeError, IndexError):
        return None
    if parsed is None:
        return None
    try:
        return float(email.utils.mktime_tz(parsed))
    except (ValueError, OverflowError):
        return None


def format_http_date(seconds: float) -> bytes:
    return email.utils.formatdate(seconds, usegmt=True).encode()


def get(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def get_all(headers: Headers, name: bytes) -> list[bytes]:
    return [value for key, value in headers if key.lower() == name]


# -- storing ------------------------------------------------------------------------------


def storable(
    method: bytes,
    request_headers: Headers,
    status: int,
    response_headers: Headers,
    request_cc: dict | None = None,
    response_cc: dict | None = None,
) -> tuple[bool, str]:
    """May a shared cache store this response (RFC 9111 §3)? ``(yes, why not)``."""
    if method != b"GET":
        return False, "method"
    if status not in STORABLE_STATUS:
        return False, "status"
    rcc = (
        parse_directives(get_all(response_headers, b"cache-control"))
        if response_cc is None
        else response_cc
    )
    qcc = (
        parse_directives(get_all(request_headers, b"cache-control"))
        if request_cc is None
        else request_cc
    )
    if b"no-store" in rcc or b"no-store" in qcc:
        return False, "no-store"
    if b"private" in rcc:
        return False, "private"
    if get(request_headers, b"authorization") is not None and not (
        b"public" in rcc or b"s-maxage" in rcc or b"must-revalidate" in rcc
    ):
        return False, "authorization"
    vary = get_all(response_headers, b"vary")
    if any(b"*" in [v.strip() for v in value.split(b",")] for value in vary):
        return False, "vary-star"
    if get(response_headers, b"set-cookie") is not None and not (
        b"public" in rcc or b"s-maxage" in rcc
    ):
        return False, "set-cookie"
    explicit = (
        b"public" in rcc
        or b"max-age" in rcc
        or b"s-maxage" in rcc
        or get(response_headers, b"expires") is not None
    )
    if not explicit and status not in HEURISTIC_STATUS:
        return False, "no-lifetime"
    return True, ""


def freshness_lifetime(
    headers: Headers, cc: dict, date_value: float, status: int, heuristic_max: float
) -> float:
    """Seconds the response is fresh for (RFC 9111 §4.2.1 and §4.2.2)."""
    if b"s-maxage" in cc:
        value = delta_seconds(cc[b"s-maxage"])
        return float(value) if value is not None else 0.0  # invalid: treat as stale
    if b"max-age" in cc:
        value = delta_seconds(cc[b"max-age"])
        return float(value) if value is not None else 0.0
    expires = get(headers, b"expires")
    if expires is not None:
        when = http_date(expires)
        # §5.3: an invalid Expires (such as "0") means already expired.
        return max(0.0, when - date_value) if when is not None else 0.0
    if status in HEURISTIC_STATUS or b"public" in cc:
        modified = http_date(get(headers, b"last-modified"))
        if modified is not None and modified < date_value:
            return min((date_value - modified) * HEURISTIC_FRACTION, heuristic_max)
    return 0.0


def strip_for_storage(headers: Headers) -> Headers:
    """The stored copy of the fields: no hop-by-hop, no fields we write ourselves."""
    listed = set()
    for key, value in headers:
        if key.lower() == b"connection":
            listed.update(t.strip().lower() for t in value.split(b","))
    return [
        (k, v)
        for k, v in headers
        if (lk := k.lower()) not in HOP_BY_HOP and lk not in OWN_FIELDS and lk not in listed
    ]


def vary_names(headers: Headers) -> tuple[bytes, ...]:
    names: list[bytes] = []
    for value in get_all(headers, b"vary"):
        for name in value.split(b","):
            name = name.strip(b" \t").lower()
            if name and name not in names:
                names.append(name)
    return tuple(sorted(names))


def secondary_key(names: tuple[bytes, ...], request_headers: Headers) -> tuple:
    """The request's values for the Vary fields, normalised (§4.1): the secondary key."""
    if not names:
        return ()
    out = []
    for name in names:
        values = get_all(request_headers, name)
        # Combine field lines and collapse whitespace: "a,  b" and "a, b" are the same.
        joined = b", ".join(b" ".join(v.split()) for v in values) if values else None
        out.append(joined)
    return tuple(out)


@dataclass(slots=True, eq=False)
class Entry:
    """One stored response with the clock readings RFC 9111 §4.2.3 needs."""

    host: bytes
    target: bytes
    status: int
    reason: bytes
    headers: Headers
    body: bytes
    request_time: float
    response_time: float
    vary: tuple[bytes, ...] = ()
    secondary: tuple = ()
    surrogate_keys: tuple[bytes, ...] = ()
    # Derived by ``_derive``:
    cc: dict = field(default_factory=dict)
    date_value: float = 0.0
    corrected_initial_age: float = 0.0
    lifetime: float = 0.0
    etag: bytes | None = None
    last_modified: bytes | None = None
    size: int = 0
    #: Serialised fields (without Age/X-Cache/Content-Length), rebuilt on change.
    head_fields: bytes = b""

    @classmethod
    def from_response(
        cls,
        host: bytes,
        target: bytes,
        status: int,
        reason: bytes,
        headers: Headers,
        body: bytes,
        request_time: float,
        response_time: float,
        request_headers: Headers,
        heuristic_max: float,
    ) -> Entry:
        names = vary_names(headers)
        keys: list[bytes] = []
        for value in get_all(headers, b"surrogate-key"):
            keys.extend(value.split())
        entry = cls(
            host, target, status, reason, strip_for_storage(headers), body,
            request_time, response_time, names, secondary_key(names, request_headers),
            tuple(dict.fromkeys(keys)),
        )  # fmt: skip
        entry._derive(get(headers, b"age"), heuristic_max)
        return entry

    def _derive(self, age_header: bytes | None, heuristic_max: float) -> None:
        headers = self.headers
        self.cc = parse_directives(get_all(headers, b"cache-control"))
        date = http_date(get(headers, b"date"))
        # §4.2.3: without a usable Date, the time of receipt stands in for it.
        self.date_value = date if date is not None else self.response_time
        apparent_age = max(0.0, self.response_time - self.date_value)
        age_value = delta_seconds(age_header) or 0
        response_delay = self.response_time - self.request_time
        self.corrected_initial_age = max(apparent_age, age_value + response_delay)
        self.lifetime = freshness_lifetime(
            headers, self.cc, self.date_value, self.status, heuristic_max
        )
        self.etag = get(headers, b"etag")
        self.last_modified = get(headers, b"last-modified")
        self.head_fields = b"".join([k + b": " + v + b"\r\n" for k, v in headers])
        self.size = len(self.body) + len(self.head_fields) + len(self.target) + ENTRY_OVERHEAD

    def current_age(self, now: float) -> float:
        """RFC 9111 §4.2.3: corrected initial age plus the time resident here."""
        return self.corrected_initial_age + max(0.0, now - self.response_time)

    def staleness(self, now: float) -> float:
        return self.current_age(now) - self.lifetime

    def freshen(
        self, headers_304: Headers, request_time: float, response_time: float,
        heuristic_max: float,
    ) -> None:  # fmt: skip
        """Merge a 304's fields into the stored response (RFC 9111 §3.2, §4.3.4)."""
        updates: dict[bytes, list[tuple[bytes, bytes]]] = {}
        for key, value in strip_for_storage(headers_304):
            lk = key.lower()
            if lk not in NOT_UPDATED:
                updates.setdefault(lk, []).append((key, value))
        merged: Headers = []
        done: set[bytes] = set()
        for key, value in self.headers:
            lk = key.lower()
            if lk in updates:
                if lk not in done:
                    merged.extend(updates[lk])
                    done.add(lk)
            else:
                merged.append((key, value))
        for lk, pairs in updates.items():
            if lk not in done:
                merged.extend(pairs)
        self.headers = merged
        self.request_time = request_time
        self.response_time = response_time
        self._derive(get(headers_304, b"age"), heuristic_max)


# -- reusing ------------------------------------------------------------------------------


def request_directives(headers: Headers) -> dict:
    values = get_all(headers, b"cache-control")
    if values:
        return parse_directives(values)
    # RFC 9111 §5.4: Pragma: no-cache counts only when there is no Cache-Control.
    pragma = get(headers, b"pragma")
    if pragma is not None and b"no-cache" in pragma.lower():
        return {b"no-cache": None}
    return {}


def forbids_stale(entry: Entry) -> bool:
    """must-revalidate, proxy-revalidate or s-maxage: never serve stale (§4.2.4, §5.2.2)."""
    cc = entry.cc
    return b"must-revalidate" in cc or b"proxy-revalidate" in cc or b"s-maxage" in cc


def decide(entry: Entry, request_cc: dict, now: float) -> str:
    """May ``entry`` answer a request with directives ``request_cc`` at ``now`` (§4)?"""
    cc = entry.cc
    if b"no-cache" in cc or b"no-cache" in request_cc:
        return VALIDATE
    age = entry.current_age(now)
    lifetime = entry.lifetime
    if request_cc:
        max_age = delta_seconds(request_cc.get(b"max-age"))
        if max_age is not None and age > max_age:
            return VALIDATE
        min_fresh = delta_seconds(request_cc.get(b"min-fresh"))
        if min_fresh is not None and lifetime - age < min_fresh:
            return VALIDATE
    if lifetime > age:
        return FRESH
    if forbids_stale(entry):
        return VALIDATE
    staleness = age - lifetime
    if request_cc and b"max-stale" in request_cc:
        raw = request_cc[b"max-stale"]
        limit = delta_seconds(raw)
        if raw is None or (limit is not None and staleness <= limit):
            return STALE_OK
    swr = delta_seconds(cc.get(b"stale-while-revalidate"))
    if swr is not None and staleness <= swr:
        return STALE_REVALIDATE
    return VALIDATE


def stale_if_error(entry: Entry, request_cc: dict, now: float) -> bool:
    """RFC 5861 §4: may a stale ``entry`` stand in for an origin error?"""
    if forbids_stale(entry) or b"no-cache" in request_cc or b"no-cache" in entry.cc:
        return False  # §4.2.4: no stale answer where a directive demands validation
    staleness = entry.staleness(now)
    if staleness <= 0:
        # Still fresh, but the client's max-age or min-fresh sent us to the origin.
        return b"max-age" not in request_cc and b"min-fresh" not in request_cc
    limits = [delta_seconds(entry.cc.get(b"stale-if-error")),
              delta_seconds(request_cc.get(b"stale-if-error"))]  # fmt: skip
    return any(limit is not None and staleness <= limit for limit in limits)


def validators(entry: Entry) -> Headers:
    """Fields of a conditional request that validates ``entry`` (RFC 9111 §4.3.1)."""
    out: Headers = []
    if entry.etag is not None:
        out.append((b"If-None-Match", entry.etag))
    if entry.last_modified is not None:
        out.append((b"If-Modified-Since", entry.last_modified))
    return out


def _opaque(tag: bytes) -> bytes:
    tag = tag.strip()
    return tag[2:] if tag.startswith(b"W/") else tag


def conditional_304(entry: Entry, request_headers: Headers) -> bool:
    """Does the client's conditional GET/HEAD match the stored response (RFC 9110 §13.2.2)?

    If-None-Match uses the weak comparison and, when present, If-Modified-Since is ignored.
    """
    if entry.status != 200:
        return False
    inm = get_all(request_headers, b"if-none-match")
    if inm:
        if entry.etag is None:
            return any(v.strip() == b"*" for v in inm)
        mine = _opaque(entry.etag)
        for value in inm:
            for tag in value.split(b","):
                tag = tag.strip()
                if tag == b"*" or _opaque(tag) == mine:
                    return True
        return False
    ims = http_date(get(request_headers, b"if-modified-since"))
    if ims is None:
        return False
    modified = http_date(entry.last_modified) if entry.last_modified else entry.date_value
    return modified is not None and modified <= ims


#: Fields a 304 carries from the stored 200 (RFC 9110 §15.4.5).
HEADERS_IN_304 = frozenset({b"cache-control", b"content-location", b"date", b"etag",
                            b"expires", b"vary", b"last-modified"})  # fmt: skip


# -- ranges -------------------------------------------------------------------------------


def select_range(
    range_value: bytes | None, if_range: bytes | None, entry: Entry
) -> tuple[int, int] | str | None:
    """RFC 9110 §14.2: one byte range ``(first, last)`` to send as 206, "416", or None (200).

    Only ``bytes=`` with a single range is honoured; several ranges are answered with the
    whole representation, which §14.2 allows ("a server MAY ignore the Range header").
    ``If-Range`` must match the stored strong ETag or exact Last-Modified date (§13.1.5).
    """
    if range_value is None or entry.status != 200:
        return None
    if if_range is not None:
        if if_range.startswith(b'"'):
            if entry.etag is None or entry.etag.startswith(b"W/") or entry.etag != if_range:
                return None
        elif entry.last_modified is None or http_date(if_range) != http_date(entry.last_modified):
            return None
    unit, eq, spec = range_value.partition(b"=")
    if not eq or unit.strip().lower() != b"bytes":
        return None
    parts = [p.strip() for p in spec.split(b",") if p.strip()]
    if len(parts) != 1:
        return None
    first_text, dash, last_text = parts[0].partition(b"-")
    if not dash:
        return None
    length = len(entry.body)
    if not first_text:  # suffix range: the last N bytes
        if not last_text.isdigit():
            return None
        suffix = int(last_text)
        if suffix == 0 or length == 0:
            return "416"
        return max(0, length - suffix), length - 1
    if not first_text.isdigit() or (last_text and not last_text.isdigit()):
        return None
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # invalid range-spec: ignore the field
    if first >= length:
        return "416"
    last = int(last_text) if last_text else length - 1
    return first, min(last, length - 1)


# -- storage ------------------------------------------------------------------------------


class Store:
    """Stored responses, byte-bounded, least recently used evicted first.

    Keys: ``(host, target)`` is the primary key; each primary key remembers the Vary
    field names of its latest stored response and holds up to ``MAX_VARIANTS``
    variants by secondary key. LRU order is kept per variant in one ``OrderedDict``.
    """

    def __init__(self, max_bytes: int, max_object_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_object_bytes = max_object_bytes
        self.bytes = 0
        self.evictions = 0
        self._lru: OrderedDict[tuple, Entry] = OrderedDict()
        self._vary: dict[tuple[bytes, bytes], tuple[bytes, ...]] = {}
        self._variants: dict[tuple[bytes, bytes], set[tuple]] = {}
        self._tags: dict[bytes, set[tuple]] = {}

    def __len__(self) -> int:
        return len(self._lru)

    def fits(self, size: int) -> bool:
        return size <= self.max_object_bytes and size <= self.max_bytes

    def lookup(self, host: bytes, target: bytes, request_headers: Headers) -> Entry | None:
        primary = (host, target)
        names = self._vary.get(primary)
        if names is None:
            return None
        key = (host, target, secondary_key(names, request_headers)) if names else (host, target, ())
        entry = self._lru.get(key)
        if entry is not None:
            self._lru.move_to_end(key)
        return entry

    def put(self, entry: Entry) -> bool:
        """Store ``entry`` (replacing its variant), evicting LRU entries; False if too big."""
        if not self.fits(entry.size):
            return False
        primary = (entry.host, entry.target)
        if self._vary.get(primary, entry.vary) != entry.vary:
            # The URL now varies on other fields: the old variants cannot be selected.
            self.remove_url(entry.host, entry.target)
        key = (entry.host, entry.target, entry.secondary)
        old = self._lru.get(key)
        if old is not None:
            self._remove(key)
        variants = self._variants.setdefault(primary, set())
        if len(variants) >= MAX_VARIANTS:
            oldest = next(k for k in self._lru if k in variants)
            self._remove(oldest)
            self.evictions += 1
            variants = self._variants.setdefault(primary, set())
        while self.bytes + entry.size > self.max_bytes and self._lru:
            self._remove(next(iter(self._lru)))
            self.evictions += 1
        self._lru[key] = entry
        self._vary[primary] = entry.vary
        self._variants.setdefault(primary, set()).add(key)
        for tag in entry.surrogate_keys:
            self._tags.setdefault(tag, set()).add(key)
        self.bytes += entry.size
        return True

    def resize(self, entry: Entry, old_size: int) -> None:
        """Account for an entry whose fields changed in place (a 304 merge)."""
        if self._lru.get((entry.host, entry.target, entry.secondary)) is not entry:
            return  # purged or evicted while it was being revalidated: not ours to count
        self.bytes += entry.size - old_size
        while self.bytes > self.max_bytes and len(self._lru) > 1:
            key = next(iter(self._lru))
            if self._lru[key] is entry:
                break
            self._remove(key)
            self.evictions += 1

    def _remove(self, key: tuple) -> None:
        entry = self._lru.pop(key)
        self.bytes -= entry.size
        primary = key[:2]
        variants = self._variants.get(primary)
        if variants is not None:
            variants.discard(key)
            if not variants:
                del self._variants[primary]
                self._vary.pop(primary, None)
        for tag in entry.surrogate_keys:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tags[tag]

    def remove_entry(self, entry: Entry) -> None:
        key = (entry.host, entry.target, entry.secondary)
        if self._lru.get(key) is entry:
            self._remove(key)

    # -- invalidation (RFC 9111 §4.4) and purge ------------------------------------------

    def remove_url(self, host: bytes | None, target: bytes) -> int:
        """Every variant of ``target`` (on ``host``, or on any host when None)."""
        primaries = (
            [(host, target)] if host is not None else [p for p in self._variants if p[1] == target]
        )
        removed = 0
        for primary in primaries:
            for key in list(self._variants.get(primary, ())):
                self._remove(key)
                removed += 1
        return removed

    def remove_prefix(self, host: bytes | None, prefix: bytes) -> int:
        keys = [k for k in self._lru if k[1].startswith(prefix) and (host is None or k[0] == host)]
        for key in keys:
            self._remove(key)
        return len(keys)

    def remove_tag(self, tag: bytes) -> int:
        keys = list(self._tags.get(tag, ()))
        for key in keys:
            self._remove(key)
        return len(keys)
