"""Fault scenarios: a timeline of failures played against a running stage, during load.

The chapter's claims are about failure as much as speed ("lose a web server and the
site stays up", "lose the primary and a replica takes over"). A scenario is a small TOML
file that says what fails and when, measured from the start of the load::

    description = "kill -9 the store primary"

    [[events]]
    at = 6            # seconds after the load started
    action = "kill"   # kill | stop | pause | resume | restart | add | delay
    target = "store-1"

    [[events]]
    at = 8
    action = "add"
    target = "web-3"  # a new component ...
    like = "web-1"    # ... started with web-1's declaration (same flags)
    join = "lb"       # ... and added to the lb's pool through its admin API

The actions map onto the launcher's fault methods (``launcher.py``): ``kill`` is
SIGKILL (a crash), ``stop`` SIGTERM (a planned shutdown that drains), ``pause`` and
``resume`` SIGSTOP/SIGCONT (alive but silent: the failure health checks exist for),
``restart`` starts the component again on its old ports with its old data. ``add`` grows
the topology under load, which is how a web tier is scaled out.

``ScenarioPlayer`` plays the events from a thread while the main thread drives the load,
and records each one with its wall-clock time and outcome, so the report can put the
faults on the same timeline as the errors and latency they cause. An event that fails
(a target already dead, say) is recorded as failed; the rest of the scenario goes on.
``delay`` changes the latency of one emulated link under load: its target is a ``link``
component (``topologies/link.py``, a relay a stage puts between two tiers: the stages'
``--db-link-ms`` puts ``link-db`` between the web tier and the store primary) and
``delay_ms`` the new one-way delay, set through the link's ``POST /admin/delay``
(shipped: ``delay_db``)::

    [[events]]
    at = 5
    action = "delay"
    target = "link-db"
    delay_ms = 80
"""

from __future__ import annotations

import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import orjson

from .launcher import Launcher
from .link import MAX_DELAY_MS
from .topology import NAME, Component

ACTIONS = ("kill", "stop", "pause", "resume", "restart", "add", "delay")
MAX_EVENTS = 1000
MAX_AT_S = 24 * 3600.0
#: Scenarios shipped with scalelab, by name (``--scenario kill_web``).
SHIPPED_DIR = Path(__file__).resolve().parent / "scenarios"


class ScenarioError(ValueError):
    """A scenario file that cannot be played as written; the message says where."""


@dataclass(frozen=True)
class Event:
    at_s: float
    action: str
    target: str
    like: str | None = None
    join: str | None = None
    delay_ms: float | None = None

    def describe(self) -> str:
        extra = f" like {self.like}" if self.like else ""
        extra += f", joining {self.join}" if self.join else ""
        extra += f" to {self.delay_ms:g} ms" if self.delay_ms is not None else ""
        return f"{self.action} {self.target}{extra}"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    events: tuple[Event, ...]

    @property
    def last_at_s(self) -> float:
        return max((e.at_s for e in self.events), default=0.0)

    def check_against(self, names: list[str]) -> None:
        """Every target (except an ``add``'s new name) must be a component of the stage."""
        known = set(names)
        for event in self.events:
            if event.action == "add":
                if event.target in known:
                    raise ScenarioError(f"{self.name}: add {event.target}: already a component")
                for ref in (event.like, event.join):
                    if ref is not None and ref not in known:
                        raise ScenarioError(f"{self.name}: add {event.target}: no component "
                                            f"{ref!r} in this stage ({', '.join(names)})")  # fmt: skip
                known.add(event.target)
            elif event.target not in known:
                raise ScenarioError(f"{self.name}: {event.action} {event.target}: no such "
                                    f"component in this stage ({', '.join(names)})")  # fmt: skip


def resolve_path(text: str) -> Path:
    """A file path, or the name of a shipped scenario (``kill_web``)."""
    path = Path(text)
    if path.is_file():
        return path
    shipped = SHIPPED_DIR / f"{text}.toml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED_DIR.glob("*.toml")))
    raise ScenarioError(f"no scenario file {text!r} (shipped scenarios: {names})")


def load_scenario(text: str) -> Scenario:
    path = resolve_path(text)
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: not TOML: {exc}") from None
    return parse_scenario(doc, path.stem)


def parse_scenario(doc: dict, name: str) -> Scenario:
    unknown = set(doc) - {"description", "events"}
    if unknown:
        raise ScenarioError(f"{name}: unknown keys {sorted(unknown)}")
    raw = doc.get("events")
    if not isinstance(raw, list) or not raw:
        raise ScenarioError(f"{name}: needs [[events]] (at least one)")
    if len(raw) > MAX_EVENTS:
        raise ScenarioError(f"{name}: at most {MAX_EVENTS} events")
    events = [_event(item, f"{name}: event {i + 1}") for i, item in enumerate(raw)]
    events.sort(key=lambda e: e.at_s)  # stable: equal times keep file order
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"{name}: description must be a string")
    return Scenario(name, description, tuple(events))


def _event(item, where: str) -> Event:
    if not isinstance(item, dict):
        raise ScenarioError(f"{where}: must be a table")
    unknown = set(item) - {"at", "action", "target", "like", "join", "delay_ms"}
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
    at = item.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float) or not 0 <= at <= MAX_AT_S:
        raise ScenarioError(f"{where}: 'at' must be seconds in [0, {MAX_AT_S:g}]")
    action = item.get("action")
    if action not in ACTIONS:
        raise ScenarioError(
            f"{where}: 'action' must be one of {', '.join(ACTIONS)}, got {action!r}"
        )
    target = item.get("target")
    if not isinstance(target, str) or not NAME.match(target):
        raise ScenarioError(f"{where}: 'target' must be a component name, got {target!r}")
    like, join = item.get("like"), item.get("join")
    if action == "add":
        if not isinstance(like, str):
            raise ScenarioError(f"{where}: add needs 'like' (the component to copy)")
        if join is not None and not isinstance(join, str):
            raise ScenarioError(f"{where}: 'join' must be a component name")
    elif like is not None or join is not None:
        raise ScenarioError(f"{where}: 'like' and 'join' are for add only")
    delay = item.get("delay_ms")
    if action == "delay":
        if isinstance(delay, bool) or not isinstance(delay, int | float) \
                or not 0 <= delay <= MAX_DELAY_MS:  # fmt: skip
            raise ScenarioError(f"{where}: delay needs 'delay_ms' in [0, {MAX_DELAY_MS:g}]")
        delay = float(delay)
    elif delay is not None:
        raise ScenarioError(f"{where}: 'delay_ms' is for delay only")
    return Event(float(at), action, target, like, join, delay)


# -- playing it ---------------------------------------------------------------------------


class ScenarioPlayer(threading.Thread):
    """Plays a scenario against a launcher from a thread; ``records`` is what happened."""

    def __init__(self, launcher: Launcher, scenario: Scenario, started_at: float | None = None):
        super().__init__(name="scenario", daemon=True)
        self.launcher = launcher
        self.scenario = scenario
        self.started_at = time.time() if started_at is None else started_at
        self.records: list[dict] = []
        self._cancel = threading.Event()

    def run(self) -> None:
        for event in self.scenario.events:
            delay = self.started_at + event.at_s - time.time()
            if delay > 0 and self._cancel.wait(delay):
                return
            began = time.time()
            record = {"at_s": event.at_s, "ts": round(began, 3), "action": event.action,
                      "target": event.target, "what": event.describe()}  # fmt: skip
            try:
                detail = self.apply(event)
                record.update(ok=True, **detail)
            except Exception as exc:  # recorded; the scenario goes on
                record.update(ok=False, error=str(exc).splitlines()[0][:300])
            record["took_s"] = round(time.time() - began, 3)
            self.records.append(record)

    def cancel(self) -> None:
        self._cancel.set()

    def apply(self, event: Event) -> dict:
        launcher = self.launcher
        if event.action == "kill":
            return {"exit_code": launcher.kill(event.target)}
        if event.action == "stop":
            return {"exit_code": launcher.stop(event.target)}
        if event.action == "pause":
            launcher.pause(event.target)
            return {}
        if event.action == "resume":
            launcher.resume(event.target)
            return {}
        if event.action == "restart":
            return {"pid": launcher.restart(event.target).proc.pid}
        if event.action == "delay":
            url = launcher.url(event.target, "admin") + "/admin/delay"
            code = _post(url, orjson.dumps({"delay_ms": event.delay_ms}))
            if code != 200:
                raise RuntimeError(f"{event.target} refused the delay (HTTP {code}): not a link?")
            return {"delay_ms": event.delay_ms}
        return self._add(event)

    def _add(self, event: Event) -> dict:
        like = self.launcher[event.like].spec
        spec = Component(event.target, like.component, like.flags, module=like.module,
                         env=dict(like.env))  # fmt: skip
        instance = self.launcher.add(spec)
        detail = {"listen": instance.listen}
        if event.join:
            url = self.launcher.url(event.join, "admin") + "/admin/backends"
            body = orjson.dumps({"address": instance.listen["main"]})
            code = _post(url, body)
            if code not in (200, 201):
                raise RuntimeError(f"{event.join} refused the new backend (HTTP {code})")
            detail["joined"] = event.join
        return detail


def _post(url: str, body: bytes, timeout_s: float = 5.0) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
