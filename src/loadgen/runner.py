"""``run_load``: one blocking call that runs a profile and returns the report.

The shape of a run, for one process or several:

1. load and validate the profile, apply the command-line overrides;
2. start the engines: in this process (``procs = 1``), or in ``procs`` worker processes
   (``loadgen.workers``), each with its share of the users or the rate. Python runs one
   core per process; a second process is how the load generator stops being the
   bottleneck;
3. hand every engine the same start instant (``time.monotonic`` is system-wide), so the
   workers' warm-up and measured windows coincide, and tell the caller that instant as
   a Unix time (``on_start``), so a fault scenario can count its seconds from it;
4. scrape every component's ``/metrics`` at the end of the warm-up and again after the
   run, so the tier figures cover the same window as the latency figures;
5. once a second, print the progress line from the last second's merged histogram;
6. merge the workers' results (histograms and per-second timelines add up, see
   ``loadgen.histogram`` and ``loadgen.timeline``), build the report, print it, write
   the JSON.

Ctrl-C (SIGINT) ends the run early and still reports what was measured, marked
``interrupted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import aiohttp
import orjson
import uvloop
from yarl import URL

from .engine import Engine
from .exposition import MAX_EXPOSITION_BYTES, Exposition, ExpositionError, parse_exposition
from .histogram import Histogram
from .profile import Profile, load_profile
from .report import build_report, format_progress, format_report
from .results import Results
from .tier import tier_figures
from .workers import LoadError, WorkerPool

__all__ = ["run_load", "LoadError", "MAX_PROCS"]

MAX_PROCS = 64
#: Time between "everyone is ready" and the common start instant.
START_MARGIN_S = 0.1
SCRAPE_TIMEOUT_S = 5.0


def run_load(
    target: str,
    profile: str | Path | Profile,
    *,
    duration_s: float | None = None,
    procs: int = 1,
    metrics: dict[str, str] | None = None,
    json_path: Path | None = None,
    progress: bool = True,
    out: TextIO = sys.stdout,
    users: int | None = None,
    rate: float | None = None,
    think_ms: float | None = None,
    warmup_s: float | None = None,
    seed: int | None = None,
    on_start: Callable[[float], None] | None = None,
) -> dict:
    """Run ``profile`` against ``target`` and return the report (see ``loadgen.report``).

    ``on_start(started_at)`` is called once the start instant is chosen (just before
    it), with that instant as a Unix time: the report's ``timeline_started_at``.

    Blocking: runs its own uvloop event loop, so call it from synchronous code. Raises
    ``ProfileError`` for a bad profile or override and ``LoadError`` for a bad target or
    a failed worker; a server that errors or does not answer is a figure, not an
    exception.
    """
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    prof = prof.with_overrides(
        duration_s=duration_s, warmup_s=warmup_s, users=users, rate=rate, think_ms=think_ms
    )
    target = check_target(target)
    if not 1 <= procs <= MAX_PROCS:
        raise LoadError(f"procs must be in 1..{MAX_PROCS}")
    if prof.users is not None and prof.users < procs:
        raise LoadError(f"{prof.users} users cannot be split over {procs} processes")
    metrics = dict(metrics or {})
    for url in metrics.values():
        check_target(url)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        report = runner.run(_run(target, prof, procs, metrics, progress, out, seed, on_start))
    print(format_report(report), file=out, flush=True)
    if json_path is not None:
        Path(json_path).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return report


def check_target(url: str) -> str:
    """An absolute http(s) URL without query or fragment, returned without trailing '/'."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as error:
        raise LoadError(f"not a URL: {url!r} ({error})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise LoadError(f"not an http:// or https:// URL with a host: {url!r}")
    if parsed.query_string or parsed.fragment:
        raise LoadError(f"the target URL takes no query or fragment: {url!r}")
    return str(url).rstrip("/")


async def _run(
    target: str,
    profile: Profile,
    procs: int,
    metrics: dict[str, str],
    progress: bool,
    out: TextIO,
    seed: int | None,
    on_start: Callable[[float], None] | None = None,
) -> dict:
    driver: _InProcess | WorkerPool
    if procs == 1:
        driver = _InProcess(target, profile, seed)
    else:
        driver = WorkerPool(target, profile, procs, seed)
    loop = asyncio.get_running_loop()
    sigint = threading.current_thread() is threading.main_thread()
    # The caller's own SIGINT handler (the launcher has one); asyncio's
    # remove_signal_handler would reset SIGINT to the default, so it is put back.
    previous_sigint = signal.getsignal(signal.SIGINT) if sigint else None
    interrupted = False
    stopped_at: float | None = None
    start_at = time.monotonic()  # until the real start instant is chosen
    start_unix = time.time()

    def on_sigint() -> None:
        nonlocal interrupted, stopped_at
        interrupted = True
        stopped_at = time.monotonic()
        driver.stop()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)) as http:
        try:
            await driver.prepare()
            if sigint:
                loop.add_signal_handler(signal.SIGINT, on_sigint)
            before: dict[str, Exposition | str] = {}
            if profile.warmup_s == 0:
                before = await _scrape_all(http, metrics)
            start_at = time.monotonic() + START_MARGIN_S
            # The same instant on the wall clock, which scenario events are stamped with.
            start_unix = time.time() + (start_at - time.monotonic())
            if on_start is not None:
                on_start(start_unix)
            scraped_at = start_at + profile.warmup_s
            run = asyncio.ensure_future(driver.run(start_at))
            ticker = asyncio.ensure_future(
                _progress(driver, start_at, profile, out) if progress else asyncio.sleep(0)
            )
            if profile.warmup_s > 0:
                await asyncio.wait([run], timeout=max(0.0, scraped_at - time.monotonic()))
                scraped_at = time.monotonic()
                before = await _scrape_all(http, metrics)
            try:
                results = await run
            finally:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            elapsed_s = time.monotonic() - scraped_at
            after = await _scrape_all(http, metrics)
        finally:
            if sigint:
                loop.remove_signal_handler(signal.SIGINT)
                if previous_sigint is not None:
                    signal.signal(signal.SIGINT, previous_sigint)
            await driver.close()
    tier = {}
    for name, url in metrics.items():
        b, a = before.get(name), after.get(name)
        if isinstance(b, Exposition) and isinstance(a, Exposition):
            tier[name] = {"url": url, **tier_figures(b, a, elapsed_s)}
        else:
            reason = b if isinstance(b, str) else a
            tier[name] = {"url": url, "error": str(reason)}
    return build_report(
        target=target,
        profile=profile,
        procs=procs,
        results=results,
        tier=tier,
        interrupted=interrupted,
        until_s=None if stopped_at is None else max(0.0, stopped_at - start_at),
        started_at=start_unix,
    )


async def _progress(driver, start_at: float, profile: Profile, out: TextIO) -> None:
    """Print the last second's figures once a second until cancelled."""
    errors_total = 0
    second = 0
    while True:
        second += 1
        # A little after the second ends, so workers' ticks for it have arrived.
        await asyncio.sleep(max(0.0, start_at + second + 0.05 - time.monotonic()))
        interval, errors = driver.take_interval()
        errors_total += errors
        phase = "warm-up" if second <= profile.warmup_s else "load"
        print(format_progress(second, phase, interval, errors_total), file=out, flush=True)


async def _scrape_all(http: aiohttp.ClientSession, metrics: dict[str, str]) -> dict:
    names = list(metrics)
    got = await asyncio.gather(*(_scrape(http, metrics[n]) for n in names))
    return dict(zip(names, got, strict=True))


async def _scrape(http: aiohttp.ClientSession, url: str) -> Exposition | str:
    """One scrape, or the reason it failed (a figure must never crash the report)."""
    try:
        async with http.get(url) as response:
            body = await response.content.read(MAX_EXPOSITION_BYTES + 1)
            if response.status != 200:
                return f"GET {url}: HTTP {response.status}"
        if len(body) > MAX_EXPOSITION_BYTES:
            return f"GET {url}: more than {MAX_EXPOSITION_BYTES} bytes"
        return parse_exposition(body.decode("utf-8", "replace"))
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        return f"GET {url}: {type(error).__name__} {error}".strip()
    except ExpositionError as error:
        return f"GET {url}: {error}"


# -- one process -----------------------------------------------------------------------


class _InProcess:
    def __init__(self, target: str, profile: Profile, seed: int | None) -> None:
        self.engine = Engine(target, profile, seed=seed)

    async def prepare(self) -> None:
        pass

    async def run(self, start_at: float) -> Results:
        return await self.engine.run(start_at)

    def take_interval(self) -> tuple[Histogram, int]:
        results = self.engine.results
        interval = Histogram()
        interval.merge(results.interval)
        errors = results.interval_errors
        results.interval.clear()
        results.interval_errors = 0
        return interval, errors

    def stop(self) -> None:
        self.engine.stop()

    async def close(self) -> None:
        pass
