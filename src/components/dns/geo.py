"""Geo rules: which address a name resolves to, for whom, and only while it is healthy.

This is the policy behind "geoDNS sends each user to the nearest data centre, splits
traffic x% / (100-x)%, and moves everyone to the healthy centre when one fails". It is
pure: addresses and a clock come in, answers and state changes come out; the server
does the probing and the sockets.

The rules file (TOML) has four parts::

    ttl = 30                                   # geo answers get short TTLs
    [health]                                   # probe each target's HTTP GET URL
    interval_s = 2.0
    timeout_s = 1.0
    rise = 2                                   # successes to come back
    fall = 2                                   # failures to leave
    [regions.eu]
    subnets = ["10.1.0.0/16", "2001:db8:1::/48"]
    fallback = ["us"]                          # where eu users go when eu has no one left
    [regions.us]
    subnets = ["10.2.0.0/16"]
    fallback = ["eu"]
    [targets]
    eu-1 = { address = "192.0.2.10", health = "http://127.0.0.1:9001/health" }
    us-1 = { address = "198.51.100.10" }       # no URL: always healthy
    [names."www.example.com."]
    default_region = "us"                      # for clients no subnet matches
    eu = [{ target = "eu-1", weight = 70 }, { target = "eu-2", weight = 30 }]
    us = [{ target = "us-1" }]

The client is located by the longest matching subnet (the Client Subnet option of
RFC 7871 if the query has one, else the source address). Each answer is one target,
chosen by *smooth weighted round robin* (nginx's algorithm): over every window of
``sum(weights)`` answers the split is exact, which is what weighted routing records
promise on average. Unhealthy targets leave the pool; a region with no healthy target
falls back along its ``fallback`` list; if no region has anyone healthy the original
region's targets are all answered anyway ("fail open", as Route 53 does), since sending
users somewhere beats sending them nowhere.

The ECS *scope* we return is the shortest prefix for which every address inside gets
the same region: the matched subnet's length, lengthened past any more specific subnet
nested in it (RFC 7871 §7.2.1), so a resolver's cache never serves one region's answer
to another region's users.
"""

from __future__ import annotations

import ipaddress
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .protocol import RRType, name_from_text, name_to_text
from .zone import RRset

DEFAULT_TTL_S = 30
DEFAULT_INTERVAL_S = 2.0
DEFAULT_TIMEOUT_S = 1.0
DEFAULT_RISE = 2
DEFAULT_FALL = 2
MAX_TARGETS = 1024
MAX_SUBNETS = 65536
REGION_CACHE_ENTRIES = 4096  # client address -> (region, scope), cleared when full


class GeoError(ValueError):
    """A rules file we will not use; the message names the file and the problem."""


@dataclass(slots=True, frozen=True)
class Target:
    name: str
    address: str
    packed: bytes
    rtype: int
    health_url: str | None


@dataclass(slots=True, frozen=True)
class Region:
    name: str
    subnets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    fallback: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class GeoName:
    owner: bytes  # wire name as written in the rules
    rtype: int
    ttl: int
    default_region: str | None
    answers: dict[str, tuple[tuple[str, int], ...]]  # region -> ((target, weight), ...)


@dataclass(slots=True, frozen=True)
class HealthSettings:
    interval_s: float = DEFAULT_INTERVAL_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    rise: int = DEFAULT_RISE
    fall: int = DEFAULT_FALL


@dataclass(slots=True)
class Rules:
    """A parsed rules file: immutable once loaded (a reload builds a new one)."""

    source: str
    ttl: int
    health: HealthSettings
    regions: dict[str, Region]
    targets: dict[str, Target]
    names: dict[bytes, GeoName]  # lower-cased wire name -> rule
    # Per family: (network int, mask int, prefix length, region) sorted longest first.
    _v4: list[tuple[int, int, int, str]] = field(default_factory=list)
    _v6: list[tuple[int, int, int, str]] = field(default_factory=list)

    def describe(self) -> dict:
        """The rules as JSON-able data, for ``GET /admin/rules``."""
        return {
            "source": self.source,
            "ttl": self.ttl,
            "health": {
                "interval_s": self.health.interval_s,
                "timeout_s": self.health.timeout_s,
                "rise": self.health.rise,
                "fall": self.health.fall,
            },
            "regions": {
                r.name: {"subnets": [str(s) for s in r.subnets], "fallback": list(r.fallback)}
                for r in self.regions.values()
            },
            "targets": {
                t.name: {"address": t.address, "health": t.health_url}
                for t in self.targets.values()
            },
            "names": {
                name_to_text(n.owner): {
                    "type": RRType(n.rtype).name,
                    "ttl": n.ttl,
                    "default_region": n.default_region,
                    "answers": {
                        region: [{"target": t, "weight": w} for t, w in choices]
                        for region, choices in n.answers.items()
                    },
                }
                for n in self.names.values()
            },
        }

    def locate(self, address: bytes) -> tuple[str | None, int]:
        """``(region, scope prefix)`` for a packed IPv4 or IPv6 address."""
        bits = len(address) * 8
        value = int.from_bytes(address, "big")
        table = self._v4 if bits == 32 else self._v6
        matched_net, matched_len, region = 0, 0, None
        for network, mask, length, name in table:
            if value & mask == network:
                matched_net, matched_len, region = network, length, name
                break  # the table is sorted longest prefix first
        scope = matched_len
        outer_mask = _mask(matched_len, bits)
        for network, _mask_unused, length, _name in table:
            if length <= matched_len or network & outer_mask != matched_net:
                continue  # not nested inside the matched subnet
            # This more specific subnet lies inside ours but not around the client: the
            # scope must be long enough to exclude it (one bit past the common prefix).
            common = bits - (value ^ network).bit_length()
            if common < length:
                scope = max(scope, common + 1)
        return region, scope


def _mask(length: int, bits: int) -> int:
    return ((1 << length) - 1) << (bits - length) if length else 0


def load_rules(path: str | Path) -> Rules:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GeoError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise GeoError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return parse_rules(text, str(path))


def parse_rules(text: str, source: str = "<rules>") -> Rules:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GeoError(f"{source}: {exc}") from None
    return rules_from_dict(doc, source)


def rules_from_dict(doc: dict, source: str = "<rules>") -> Rules:
    """Rules from an already-decoded document; every fault becomes a ``GeoError``."""
    try:
        return _build(doc, source)
    except (ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, GeoError):
            raise
        raise GeoError(f"{source}: {exc}") from None


def _table(doc: dict, key: str) -> dict:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"[{key}] must be a table")
    return value


def _positive(value, what: str, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    if integer and not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return value


def _build(doc: dict, source: str) -> Rules:
    unknown = set(doc) - {"ttl", "health", "regions", "targets", "names"}
    if unknown:
        raise ValueError(f"unknown top-level keys {sorted(unknown)}")
    ttl = int(_positive(doc.get("ttl", DEFAULT_TTL_S), "ttl", integer=True))
    h = _table(doc, "health")
    health = HealthSettings(
        interval_s=float(_positive(h.get("interval_s", DEFAULT_INTERVAL_S), "health.interval_s")),
        timeout_s=float(_positive(h.get("timeout_s", DEFAULT_TIMEOUT_S), "health.timeout_s")),
        rise=int(_positive(h.get("rise", DEFAULT_RISE), "health.rise", integer=True)),
        fall=int(_positive(h.get("fall", DEFAULT_FALL), "health.fall", integer=True)),
    )
    regions: dict[str, Region] = {}
    subnet_count = 0
    for name, spec in _table(doc, "regions").items():
        if not isinstance(spec, dict):
            raise ValueError(f"region {name!r} must be a table")
        subnets = []
        for text in spec.get("subnets", []):
            try:
                subnets.append(ipaddress.ip_network(text, strict=True))
            except ValueError as exc:
                raise ValueError(f"region {name!r}: bad subnet {text!r}: {exc}") from None
        subnet_count += len(subnets)
        fallback = tuple(spec.get("fallback", []))
        regions[name] = Region(name, tuple(subnets), fallback)
    if subnet_count > MAX_SUBNETS:
        raise ValueError(f"more than {MAX_SUBNETS} subnets")
    for region in regions.values():
        for other in region.fallback:
            if other not in regions:
                raise ValueError(f"region {region.name!r} falls back to unknown region {other!r}")
    targets: dict[str, Target] = {}
    for name, spec in _table(doc, "targets").items():
        if not isinstance(spec, dict) or "address" not in spec:
            raise ValueError(f"target {name!r} needs an address")
        try:
            address = ipaddress.ip_address(spec["address"])
        except ValueError as exc:
            raise ValueError(f"target {name!r}: {exc}") from None
        url = spec.get("health")
        if url is not None and not (isinstance(url, str) and url.startswith("http://")):
            raise ValueError(f"target {name!r}: health must be an http:// URL, got {url!r}")
        rtype = RRType.A if address.version == 4 else RRType.AAAA
        targets[name] = Target(name, str(address), address.packed, rtype, url)
    if len(targets) > MAX_TARGETS:
        raise ValueError(f"more than {MAX_TARGETS} targets")
    names: dict[bytes, GeoName] = {}
    for text, spec in _table(doc, "names").items():
        if not isinstance(spec, dict):
            raise ValueError(f"name {text!r} must be a table")
        if not text.endswith("."):
            raise ValueError(f"name {text!r} must be absolute (end in a dot)")
        owner = name_from_text(text)
        default_region = spec.get("default_region")
        if default_region is not None and default_region not in regions:
            raise ValueError(f"name {text!r}: unknown default_region {default_region!r}")
        name_ttl = int(_positive(spec.get("ttl", ttl), f"{text} ttl", integer=True))
        answers: dict[str, tuple[tuple[str, int], ...]] = {}
        rtypes = set()
        for region, choices in spec.items():
            if region in ("ttl", "default_region"):
                continue
            if region not in regions:
                raise ValueError(f"name {text!r}: unknown region {region!r}")
            if not isinstance(choices, list) or not choices:
                raise ValueError(f"name {text!r}, region {region!r}: a non-empty list of targets")
            parsed = []
            for choice in choices:
                target = choice.get("target") if isinstance(choice, dict) else None
                if target not in targets:
                    raise ValueError(f"name {text!r}, region {region!r}: unknown target {target!r}")
                weight = choice.get("weight", 1)
                if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                    raise ValueError(f"name {text!r}: weight must be an integer >= 0")
                parsed.append((target, weight))
                rtypes.add(targets[target].rtype)
            answers[region] = tuple(parsed)
        if not answers:
            raise ValueError(f"name {text!r} has no answers for any region")
        if len(rtypes) != 1:
            raise ValueError(f"name {text!r} mixes IPv4 and IPv6 targets; use two names")
        if default_region is not None and default_region not in answers:
            raise ValueError(f"name {text!r}: default_region {default_region!r} has no answers")
        names[owner.lower()] = GeoName(owner, rtypes.pop(), name_ttl, default_region, answers)
    rules = Rules(source, ttl, health, regions, targets, names)
    for region in regions.values():
        for net in region.subnets:
            bits = net.max_prefixlen
            entry = (
                int(net.network_address),
                _mask(net.prefixlen, bits),
                net.prefixlen,
                region.name,
            )
            (rules._v4 if bits == 32 else rules._v6).append(entry)
    rules._v4.sort(key=lambda e: -e[2])
    rules._v6.sort(key=lambda e: -e[2])
    return rules


# -- health ------------------------------------------------------------------------------


@dataclass(slots=True)
class TargetHealth:
    up: bool = True  # optimistic start: answer at once, the first checks correct it
    successes: int = 0
    failures: int = 0
    forced: bool | None = None  # an operator's override (POST /admin/health)
    next_check: float = 0.0
    in_flight: bool = False
    last_change: float | None = None
    last_error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.up if self.forced is None else self.forced


class HealthBook:
    """Rise/fall bookkeeping per target (HAProxy's ``rise``/``fall``), clock passed in.

    A healthy target leaves after ``fall`` consecutive failed checks; an unhealthy one
    returns after ``rise`` consecutive successes. One result never flips a state on its
    own unless ``rise``/``fall`` is 1: that is what keeps a flapping target out.
    """

    def __init__(self, rules: Rules, previous: HealthBook | None = None) -> None:
        self.settings = rules.health
        #: Bumped whenever any target's effective health changes; routes are cached per
        #: version, so a query only walks the fallback list after a change.
        self.version = 0
        self.states: dict[str, TargetHealth] = {}
        self.urls = {t.name: t.health_url for t in rules.targets.values()}
        for name in rules.targets:
            old = previous.states.get(name) if previous is not None else None
            # A reload keeps what we know about targets that stay (same name).
            self.states[name] = old if old is not None else TargetHealth()

    def healthy(self, target: str) -> bool:
        return self.states[target].healthy

    def due(self, now: float) -> list[tuple[str, str]]:
        """Targets whose check is due: ``[(target, url)]``, marked in flight."""
        out = []
        for name, state in self.states.items():
            url = self.urls.get(name)
            if url is None or state.in_flight or state.next_check > now:
                continue
            state.in_flight = True
            out.append((name, url))
        return out

    def report(self, target: str, ok: bool, now: float, error: str | None = None) -> bool | None:
        """Record one check result; returns the new state if it changed, else None."""
        state = self.states.get(target)
        if state is None:  # the target left in a reload while its check ran
            return None
        state.in_flight = False
        state.next_check = now + self.settings.interval_s
        state.last_error = error
        if ok:
            state.successes += 1
            state.failures = 0
            if not state.up and state.successes >= self.settings.rise:
                state.up = True
                state.last_change = now
                self.version += 1
                return True
        else:
            state.failures += 1
            state.successes = 0
            if state.up and state.failures >= self.settings.fall:
                state.up = False
                state.last_change = now
                self.version += 1
                return False
        return None

    def force(self, target: str, state: bool | None) -> None:
        """Force a target up (True) or down (False), or back to its checks (None)."""
        if target not in self.states:
            raise KeyError(target)
        self.states[target].forced = state
        self.version += 1

    def describe(self) -> dict:
        return {
            name: {
                "healthy": s.healthy,
                "checked_up": s.up,
                "forced": None if s.forced is None else ("up" if s.forced else "down"),
                "last_change": s.last_change,
                "last_error": s.last_error,
            }
            for name, s in self.states.items()
        }


# -- answering ---------------------------------------------------------------------------


@dataclass(slots=True)
class GeoAnswer:
    rrset: RRset
    region: str  # the region whose target was answered (after any fallback)
    target: str
    scope: int


class _SmoothWeighted:
    """nginx's smooth weighted round robin over one fixed list of (target, weight)."""

    __slots__ = ("key", "pool", "current", "total")

    def __init__(self, pool: tuple[tuple[str, int], ...]) -> None:
        self.key = pool
        if all(weight == 0 for _, weight in pool):
            pool = tuple((target, 1) for target, _ in pool)  # all standby: share equally
        self.pool = pool
        self.current = [0] * len(pool)
        self.total = sum(weight for _, weight in pool)

    def pick(self) -> str:
        current = self.current
        best = 0
        for i, (_, weight) in enumerate(self.pool):
            current[i] += weight
            if current[i] > current[best]:
                best = i
        current[best] -= self.total
        return self.pool[best][0]


class Geo:
    """Rules + health + weighted pickers: ``answer(name, address)`` per query."""

    def __init__(self, rules: Rules, health: HealthBook | None = None) -> None:
        self.rules = rules
        self.health = health if health is not None else HealthBook(rules)
        self._pickers: dict[tuple[bytes, str], _SmoothWeighted] = {}
        self._located: dict[bytes, tuple[str | None, int]] = {}
        # (name, located region) -> (health version, region answered, picker)
        self._routes: dict[tuple[bytes, str], tuple[int, str, _SmoothWeighted]] = {}
        self._rrsets: dict[tuple[bytes, str], RRset] = {}

    def locate(self, address: bytes) -> tuple[str | None, int]:
        cached = self._located.get(address)
        if cached is None:
            if len(self._located) >= REGION_CACHE_ENTRIES:
                self._located.clear()
            cached = self._located[address] = self.rules.locate(address)
        return cached

    def answer(self, name: bytes, address: bytes | None) -> GeoAnswer | None:
        """The answer for a geo name (lower-cased wire) and a packed client address."""
        rule = self.rules.names.get(name)
        if rule is None:
            return None
        region, scope = self.locate(address) if address else (None, 0)
        if region is None or region not in rule.answers:
            region = rule.default_region or next(iter(rule.answers))
        route = self._routes.get((name, region))
        if route is None or route[0] != self.health.version:
            answered, pool = self._route(rule, region)
            route = self._routes[(name, region)] = (
                self.health.version,
                answered,
                self._picker(name, answered, pool),
            )
        _, answered, picker = route
        target = picker.pick()
        rrset = self._rrsets.get((name, target))
        if rrset is None:
            packed = self.rules.targets[target].packed
            rrset = self._rrsets[(name, target)] = RRset(rule.owner, rule.rtype, rule.ttl,
                                                         [(packed,)])  # fmt: skip
        return GeoAnswer(rrset, answered, target, scope)

    def _route(self, rule: GeoName, region: str) -> tuple[str, tuple[tuple[str, int], ...]]:
        """The region answered and its healthy pool: walk the fallback list in order."""
        order = [region]
        for candidate in self.rules.regions[region].fallback:
            if candidate not in order:
                order.append(candidate)
        healthy = self.health.healthy
        for candidate in order:
            choices = rule.answers.get(candidate)
            if not choices:
                continue
            pool = tuple(c for c in choices if healthy(c[0]))
            if pool:
                return candidate, pool
        # Nobody healthy anywhere we may send them: fail open to the first region.
        return region, rule.answers[region]

    def _picker(self, name: bytes, region: str, pool) -> _SmoothWeighted:
        key = (name, region)
        picker = self._pickers.get(key)
        if picker is None or picker.key != pool:
            # First use, or the healthy set changed: start the rotation afresh.
            picker = self._pickers[key] = _SmoothWeighted(pool)
        return picker


def packed_address(host: str) -> bytes | None:
    """A textual client address (from the socket) as packed bytes, or None."""
    try:
        return socket.inet_pton(socket.AF_INET, host)
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    except OSError:
        return None
    if packed[:12] == b"\x00" * 10 + b"\xff\xff":
        return packed[12:]  # an IPv4-mapped address is an IPv4 client
    return packed
