"""Which backend gets the next request: the pool, its health, and six ways to choose.

This module is the load balancer's policy, kept pure: no sockets, no clock of its own
(``now`` is passed in), randomness injected. The asyncio shell (``server.py``) reports
what happened (a request started or finished, a connect failed, a health check
answered) and asks ``Balancer.pick`` for a backend.

Health is one small state machine per backend, modelled on HAProxy's:

- *active* checks: ``fall`` consecutive failed ``GET /health`` probes mark a backend
  down, ``rise`` consecutive good ones bring it back up;
- *passive* ejection (nginx's ``max_fails``/``fail_timeout``, Envoy's outlier
  detection): ``max_fails`` consecutive errors on real traffic (connect refused, reset,
  5xx) eject the backend for ``cooldown_s``; afterwards it is tried again, and one more
  error ejects it again;
- an operator may *drain* a backend (no new requests, in-flight ones finish) or remove
  it; both are live;
- *panic* (Envoy's panic threshold): when the healthy share of the backends that are
  not draining falls below ``panic_threshold_pct``, health is ignored and requests are
  spread over all of them. Health signals fail together more often than servers do (a
  shared dependency of ``/health`` breaks, an overload makes every backend slow and
  passive ejection takes them out one after the other, each ejection loading the rest
  more): then answering 503 to everyone, or piling all traffic on the last one or two
  survivors, is worse than trying everyone, some requests getting a 502 (after the
  usual retry) and the rest an answer. 0 turns panic off (no healthy backend: 503).

The algorithms, all choosing among the backends eligible right now:

- ``round_robin``: each in turn, weights ignored;
- ``weighted_round_robin``: nginx's *smooth* weighted round robin: every pick adds each
  backend's weight to its ``current``, takes the largest, and subtracts the total from
  it; weights 5,1,1 give ``a a b a c a a`` rather than ``a a a a a b c``;
- ``least_conn``: fewest requests in flight relative to weight, ties by smooth WRR;
- ``power_of_two``: two random candidates, the less loaded one wins (Mitzenmacher's
  "power of two choices": near least_conn quality without scanning the pool);
- ``ip_hash``: a stable hash of the client address, so a client keeps its backend while
  the pool is unchanged (nginx rehashes when the chosen one is down; so do we);
- ``cookie``: sticky sessions: a request carrying the balancer's cookie goes back to the
  backend named in it while that backend is eligible, otherwise smooth WRR chooses and
  the response sets the cookie. It is the crutch for web tiers that keep sessions in
  memory, which the journey removes at the "stateless" stage.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from dataclasses import dataclass, field

ALGORITHMS = (
    "round_robin",
    "weighted_round_robin",
    "least_conn",
    "power_of_two",
    "ip_hash",
    "cookie",
)

#: How often ip_hash rehashes past ineligible backends before falling back to WRR (nginx: 20).
IP_HASH_TRIES = 20

#: Default panic threshold, Envoy's: below half the (non-draining) pool healthy, ignore
#: health. At 50 the chapter's case (one of two web servers dies) is still routed around,
#: since 1 of 2 healthy is not below half; losing more than half at once is more likely a
#: broken health signal or an ejection cascade than a dead fleet.
DEFAULT_PANIC_THRESHOLD_PCT = 50

UP = "up"
DOWN = "down"
DRAINING = "draining"


@dataclass(eq=False, slots=True)
class Backend:
    """One server behind the balancer and everything the policy knows about it."""

    address: str
    weight: int = 1
    #: ``up``, ``down`` (failed active checks) or ``draining`` (operator).
    state: str = UP
    #: Requests in flight right now.
    active: int = 0
    #: Smooth WRR's running score.
    current: int = 0
    #: Until when passive ejection keeps it out (a ``now`` value; 0 = not ejected).
    ejected_until: float = 0.0
    consecutive_failures: int = 0
    check_successes: int = 0
    check_failures: int = 0
    removed: bool = False
    #: Lifetime counters for the admin listing.
    requests: int = 0
    errors: int = 0
    ejections: int = 0
    #: Short opaque id for the sticky cookie (does not reveal the address).
    cookie_id: str = field(init=False)

    def __post_init__(self) -> None:
        self.cookie_id = hashlib.sha1(self.address.encode()).hexdigest()[:12]

    def eligible(self, now: float) -> bool:
        return self.state == UP and now >= self.ejected_until

    def describe(self, now: float) -> dict:
        return {
            "address": self.address,
            "weight": self.weight,
            "state": self.state,
            "healthy": self.state != DOWN and now >= self.ejected_until,
            "ejected_for_s": round(max(0.0, self.ejected_until - now), 3),
            "active": self.active,
            "requests": self.requests,
            "errors": self.errors,
            "ejections": self.ejections,
        }


class Balancer:
    """The pool and the choice. ``pick`` returns a ``Backend`` or ``None`` (all out)."""

    def __init__(
        self,
        algorithm: str = "round_robin",
        *,
        rise: int = 2,
        fall: int = 3,
        max_fails: int = 3,
        cooldown_s: float = 10.0,
        panic_threshold_pct: float = DEFAULT_PANIC_THRESHOLD_PCT,
        rng: random.Random | None = None,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r}; choose from {ALGORITHMS}")
        self.algorithm = algorithm
        self.rise = rise
        self.fall = fall
        self.max_fails = max_fails
        self.cooldown_s = cooldown_s
        if not 0 <= panic_threshold_pct <= 100:
            raise ValueError("panic_threshold_pct must be within 0..100")
        self.panic_threshold_pct = panic_threshold_pct
        self.rng = rng or random.Random()
        self.backends: list[Backend] = []
        self._by_address: dict[str, Backend] = {}
        self._by_cookie: dict[str, Backend] = {}
        self._rr = 0
        self._pick = getattr(self, "_pick_" + algorithm)
        # True while every backend is known eligible, so ``pick`` can skip the scan. Any
        # event that can make one ineligible clears it; the next scan sets it again.
        self._all_eligible = True

    # -- the pool ----------------------------------------------------------------------

    def add(self, address: str, weight: int = 1) -> Backend:
        if weight < 1:
            raise ValueError("weight must be >= 1")
        existing = self._by_address.get(address)
        if existing is not None:
            # Adding a draining backend again puts it back in service with the new weight.
            existing.weight = weight
            if existing.state == DRAINING:
                existing.state = UP
            return existing
        backend = Backend(address, weight)
        self.backends = [*self.backends, backend]  # a new list: pick may hold the old one
        self._by_address[address] = backend
        self._by_cookie[backend.cookie_id] = backend
        return backend

    def remove(self, address: str) -> Backend | None:
        backend = self._by_address.pop(address, None)
        if backend is not None:
            self.backends = [b for b in self.backends if b is not backend]
            del self._by_cookie[backend.cookie_id]
            backend.removed = True
        return backend

    def drain(self, address: str) -> Backend | None:
        backend = self._by_address.get(address)
        if backend is not None:
            backend.state = DRAINING
            self._all_eligible = False
        return backend

    def set_state(self, backend: Backend, state: str) -> None:
        """Change a backend's state (``up``, ``down``, ``draining``) through the balancer."""
        backend.state = state
        if state != UP:
            self._all_eligible = False

    def get(self, address: str) -> Backend | None:
        return self._by_address.get(address)

    def eligible(self, now: float) -> list[Backend]:
        return [b for b in self.backends if b.eligible(now)]

    def _in_panic(self, healthy: int, serving: int) -> bool:
        # healthy / serving < threshold / 100, in integers.
        return serving > 0 and healthy * 100 < self.panic_threshold_pct * serving

    def panicking(self, now: float) -> bool:
        """Whether ``pick`` ignores health right now (too few healthy backends)."""
        if self._all_eligible:
            return False
        serving = [b for b in self.backends if b.state != DRAINING]
        return self._in_panic(sum(1 for b in serving if b.eligible(now)), len(serving))

    # -- the choice --------------------------------------------------------------------

    def pick(
        self,
        now: float,
        client: str = "",
        cookie: str | None = None,
        exclude: Backend | None = None,
    ) -> Backend | None:
        """Choose a backend for a request from ``client`` (``exclude``: a retry's first)."""
        if self._all_eligible and exclude is None:
            candidates = self.backends
        else:
            backends = self.backends
            candidates = [b for b in backends if b.eligible(now)]
            self._all_eligible = len(candidates) == len(backends)
            if not self._all_eligible and self.panic_threshold_pct:
                serving = [b for b in backends if b.state != DRAINING]
                if self._in_panic(len(candidates), len(serving)):
                    candidates = serving  # panic: health is ignored, drained ones are not
            if exclude is not None and exclude in candidates:
                candidates.remove(exclude)
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        return self._pick(candidates, client, cookie)

    def _pick_round_robin(self, candidates, client, cookie):
        backend = candidates[self._rr % len(candidates)]
        self._rr += 1
        return backend

    def _pick_weighted_round_robin(self, candidates, client, cookie):
        # nginx ngx_http_upstream_get_peer: smooth weighted round robin.
        total = 0
        best = None
        for backend in candidates:
            backend.current += backend.weight
            total += backend.weight
            if best is None or backend.current > best.current:
                best = backend
        best.current -= total
        return best

    def _pick_least_conn(self, candidates, client, cookie):
        # Compare active/weight without division: a.active * b.weight < b.active * a.weight.
        least = [candidates[0]]
        for backend in candidates[1:]:
            ref = least[0]
            lhs, rhs = backend.active * ref.weight, ref.active * backend.weight
            if lhs < rhs:
                least = [backend]
            elif lhs == rhs:
                least.append(backend)
        if len(least) == 1:
            return least[0]
        return self._pick_weighted_round_robin(least, client, cookie)

    def _pick_power_of_two(self, candidates, client, cookie):
        a, b = self.rng.sample(candidates, 2)
        if a.active * b.weight <= b.active * a.weight:
            return a
        return b

    def _pick_ip_hash(self, candidates, client, cookie):
        # Hash over the whole pool (not just the eligible part) so that one backend going
        # down moves only its own clients; rehash past ineligible ones, as nginx does.
        pool = self.backends
        eligible = set(map(id, candidates))
        key = client.encode()
        for attempt in range(IP_HASH_TRIES):
            backend = pool[zlib.crc32(key, attempt) % len(pool)]
            if id(backend) in eligible:
                return backend
        return self._pick_weighted_round_robin(candidates, client, cookie)

    def _pick_cookie(self, candidates, client, cookie):
        if cookie:
            backend = self._by_cookie.get(cookie)
            if backend is not None and backend in candidates:
                return backend
        return self._pick_weighted_round_robin(candidates, client, cookie)

    # -- what happened -----------------------------------------------------------------

    def started(self, backend: Backend) -> None:
        backend.active += 1
        backend.requests += 1

    def finished(self, backend: Backend) -> None:
        backend.active -= 1

    def succeeded(self, backend: Backend) -> None:
        backend.consecutive_failures = 0

    def failed(self, backend: Backend, now: float) -> bool:
        """A connect failure, reset or 5xx on real traffic; True when it ejects."""
        backend.errors += 1
        backend.consecutive_failures += 1
        if self.max_fails and backend.consecutive_failures >= self.max_fails:
            backend.consecutive_failures = 0
            backend.ejected_until = now + self.cooldown_s
            backend.ejections += 1
            self._all_eligible = False
            return True
        return False

    def check_result(self, backend: Backend, ok: bool, now: float) -> str | None:
        """An active health check's outcome; returns ``"up"``/``"down"`` on a change."""
        if ok:
            backend.check_failures = 0
            backend.check_successes += 1
            if backend.state == DOWN and backend.check_successes >= self.rise:
                backend.state = UP
                backend.ejected_until = 0.0
                backend.consecutive_failures = 0
                return UP
        else:
            backend.check_successes = 0
            backend.check_failures += 1
            if backend.state == UP and backend.check_failures >= self.fall:
                backend.state = DOWN
                self._all_eligible = False
                return DOWN
        return None
