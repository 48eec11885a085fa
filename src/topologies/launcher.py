"""The launcher: a small process supervisor that runs one topology on this machine.

What it does, in the order a run sees it:

1. **Start** each component of the topology as its own OS process
   (``python -m components.<component>``, via ``process.start``), in declaration order.
   Before starting one, the references in its flags (``{web-1}``, ``{web-1.admin}``,
   ``{data}``) are resolved from the ready lines of the components already up, so port 0
   works everywhere and later components find earlier ones. Each component gets
   ``--data-dir RUN/<name>`` and ``--drain-timeout`` unless its flags set them.
2. **Wait** for each ready line with a deadline. A component that exits or stays silent
   fails the whole start with its last log lines, and the components already started are
   stopped: a half-started topology is never left running.
3. **Show** a table of endpoints, keep each component's stderr in ``RUN/<name>.log`` and
   a service registry in ``RUN/endpoints.json`` (rewritten atomically on every change, so
   another process, a failover controller say, can read who is where right now), and
   the launcher's own events in ``RUN/launcher.log``.
4. **Stop** everything at the end of a run, on Ctrl-C or on SIGTERM: in *reverse* order
   (the front door first, so nothing new reaches a tier that is about to go), each with
   SIGTERM, then SIGKILL if it has not drained within its drain timeout plus a grace.

Orphans: ``process.start`` makes the kernel SIGKILL every child when the launcher dies
(``PR_SET_PDEATHSIG``), so even ``kill -9`` of the launcher leaves nothing behind. That
signal follows the *thread* that forked the child, not the process (prctl(2)): a
component restarted from a short-lived thread, a fault scenario's say, would be killed
the moment that thread ends. So every child is started by one spawner thread that lives
as long as the launcher, whichever thread asks; and a lock makes the fault methods safe
to call from a scenario thread while the main thread runs the load.

Faults: a run of the journey is about what happens when a box fails. ``kill`` (SIGKILL,
a crash), ``stop`` (SIGTERM, a planned shutdown), ``pause``/``resume``
(SIGSTOP/SIGCONT: a process that is alive but answers nothing, like a long GC pause or a
VM stall, the hardest failure to detect) and ``restart`` (back on the *same* ports, with
the same data directory, so the others' flags stay valid) act on one component by name.
Each is recorded as an event with a wall-clock time, so a report can put faults on the
same timeline as the latency they cause.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import orjson

from . import process
from .process import ComponentProcess, StartError
from .topology import Component, Topology, TopologyError, check_component, resolve

#: Default ``--drain-timeout`` handed to every component.
DRAIN_TIMEOUT_S = 5.0
#: How much longer than its drain timeout a component gets before SIGKILL.
STOP_GRACE_S = 2.0
#: How long pause/resume wait for the kernel to report the new process state.
SIGNAL_SETTLE_S = 5.0
WATCH_INTERVAL_S = 0.2
MAX_EVENTS = 10_000
REGISTRY_FILE = "endpoints.json"
EVENTS_FILE = "launcher.log"

# Instance states as the registry shows them.
RUNNING, PAUSED, STOPPED, KILLED, EXITED = "running", "paused", "stopped", "killed", "exited"


@dataclass
class Instance:
    """A declared component and the process currently playing it."""

    spec: Component
    flags: list[str]  # references resolved, before process.start adds ports and name
    data_dir: Path
    log_path: Path
    proc: ComponentProcess
    state: str = RUNNING
    restarts: int = 0
    listen: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    def drain_timeout_s(self) -> float:
        return float(flag_value(self.flags, "--drain-timeout") or DRAIN_TIMEOUT_S)


def flag_value(flags: list[str], flag: str) -> str | None:
    """The value of ``flag`` in ``flags`` (``--flag V`` or ``--flag=V``), else None."""
    for i, arg in enumerate(flags):
        if arg == flag and i + 1 < len(flags):
            return flags[i + 1]
        if arg.startswith(flag + "="):
            return arg[len(flag) + 1 :]
    return None


def with_flag(flags: list[str], flag: str, value: str) -> list[str]:
    """``flags`` with ``flag`` set to ``value``, replacing any value it had."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(flags):
        if skip:
            skip = False
        elif arg == flag and i + 1 < len(flags):
            skip = True
        elif not arg.startswith(flag + "="):
            out.append(arg)
    return [*out, flag, value]


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of ``pid`` (R, S, T, Z, ...), None if it is gone.

    A zombie (Z) is dead for every purpose here: it only waits for its parent to reap it.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return "?"
    # The command name in parentheses may itself hold spaces or ')': split after the last.
    return stat[stat.rfind(b")") + 2 :][:1].decode() or None


def pid_alive(pid: int) -> bool:
    if os.path.exists("/proc/self/stat"):
        return process_state(pid) not in (None, "Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _locked(method):
    """Run a launcher method under its lock: faults may come from a scenario thread."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class Launcher:
    """Runs a ``Topology``: start, watch, fault injection, stop. Use it as a context manager.

    ::

        with Launcher(topology, run_dir) as launcher:
            launcher.start()
            print(launcher.table())
            launcher.watch()          # until Ctrl-C, or run load against launcher.entry_url
    """

    def __init__(
        self,
        topology: Topology,
        run_dir: Path | str,
        *,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
        ready_timeout_s: float = process.READY_TIMEOUT_S,
        stop_grace_s: float = STOP_GRACE_S,
        out: TextIO | None = None,
    ) -> None:
        self.topology = topology
        self.run_dir = Path(run_dir).resolve()
        self.drain_timeout_s = drain_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.stop_grace_s = stop_grace_s
        self.out = out
        self.instances: dict[str, Instance] = {}
        self.events: deque[dict] = deque(maxlen=MAX_EVENTS)
        self.started_at = time.time()
        self._lock = threading.RLock()
        # The one thread that forks children; see the module docstring on PDEATHSIG.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="launcher-spawner")

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop every component, then the spawner thread."""
        try:
            self.stop_all()
        finally:
            self._spawner.shutdown(wait=True)

    def start(self) -> None:
        """Start every component in declaration order; all or nothing."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._record("topology_starting", stage=self.topology.stage)
        try:
            for spec in self.topology.components:
                self.add(spec)
        except BaseException:
            self.stop_all()
            raise
        self._record("topology_ready", stage=self.topology.stage)

    @_locked
    def add(self, spec: Component) -> Instance:
        """Start one more component (also used to grow a running topology)."""
        check_component(spec, self.instances)
        data_dir = self.run_dir / spec.name
        data_dir.mkdir(parents=True, exist_ok=True)
        listen = {name: instance.listen for name, instance in self.instances.items()}
        places = {"data": str(data_dir), "run": str(self.run_dir)}
        flags = [resolve(arg, listen, places) for arg in spec.argv]
        if flag_value(flags, "--data-dir") is None:
            flags += ["--data-dir", str(data_dir)]
        if flag_value(flags, "--drain-timeout") is None:
            flags += ["--drain-timeout", f"{self.drain_timeout_s:g}"]
        log_path = self.run_dir / f"{spec.name}.log"
        proc = self._spawn(spec, flags, log_path)
        instance = Instance(spec, flags, data_dir, log_path, proc, listen=dict(proc.listen))
        self.instances[spec.name] = instance
        self._record("started", name=spec.name, pid=proc.pid, listen=instance.listen)
        return instance

    def _spawn(self, spec: Component, flags: list[str], log_path: Path) -> ComponentProcess:
        future = self._spawner.submit(
            process.start,
            spec.component,
            *flags,
            name=spec.name,
            log_path=log_path,
            env=dict(spec.env),
            ready_timeout_s=self.ready_timeout_s,
            module=spec.module,
        )
        try:
            return future.result()
        except StartError as error:
            self._record("start_failed", name=spec.name, error=str(error).splitlines()[0])
            raise StartError(
                f"{self.topology.stage}: could not start {spec.name} "
                f"({spec.module or 'components.' + spec.component}): {error}\n"
                f"(full log: {log_path})"
            ) from None
        except BaseException:
            # Interrupted (Ctrl-C) while the child was starting: it is not tracked yet,
            # so it must not be left to run until the launcher exits.
            with contextlib.suppress(BaseException):
                future.result(self.ready_timeout_s + 5).kill()
            raise

    @_locked
    def stop_all(self) -> None:
        """Stop every live component in reverse start order. Idempotent.

        A second Ctrl-C while draining skips the drains: everything left is SIGKILLed.
        """
        pending = [i for i in reversed(self.instances.values()) if i.proc.alive()]
        if not pending:
            return
        self._say(f"stopping {len(pending)} component(s) ...")
        try:
            while pending:
                self._stop_one(pending[0])
                pending.pop(0)
        except KeyboardInterrupt:
            for instance in pending:
                instance.proc.kill()
                instance.state = KILLED
                self._record("killed", name=instance.name, reason="second interrupt")
            raise

    def _stop_one(self, instance: Instance, state: str = STOPPED) -> int:
        code = instance.proc.stop(instance.drain_timeout_s() + self.stop_grace_s)
        instance.state = state
        self._record("stopped", name=instance.name, exit_code=code)
        self._say(f"  {instance.name}: exit {code}")
        return code

    # -- looking things up -------------------------------------------------------------

    def __getitem__(self, name: str) -> Instance:
        try:
            return self.instances[name]
        except KeyError:
            raise KeyError(
                f"no component named {name!r} (have: {', '.join(self.instances) or 'none'})"
            ) from None

    def address(self, name: str, role: str = "main") -> str:
        return self[name].listen[role]

    def url(self, name: str, role: str = "main") -> str:
        return f"http://{self.address(name, role)}"

    def _entry_name(self) -> str:
        return self.topology.entry.partition(".")[0]

    @property
    def entry_url(self) -> str:
        name, _, role = self.topology.entry.partition(".")
        return self.url(name, role or "main")

    def metrics_urls(self) -> dict[str, str]:
        """Component name -> its ``/metrics`` URL, for every component the report scrapes."""
        return {
            name: self.url(name, "admin") + "/metrics"
            for name in self.topology.scraped
            if name in self.instances and "admin" in self.instances[name].listen
        }

    def table(self) -> str:
        """The endpoint table: one row per component, plus where the run's files are."""
        rows = [("NAME", "COMPONENT", "PID", "STATE", "MAIN", "ADMIN")]
        for instance in self.instances.values():
            listen = instance.listen
            rows.append((instance.name, instance.spec.component, str(instance.proc.pid),
                         instance.state, listen.get("main", "-"), listen.get("admin", "-")))  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                 for row in rows]  # fmt: skip
        lines.append("")
        lines.append(f"entry:   {self.entry_url}")
        lines.append(f"run dir: {self.run_dir}  (logs: <name>.log, registry: {REGISTRY_FILE})")
        return "\n".join(lines)

    # -- faults ------------------------------------------------------------------------

    @_locked
    def kill(self, name: str) -> int:
        """SIGKILL: a crash. No drain, no flush; returns the exit code (-9)."""
        instance = self[name]
        code = instance.proc.kill()
        instance.state = KILLED
        self._record("killed", name=name, exit_code=code)
        return code

    @_locked
    def stop(self, name: str) -> int:
        """SIGTERM: a planned shutdown; the component drains, then SIGKILL if it must."""
        return self._stop_one(self[name])

    @_locked
    def pause(self, name: str) -> None:
        """SIGSTOP: alive, holding its ports and connections, answering nothing."""
        instance = self._live(name)
        instance.proc.signal(signal.SIGSTOP)
        self._settle(instance, lambda state: state == "T", "paused")
        instance.state = PAUSED
        self._record("paused", name=name)

    @_locked
    def resume(self, name: str) -> None:
        """SIGCONT: a paused component carries on where it stopped."""
        instance = self._live(name)
        instance.proc.signal(signal.SIGCONT)
        self._settle(instance, lambda state: state != "T", "resumed")
        instance.state = RUNNING
        self._record("resumed", name=name)

    @_locked
    def restart(self, name: str, *, hard: bool = False) -> Instance:
        """Stop (SIGTERM, or SIGKILL when ``hard``) if alive, then start again.

        Same flags, same data directory, same main and admin ports, so the components that
        were wired to its address find it again. (Only the two shared listeners are pinned;
        a component with further listeners should take their ports as flags.)
        """
        instance = self[name]
        if instance.proc.alive():
            if hard:
                self.kill(name)
            else:
                self._stop_one(instance)
        flags = list(instance.flags)
        for role, flag in (("main", "--port"), ("admin", "--admin-port")):
            if role in instance.listen:
                flags = with_flag(flags, flag, instance.listen[role].rpartition(":")[2])
        proc = self._spawn(instance.spec, flags, instance.log_path)
        instance.proc = proc
        instance.listen = dict(proc.listen)
        instance.state = RUNNING
        instance.restarts += 1
        self._record("restarted", name=name, pid=proc.pid, listen=instance.listen)
        return instance

    def _live(self, name: str) -> Instance:
        instance = self[name]
        if not instance.proc.alive():
            raise RuntimeError(f"{name} is not running ({instance.state})")
        return instance

    def _settle(self, instance: Instance, done, what: str) -> None:
        """Wait until the kernel shows the signal took effect, so the event time is true."""
        if not os.path.exists(f"/proc/{instance.proc.pid}"):
            return  # no procfs: trust the signal
        deadline = time.monotonic() + SIGNAL_SETTLE_S
        while not done(process_state(instance.proc.pid) or "gone"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{instance.name} not {what} within {SIGNAL_SETTLE_S}s")
            time.sleep(0.005)

    # -- watching ----------------------------------------------------------------------

    @_locked
    def check(self) -> list[Instance]:
        """Notice components that died on their own since the last look; returns them."""
        died = []
        for instance in self.instances.values():
            if instance.state in (RUNNING, PAUSED) and not instance.proc.alive():
                instance.state = EXITED
                code = instance.proc.popen.returncode
                self._record("exited", name=instance.name, exit_code=code)
                last = instance.proc.log_tail(5).rstrip()
                self._say(f"{instance.name} exited unexpectedly (code {code}); last log lines:\n"
                          + last)  # fmt: skip
                died.append(instance)
        return died

    def watch(self, timeout_s: float | None = None) -> None:
        """Supervise until ``timeout_s`` passes (forever if None) or nothing is alive."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while deadline is None or time.monotonic() < deadline:
            self.check()
            if not any(i.proc.alive() for i in self.instances.values()):
                self._say("no component left running")
                return
            left = WATCH_INTERVAL_S if deadline is None else deadline - time.monotonic()
            time.sleep(max(0.0, min(WATCH_INTERVAL_S, left)))

    # -- records -----------------------------------------------------------------------

    def registry(self) -> dict:
        """What ``endpoints.json`` holds: who runs where, right now."""
        return {
            "stage": self.topology.stage,
            "run_dir": str(self.run_dir),
            "launcher_pid": os.getpid(),
            "started_at": self.started_at,
            "entry": self.entry_url if self._entry_name() in self.instances else None,
            "components": {
                name: {
                    "component": i.spec.component,
                    "pid": i.proc.pid,
                    "state": i.state,
                    "listen": i.listen,
                    "restarts": i.restarts,
                    "log": str(i.log_path),
                    "data_dir": str(i.data_dir),
                    "argv": i.proc.argv,
                }
                for name, i in self.instances.items()
            },
        }

    def _record(self, event: str, **fields) -> None:
        record = {"ts": round(time.time(), 6), "event": event, **fields}
        self.events.append(record)
        if not self.run_dir.is_dir():
            return
        with (self.run_dir / EVENTS_FILE).open("ab") as fh:
            fh.write(orjson.dumps(record) + b"\n")
        # Write then rename: a reader sees the old registry or the new one, never half.
        path = self.run_dir / REGISTRY_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_bytes(orjson.dumps(self.registry(), option=orjson.OPT_INDENT_2))
        os.replace(tmp, path)

    def _say(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)


def install_signal_handlers() -> None:
    """Make SIGTERM and SIGHUP end a run the way Ctrl-C does (KeyboardInterrupt).

    Without this a ``kill`` or a closed terminal would end the launcher abruptly and the
    components would die by the parent-death SIGKILL, undrained. SIGINT is set too:
    a shell starts a background job (``scalelab run ... &`` in a script, a CI step) with
    SIGINT ignored, and Python then leaves it ignored, so ``kill -INT`` would do nothing.
    """

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):  # not the main thread / platform
            signal.signal(signum, interrupt)


__all__ = [
    "Component",
    "Instance",
    "Launcher",
    "StartError",
    "Topology",
    "TopologyError",
    "install_signal_handlers",
    "pid_alive",
    "process_state",
]
