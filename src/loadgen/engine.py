"""The users: an aiohttp client driving one target in a closed or an open loop.

**Closed loop** (``users = N``): N simulated users, each sends a request, waits for the
whole answer, thinks for ``think_ms``, and sends the next. The load adapts to the server:
when it slows down, users wait, and fewer requests are sent. That models a fixed
population of interactive users, and it is how most benchmark tools (wrk, ab) work. Its
latency is measured from the moment each request is actually sent.

**Open loop** (``rate = R``): requests are due at fixed times ``t_i = start + i / R``
whatever the server does, as arrivals from a large population are. Latency is measured
from the *due* time ``t_i``, not from when the request finally went out. This is what
makes the figures safe from *coordinated omission* (Gil Tene, "How NOT to measure
latency"): if the server stalls for one second, a closed-loop tool just stops sending,
records one slow request per user and reports a fine p99; here every request that fell
due during the stall waits for it and is recorded with that wait, so the stall shows in
p99 and max as users would feel it. If the event loop itself falls behind, the delay is
counted the same way.

An open loop must not grow without bound when the server stops answering: at most
``max_outstanding`` requests are in flight per worker; a request that falls due beyond
that is not sent and is counted as a ``dropped`` error. Connections are pooled
(``connections`` per worker for the open loop, one per user for the closed loop);
waiting for a free connection is part of the measured latency.

**Users keep cookies.** Every simulated user has its own cookie jar (RFC 6265 rules, as
a browser keeps them; aiohttp's ``CookieJar``), so a ``POST /login`` followed by ``GET
/me`` works, and the web tier's read-your-writes cookie follows the user who wrote. In
a closed loop a user is one of the ``users`` coroutines. In an open loop arrivals are
not tied to anybody, so each request takes a user from a pool of ``max_outstanding``
users per worker: a new one for each of the first requests, then the least recently
used idle one (a user never has two requests in flight, and no more than
``max_outstanding`` are in flight, so the pool never runs dry). The aiohttp session
itself keeps no cookie (``DummyCookieJar``): one jar shared by everybody would make 32
users one user. ``cookies = false`` keeps no cookie at all, for raw throughput tests.
A user's ``first = true`` requests go out before its first request from the mix.
Cookies set by a redirect are kept for the user's next request, but the request that
follows the redirect inside aiohttp does not carry them (profiles name final URLs).
A user also remembers the last ``Location`` it was answered with (a path on the same
target, at most ``MAX_LOCATION_BYTES``; anything else is ignored), for a profile's
``{location}`` paths: an uploader polling the photo it just created.

Each request kind is drawn from the profile's weights, its key from the key
distribution; ``{seq}`` numbers are unique across ``--procs`` workers (``worker + i *
workers``). The clock is ``time.monotonic`` (CLOCK_MONOTONIC on Linux, shared by all
processes, so a parent can hand every worker the same start time).
"""

from __future__ import annotations

import asyncio
import random
import time
from bisect import bisect_right
from collections import deque
from itertools import accumulate

import aiohttp
from yarl import URL

from .profile import Profile, RequestSpec
from .results import Results
from .timeline import Timeline

__all__ = ["Engine", "User", "MAX_BODY_READ_BYTES", "MAX_COOKIES_PER_USER", "location_path"]

#: Answers are read whole up to this size; larger ones are streamed and discarded.
MAX_BODY_READ_BYTES = 1 << 20
_CHUNK_BYTES = 1 << 16
#: A user holding more cookies than this forgets them all (browsers evict the oldest at
#: ~180 per site; a jar must not grow without bound under a server that keeps setting
#: new names).
MAX_COOKIES_PER_USER = 64
#: In an open loop that has fallen behind, yield to the requests after this many sends.
_BURST = 64
#: The longest ``Location`` a user remembers (longer ones are not a place to go back to).
MAX_LOCATION_BYTES = 2048


def split_evenly(total: int, parts: int, index: int) -> int:
    """Share ``index`` of ``total`` split into ``parts`` as evenly as possible."""
    return total // parts + (1 if index < total % parts else 0)


async def sleep_until(instant: float) -> None:
    """Sleep until ``time.monotonic() >= instant``.

    Not one ``asyncio.sleep``: uvloop's timers have millisecond granularity and may fire
    a little early, and a closed-loop user waking before the start would have its first
    request counted as warm-up.
    """
    while (delay := instant - time.monotonic()) > 0:
        await asyncio.sleep(delay)


def location_path(text: str) -> str | None:
    """The path (and query) a ``Location`` header names, to request from the same target.

    RFC 9110 10.2.2: an absolute URI or a reference relative to the request. The target
    is fixed, so an absolute one gives its path; a path-absolute reference is taken as
    it is; anything else (a relative path, a network-path ``//host``, an overlong or
    non-ASCII value) is None: not followed.
    """
    if len(text) > MAX_LOCATION_BYTES:
        return None
    if text.startswith("/") and not text.startswith("//"):
        path = text.partition("#")[0]
    else:
        try:
            url = URL(text)
        except (ValueError, TypeError):
            return None
        if not url.is_absolute() or url.scheme not in ("http", "https"):
            return None
        path = url.raw_path_qs
    if not (path.isascii() and path.isprintable()) or " " in path:
        return None
    return path


class User:
    """One simulated user: its cookies (None: cookies off), its first requests sent and
    the last ``Location`` it was given (``location_path``; None: none yet)."""

    __slots__ = ("jar", "setup", "location")

    def __init__(self, cookies: bool) -> None:
        # unsafe=True: the targets are IP addresses (127.0.0.1), where RFC 6265 jars
        # would otherwise refuse every cookie.
        self.jar = aiohttp.CookieJar(unsafe=True) if cookies else None
        self.setup = 0  # how many of the profile's first requests it has sent
        self.location: str | None = None


class Engine:
    """Drives one target with one profile; ``run()`` returns the ``Results``.

    With ``workers > 1`` this engine is worker ``worker`` of several processes and takes
    its share of the users or of the rate.
    """

    def __init__(
        self,
        target: str,
        profile: Profile,
        *,
        seed: int | None = None,
        worker: int = 0,
        workers: int = 1,
    ) -> None:
        self.base = target.rstrip("/")
        self.profile = profile
        self.worker = worker
        self.workers = workers
        self.rng = random.Random(seed)
        self.keys = profile.keys.sampler(self.rng)
        self.specs = profile.mix
        self.first = profile.first_requests
        self._without_location = profile.without_location
        self._cum_weights = list(accumulate(r.weight for r in self.specs))
        self._headers = {r.name: dict(r.headers) or None for r in profile.requests}
        self._seq = 0
        self.results = Results()
        self.outstanding = 0
        self.stopping = asyncio.Event()
        self._start = 0.0
        self._warm_end = 0.0
        self._last_done = 0.0
        self._stopped_at: float | None = None
        if profile.users is not None:
            self.users = split_evenly(profile.users, workers, worker)
            self.connections = max(1, self.users)
        else:
            self.users = 0
            self.connections = max(1, profile.connections // workers)
            self.max_outstanding = max(1, profile.max_outstanding // workers)

    # -- the run -----------------------------------------------------------------------
    async def run(self, start_at: float | None = None) -> Results:
        """Run the profile from ``start_at`` (a ``time.monotonic`` instant; default now).

        Returns when the duration is over (or ``stopping`` is set) and every request in
        flight has its answer or its error.
        """
        p = self.profile
        start = time.monotonic() if start_at is None else start_at
        self._start = start
        self.results.timeline = Timeline(p.duration_s, p.warmup_s)
        self._warm_end = start + p.warmup_s
        end = start + p.duration_s
        connector = aiohttp.TCPConnector(limit=self.connections, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=p.timeout_s)
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": "scalelab-loadgen"},
        ) as session:
            # aiohttp silently re-sends an idempotent request once when a reused
            # connection turns out closed (RFC 9112 9.3.1 allows it). A load generator
            # must not: the server would count two requests where we count one, and a
            # server dropping connections would look healthy. No public switch exists;
            # aiohttp's own test client turns it off the same way.
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False
            self.session = session
            await sleep_until(start)
            if p.users is not None:
                await asyncio.gather(*(self._user(end, User(p.cookies)) for _ in range(self.users)))
            else:
                await self._arrivals(start, end)
        if self._stopped_at is not None:
            end = min(end, self._stopped_at)
        self.results.window_s = max(0.0, max(end, self._last_done) - self._warm_end)
        return self.results

    def stop(self) -> None:
        """End the run early (Ctrl-C): no new requests; in-flight ones finish."""
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        self.stopping.set()

    async def _user(self, end: float, user: User) -> None:
        think_s = self.profile.think_ms / 1000.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if now >= end:
                return
            await self._request(self._pick(user), now, user)
            if think_s:
                await asyncio.sleep(think_s)

    async def _arrivals(self, start: float, end: float) -> None:
        rate = self.profile.rate
        assert rate is not None
        interval_s = self.workers / rate
        # Workers interleave their due times instead of all firing at once.
        first = start + self.worker / rate
        loop = asyncio.get_running_loop()
        in_flight: set[asyncio.Task] = set()
        pool: deque[User] = deque()  # idle users, least recently used first
        created = 0
        i = 0
        burst = 0
        while not self.stopping.is_set():
            due = first + i * interval_s
            if due >= end:
                break
            i += 1
            wait_s = due - time.monotonic()
            if wait_s > 0:
                burst = 0
                await asyncio.sleep(wait_s)
            else:
                burst += 1
                if burst >= _BURST:
                    burst = 0
                    await asyncio.sleep(0)
            if self.outstanding >= self.max_outstanding:
                spec = self._pick(None)
                self.results.failure(spec.name, "dropped", due >= self._warm_end, due - start)
                continue
            # A new user per request until the pool is full, then the least recently
            # used idle one (outstanding < max_outstanding = pool size: one is idle).
            if created < self.max_outstanding or not pool:
                created += 1
                user = User(self.profile.cookies)
            else:
                user = pool.popleft()
            spec = self._pick(user)
            self.outstanding += 1
            task = loop.create_task(self._request(spec, due, user, pool))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            # Each request ends by itself within timeout_s: its answer or its timeout.
            await asyncio.gather(*list(in_flight))

    def _pick(self, user: User | None = None) -> RequestSpec:
        if user is not None and user.setup < len(self.first):
            user.setup += 1
            spec = self.first[user.setup - 1]
        elif len(self.specs) == 1:
            spec = self.specs[0]
        else:
            index = bisect_right(self._cum_weights, self.rng.random() * self._cum_weights[-1])
            spec = self.specs[min(index, len(self.specs) - 1)]
        if spec.uses_location and (user is None or user.location is None):
            # Nowhere to go back to yet: the profile's request that needs no location
            # (the parser guarantees one whenever a path uses {location}).
            assert self._without_location is not None
            return self._without_location
        return spec

    def _values(self, spec: RequestSpec, user: User | None = None) -> dict[str, int | str]:
        seq = self.worker + self._seq * self.workers
        self._seq += 1
        return {
            "key": self.keys.next() if spec.uses_key else 0,
            "seq": seq,
            "rand": self.rng.getrandbits(31),
            "location": (user.location if user is not None else None) or "",
        }

    async def _request(
        self, spec: RequestSpec, due: float, user: User, pool: deque[User] | None = None
    ) -> None:
        """Send one request due at ``due`` as ``user``; record its answer or its failure.

        ``pool``: open loop, where ``user`` goes back when the request is over.
        """
        values = self._values(spec, user) if (spec.path.fields or spec.body) else {}
        url = URL(self.base + spec.path.render(values), encoded=True)
        data = spec.body.render(values).encode() if spec.body is not None else None
        measured = due >= self._warm_end
        error = None
        status = 0
        headers = self._headers[spec.name]
        jar = user.jar
        if jar is not None and len(jar):
            cookie = jar.filter_cookies(url)
            if cookie:
                headers = dict(headers or {})
                headers["Cookie"] = "; ".join(f"{m.key}={m.coded_value}" for m in cookie.values())
        try:
            async with self.session.request(
                spec.method, url, data=data, headers=headers
            ) as response:
                status = response.status
                if (location := response.headers.get("Location")) is not None:
                    user.location = location_path(location) or user.location
                if jar is not None:
                    for answer in (*response.history, response):
                        if set_cookie := answer.headers.getall("Set-Cookie", ()):
                            jar.update_cookies_from_headers(set_cookie, answer.url)
                    if len(jar) > MAX_COOKIES_PER_USER:
                        jar.clear()
                length = response.content_length
                if length is not None and length <= MAX_BODY_READ_BYTES:
                    await response.read()
                else:
                    while await response.content.read(_CHUNK_BYTES):
                        pass
        except TimeoutError:
            error = "timeout"
        except aiohttp.ClientConnectorError:
            error = "connect"
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError):
            error = "disconnect"
        except aiohttp.ClientResponseError:
            error = "protocol"
        except aiohttp.ClientError:
            error = "other"
        finally:
            if pool is not None:
                self.outstanding -= 1
                pool.append(user)
        done = time.monotonic()
        if done > self._last_done:
            self._last_done = done
        at_s = due - self._start
        if error is None:
            latency_us = round((done - due) * 1_000_000)
            self.results.answer(spec.name, status, latency_us, measured, at_s)
        else:
            self.results.failure(spec.name, error, measured, at_s)
