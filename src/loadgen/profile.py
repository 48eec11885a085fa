"""Load profiles: what the simulated users ask for, how often, and for how long (TOML).

A profile is a small TOML file, so a reader can see in ten lines what "the default load"
means and write their own without touching code::

    description = "mostly reads of hot users, a few writes"
    duration_s = 20          # wall time of the whole run, warm-up included
    warmup_s = 2             # first seconds excluded from every figure
    users = 32               # closed loop: 32 users, each waits for its answer...
    think_ms = 0             # ...and thinks this long before the next request
    # rate = 500             # open loop instead: 500 requests/s whatever the answers do

    [keys]
    distribution = "zipf"    # or "uniform"
    n = 1000                 # keys 1..n
    s = 1.0                  # zipf skew

    [[requests]]
    name = "get_user"
    method = "GET"
    path = "/users/{key}"
    weight = 90

    [[requests]]
    name = "put_user"
    method = "PUT"
    path = "/users/{key}"
    weight = 10
    [requests.body]          # a JSON body; strings may hold placeholders
    firstName = "User{key}"

The read/write ratio is not a setting: it falls out of the weights of the mix
(``Profile.write_fraction``). Templates may use ``{key}`` (drawn from the key
distribution, one draw per request), ``{seq}`` (a running number, unique across worker
processes) and ``{rand}`` (a random 31-bit integer). Anything else between braces that
looks like a placeholder is an error, as is any unknown setting: a typo in a profile
must fail loudly, not silently measure something else.

A path may also start with ``{location}``: the ``Location`` this user was last answered
with (``POST /photos`` answers ``202`` and ``Location: /photos/17``; ``path =
"{location}"`` then polls that very photo, as its uploader would). A user who has no
location yet sends the mix's first request that needs none instead (so a profile using
``{location}`` must have one), which is how the first upload happens.

Each simulated user keeps its own cookies (``loadgen.engine``), so a server's sessions
and read-your-writes cookies work under load; ``cookies = false`` turns that off for raw
throughput tests (no cookie is ever stored or sent). A request with ``first = true`` is
not part of the weighted mix: every user sends it once, in file order, before its first
request from the mix (``POST /login`` before ``GET /me``, see the built-in ``sessions``).

``users`` and ``rate`` are exclusive: they are the two ways of modelling users (closed
and open loop, see ``loadgen.engine``). The command line may override either, and the
duration, warm-up and think time (``Profile.with_overrides``).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .keys import MAX_KEYS, KeySampler, UniformKeys, ZipfKeys

__all__ = [
    "Profile",
    "ProfileError",
    "RequestSpec",
    "KeySpec",
    "Template",
    "load_profile",
    "parse_profile",
    "builtin_profiles",
    "PLACEHOLDERS",
]

#: The names a template may use between braces.
PLACEHOLDERS = frozenset({"key", "seq", "rand", "location"})
#: Where ``{location}`` may stand: only at the start of a path (it is a path itself).
LOCATION = "location"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Methods that change state; their share of the mix is the profile's write fraction.
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

MAX_PROFILE_BYTES = 1 << 20
MAX_REQUESTS = 64
MAX_USERS = 10_000
MAX_RATE = 1_000_000.0
MAX_DURATION_S = 86_400.0
MAX_OUTSTANDING = 100_000
MAX_BODY_BYTES = 1 << 20

_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A request target as it goes on the wire: "/" then visible ASCII, no spaces (RFC 9112 3.2).
_PATH_RE = re.compile(r"^/[!-~]*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the setting and what is wrong."""


@dataclass(frozen=True, slots=True)
class Template:
    """A string with placeholders, split once so rendering is a join of literal parts."""

    parts: tuple[str, ...]  # literal text around the fields: len(parts) == len(fields) + 1
    fields: tuple[str, ...]

    @classmethod
    def compile(cls, text: str, where: str) -> Template:
        parts: list[str] = []
        fields: list[str] = []
        pos = 0
        for match in _PLACEHOLDER_RE.finditer(text):
            name = match.group(1)
            if name not in PLACEHOLDERS:
                raise ProfileError(
                    f"{where}: unknown placeholder {{{name}}} "
                    f"(known: {', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))})"
                )
            parts.append(text[pos : match.start()])
            fields.append(name)
            pos = match.end()
        parts.append(text[pos:])
        return cls(tuple(parts), tuple(fields))

    def render(self, values: Mapping[str, int | str]) -> str:
        if not self.fields:
            return self.parts[0]
        out = [self.parts[0]]
        for field, part in zip(self.fields, self.parts[1:], strict=True):
            out.append(str(values[field]))
            out.append(part)
        return "".join(out)

    @property
    def text(self) -> str:
        return self.render({f: "{" + f + "}" for f in self.fields})  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One kind of request in the mix."""

    name: str
    method: str
    path: Template
    weight: float
    body: Template | None = None
    headers: tuple[tuple[str, str], ...] = ()
    first: bool = False  # sent once per user before the mix, not drawn by weight

    @property
    def is_write(self) -> bool:
        return self.method in WRITE_METHODS

    @property
    def uses_key(self) -> bool:
        return "key" in self.path.fields or (self.body is not None and "key" in self.body.fields)

    @property
    def uses_location(self) -> bool:
        """Its path starts with the user's last ``Location`` (see the module essay)."""
        return LOCATION in self.path.fields


@dataclass(frozen=True, slots=True)
class KeySpec:
    """The key distribution: ``uniform`` or ``zipf`` (skew ``s``) over keys ``1..n``."""

    distribution: str = "uniform"
    n: int = 1000
    s: float = 1.0

    def sampler(self, rng: random.Random) -> KeySampler:
        if self.distribution == "zipf":
            return ZipfKeys(self.n, self.s, rng)
        return UniformKeys(self.n, rng)


@dataclass(frozen=True, slots=True)
class Profile:
    """A parsed, validated profile. ``users`` xor ``rate`` is set."""

    name: str
    requests: tuple[RequestSpec, ...]
    keys: KeySpec = KeySpec()
    description: str = ""
    duration_s: float = 20.0
    warmup_s: float = 0.0
    users: int | None = 16
    rate: float | None = None
    think_ms: float = 0.0
    timeout_s: float = 10.0
    max_outstanding: int = 1000
    connections: int = 64
    cookies: bool = True

    @property
    def mix(self) -> tuple[RequestSpec, ...]:
        """The requests drawn by weight (all but the ``first = true`` ones)."""
        return tuple(r for r in self.requests if not r.first)

    @property
    def without_location(self) -> RequestSpec | None:
        """What a user with no ``Location`` yet sends instead of a ``{location}`` request."""
        return next((r for r in self.mix if not r.uses_location), None)

    @property
    def first_requests(self) -> tuple[RequestSpec, ...]:
        """What every user sends once, in order, before its first request from the mix."""
        return tuple(r for r in self.requests if r.first)

    @property
    def mode(self) -> str:
        """``closed`` (a fixed number of users) or ``open`` (a fixed arrival rate)."""
        return "closed" if self.users is not None else "open"

    @property
    def write_fraction(self) -> float:
        mix = self.mix
        total = sum(r.weight for r in mix)
        return sum(r.weight for r in mix if r.is_write) / total

    def with_overrides(
        self,
        *,
        duration_s: float | None = None,
        warmup_s: float | None = None,
        users: int | None = None,
        rate: float | None = None,
        think_ms: float | None = None,
    ) -> Profile:
        """A copy with command-line settings applied, validated like the file itself."""
        if users is not None and rate is not None:
            raise ProfileError("give either users (closed loop) or rate (open loop), not both")
        changes: dict[str, Any] = {}
        if duration_s is not None:
            changes["duration_s"] = duration_s
        if warmup_s is not None:
            changes["warmup_s"] = warmup_s
        if think_ms is not None:
            changes["think_ms"] = think_ms
        if users is not None:
            changes.update(users=users, rate=None)
        if rate is not None:
            changes.update(rate=rate, users=None)
        profile = dataclasses.replace(self, **changes)
        _check_run_settings(profile)
        return profile

    def to_dict(self) -> dict:
        """A JSON-able summary for reports."""
        return {
            "name": self.name,
            "mode": self.mode,
            "users": self.users,
            "rate": self.rate,
            "think_ms": self.think_ms,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "timeout_s": self.timeout_s,
            "keys": dataclasses.asdict(self.keys),
            "write_fraction": round(self.write_fraction, 4),
            "cookies": self.cookies,
            "requests": [
                {"name": r.name, "method": r.method, "path": r.path.text, "weight": r.weight}
                | ({"first": True} if r.first else {})
                for r in self.requests
            ],
        }


# -- parsing ---------------------------------------------------------------------------

_TOP_KEYS = {
    "description", "duration_s", "warmup_s", "users", "rate", "think_ms", "timeout_s",
    "max_outstanding", "connections", "keys", "requests", "cookies",
}  # fmt: skip
_KEYS_KEYS = {"distribution", "n", "s"}
_REQUEST_KEYS = {"name", "method", "path", "weight", "body", "headers", "first"}


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped in ``loadgen/profiles``."""
    folder = resources.files("loadgen") / "profiles"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_profile(spec: str | Path) -> Profile:
    """A built-in profile by name (``default``) or a TOML file by path."""
    path = Path(spec)
    if isinstance(spec, Path) or path.suffix == ".toml" or "/" in str(spec):
        try:
            data = path.read_bytes()[: MAX_PROFILE_BYTES + 1]
        except OSError as error:
            raise ProfileError(f"cannot read profile {str(spec)!r}: {error.strerror}") from None
        name = path.stem
    else:
        if str(spec) not in builtin_profiles():
            raise ProfileError(
                f"no built-in profile {str(spec)!r} (built-in: {', '.join(builtin_profiles())};"
                " or give a path to a .toml file)"
            )
        name = str(spec)
        data = (resources.files("loadgen") / "profiles" / f"{name}.toml").read_bytes()
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileError(f"profile {str(spec)!r} is larger than {MAX_PROFILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProfileError(f"profile {str(spec)!r} is not UTF-8") from None
    return parse_profile(text, name)


def parse_profile(text: str, name: str = "profile") -> Profile:
    """Parse and validate the TOML text of a profile."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ProfileError(f"{name}: invalid TOML: {error}") from None
    _no_unknown(data, _TOP_KEYS, "")
    keys = _parse_keys(data.get("keys", {}))
    raw_requests = data.get("requests")
    if not isinstance(raw_requests, list) or not raw_requests:
        raise ProfileError("requests: a profile needs at least one [[requests]] table")
    if len(raw_requests) > MAX_REQUESTS:
        raise ProfileError(f"requests: at most {MAX_REQUESTS} kinds of request")
    requests = tuple(_parse_request(r, i) for i, r in enumerate(raw_requests))
    seen: set[str] = set()
    for r in requests:
        if r.name in seen:
            raise ProfileError(f"requests: two requests are named {r.name!r}")
        seen.add(r.name)
    if all(r.first for r in requests):
        raise ProfileError("requests: every request is first = true; the mix needs one more")
    if any(r.uses_location for r in requests) and all(r.uses_location for r in requests
                                                      if not r.first):  # fmt: skip
        raise ProfileError("requests: a path uses {location}, so the mix needs a request "
                           "without it (sent until the user has a location)")  # fmt: skip
    cookies = data.get("cookies", True)
    if not isinstance(cookies, bool):
        raise ProfileError(f"cookies: must be true or false, got {cookies!r}")
    users = data.get("users")
    rate = data.get("rate")
    if users is None and rate is None:
        users = 16
    profile = Profile(
        name=name,
        requests=requests,
        keys=keys,
        description=_string(data, "description", "", ""),
        duration_s=_number(data, "duration_s", 20.0, ""),
        warmup_s=_number(data, "warmup_s", 0.0, ""),
        users=_integer_or_none(users, "users"),
        rate=None if rate is None else _as_number(rate, "rate"),
        think_ms=_number(data, "think_ms", 0.0, ""),
        timeout_s=_number(data, "timeout_s", 10.0, ""),
        max_outstanding=_integer_or_none(data.get("max_outstanding", 1000), "max_outstanding"),
        connections=_integer_or_none(data.get("connections", 64), "connections"),
        cookies=cookies,
    )
    _check_run_settings(profile)
    return profile


def _check_run_settings(p: Profile) -> None:
    if (p.users is None) == (p.rate is None):
        raise ProfileError("give either users (closed loop) or rate (open loop), not both")
    if p.users is not None and not 1 <= p.users <= MAX_USERS:
        raise ProfileError(f"users: must be in 1..{MAX_USERS}, got {p.users}")
    if p.rate is not None and not 0 < p.rate <= MAX_RATE:
        raise ProfileError(f"rate: must be in (0, {MAX_RATE:g}] requests/s, got {p.rate}")
    if not 0 < p.duration_s <= MAX_DURATION_S:
        raise ProfileError(f"duration_s: must be in (0, {MAX_DURATION_S:g}], got {p.duration_s}")
    if not 0 <= p.warmup_s < p.duration_s:
        raise ProfileError(
            f"warmup_s: the warm-up ({p.warmup_s:g} s) must be shorter than the duration "
            f"({p.duration_s:g} s), which includes it"
        )
    if not 0 <= p.think_ms <= 3_600_000:
        raise ProfileError(f"think_ms: must be in 0..3600000, got {p.think_ms}")
    if not 0 < p.timeout_s <= 600:
        raise ProfileError(f"timeout_s: must be in (0, 600], got {p.timeout_s}")
    if not 1 <= p.max_outstanding <= MAX_OUTSTANDING:
        raise ProfileError(f"max_outstanding: must be in 1..{MAX_OUTSTANDING}")
    if not 1 <= p.connections <= MAX_OUTSTANDING:
        raise ProfileError(f"connections: must be in 1..{MAX_OUTSTANDING}")


def _parse_keys(raw: object) -> KeySpec:
    if not isinstance(raw, dict):
        raise ProfileError("keys: must be a table")
    _no_unknown(raw, _KEYS_KEYS, "keys.")
    distribution = _string(raw, "distribution", "uniform", "keys.")
    if distribution not in ("uniform", "zipf"):
        raise ProfileError(f"keys.distribution: must be 'uniform' or 'zipf', got {distribution!r}")
    n = _integer_or_none(raw.get("n", 1000), "keys.n")
    if not 1 <= n <= MAX_KEYS:
        raise ProfileError(f"keys.n: must be in 1..{MAX_KEYS}, got {n}")
    s = _number(raw, "s", 1.0, "keys.")
    if not 0 <= s <= 10:
        raise ProfileError(f"keys.s: the zipf skew must be in 0..10, got {s}")
    return KeySpec(distribution, n, s)


def _parse_request(raw: object, index: int) -> RequestSpec:
    where = f"requests[{index}]"
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: must be a table")
    _no_unknown(raw, _REQUEST_KEYS, f"{where}.")
    method = _string(raw, "method", "GET", f"{where}.").upper()
    if method not in METHODS:
        raise ProfileError(f"{where}.method: unknown method {method!r}")
    if "path" not in raw:
        raise ProfileError(f'{where}.path: missing (e.g. path = "/users/{{key}}")')
    path_text = _string(raw, "path", "", f"{where}.")
    path = Template.compile(path_text, f"{where}.path")
    located = path_text.startswith("{location}")
    if LOCATION in path.fields[located:]:
        raise ProfileError(f"{where}.path: {{location}} may only start a path (it is one)")
    if not _PATH_RE.match("/" + path_text[len("{location}") :] if located else path_text):
        raise ProfileError(
            f"{where}.path: must start with '/' and hold no spaces, got {path_text!r}"
        )
    name = _string(raw, "name", f"{method} {path_text}", f"{where}.")
    if not _NAME_RE.match(name) and name != f"{method} {path_text}":
        raise ProfileError(f"{where}.name: use 1-64 letters, digits, _ . : -, got {name!r}")
    weight = _number(raw, "weight", 1.0, f"{where}.")
    if not 0 < weight <= 1e9:
        raise ProfileError(f"{where}.weight: must be a positive number, got {weight}")
    body = None
    raw_body = raw.get("body")
    if raw_body is not None:
        if isinstance(raw_body, str):
            body_text = raw_body
        elif isinstance(raw_body, dict | list):
            body_text = json.dumps(raw_body, separators=(",", ":"), ensure_ascii=False)
        else:
            raise ProfileError(f"{where}.body: must be a table (sent as JSON) or a string")
        if len(body_text.encode()) > MAX_BODY_BYTES:
            raise ProfileError(f"{where}.body: larger than {MAX_BODY_BYTES} bytes")
        body = Template.compile(body_text, f"{where}.body")
        if LOCATION in body.fields:
            raise ProfileError(f"{where}.body: {{location}} may only start a path")
    headers: list[tuple[str, str]] = []
    raw_headers = raw.get("headers", {})
    if not isinstance(raw_headers, dict):
        raise ProfileError(f'{where}.headers: must be a table of name = "value"')
    for key, value in raw_headers.items():
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise ProfileError(f"{where}.headers.{key}: must be a one-line string")
        headers.append((key, value))
    json_body = body is not None and isinstance(raw_body, dict | list)
    if json_body and not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", "application/json"))
    first = raw.get("first", False)
    if not isinstance(first, bool):
        raise ProfileError(f"{where}.first: must be true or false, got {first!r}")
    return RequestSpec(name, method, path, weight, body, tuple(headers), first)


def _no_unknown(table: dict, known: set[str], prefix: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ProfileError(
            f"{prefix}{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})"
        )


def _string(table: dict, key: str, default: str, prefix: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ProfileError(f"{prefix}{key}: must be a string, got {value!r}")
    return value


def _as_number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileError(f"{where}: must be a number, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ProfileError(f"{where}: must be finite, got {value!r}")
    return float(value)


def _number(table: dict, key: str, default: float, prefix: str) -> float:
    return _as_number(table.get(key, default), prefix + key)


def _integer_or_none(value: object, where: str) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(f"{where}: must be an integer, got {value!r}")
    return value
